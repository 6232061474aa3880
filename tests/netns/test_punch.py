"""Households that meet only over the internet, each behind its own NAT
(netns-testbed/topologies/punch.toml, issue 25): a has a public uplink; c and e sit behind
routers that keep ports, f behind one that picks a random port per destination, g behind
one that forwards meshd's ports to it, h behind a router and a carrier's NAT (CGNAT), d
beside c behind c's router (which does not hairpin), b behind one that maps each inner
port to one outer port, but meshd's into another range. All dial a; a tells each where the
others' sessions come from (and where each says it is on its home network), and two told
at once dial each other at once, so that each NAT has seen its own side's packets before
the other's arrive; g's router lets every dial in; c and d meet on their home network."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
PUBLIC = {"a": "198.51.100.10", "c": "198.51.100.11", "e": "198.51.100.12", "f": "198.51.100.13"}
NODES = "acdefghb"


class Bed(meshbed.Bed):
    def verified_count(self, node: str, peer: str) -> int:
        log = (self.dir / "nodes" / node / "meshd.log").read_text()
        return len(re.findall(rf"^\S+ \S+ INFO peer\.verified peer={peer} ", log, re.M))

    def verified_at(self, node: str, peer: str) -> float:
        """When ``node``'s log first says ``peer`` verified (Unix seconds)."""
        return self.logged_at(node, "peer.verified", peer)

    def logged_at(self, node: str, event: str, peer: str) -> float:
        """When ``node``'s log first has ``event`` of ``peer`` (Unix seconds)."""
        log = (self.dir / "nodes" / node / "meshd.log").read_text()
        found = re.search(rf"^(\S+ \S+) INFO {re.escape(event)} peer={peer}( |$)", log, re.M)
        assert found, f"{node} never logged {event} of {peer}"
        return datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("punch.toml", "p", Bed) as b:
        b.learn(NODES)
        yield b


def test_two_nodes_behind_port_keeping_nats_punch_a_direct_link(bed: Bed) -> None:
    bed.wait(
        "c and e hold a link of their own",
        lambda: bed.neighbours("c").get("e", {}).get("state") == "up",
        within=30,
    )
    e = bed.neighbours("c")["e"]
    assert e["control"]["address"] == f"{PUBLIC['e']}:6697", e  # e's router, its port kept
    assert "shared" in e["control"]["found_by"] and "bootstrap" not in e["control"]["found_by"]
    assert e["control"]["reached"] == "punched", e
    assert bed.neighbours("c")["a"]["control"]["reached"] == "bootstrap"
    route = bed.route("c", f"{bed.ips['e']}/32")
    assert route is not None and route["via"] == bed.ids["e"], route  # direct: not via a
    assert meshbed.metric_is_hops(route["metric"], 1), route
    # Both were in the mesh (their sessions with a verified) before they met.
    both_in = max(bed.verified_at("c", "a"), bed.verified_at("e", "a"))
    met = min(bed.verified_at("c", "e"), bed.verified_at("e", "c"))
    print(f"c and e verified each other {met - both_in:.2f} s after both were in the mesh")
    assert met >= both_in


def test_a_node_behind_a_port_randomising_nat_is_reached_through_a_relay(bed: Bed) -> None:
    """f's router gives each destination a new port: what a saw of f is no use to c or
    e, so no direct link comes; every pair still reaches every other, f through a node
    that holds a link with it: a (public) or g (port-forwarded), two hops either way."""
    time.sleep(5)  # what c and e try towards f has had its time
    relays = {bed.ids["a"], bed.ids["g"]}
    for node in "ce":
        assert "f" not in {
            name for name, n in bed.neighbours(node).items() if n["state"] == "up"
        }, node
        route = bed.route(node, f"{bed.ips['f']}/32")
        assert route is not None and route["via"] in relays, route
        assert meshbed.metric_is_hops(route["metric"], 2), route
    for one in NODES:
        for two in NODES:
            if one != two:
                out = bed.sh(one, "ping", "-n", "-c", "1", "-W", "2", bed.ips[two], check=False)
                assert " 1 received" in out, (one, two, out)


def test_every_node_reaches_a_port_forwarded_node_directly(bed: Bed) -> None:
    """g's router forwards meshd's ports to it: every node's dial reaches g, f's from
    behind its hard NAT too (f's router lets g's answers in, and g's WireGuard follows
    f's packets to the port f's router gave them)."""
    for node in "abcdefh":

        def linked(node: str = node) -> bool:
            return bed.neighbours(node).get("g", {}).get("state") == "up"

        took = bed.wait(f"{node} holds a link of its own with g", linked, within=30)
        route = bed.route(node, f"{bed.ips['g']}/32")
        assert route is not None and route["via"] == bed.ids["g"], (node, route)
        print(f"{node}-g direct {took:.1f} s into the wait")


def test_two_nodes_behind_one_router_link_over_their_home_network(bed: Bed) -> None:
    """c's router does not send back what c sends to its public address, so d's session
    as a sees it (that address, another port) is no use to c: each says where it is on
    its home network, a passes it on, and the two link there."""
    bed.wait(
        "c and d hold a link of their own",
        lambda: bed.neighbours("c").get("d", {}).get("state") == "up",
        within=30,
    )
    d = bed.neighbours("c")["d"]
    assert d["control"]["address"] == "192.168.1.3:6697", d  # d's own address, at home
    assert d["control"]["reached"] == "home_network", d
    assert bed.neighbours("d")["c"]["control"]["reached"] == "home_network"
    route = bed.route("c", f"{bed.ips['d']}/32")
    assert route is not None and route["via"] == bed.ids["d"], route
    assert meshbed.metric_is_hops(route["metric"], 1), route
    both_in = max(bed.verified_at("c", "a"), bed.verified_at("d", "a"))
    met = min(bed.verified_at("c", "d"), bed.verified_at("d", "c"))
    print(f"c and d verified each other {met - both_in:.2f} s after both were in the mesh")


def test_a_node_behind_a_carriers_nat_punches_as_one_behind_a_home_router(bed: Bed) -> None:
    """h's packets cross its router and its carrier's NAT, both keeping ports: c and e
    punch a direct link with it as they do with each other."""
    for node in "ce":

        def linked(node: str = node) -> bool:
            return bed.neighbours(node).get("h", {}).get("state") == "up"

        bed.wait(f"{node} and h hold a link of their own", linked, within=30)
        h = bed.neighbours(node)["h"]
        assert h["control"]["address"] == "198.51.100.16:6697", h  # the carrier's address
        assert h["control"]["reached"] == "punched", h
        route = bed.route(node, f"{bed.ips['h']}/32")
        assert route is not None and route["via"] == bed.ids["h"], route
        both_in = max(bed.verified_at(node, "a"), bed.verified_at("h", "a"))
        met = min(bed.verified_at(node, "h"), bed.verified_at("h", node))
        print(f"{node} and h verified each other {met - both_in:.2f} s after both were in")


def test_a_node_behind_a_nat_that_moves_its_ports_links_on_the_moved_port(bed: Bed) -> None:
    """b's router maps meshd's ports 10000 higher, the same for every destination: b's
    link port is not the one b says. c and e see b's session come from 16697 while b says
    it listens on 6697 at home, try b's link port moved as far, and link."""
    for node in "ce":

        def direct(node: str = node) -> bool:
            route = bed.route(node, f"{bed.ips['b']}/32")
            up = bed.neighbours(node).get("b", {}).get("state") == "up"
            return up and route is not None and route["via"] == bed.ids["b"]

        bed.wait(f"{node} routes to b over a link of their own", direct, within=30)
        b = bed.neighbours(node)["b"]
        assert b["control"]["address"] == "198.51.100.17:16697", b
        host, port = b["endpoint"].rsplit(":", 1)
        assert host == "198.51.100.17" and int(port) >= 61820, b  # the moved range
        both_in = max(bed.verified_at(node, "a"), bed.verified_at("b", "a"))
        linked = bed.logged_at(node, "babel.link_up", "b") - both_in
        print(f"{node}'s link to b carried Babel {linked:.1f} s after both were in the mesh")


def test_a_restarted_node_punches_its_direct_link_again(bed: Bed) -> None:
    """c's meshd is killed and started again: a tells c and e of each other once more as
    c's session with a verifies, and the two punch a new session through their NATs
    (the link's interfaces outlive a kill -9 and are adopted)."""
    before = bed.verified_count("e", "c")
    bed.run("kill", "c")
    bed.run("start", "c")
    took = bed.wait(
        "e verifies c's new session", lambda: bed.verified_count("e", "c") > before, within=30
    )
    print(f"e verified c's new session {took:.1f} s after c's meshd was killed and started")
    bed.wait("c's link to e is up", lambda: bed.neighbours("c")["e"]["state"] == "up", 15)
    route = bed.route("e", f"{bed.ips['c']}/32")
    assert route is not None and route["via"] == bed.ids["c"], route


def test_the_results_as_a_table(bed: Bed) -> None:
    """Each pair: how one reaches the other (its session's kind, or the relay its route
    goes by), as a table; every pair reaches every other, directly but where f's NAT (a
    new port per destination) meets another that lets in only replies. b's NAT moves
    meshd's ports into another range: its sessions punch (a saw their port), and its
    links, on the port b says, do not; the other end then tries that port moved as far
    as b's session port moved from the one b says it listens on, and they do."""
    relayed = {frozenset(("f", n)) for n in "bcdeh"}
    kinds = dict(zip(NODES, ("public", "masquerade", "behind c", "masquerade", "random",
                             "forwarded", "cgnat", "ranged"), strict=True))  # fmt: skip
    pairs = [(one, two) for one in NODES for two in NODES if one != two]

    def linked() -> bool:  # c's restart just before: its links are back within seconds
        up = {n: bed.neighbours(n) for n in NODES}
        return all(
            up[one].get(two, {}).get("state") == "up"
            for one, two in pairs
            if frozenset((one, two)) not in relayed
        )

    bed.wait("every pair that can link holds its link", linked, within=30)
    rows = [" " * 14 + "".join(f"{n:>14}" for n in NODES)]
    for one in NODES:
        neighbours = bed.neighbours(one)
        cells = []
        for two in NODES:
            if one == two:
                cells.append("-")
                continue
            direct = neighbours.get(two, {})
            if direct.get("state") == "up":
                cells.append(direct["control"]["reached"])
                assert frozenset((one, two)) not in relayed, (one, two)
                continue
            route = bed.route(one, f"{bed.ips[two]}/32")
            assert route is not None, (one, two)
            cells.append(f"via {bed.name_of(route['via'])}")
            assert frozenset((one, two)) in relayed, (one, two, direct)
        rows.append(f"{one} {kinds[one]:<12}" + "".join(f"{c:>14}" for c in cells))
    print("\n" + "\n".join(rows))
