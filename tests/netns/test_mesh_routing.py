"""Babel over QUIC sessions on a real 5-node ring (a-b-c-d-e-a) of namespaces: routes to
every node across several hops, rerouting around a silently cut link, and a node whose
membership certificate does not verify getting no session and no route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
Bed = meshbed.Bed
MESH_TABLE = "176"  # routing.table: the mesh prefixes are looked up there, ahead of main


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("ring5.toml", "r", Bed) as b:
        yield b


def test_every_node_reaches_every_other_across_hops(bed: Bed) -> None:
    status = {n: bed.status(n) for n in "abcde"}
    ids = {s["node_id"]: n for n, s in status.items()}
    assert all(s["routing"] == "babel" for s in status.values())
    for name, s in status.items():
        prefixes = {r["prefix"] for r in s["routes"]}
        for other, o in status.items():
            if other != name:
                assert f"{o['mesh_ipv4']}/32" in prefixes and f"{o['mesh_ipv6']}/128" in prefixes
    # a -> c is two hops, through b (or e, d: three hops, so not chosen).
    to_c = bed.route("a", f"{status['c']['mesh_ipv4']}/32")
    assert (
        to_c is not None and ids[to_c["via"]] == "b" and meshbed.metric_is_hops(to_c["metric"], 2)
    )
    for addr in (status["c"]["mesh_ipv4"], status["c"]["mesh_ipv6"], status["d"]["mesh_ipv4"]):
        bed.sh("a", "ping", "-c", "2", "-i", "0.2", "-W", "2", addr)
    hops = bed.sh("a", "ping", "-c", "1", "-W", "2", status["c"]["mesh_ipv4"])
    assert "ttl=63" in hops  # forwarded once, by b


def test_a_reply_that_comes_back_another_way_arrives(bed: Bed) -> None:
    """a -> c goes through b; c's replies are sent round through d and e (a static route
    preferred over meshd's, in the mesh's table). Forwarded packets then arrive on a link
    that is not the one their source is routed over, which a reverse-path filter would
    drop."""
    a, c = bed.status("a"), bed.status("c")
    via_d = next(n["interface"] for n in c["neighbours"] if n["name"] == "d")
    static = (f"{a['mesh_ipv4']}/32", "dev", via_d, "metric", "10", "table", MESH_TABLE)
    bed.sh("c", "ip", "route", "add", *static)
    try:
        bed.sh("c", "ping", "-c", "1", "-W", "2", a["mesh_ipv4"])  # out through d and e
        out = bed.sh("a", "ping", "-c", "3", "-i", "0.2", "-W", "2", c["mesh_ipv4"])
        assert "ttl=62" in out  # the reply came back three hops: c, d, e
    finally:
        bed.sh("c", "ip", "route", "del", *static)


def test_a_cut_link_is_routed_around_and_back(bed: Bed) -> None:
    a_addr, b_addr = bed.status("a")["mesh_ipv4"], bed.status("b")["mesh_ipv4"]
    b_id, c_id, e_id = (bed.status(n)["node_id"] for n in "bce")
    bed.run("cut", "a", "b")
    try:
        # A flow into the cut link from each end, so that each end notices it: an idle link
        # is not asked, and b would send its replies to a's first pings into it.
        with bed.pinging("a", b_addr), bed.pinging("b", a_addr):
            bed.wait(
                "a routes to b through e",
                lambda: (bed.route("a", f"{b_addr}/32") or {}).get("via") == e_id,
                within=10,
            )
            bed.wait(
                "b routes to a through c",
                lambda: (bed.route("b", f"{a_addr}/32") or {}).get("via") == c_id,
                within=10,
            )
        assert meshbed.metric_is_hops(bed.route("a", f"{b_addr}/32")["metric"], 4)  # type: ignore[index]
        bed.sh("a", "ping", "-c", "3", "-i", "0.2", "-W", "2", b_addr)  # the long way round
    finally:
        bed.run("heal", "a", "b")
    bed.wait(
        "a routes to b directly again",
        lambda: (bed.route("a", f"{b_addr}/32") or {}).get("via") == b_id,
        within=15,
    )
    bed.run("wait-converged", "--timeout", "30")


def test_a_node_with_a_foreign_certificate_gets_no_session_and_no_route(
    bed: Bed, tmp_path: Path
) -> None:
    """c runs with a certificate from a forger's admin key (same mesh id and prefixes, and
    c pins the forger): b and d refuse it at the membership check, nobody routes to or
    through c, and the rest of the ring goes the other way round."""
    from meshd.adapters import identity
    from meshd.core.membership import (
        MembershipCertificate,
        MeshDefinition,
        create_mesh,
        issue_membership,
    )

    node_dir = bed.dir / "nodes" / "c"
    state = node_dir / "state"
    saved = {
        p: p.read_bytes()
        for p in (state / "membership.cert", state / "mesh.cert", node_dir / "meshd.toml")
    }
    cert = MembershipCertificate.decode(saved[state / "membership.cert"])
    mesh = MeshDefinition.decode(saved[state / "mesh.cert"])
    forger = identity.generate(tmp_path / "forger")
    forged_mesh = create_mesh(
        forger.signing_key,
        mesh_id=mesh.mesh_id,
        name=mesh.name,
        ipv4_prefix=mesh.ipv4_prefix,
        ipv6_prefix=mesh.ipv6_prefix,
        issued_at=mesh.issued_at,
    )
    forged = issue_membership(
        forger.signing_key,
        mesh=forged_mesh,
        node_id=cert.node_id,
        name="c",
        wireguard_public=cert.wireguard_public,
        mesh_ipv4=cert.mesh_ipv4,
        not_before=cert.not_before,
        expires_at=cert.expires_at,
        serial=99,
    )
    c_addr = bed.status("c")["mesh_ipv4"]
    d_addr = bed.status("d")["mesh_ipv4"]
    a_id = bed.status("a")["node_id"]
    try:
        bed.run("kill", "c")
        (state / "membership.cert").write_bytes(forged.encode())
        (state / "mesh.cert").write_bytes(forged_mesh.encode())
        config = saved[node_dir / "meshd.toml"].decode()
        (node_dir / "meshd.toml").write_text(config.replace(mesh.issuer, forger.node_id))
        bed.run("start", "c", "--wait")
        b_log = bed.dir / "nodes" / "b" / "meshd.log"
        bed.wait("b refuses c", lambda: "reason=unknown_issuer" in b_log.read_text(), 15)
        bed.wait(
            "b routes to d through a",
            lambda: (bed.route("b", f"{d_addr}/32") or {}).get("via") == a_id,
            within=15,
        )
        for node in "abde":
            assert bed.route(node, f"{c_addr}/32") is None, node
        # c's own routes from before its restart go once Babel has not learnt them again
        # within the grace of 10 s.
        bed.wait("c has no routes", lambda: bed.status("c")["routes"] == [], within=15)
        assert all(n["state"] != "up" for n in bed.status("c")["neighbours"])
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
        bed.run("kill", "c", check=False)
        bed.run("start", "c", "--wait")
        bed.run("wait-converged", "--timeout", "40")
