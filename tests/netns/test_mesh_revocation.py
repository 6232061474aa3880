"""A revocation handed to one node spreads to every node and cuts the revoked node off:
on a real 5-node ring (a-b-c-d-e-a), the testbed's admin revokes c through a's control
API; b and d, c's only neighbours, drop it, nobody routes to it, and the ring routes
around it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
Bed = meshbed.Bed


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("ring5.toml", "v", Bed) as b:
        yield b


def test_a_revocation_spreads_and_cuts_the_node_off_everywhere(bed: Bed, tmp_path: Path) -> None:
    from meshd.adapters import identity

    bed.wait(
        "every directory holds the five members",
        lambda: all(bed.status(n)["directory"]["members"] == 5 for n in "abcde"),
        within=30,
    )
    from meshd.core.membership import MeshDefinition, RevocationTarget, revoke

    admin = identity.load(bed.dir / "admin")
    mesh = MeshDefinition.decode((bed.dir / "nodes" / "a" / "state" / "mesh.cert").read_bytes())
    c = bed.status("c")
    record = revoke(
        admin.signing_key,
        mesh=mesh,
        target=RevocationTarget.node(c["node_id"]),
        revoked_at=int(time.time()) - 1,
    )
    path = tmp_path / "revoke-c.hex"
    path.write_text(record.encode().hex() + "\n")
    # A record that does not verify is refused whole, with the reason.
    tampered = tmp_path / "bad.hex"
    raw = record.encode()  # the last signature byte flipped (not set: it may be 0 already)
    tampered.write_text((raw[:-1] + bytes([raw[-1] ^ 1])).hex() + "\n")
    bad = bed.sh("a", "sh", "-c", f"meshd revocations add {tampered} 2>&1; echo rc=$?", check=False)
    assert "bad_signature" in bad and "rc=1" in bad, bad

    started = time.monotonic()
    out = bed.sh("a", "meshd", "revocations", "add", str(path))
    assert "1 new" in out

    def cut_off() -> bool:
        for node in "abde":
            s = bed.status(node)
            if any(r["prefix"] == f"{c['mesh_ipv4']}/32" for r in s["routes"]):
                return False
            if any(n["node_id"] == c["node_id"] for n in s["neighbours"]):
                return False
        return True

    took = bed.wait("every node drops c", cut_off, within=15)
    print(f"revocation of c took effect everywhere {took:.2f} s after it was handed to a")
    assert time.monotonic() - started < 15
    for node in "abde":  # kept across restarts
        assert (bed.dir / "nodes" / node / "state" / "revocations").read_bytes()
    b_log = (bed.dir / "nodes" / "b" / "meshd.log").read_text()
    assert "peer.dropped peer=c reason=revoked" in b_log
    # Its certificate leaves every node's directory too (checked every 10 s).
    bed.wait(
        "c leaves every directory",
        lambda: all(bed.status(n)["directory"]["members"] == 4 for n in "abde"),
        within=15,
    )
    # The ring routes around c: b reaches d the long way, through a and e.
    a_id, d = bed.status("a")["node_id"], bed.status("d")
    route = bed.route("b", f"{d['mesh_ipv4']}/32")
    assert route is not None and route["via"] == a_id
    bed.sh("b", "ping", "-c", "2", "-i", "0.2", "-W", "2", d["mesh_ipv4"])
    # c itself keeps dialling, and is refused at the handshake.
    bed.wait(
        "c is refused as revoked",
        lambda: "reason=revoked" in (bed.dir / "nodes" / "c" / "meshd.log").read_text(),
        within=40,
    )
    assert bed.status("c")["routes"] == []
