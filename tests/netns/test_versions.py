"""Two protocol versions side by side on real namespaces (issue 20, versions on the wire).

a - b - c - d over point-to-point links. a and b are this build as shipped (meshd/2, and
meshd/1 for older neighbours); c plays a node of the previous version (``[control]
protocols = ["meshd/1"]``: it neither offers meshd/2 nor sends CAPABILITIES); d refuses
neighbours that old (``protocols = ["meshd/2"]``). So a - b speak meshd/2, b - c meshd/1,
and c - d have no version in common.

The older node here is this build restricted to meshd/1 (no OriginSignature on its Babel
Updates, and it takes unsigned ones as meshd/1 did); a run against a binary built from the
commit before a wire change (from git) is a later step of the issue. c's routes carry no
origin signature, so a, two hops away, takes unsigned routes (``routing.unsigned_routes =
"accept"``, what a mesh that still has meshd/1 nodes sets); b takes c's own from c.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meshd.core.proto.session import FEATURES
from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
Bed = meshbed.Bed

TOPOLOGY = """
[nodes.a]
routing = { unsigned_routes = "accept" }
[nodes.b]
[nodes.c]
control = { protocols = ["meshd/1"] }
[nodes.d]
control = { protocols = ["meshd/2"] }
[[links]]
between = ["a", "b"]
[[links]]
between = ["b", "c"]
[[links]]
between = ["c", "d"]
"""
TALKING = "abc"  # d has no version in common with its only neighbour


@contextmanager
def versions_bed(tmp_path: Path) -> Iterator[Bed]:
    topology = tmp_path / "versions.toml"
    topology.write_text(TOPOLOGY)
    bed = Bed(f"vers{os.getpid() % 10000}")
    bed.run("down", check=False)
    try:
        bed.run("up", str(topology), "--wait")
        yield bed
    finally:
        bed.run("down", check=False)


def neighbour(status: dict[str, Any], name: str) -> dict[str, Any]:
    found = [n for n in status["neighbours"] if n["name"] == name]
    assert found, f"{status['name']} lists no neighbour {name}: {status['neighbours']}"
    return found[0]


def converged(bed: Bed) -> bool:
    """a, b and c route to each other and list their links among themselves up."""
    statuses = {n: bed.status(n) for n in TALKING}
    for name, s in statuses.items():
        others = {o["mesh_ipv4"] for n, o in statuses.items() if n != name}
        routed = {r["prefix"].removesuffix("/32") for r in s["routes"]}
        links = [n for n in s["neighbours"] if n["name"] in TALKING]
        if not others <= routed or len(links) != (1 if name != "b" else 2):
            return False
        if any(n["state"] != "up" for n in links):
            return False
    return True


def refused_both_ways(bed: Bed) -> bool:
    """c and d each counted a dial of the other refused for its version."""
    for me, other in (("c", "d"), ("d", "c")):
        n = neighbour(bed.status(me), other)
        if not n["refusals"].get("version_unsupported"):
            return False
    return True


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with versions_bed(tmp_path_factory.mktemp("versions")) as bed:
        took = bed.wait("a, b, c converged", lambda: converged(bed), within=40)
        print(f"a mesh of two versions converged in {took:.1f} s")
        yield bed


def test_each_link_speaks_the_newest_version_both_ends_know(bed: Bed) -> None:
    a, b, c = (bed.status(n) for n in "abc")
    features = sorted(FEATURES)  # every feature of this build, both ends being this build
    expect = [
        (a, "b", "meshd/2", features),
        (b, "a", "meshd/2", features),
        (b, "c", "meshd/1", []),  # the older node: nothing new is sent to it
        (c, "b", "meshd/1", []),
    ]
    for status, peer, protocol, features in expect:
        n = neighbour(status, peer)
        control = n["control"]
        where = f"{status['name']} -> {peer}"
        assert (control["protocol"], control["features"]) == (protocol, features), where
        assert n["state"] == "up" and n["refusals"] == {}, (where, n)
    log = (bed.dir / "nodes" / "b" / "meshd.log").read_text()
    assert "peer=c" in log and "protocol=meshd/1" in log


def test_routes_cross_the_version_boundary(bed: Bed) -> None:
    a, c = bed.status("a"), bed.status("c")
    for src, dst in (("a", c), ("c", a)):
        for address in (dst["mesh_ipv4"], dst["mesh_ipv6"]):
            out = bed.sh(src, "ping", "-c", "3", "-i", "0.2", "-W", "2", address)
            assert " 0% packet loss" in out, (src, address, out)
    route = bed.route("a", f"{c['mesh_ipv4']}/32")
    assert route is not None and route["via"] == bed.status("b")["node_id"]


def test_a_neighbour_with_no_version_in_common_is_refused_with_the_reason(bed: Bed) -> None:
    took = bed.wait("c and d refused each other", lambda: refused_both_ways(bed), within=30)
    print(f"c and d refused each other within {took:.1f} s")
    for me, other in (("c", "d"), ("d", "c")):
        n = neighbour(bed.status(me), other)
        assert n["state"] == "down", n
        assert n["control"]["refusal"] == "version_unsupported", n
        assert n["control"]["session"] == "down" and n["control"]["protocol"] is None, n
        assert set(n["refusals"]) == {"version_unsupported"}, n
    # The refusing side says so in its log too, though it cannot name a node it never
    # saw a certificate of.
    for node in "cd":
        log = (bed.dir / "nodes" / node / "meshd.log").read_text()
        assert "session.refused" in log and "reason=version_unsupported" in log, node
    d = bed.status("d")
    assert {r["prefix"] for r in d["routes"]} <= {f"{d['mesh_ipv4']}/32", f"{d['mesh_ipv6']}/128"}
