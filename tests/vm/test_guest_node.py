"""A real machine in the mesh: a QEMU guest (Debian bookworm, its kernel and systemd) takes
the place of g, an invited node of netns-testbed/topologies/guest.toml cabled to two
wireguard-go households, a and b.

It provisions itself as a household's Pi would with no uplink: offline, from a bundle made
on this (connected) machine with `provision bundle` (.debs for what the image lacks, wheels,
the checkout), from an invite made on a. Then: meshd runs as the hardened systemd unit, as
user meshd with only CAP_NET_ADMIN and CAP_NET_RAW, on the kernel's WireGuard, meshed with
the userspace nodes both ways; logs reach journald; a meshd killed with SIGKILL is
restarted by systemd and adopts its kernel links; a reboot brings the node back with its
identity; `meshd leave` stops the service and leaves nothing, and a second one is a no-op.

Figures (printed, `-s` shows them): provision start to full reachability, reboot to full
reachability, the unit's `systemd-analyze security` exposure.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.netns import meshbed
from tests.vm import guestbed

pytestmark = guestbed.NEEDS_ROOT_AND_QEMU
Bed = meshbed.Bed
MEMBERS = "ab"
MESHD = "/opt/meshd/venv/bin/meshd"
# Under TCG the guest runs Python 5-7x slower than the host: waits are wide, not flaky.
REACH_WITHIN_S = 180.0
# CAP_NET_ADMIN (12) and CAP_NET_RAW (13), nothing else.
CAPABILITIES = (1 << 12) | (1 << 13)


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
    deadline = started + REACH_WITHIN_S
    while time.monotonic() < deadline:
        if reachable(bed, guest):
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"g and the mesh do not reach each other within {REACH_WITHIN_S} s")


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
    by_name = {n["name"]: n for n in g["neighbours"]}
    assert sorted(by_name) == ["a", "b"]
    # Every link is a kernel WireGuard interface; the one more is g's exit tunnel to a.
    assert {n["interface"] for n in g["neighbours"]} < {k["ifname"] for k in kernel_links}
    for name in MEMBERS:
        row = next(n for n in bed.status(name)["neighbours"] if n["node_id"] == g["node_id"])
        assert row["state"] == "up" and row["control"]["verified"], row
        assert by_name[name]["state"] == "up", by_name[name]
    # WireGuard's own counters, read from the kernel: traffic crossed the links.
    assert all(by_name[n]["rx_bytes"] > 0 and by_name[n]["tx_bytes"] > 0 for n in MEMBERS)
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


def test_a_reboot_brings_the_node_back_with_its_identity(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    before = status(guest)
    ledger = guest.check("stat -c %s /var/lib/meshd/ledger.sqlite").strip()
    guest.check("systemctl --no-block reboot", timeout=30)
    started = time.monotonic()
    time.sleep(3)  # the agent of the old boot may still answer for a moment
    guest.wait_agent(REACH_WITHIN_S)
    seconds = wait_reachable(bed, guest, started)
    print(f"\nvm.reboot_to_reachable_s={seconds:.1f}")
    after = status(guest)
    for key in ("node_id", "name", "mesh_ipv4", "mesh_ipv6"):
        assert after[key] == before[key], key
    assert int(guest.check("stat -c %s /var/lib/meshd/ledger.sqlite")) >= int(ledger)
    assert guest.check("systemctl is-enabled meshd").strip() == "enabled"


def test_leave_stops_the_service_and_leaves_nothing(
    bed: Bed, guest: guestbed.Guest, provisioned: Provisioned
) -> None:
    dry = guest.check(f"{MESHD} leave --dry-run --yes --export /root/receipts.jsonl")
    assert guest.check("systemctl is-active meshd").strip() == "active", dry
    out = guest.check(f"{MESHD} leave --yes --export /root/receipts.jsonl", timeout=300)
    assert guest.run("systemctl is-active meshd").out.strip() in ("inactive", "unknown"), out
    left = guest.run(
        "ls -d /etc/meshd /var/lib/meshd /opt/meshd/venv /etc/systemd/system/meshd.service "
        "/etc/sysctl.d/90-meshd.conf /etc/modules-load.d/meshd.conf 2>/dev/null; "
        "ip -br link show type wireguard; nft list tables; id meshd 2>/dev/null"
    )
    assert left.out.strip() == "", left.out
    # The receipts (the household's money) were saved before anything was removed.
    assert guest.run("test -s /root/receipts.jsonl").rc == 0
    # meshd went with its virtualenv: a second `meshd leave` has nothing to run.
    assert guest.run(f"{MESHD} leave --yes").rc == 127
