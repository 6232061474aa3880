"""The mesh's own routing table (DESIGN.md, Trust) on a real 3-node line (a - b - c; a
shares its uplink, b and c leave by its exit): Babel's routes live in table 176, two rules
at preference 1050 send only the mesh prefixes there, so a route for half the internet put
in that table (as a member announcing 0.0.0.0/1 would) moves none of a node's traffic
outside the mesh; the rules survive kill -9 once each and go with a clean stop."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD

TABLE = "176"  # routing.table
PROTO = "176"  # routing.route_protocol
RULES = [
    "1050:\tfrom all to 10.77.0.0/16 lookup 176",
    "1050:\tfrom all to fd6d:6573:6864::/48 lookup 176",
]


class Bed(meshbed.Bed):
    def rules(self, node: str) -> list[str]:
        """Every rule, IPv4 and IPv6, that looks up the mesh table."""
        out = self.sh(node, "ip", "-4", "rule") + self.sh(node, "ip", "-6", "rule")
        return [line.strip() for line in out.splitlines() if f"lookup {TABLE}" in line]

    def table(self, node: str, *where: str) -> list[str]:
        v4 = self.sh(node, "ip", "-4", "route", "show", *where)
        v6 = self.sh(node, "ip", "-6", "route", "show", *where)
        return sorted(v4.splitlines() + v6.splitlines())

    def via(self, node: str, address: str, *extra: str) -> str:
        """The interface the node's kernel would send a packet to ``address`` out of."""
        out = json.loads(self.sh(node, "ip", "-j", "route", "get", address, *extra))
        return str(out[0]["dev"])

    def link_to(self, node: str, peer: str) -> str:
        return next(n["interface"] for n in self.status(node)["neighbours"] if n["name"] == peer)

    def stop(self, node: str) -> None:
        """SIGTERM: meshd's own teardown."""
        pid = self.pid(node)
        assert pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.pid(node) is not None:
            time.sleep(0.1)
        assert self.pid(node) is None


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("line3.toml", "mt", Bed) as b:
        for node in "bc":
            b.wait(
                f"{node} leaves by a's exit",
                lambda n=node: b.status(n)["gateway"].get("using") == "exit",
                15,
            )
        yield b


def test_mesh_routes_live_in_their_own_table_behind_two_rules(bed: Bed) -> None:
    status = {n: bed.status(n) for n in "abc"}
    for name, s in status.items():
        assert bed.rules(name) == RULES, bed.rules(name)
        assert bed.table(name, "proto", PROTO) == []  # the main table holds none of them
        in_table = bed.table(name, "table", TABLE)
        others = [o for other, o in status.items() if other != name]
        destinations = sorted(line.split()[0] for line in in_table)
        wanted = [a for o in others for a in (o["mesh_ipv4"], o["mesh_ipv6"])]
        assert destinations == sorted(wanted), in_table
        assert all(f"proto {PROTO}" in line for line in in_table), in_table
        # `meshd status` reads them from there: the contract's routes are unchanged.
        assert sorted(r["prefix"] for r in s["routes"]) == sorted(
            [f"{o['mesh_ipv4']}/32" for o in others] + [f"{o['mesh_ipv6']}/128" for o in others]
        )
        for o in others:
            for address in (o["mesh_ipv4"], o["mesh_ipv6"]):
                bed.sh(name, "ping", "-c", "2", "-i", "0.2", "-W", "2", address)


def test_the_exit_tunnel_never_carries_mesh_traffic_but_dns_to_its_gateway(bed: Bed) -> None:
    """c leaves by a's exit: the tunnel's own packets to a's mesh address (they carry the
    exit's fwmark) and every other packet to it go over the mesh link to b, not into the
    tunnel, while the internet goes into the tunnel, and so does c's DNS to a (where the
    firewall sends it): no relay reads it. DNS to another mesh address is mesh traffic."""
    a_mesh, b_mesh = bed.status("a")["mesh_ipv4"], bed.status("b")["mesh_ipv4"]
    link = bed.link_to("c", "b")
    assert bed.via("c", a_mesh) == link
    assert bed.via("c", a_mesh, "mark", str(0x4D58)) == link
    assert bed.via("c", "8.8.8.8").endswith("xu")
    for proto in ("udp", "tcp"):
        dns = ("ipproto", proto, "dport", "53")
        assert bed.via("c", a_mesh, *dns).endswith("xu")
        assert bed.via("c", a_mesh, *dns, "mark", str(0x4D58)) == link
        assert bed.via("c", b_mesh, *dns) == link
    assert bed.via("c", a_mesh, "ipproto", "udp", "dport", "54") == link


def test_a_route_for_half_the_internet_in_the_mesh_table_moves_nothing(bed: Bed) -> None:
    """What a member announcing 0.0.0.0/1 and 128.0.0.0/1 would get installed (Babel
    refuses it; here it is put in by hand): the mesh table is looked up for the mesh
    prefixes only, so a's traffic still leaves by its uplink and c's by the exit tunnel."""
    internet = json.loads(bed.run("status", "--json"))["internet"]["address"]
    uplink = bed.status("a")["gateway"]["uplink"]["interface"]
    targets = (internet, "8.8.8.8", "1.1.1.1")
    before = {(n, t): bed.via(n, t) for n in "ac" for t in targets}
    assert {before[("a", t)] for t in targets} == {uplink}, before
    assert all(before[("c", t)].endswith("xu") for t in targets), before
    hijack = {"a": bed.link_to("a", "b"), "c": bed.link_to("c", "b")}
    added: list[tuple[str, str, str, str]] = []
    try:
        for node, link in hijack.items():
            for half in ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"):
                bed.sh(node, "ip", "route", "add", half, "dev", link, "table", TABLE)
                added.append((node, half, link, TABLE))
        assert {(n, t): bed.via(n, t) for n in "ac" for t in targets} == before
        bed.sh("a", "ping", "-c", "2", "-i", "0.2", "-W", "2", internet)
        bed.sh("c", "ping", "-c", "2", "-i", "0.2", "-W", "2", internet)  # through the exit
        # The mesh is still routed by its own table.
        c_mesh = bed.status("c")["mesh_ipv4"]
        bed.sh("a", "ping", "-c", "2", "-i", "0.2", "-W", "2", c_mesh)
        # Where meshd used to put its routes, the same route would have taken a's traffic.
        bed.sh("a", "ip", "route", "add", "0.0.0.0/1", "dev", hijack["a"])
        added.append(("a", "0.0.0.0/1", hijack["a"], "main"))
        assert bed.via("a", "8.8.8.8") == hijack["a"]
    finally:
        for node, half, link, table in added:
            bed.sh(node, "ip", "route", "del", half, "dev", link, "table", table, check=False)


def test_rules_survive_kill9_once_each_and_go_with_a_clean_stop(bed: Bed) -> None:
    routes = bed.table("b", "table", TABLE)
    assert len(routes) == 4
    bed.run("kill", "b")
    assert bed.rules("b") == RULES  # the kernel goes on routing the mesh meanwhile
    bed.run("start", "b")
    bed.run("wait-converged", "--timeout", "30")
    assert bed.rules("b") == RULES  # adopted: not twice
    assert bed.table("b", "table", TABLE) == routes
    assert bed.table("b", "proto", PROTO) == []
    bed.stop("b")
    assert bed.rules("b") == []
    assert bed.table("b", "table", TABLE) == []
    assert bed.table("b", "table", "all", "proto", PROTO) == []
    bed.run("start", "b", "--wait")
    bed.run("wait-converged", "--timeout", "30")
    assert bed.rules("b") == RULES
