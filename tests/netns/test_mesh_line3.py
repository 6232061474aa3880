"""meshd on a real 3-node line (a - b - c) of network namespaces, userspace WireGuard.

Shows the foundation end to end: links up over real wireguard-go, neighbours' mesh
addresses reachable through the tunnels, liveness following a silent cut, clean SIGTERM,
and adoption after kill -9.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import meshbed

PROTO = "176"

pytestmark = [*meshbed.NEEDS_ROOT_AND_WIREGUARD, pytest.mark.timed]


class Bed(meshbed.Bed):
    def neighbour_state(self, node: str, peer: str) -> str:
        for n in self.status(node)["neighbours"]:
            if n["name"] == peer:
                return str(n["state"])
        raise AssertionError(f"{node} has no neighbour {peer}")

    def wait_state(self, node: str, peer: str, state: str, within: float) -> float:
        return self.wait(
            f"{node}->{peer} {state}", lambda: self.neighbour_state(node, peer) == state, within
        )

    def own_interfaces(self, node: str) -> list[str]:
        """Every WireGuard interface meshd made: links and exit tunnels."""
        out = json.loads(self.sh(node, "ip", "-j", "link", "show"))
        return sorted(li["ifname"] for li in out if li["ifname"].startswith("mw"))

    def own_links(self, node: str) -> list[str]:
        """The neighbour links (an exit tunnel's name ends in xu or xg)."""
        return [i for i in self.own_interfaces(node) if not i.endswith(("xu", "xg"))]

    def wireguard_go_pids(self, node: str) -> list[int]:
        """The wireguard-go daemons of the node's links."""
        ns = json.loads(self.run("status", "--json"))["nodes"][node]["namespace"]
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        links = set(self.own_links(node))
        return sorted(
            int(p)
            for p in pids.stdout.split()
            if Path(f"/proc/{p}/comm").read_text().strip() == "wireguard-go"
            and links & set(Path(f"/proc/{p}/cmdline").read_bytes().decode().split("\0"))
        )

    def meshd_routes(self, node: str) -> list[str]:
        """Every route of meshd's protocol, in any table (they belong in the mesh's)."""
        v4 = self.sh(node, "ip", "-4", "route", "show", "table", "all", "proto", PROTO)
        v6 = self.sh(node, "ip", "-6", "route", "show", "table", "all", "proto", PROTO)
        return sorted(v4.splitlines() + v6.splitlines())


# Bytes: c's exit keepalives and exit session through b (about 170 B/s) while a test reads
# four nodes' counters, each read every 5 s; far less than the pings, so that a loss or a
# double count of them shows.
BACKGROUND = 10_000


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("line3.toml", "t", Bed) as b:
        yield b


def test_status_has_the_contract_fields(bed: Bed) -> None:
    s = bed.status("b")
    for key in (
        "node_id",
        "name",
        "mesh_ipv4",
        "mesh_ipv6",
        "backend",
        "neighbours",
        "routes",
        "gateway",
        "usage",
    ):
        assert key in s
    assert s["backend"] == "userspace"
    assert len(s["node_id"]) == 43
    assert sorted(n["name"] for n in s["neighbours"]) == ["a", "c"]
    for n in s["neighbours"]:
        assert set(n) >= {"node_id", "name", "interface", "state", "rtt_ms", "loss"}
        assert n["state"] == "up"
    assert {r["prefix"].split("/")[1] for r in s["routes"]} == {"32", "128"}
    assert len(s["routes"]) == 4
    assert set(s["gateway"]) >= {"selected", "candidates"}


def test_ping_every_neighbour_mesh_address_through_wireguard(bed: Bed) -> None:
    status = {n: bed.status(n) for n in ("a", "b", "c")}
    by_id = {s["node_id"]: s for s in status.values()}
    for name, s in status.items():
        for n in s["neighbours"]:
            peer = by_id[n["node_id"]]
            for addr in (peer["mesh_ipv4"], peer["mesh_ipv6"]):
                route = bed.sh(name, "ip", "route", "get", addr)
                assert f"dev {n['interface']}" in route  # the path is the tunnel
                bed.sh(name, "ping", "-c", "2", "-i", "0.2", "-W", "2", addr)
            # `wg show <its own interface>` shows the peer with a recent handshake.
            handshakes = bed.sh(name, "wg", "show", n["interface"], "latest-handshakes")
            peer_key, stamp = handshakes.split()
            assert 0 <= time.time() - int(stamp) < 120, handshakes


def test_cut_link_in_use_goes_down_within_2s_and_heal_brings_it_back(bed: Bed) -> None:
    """An idle link need not prove itself every second; one that carries a flow does: cut,
    it is down at both ends within 2 s of the flows that go unanswered. Healed, it is up
    again within 3 s (a down link is asked every second whether it is back)."""
    a_addr, b_addr = bed.status("a")["mesh_ipv4"], bed.status("b")["mesh_ipv4"]
    bed.run("cut", "a", "b")
    try:
        with bed.pinging("a", b_addr), bed.pinging("b", a_addr):
            bed.wait_state("a", "b", "down", within=2.0)
            bed.wait_state("b", "a", "down", within=2.0)
        assert bed.neighbour_state("b", "c") == "up"  # the other link is untouched
    finally:
        bed.run("heal", "a", "b")
    bed.wait_state("a", "b", "up", within=3.0)
    bed.wait_state("b", "a", "up", within=3.0)


def test_sigterm_removes_everything_and_start_restores(bed: Bed) -> None:
    before_links, before_routes = bed.own_links("b"), bed.meshd_routes("b")
    assert len(before_links) == 2 and len(before_routes) == 4
    ifnames = [n["interface"] for n in bed.status("b")["neighbours"]]
    pid = bed.pid("b")
    assert pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and bed.pid("b") is not None:
        time.sleep(0.1)
    assert bed.own_interfaces("b") == []  # links and the exit tunnel
    assert bed.meshd_routes("b") == []
    assert "table inet meshd" not in bed.sh("b", "nft", "list", "tables")
    assert bed.sh("b", "ip", "rule", "show").count("\n") == 3  # only the kernel's own
    lo = bed.sh("b", "ip", "addr", "show", "dev", "lo")
    assert "10.77." not in lo and "fd6d:" not in lo
    for name in ifnames:
        assert not Path(f"/var/run/wireguard/{name}.sock").exists()
    bed.run("start", "b")
    bed.run("wait-converged", "--timeout", "30")
    assert bed.own_links("b") == before_links
    assert bed.meshd_routes("b") == before_routes


def test_kill9_then_start_adopts_without_duplicates(bed: Bed) -> None:
    """And the relay's crash and restart drop no traffic through it: the kernel forwards
    while meshd is gone, and the new meshd keeps the routes while Babel learns them again
    (pings every 50 ms from a to c through b, for 14 s, past the routes' grace of 10 s)."""
    before_links, before_routes = bed.own_links("b"), bed.meshd_routes("b")
    wg_pids = bed.wireguard_go_pids("b")
    assert len(wg_pids) == 2
    c_mesh = bed.status("c")["mesh_ipv4"]
    ping = subprocess.Popen(
        [str(meshbed.TESTBED), "exec", "a", "--", "ping", "-q", "-i", "0.05", "-w", "14", c_mesh],
        env=bed.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    bed.run("kill", "b")
    assert bed.own_links("b") == before_links  # wireguard-go outlives meshd on purpose
    bed.run("start", "b")
    bed.run("wait-converged", "--timeout", "30")
    out, _ = ping.communicate(timeout=60)
    sent, received = (int(n) for n in re.findall(r"(\d+) packets transmitted, (\d+)", out)[0])
    assert sent > 200 and sent - received <= 2, out
    assert bed.own_links("b") == before_links
    assert bed.meshd_routes("b") == before_routes
    lo = bed.sh("b", "ip", "-j", "addr", "show", "dev", "lo")
    assert len(json.loads(lo)[0]["addr_info"]) == 4  # 127.0.0.1, ::1 and the two mesh ones
    assert bed.wireguard_go_pids("b") == wg_pids  # the same daemons, adopted
    log = bed.sh("b", "sh", "-c", 'tail -n 40 "$(dirname "$MESHD_SOCKET")/meshd.log"')
    assert log.count("link.adopted") >= 2


def test_relayed_bytes_are_counted_on_both_sides_and_survive_restarts(bed: Bed) -> None:
    """DESIGN.md's counting point: b relays 50 pings a -> c and their replies; b counts
    them for a and for c, and a and c count the same from their side, by IP length. c
    also leaves by a's exit (a shares its uplink), so a little background crosses b.
    b's totals neither lose nor double anything across kill -9 and SIGTERM."""
    ids = {n: bed.status(n)["node_id"] for n in "abc"}
    keys = ("relayed_for_bytes", "relayed_to_bytes", "sent_bytes", "received_bytes")

    def usage(node: str, peer: str) -> tuple[int, ...]:
        for u in bed.status(node)["usage"]:
            if u["node_id"] == ids[peer]:
                return tuple(int(u[k]) for k in keys)
        return (0, 0, 0, 0)

    pairs = (("b", "a"), ("b", "c"), ("a", "b"), ("c", "b"))
    before = {p: usage(*p) for p in pairs}
    count, ip_length = 50, 1000 + 8 + 20
    c_mesh = bed.status("c")["mesh_ipv4"]
    bed.sh("a", "ping", "-q", "-c", str(count), "-i", "0.05", "-s", "1000", c_mesh)
    sent = count * ip_length  # each way: the requests a -> c, the replies c -> a
    expected = {
        ("b", "a"): (sent, sent, 0, 0),  # relayed for a (requests), to a (replies)
        ("b", "c"): (sent, sent, 0, 0),  # relayed for c (replies), to c (requests)
        ("a", "b"): (0, 0, sent, sent),  # a's own view of what b relayed
        ("c", "b"): (0, 0, sent, sent),
    }

    grown: dict[tuple[str, str], tuple[int, ...]] = {}

    def counted_all() -> bool:
        for p in pairs:
            grown[p] = tuple(n - o for n, o in zip(usage(*p), before[p], strict=True))
        return all(
            want <= got < want + BACKGROUND
            for p in pairs
            for got, want in zip(grown[p], expected[p], strict=True)
        )

    try:
        bed.wait("every side counted the pings", counted_all, within=20)
    finally:
        print("grown by:", grown)
    counted = usage("b", "a")[0]
    bed.run("kill", "b")  # the kernel's table outlives meshd: adopted, nothing lost
    bed.run("start", "b", "--wait")

    def kept() -> bool:
        return counted <= usage("b", "a")[0] < counted + BACKGROUND  # not lost, not twice

    bed.wait("b's totals after kill -9", kept, within=15)
    pid = bed.pid("b")
    assert pid
    os.kill(pid, signal.SIGTERM)  # saved, the table removed: the next start goes on
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and bed.pid("b") is not None:
        time.sleep(0.1)
    assert "meshd_links" not in bed.sh("b", "nft", "list", "tables")
    bed.run("start", "b", "--wait")
    bed.wait("b's totals after SIGTERM", kept, within=15)
    bed.run("wait-converged", "--timeout", "30")
