"""A real machine in the mesh: a QEMU guest (Debian bookworm, its kernel and systemd) takes
the place of g, an invited node of netns-testbed/topologies/guest.toml cabled to two
wireguard-go households, a and b.

It provisions itself as a household's Pi would with no uplink: offline, from a bundle made
on this (connected) machine with `provision bundle` (.debs for what the image lacks, wheels,
the checkout), from an invite made on a. Then: meshd runs as the hardened systemd unit, as
user meshd with only CAP_NET_ADMIN and CAP_NET_RAW, on the kernel's WireGuard, meshed with
the userspace nodes both ways; logs reach journald; a meshd killed with SIGKILL is
restarted by systemd and adopts its kernel links; a power cut during traffic loses no
acknowledged receipt; a reboot brings the node back with its identity; a new SD card
restored from `meshd backup` is the same node with its ledger; `meshd leave` stops the
service and leaves nothing (meshd goes with it).

Figures (printed, `-s` shows them): provision start to full reachability, reboot to full
reachability, a new card's boot to full reachability, the unit's `systemd-analyze
security` exposure.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshd import __version__
from meshd.adapters import identity
from meshd.core.membership import MeshDefinition
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.proto.release import MIN_HEALTH_WINDOW_S, ReleaseManifest
from tests.netns import meshbed
from tests.vm import guestbed

pytestmark = guestbed.NEEDS_ROOT_AND_QEMU
Bed = meshbed.Bed
MEMBERS = "abc"
NEIGHBOURS = "ab"  # g's cables
MESHD = "/opt/meshd/venv/bin/meshd"
# Under TCG the guest runs Python 5-7x slower than the host: waits are wide, not flaky.
REACH_WITHIN_S = 180.0 * guestbed.SLOWER
# CAP_NET_ADMIN (12) and CAP_NET_RAW (13), nothing else.
CAPABILITIES = (1 << 12) | (1 << 13)
EXPOSURE_AT_MOST = 3.0
QUIET_MINUTE_S = 60.0
QUIET_BASELINE_S = 30.0  # the card without meshd, whose writes are close to none
ECHO_SLACK = 3  # one probe's echoes: a doubt may fall either side of the minute's edges


@dataclass(frozen=True)
class Provisioned:
    output: str
    seconds: float  # provision's start to every node routing to every other


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("guest.toml", "vg", Bed) as b:
        yield b


@pytest.fixture(scope="module")
def guest(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[guestbed.Guest]:
    payload = guestbed.bundle(tmp_path_factory.mktemp("vm") / "bundle")
    with guestbed.guest_in(bed, "g", payload) as g:
        yield g


def status(guest: guestbed.Guest) -> dict[str, Any]:
    return json.loads(guest.check(f"{MESHD} status --json", timeout=60))


def reachable(bed: Bed, guest: guestbed.Guest) -> bool:
    """g routes to a and b and they to g, and pings cross both ways."""
    try:
        g = status(guest)
    except guestbed.GuestError:
        return False
    prefixes = {r["prefix"] for r in g["routes"]}
    for name in MEMBERS:
        other = bed.status(name)
        if f"{other['mesh_ipv4']}/32" not in prefixes:
            return False
        if bed.route(name, f"{g['mesh_ipv4']}/32") is None:
            return False
        if guest.run(f"ping -c1 -W2 {other['mesh_ipv4']}").rc != 0:
            return False
        if not guestbed.pings(bed, name, g["mesh_ipv4"]):
            return False
    return True


def wait_reachable(bed: Bed, guest: guestbed.Guest, started: float) -> float:
    """Seconds from ``started`` until g and the mesh reach each other, waiting up to
    REACH_WITHIN_S from now (what came before, a boot or an install under TCG, had its own
    timeout: how slow this machine is does not eat meshd's time to mesh)."""
    deadline = time.monotonic() + REACH_WITHIN_S
    while time.monotonic() < deadline:
        if reachable(bed, guest):
            return time.monotonic() - started
        time.sleep(1)
    # Why: meshd's last words, and whether it routes (its uptime says when it started).
    said = guest.run(
        f"journalctl -u meshd --no-pager | tail -n 20; {MESHD} status --json | head -c 300; "
        "ip route show table all | grep 10.77"
    )
    raise AssertionError(
        f"g and the mesh do not reach each other within {REACH_WITHIN_S} s "
        f"({time.monotonic() - started:.0f} s since the start):\n{said.out}"
    )


@pytest.fixture(scope="module")
def provisioned(bed: Bed, guest: guestbed.Guest) -> Provisioned:
    config = bed.dir / "nodes" / "a" / "meshd.toml"
    token = bed.sh("a", "meshd", "invite", "--name", "g", "--config", str(config)).splitlines()
    guest.check("umask 077; cat > /root/invite", input=token[0] + "\n")
    started = time.monotonic()
    out = guest.check(
        f"{guestbed.PAYLOAD}/source/provisioning/provision --bundle {guestbed.PAYLOAD} "
        "--invite-file /root/invite --underlay u-a u-b --check-target 203.0.113.1:80",
        timeout=900,
    )
    seconds = wait_reachable(bed, guest, started)
    print(f"\nvm.provision_to_reachable_s={seconds:.1f}")
    return Provisioned(out, seconds)


def test_a_guest_provisions_offline_and_meshes_on_kernel_wireguard(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    # Offline: the image has neither wireguard-tools nor nftables; the bundle brought them.
    assert "install wireguard-tools nftables from /payload" in provisioned.output
    assert "= kernel WireGuard: module" in provisioned.output
    g = status(guest)
    assert g["name"] == "g" and g["backend"] == "kernel"
    kernel_links = json.loads(guest.check("ip -j -d link show type wireguard"))
    by_name = {n["name"]: n for n in g["neighbours"] if n["state"] == "up"}
    assert sorted(by_name) == ["a", "b"], g["neighbours"]
    # Every link is a kernel WireGuard interface; the one more is g's exit tunnel to a.
    assert {n["interface"] for n in by_name.values()} < {k["ifname"] for k in kernel_links}
    print(f"\nvm.neighbour_rows={[(n['name'], n['state']) for n in g['neighbours']]}")
    for name in NEIGHBOURS:
        row = next(n for n in bed.status(name)["neighbours"] if n["node_id"] == g["node_id"])
        assert row["state"] == "up" and row["control"]["verified"], row
        assert by_name[name]["state"] == "up", by_name[name]
    # WireGuard's own counters, read from the kernel: traffic crossed the links.
    assert all(by_name[n]["rx_bytes"] > 0 and by_name[n]["tx_bytes"] > 0 for n in NEIGHBOURS)
    # The household has no uplink: it leaves by a's, through its kernel exit tunnel.
    fetch = "import urllib.request as u; print(u.urlopen('http://203.0.113.1/', timeout=10).status)"
    assert guest.check(f'python3 -c "{fetch}"').strip() == "200"


def test_meshd_runs_as_the_hardened_unit_and_logs_to_the_journal(
    guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    pid = guest.check("systemctl show -p MainPID --value meshd").strip()
    proc = guest.check(f"cat /proc/{pid}/status")
    fields = dict(line.split(":", 1) for line in proc.splitlines() if ":" in line)
    assert fields["Uid"].split()[0] != "0"
    assert guest.check(f"ps -o user= -p {pid}").strip() == "meshd"
    assert int(fields["CapEff"].strip(), 16) == CAPABILITIES
    assert int(fields["CapBnd"].strip(), 16) == CAPABILITIES
    journal = guest.check("journalctl -u meshd -o cat --no-pager")
    assert "join.joined" in journal and "node.started" in journal
    report = guest.check("systemd-analyze security meshd.service --no-pager")
    match = re.search(r"Overall exposure level for meshd.service: ([\d.]+)", report)
    assert match, report[-500:]
    print(f"\nvm.unit_exposure={match.group(1)} (systemd-analyze security; 0 best, 10 worst)")
    # 5.3 before the unit was hardened in the VM tier (files.UNIT says what is left open).
    assert float(match.group(1)) <= EXPOSURE_AT_MOST, report[-2000:]


KEEPALIVE_PAIR = """
set -e
trap 'ip netns del ka1 2>/dev/null; ip netns del ka2 2>/dev/null' EXIT
ip netns add ka1; ip netns add ka2
ip link add ve1 netns ka1 type veth peer name ve2 netns ka2
ip -n ka1 addr add 10.99.0.1/24 dev ve1; ip -n ka1 link set ve1 up
ip -n ka2 addr add 10.99.0.2/24 dev ve2; ip -n ka2 link set ve2 up
k1=$(wg genkey); k2=$(wg genkey)
for i in 1 2; do ip -n ka$i link add kw$i type wireguard; done
ip netns exec ka1 wg set kw1 listen-port 51001 private-key <(echo $k1) \\
    peer $(echo $k2 | wg pubkey) endpoint 10.99.0.2:51002 allowed-ips 10.98.0.2/32 \\
    persistent-keepalive 1
ip netns exec ka2 wg set kw2 listen-port 51002 private-key <(echo $k2) \\
    peer $(echo $k1 | wg pubkey) endpoint 10.99.0.1:51001 allowed-ips 10.98.0.1/32 \\
    persistent-keepalive 1
for i in 1 2; do ip -n ka$i addr add 10.98.0.$i/24 dev kw$i; ip -n ka$i link set kw$i up; done
sleep 6
echo "wg $(ip netns exec ka1 wg show kw1 transfer | cut -f2-)"
echo "idle $(ip netns exec ka1 cat /sys/class/net/kw1/statistics/tx_bytes)"
ip netns exec ka1 ping -c1 -W2 10.98.0.2 >/dev/null
echo "used $(ip netns exec ka1 cat /sys/class/net/kw1/statistics/tx_bytes)"
"""


def test_a_kernel_keepalive_is_in_the_interfaces_tx_bytes(
    guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    """What differs from wireguard-go, as meshd.adapters.net.if_stats documents it: two
    kernel interfaces with a 1 s keepalive and no traffic; the kernel counts WireGuard's
    own messages (handshakes, keepalives) in the interface's sysfs ``tx_bytes``, as
    WireGuard's sent bytes do (wireguard-go counts data only). A ping adds to it."""
    out = guest.check(f"bash -c {shlex.quote(KEEPALIVE_PAIR)}", timeout=120)
    fields = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    received, sent = (int(n) for n in fields["wg"].split())
    assert received > 0 and sent > 0, out  # handshakes and keepalives went both ways
    assert int(fields["idle"]) >= sent, out  # read after it: a keepalive may fall between
    assert int(fields["used"]) > sent, out


def echo_counters(interfaces: list[str]) -> str:
    """An nftables table counting the ICMPv6 echo requests sent into each interface."""
    rules = "".join(
        f'        oifname "{name}" icmpv6 type echo-request counter\n' for name in interfaces
    )
    return (
        "table inet vmcount {\n    chain out {\n"
        "        type filter hook output priority 0; policy accept;\n"
        f"{rules}    }}\n}}\n"
    )


def echoes_sent(listing: str) -> int:
    """The sum of the counters of ``nft -j list table inet vmcount``."""
    return sum(
        item["counter"]["packets"]
        for rule in json.loads(listing)["nftables"]
        if "rule" in rule
        for item in rule["rule"]["expr"]
        if "counter" in item
    )


@dataclass(frozen=True)
class Writes:
    """What reached the guest's disk (its SD card) and what meshd and journald wrote, at
    one moment: /sys/block/vda/stat (write requests, 512-byte sectors, flushes) and their
    /proc/PID/io (bytes sent to storage, write calls). Taken after a `sync`, so that a
    window does not pay for what was written before it."""

    requests: int
    sectors: int
    flushes: int
    meshd: tuple[int, int]  # bytes, calls
    journald: tuple[int, int]

    @classmethod
    def read(cls, guest: guestbed.Guest, meshd: str | None) -> Writes:
        guest.check("sync")
        disk = [int(n) for n in guest.check("cat /sys/block/vda/stat").split()]
        journald = guest.check("systemctl show -p MainPID --value systemd-journald").strip()

        def io(pid: str | None) -> tuple[int, int]:
            if not pid:
                return (0, 0)
            lines = guest.check(f"cat /proc/{pid}/io").splitlines()
            fields = dict(line.split(": ") for line in lines)
            return int(fields["write_bytes"]), int(fields["syscw"])

        # Fields 5, 7 and 16 of the block layer's stat: write requests, sectors, flushes.
        return cls(disk[4], disk[6], disk[15], io(meshd), io(journald))

    def hourly(self, since: Writes, seconds: float) -> str:
        per_h = 3600 / seconds
        mine, journal = self.meshd[0] - since.meshd[0], self.journald[0] - since.journald[0]
        return (
            f"disk {(self.sectors - since.sectors) * 512 * per_h / 1024:.0f} KiB/h in "
            f"{(self.requests - since.requests) * per_h:.0f} writes, "
            f"{(self.flushes - since.flushes) * per_h:.0f} flushes; meshd's own "
            f"{mine * per_h / 1024:.0f} KiB/h in "
            f"{(self.meshd[1] - since.meshd[1]) * per_h:.0f} write calls; journald "
            f"{journal * per_h / 1024:.0f} KiB/h"
        )


# meshd's own writes to storage in a quiet minute: the links' totals once a minute (a few
# WAL pages) and what the mesh's own traffic makes it sign. A save every reading (4 a
# second) or every exit reading (every 5 s) would be far above.
QUIET_MINUTE_MESHD_KIB = 128


def up_links(status: dict[str, Any]) -> list[str]:
    return [n["interface"] for n in status["neighbours"] if n["state"] == "up"]


def test_kernel_links_are_not_probed_more_than_userspace_ones(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    """Link liveness on the kernel path (keepalives in its counter, above) asks no more
    than on the userspace path: liveness echoes per working link, sent into g's kernel
    links and into a's wireguard-go links over the same quiet minute (the mesh's own
    traffic only)."""
    mine, theirs = up_links(status(guest)), up_links(bed.status("a"))
    assert len(mine) == 2 and len(theirs) == 3, (mine, theirs)
    nft_a = ["ip", "netns", "exec", f"{bed.env['MESHD_TESTBED_ID']}-a", "nft"]
    guest.check("nft -f -", input=echo_counters(mine))
    subprocess.run([*nft_a, "-f", "-"], input=echo_counters(theirs), text=True, check=True)
    pid = guest.check("systemctl show -p MainPID --value meshd").strip()
    try:
        writes = Writes.read(guest, pid)
        time.sleep(QUIET_MINUTE_S)
        written = Writes.read(guest, pid)
        in_guest = echoes_sent(guest.check("nft -j list table inet vmcount"))
        listing = [*nft_a, "-j", "list", "table", "inet", "vmcount"]
        in_a = echoes_sent(subprocess.run(listing, capture_output=True, text=True).stdout)
    finally:
        guest.run("nft delete table inet vmcount")
        subprocess.run([*nft_a, "delete", "table", "inet", "vmcount"], check=False)
    per_kernel, per_userspace = in_guest / len(mine), in_a / len(theirs)
    print(f"\nvm.echoes_per_link_minute kernel={per_kernel:.1f} userspace={per_userspace:.1f}")
    assert per_kernel <= per_userspace + ECHO_SLACK, (in_guest, mine, in_a, theirs)
    # The same quiet minute on the SD card (the machine's baseline is measured after leave).
    print(f"\nvm.sd_card_with_meshd={written.hourly(writes, QUIET_MINUTE_S)}")
    meshd_kib = (written.meshd[0] - writes.meshd[0]) / 1024
    assert meshd_kib <= QUIET_MINUTE_MESHD_KIB, written.hourly(writes, QUIET_MINUTE_S)


def test_a_killed_meshd_is_restarted_and_adopts_its_kernel_links(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    before = {n["name"]: n["interface"] for n in status(guest)["neighbours"]}
    pid = guest.check("systemctl show -p MainPID --value meshd").strip()
    guest.check("systemctl kill -s KILL meshd")
    started = time.monotonic()

    def restarted() -> bool:
        now = guest.run("systemctl show -p MainPID --value meshd").out.strip()
        return now not in ("", "0", pid) and guest.run(f"{MESHD} status").rc == 0

    bed.wait("systemd restarted meshd", restarted, within=REACH_WITHIN_S)
    wait_reachable(bed, guest, started)
    after = {n["name"]: n["interface"] for n in status(guest)["neighbours"]}
    assert after == before  # the same kernel interfaces, adopted, not made anew
    journal = guest.check("journalctl -u meshd -o cat --no-pager")
    assert journal.count("node.started") == 2


def usage_of(status: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next((u for u in status["usage"] if u["node_id"] == node_id), {})


def receipted_by_g(bed: Bed, g_id: str) -> int:
    """What a holds signed by g: the bytes a relayed for g that g acknowledged."""
    provider = usage_of(bed.status("a"), g_id).get("provider") or {}
    return int(provider.get("receipted_for_bytes", 0)) + int(provider.get("receipted_to_bytes", 0))


def test_a_power_cut_during_traffic_loses_nothing_acknowledged(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    """g sends to c, whom only a reaches (a relays for g, claims, g signs), while its power
    is cut; after it boots again what g signed before is still there: its chain for a is
    not behind what a holds from it, nobody disputes, and the chain goes on."""
    g = status(guest)
    a_id = bed.status("a")["node_id"]
    load = f"timeout 300 ping -q -s 1200 -i 0.05 {bed.status('c')['mesh_ipv4']}"
    guest.check(f"systemd-run --quiet --unit=vmload {load}")
    bed.wait("a holds receipts signed by g", lambda: receipted_by_g(bed, g["node_id"]) > 0, 120)
    held = receipted_by_g(bed, g["node_id"])
    guest.kill()  # the plug, during traffic and metering
    started = time.monotonic()
    guest.start(fresh=False, timeout=REACH_WITHIN_S)
    wait_reachable(bed, guest, started)
    check = "import sqlite3; print(sqlite3.connect('/var/lib/meshd/ledger.sqlite')"
    check += ".execute('pragma integrity_check').fetchone()[0])"
    assert guest.check(f'python3 -c "{check}"').strip() == "ok"
    consumer = usage_of(status(guest), a_id).get("consumer") or {}
    signed = int(consumer.get("signed_for_bytes", 0)) + int(consumer.get("signed_to_bytes", 0))
    assert signed >= held, (signed, held, consumer)
    guest.check(f"systemd-run --quiet --unit=vmload2 {load}")
    bed.wait(
        "g signs a's claims again",
        lambda: receipted_by_g(bed, g["node_id"]) > max(held, signed),
        REACH_WITHIN_S,
    )
    provider = usage_of(bed.status("a"), g["node_id"])["provider"]
    assert provider["disputes"] == 0 and provider["state"] == "ok", provider
    assert usage_of(status(guest), a_id)["consumer"]["disputes"] == 0
    guest.run("systemctl stop vmload2")


def test_a_reboot_brings_the_node_back_with_its_identity(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    before = status(guest)
    ledger = guest.check("stat -c %s /var/lib/meshd/ledger.sqlite").strip()
    started = time.monotonic()
    guest.reboot(REACH_WITHIN_S)
    seconds = wait_reachable(bed, guest, started)
    print(f"\nvm.reboot_to_reachable_s={seconds:.1f}")
    # Where that time went, on the guest's clock since its kernel started.
    boot = guest.check("systemd-analyze time --no-pager").splitlines()[0]
    journal = guest.check("journalctl -b -o short-monotonic --no-pager -u meshd").splitlines()
    marks = [line.split("]")[0].strip("[ ") for line in journal if "Started meshd" in line]
    marks += [line.split("]")[0].strip("[ ") for line in journal if "node.started" in line]
    print(f"\nvm.reboot_timeline={boot}; meshd unit started, node.started at {marks} s")
    after = status(guest)
    for key in ("node_id", "name", "mesh_ipv4", "mesh_ipv6"):
        assert after[key] == before[key], key
    assert int(guest.check("stat -c %s /var/lib/meshd/ledger.sqlite")) >= int(ledger)
    assert guest.check("systemctl is-enabled meshd").strip() == "enabled"


PASSPHRASE = "the household's own words"


def test_a_new_card_restored_from_the_backup_is_the_same_node(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    """The household's SD card dies. Its backup was taken on the old card while meshd ran
    (`meshd backup`), with no traffic since; on a new card (a fresh root from the image)
    `provision --bundle --restore` brings the same node back, offline: its id, addresses,
    certificates and ledger, into the mesh, and a's claims are signed where they left off."""
    before = status(guest)
    a_id = bed.status("a")["node_id"]
    guest.check("umask 077; cat > /root/passphrase", input=PASSPHRASE + "\n")
    made = guest.check(f"{MESHD} backup --out /root/g.backup --passphrase-file /root/passphrase")
    assert "holds the node's private keys" in made, made
    kept = guest.check("base64 -w0 /root/g.backup")  # taken off the card, as on a USB stick
    signed = usage_of(before, a_id).get("consumer") or {}
    held = receipted_by_g(bed, before["node_id"])
    print(f"\nvm.backup_bytes={len(kept) * 3 // 4}")

    guest.kill()  # the card is dead
    started = time.monotonic()
    guest.start(fresh=True, timeout=REACH_WITHIN_S)
    assert guest.run("test -e /var/lib/meshd || test -e /opt/meshd").rc != 0  # a new card
    guest.check("umask 077; base64 -d > /root/g.backup", input=kept)
    guest.check("umask 077; cat > /root/passphrase", input=PASSPHRASE + "\n")
    out = guest.check(
        f"{guestbed.PAYLOAD}/source/provisioning/provision --bundle {guestbed.PAYLOAD} "
        "--restore /root/g.backup --passphrase-file /root/passphrase",
        timeout=900,
    )
    assert "+ write /var/lib/meshd/identity.key" in out and "generate keys" not in out, out
    seconds = wait_reachable(bed, guest, started)
    print(f"\nvm.new_card_to_reachable_s={seconds:.1f} (boot, offline install, restore, rejoin)")
    after = status(guest)
    for key in ("node_id", "name", "mesh_ipv4", "mesh_ipv6"):
        assert after[key] == before[key], key
    consumer = usage_of(after, a_id).get("consumer") or {}
    assert consumer.get("epoch") == signed.get("epoch"), (consumer, signed)
    for key in ("signed_for_bytes", "signed_to_bytes"):  # the ledger's, not a new one's
        assert consumer.get(key, 0) >= signed.get(key, 0) > 0, (key, consumer, signed)
    load = f"timeout 300 ping -q -s 1200 -i 0.05 {bed.status('c')['mesh_ipv4']}"
    guest.check(f"systemd-run --quiet --unit=vmload3 {load}")
    bed.wait(
        "g signs a's claims again",
        lambda: receipted_by_g(bed, after["node_id"]) > held,
        REACH_WITHIN_S,
    )
    provider = usage_of(bed.status("a"), after["node_id"])["provider"]
    assert provider["disputes"] == 0 and provider["state"] == "ok", provider
    guest.run("systemctl stop vmload3")


def release_wheel(out: Path, version: str, broken: bool = False) -> Path:
    """A wheel of this checkout as meshd ``version``; ``broken``: one whose daemon exits
    at once (a deliberately broken build), what a release that cannot start looks like."""
    src = out / f"src-{version}"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=meshbed.REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (meshbed.REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(meshbed.REPO / name, src / name)
    for name, key in (("pyproject.toml", "version"), ("meshd/__init__.py", "__version__")):
        path = src / name
        text = re.sub(f'^{key} = ".*"', f'{key} = "{version}"', path.read_text(), flags=re.M)
        path.write_text(text)
    if broken:
        with (src / "meshd/cli/commands/run.py").open("a") as f:
            f.write("\n\ndef main(args: object) -> int:  # noqa: F811\n    raise SystemExit(1)\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob(f"meshd-{version}-*.whl")
    return found


def publish(bed: Bed, wheel: Path, version: str, serial: int, stages_apart_s: int) -> None:
    """``wheel`` as release ``serial``, signed with the mesh's admin key and published on a,
    whose neighbours pass it on: g holds it once fetched. ``stages_apart_s`` 0: every
    stage takes it at once."""
    signer = identity.load(bed.dir / "admin")
    state = bed.dir / "nodes" / "a" / "state"
    mesh = MeshDefinition.decode((state / "mesh.cert").read_bytes())
    data = wheel.read_bytes()
    manifest = ReleaseManifest(
        mesh_id=mesh.mesh_id,
        issuer=signer.node_id,
        serial=serial,
        issued_at=int(time.time()),
        meshd_version=version,
        artifact_name=wheel.name,
        artifact_size=len(data),
        artifact_sha256=hashlib.sha256(data).digest(),
        stage_interval_s=stages_apart_s,
        health_window_s=MIN_HEALTH_WINDOW_S,
        signature=NO_SIGNATURE,
    ).sign(signer.signing_key)
    path = wheel.with_suffix(".manifest")
    path.write_bytes(manifest.encode())
    bed.sh("a", "meshd", "release", "publish", str(path), str(wheel))


def update_status(guest: guestbed.Guest) -> dict[str, Any]:
    return json.loads(guest.check(f"{MESHD} update status --json", timeout=60))


def wait_held(bed: Bed, guest: guestbed.Guest, serial: int) -> None:
    def held() -> bool:
        return (update_status(guest).get("held") or {}).get("serial") == serial

    bed.wait(f"g holds release {serial}", held, REACH_WITHIN_S)


def test_a_release_over_the_mesh_is_taken_and_a_broken_one_rolls_back_by_itself(
    bed: Bed,
    guest: guestbed.Guest,
    provisioned: Provisioned,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A release published on a reaches g over the mesh; the update timer's unit (as
    provisioning installed it: root, `meshd update auto`) takes it since g's stage does,
    installs it into a virtual environment beside the running one, restarts meshd into it
    and confirms it once g routes again. A release whose daemon cannot start, taken by hand
    (`meshd update apply`, the stage not yet come), is rolled back by itself at the end of
    its health window: the version before runs again, g meshes again, and the release is
    refused on g for good."""
    assert guest.check("systemctl is-enabled meshd-update.timer").strip() == "enabled"
    out = tmp_path_factory.mktemp("releases")
    good = f"{__version__}.post1"
    broken = f"{__version__}.post2"
    publish(bed, release_wheel(out, good), good, serial=1, stages_apart_s=0)
    wait_held(bed, guest, 1)
    started = time.monotonic()
    guest.check("systemctl start meshd-update.service", timeout=900)
    said = guest.check("journalctl -u meshd-update --no-pager -o cat")
    assert "release 1 confirmed" in said, said
    assert guest.check(f"{MESHD} --version").strip() == f"meshd {good}"
    assert guest.check("readlink /opt/meshd/venv").strip() == f"versions/{good}-1"
    seconds = wait_reachable(bed, guest, started)
    print(f"\nvm.update_apply_to_reachable_s={seconds:.1f}")

    publish(bed, release_wheel(out, broken, broken=True), broken, serial=2, stages_apart_s=3600)
    wait_held(bed, guest, 2)
    auto = guest.check(f"{MESHD} update auto")
    assert "stage normal takes release 2 from" in auto, auto
    started = time.monotonic()
    run = guest.run(f"{MESHD} update apply", timeout=900)
    assert run.rc == 1 and "release 2 rolled back" in run.out, run
    assert guest.check(f"{MESHD} --version").strip() == f"meshd {good}"
    seconds = wait_reachable(bed, guest, started)
    print(f"\nvm.update_rollback_to_reachable_s={seconds:.1f}")
    installs = update_status(guest)["installs"]  # as the daemon (user meshd) reads it
    assert installs["taken"] == 1 and "2" in installs["refused"], installs
    (concern,) = installs["concerns"]
    assert concern.startswith("release 2 rolled back here: "), concern
    assert f"update: {concern}" in guest.check(f"{MESHD} status")
    again = guest.run(f"{MESHD} update apply", timeout=300)
    assert again.rc == 1 and "release 2 was rolled back here" in again.out, again


def test_leave_stops_the_service_and_leaves_nothing(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    dry = guest.check(f"{MESHD} leave --dry-run --yes --export /root/receipts.jsonl")
    assert guest.check("systemctl is-active meshd").strip() == "active", dry
    out = guest.check(f"{MESHD} leave --yes --export /root/receipts.jsonl", timeout=300)
    assert guest.run("systemctl is-active meshd").out.strip() in ("inactive", "unknown"), out
    left = guest.run(
        "ls -d /etc/meshd /var/lib/meshd /opt/meshd /etc/systemd/system/meshd*.* "
        "/etc/sysctl.d/90-meshd.conf /etc/modules-load.d/meshd.conf 2>/dev/null; "
        "ip -br link show type wireguard; nft list tables; id meshd 2>/dev/null"
    )
    assert left.out.strip() == "", left.out
    # The receipts (the household's money) were saved before anything was removed.
    assert guest.run("test -s /root/receipts.jsonl").rc == 0
    # meshd went with its virtualenv: a second `meshd leave` has nothing to run.
    assert guest.run(f"{MESHD} leave --yes").rc == 127
    # The SD card of the machine without meshd, beside the quiet minute's figure with it.
    idle = Writes.read(guest, None)
    time.sleep(QUIET_BASELINE_S)
    print(f"\nvm.sd_card_without_meshd={Writes.read(guest, None).hourly(idle, QUIET_BASELINE_S)}")
