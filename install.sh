#!/usr/bin/env bash
# Install everything meshd, its testbed and its tests need, on Debian (bookworm or later), as root.
# Idempotent: Debian packages only when missing, Python packages into ./.venv.
set -euo pipefail
cd "$(dirname "$0")"

# tshark: the tests check our Babel bytes against Wireshark's dissector; curl: the exit and
# quota tests fetch through the mesh with it; qemu, mmdebstrap and e2fsprogs: the VM tier's
# guests (netns-testbed/vmbed); prometheus: a real one scrapes nodes' [metrics] in the tests;
# babeld: `bench peers` runs it beside meshd.
packages=(wireguard-tools wireguard-go iproute2 nftables iperf3 dnsmasq-base iputils-ping procps
          curl python3 python3-venv python3-pip tshark
          qemu-system-x86 qemu-utils mmdebstrap e2fsprogs prometheus babeld)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install: apt-get install ${missing[*]}"
    apt-get update -qq
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "install: ok ($(.venv/bin/python --version), $(wg --version | head -c 40))"
