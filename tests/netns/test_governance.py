"""A mesh governed by two of three admins (issue 27), on real namespaces.

d - a - b - c; the admins are the testbed's key, a and b, and the mesh's definition wants
two of them to sign a change or a revocation (the topology's ``threshold``). One admin
alone changes nothing: ``meshd admin-key rotate`` and ``meshd revoke`` make a proposal,
which every node holds (``meshd proposals``) and none enforces, and what it signed, handed
to every node's daemon, is refused there (``short_of_quorum``); a proposal its admin
withdrew can no longer be carried. With ``meshd admin-key approve`` by a second admin (a
proposal passed by hand) or ``meshd proposals sign`` (one spread over the mesh), a change
takes effect mesh-wide. A release, too, needs two admins' signatures (`meshd release
sign`) before any node takes it.
An admin removed that way counts for nothing: a definition or a revocation it co-signs
with one admin in force is refused everywhere, and it can no longer approve. A restarted
node comes back under the definition in force, and a revocation two admins signed cuts a
node off everywhere. The definition's emergency threshold is 1: one admin alone may
revoke e as an emergency, which every node counts in its status."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.adapters import identity
from meshd.api.client import ControlClient, ControlError
from meshd.core.membership import Cosigned, MeshDefinition, Revocation
from meshd.core.membership.rotation import rotate_mesh
from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
Bed = meshbed.Bed

QUORUM = """
threshold = 2
emergency_threshold = 1
[nodes.a]
admin = true
[nodes.b]
admin = true
[nodes.c]
[nodes.d]
[nodes.e]
[[links]]
between = ["a", "b"]
[[links]]
between = ["b", "c"]
[[links]]
between = ["d", "a"]
[[links]]
between = ["e", "a"]
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    topology = tmp_path_factory.mktemp("quorum") / "quorum.toml"
    topology.write_text(QUORUM)
    with meshbed.testbed(topology, "gov", Bed) as bed:
        bed.learn("abcde")
        yield bed


def client(bed: Bed, node: str) -> ControlClient:
    return ControlClient(bed.dir / "nodes" / node / "meshd.sock")


def mesh_everywhere(bed: Bed) -> set[tuple[int, frozenset[str], int]]:
    """The (serial, admins, threshold) each node holds."""
    return {
        (m["serial"], frozenset(m["admins"]), m["threshold"])
        for m in (bed.status(n)["mesh"] for n in "abcde")
    }


def hand_in(bed: Bed, node: str, signed: bytes) -> str:
    """``signed`` handed to ``node``'s daemon: its refusal's reason code ("" if taken)."""
    try:
        client(bed, node).mesh_definition([signed])
    except ControlError as exc:
        return exc.code
    return ""


def proposal_id(out: str) -> str:
    found = re.search(r"^proposal (\w+): ", out, re.M)
    assert found, out
    return found[1]


def held_everywhere(bed: Bed, pid: str, signed: int, withdrawn: bool = False) -> bool:
    """Whether every node holds proposal ``pid`` with ``signed`` admins' signatures."""
    for node in "abcde":
        held = {p["id"]: p for p in client(bed, node).proposals()}
        if pid not in held or held[pid]["withdrawn"] != withdrawn:
            return False
        if not withdrawn and len(held[pid]["signed_by"]) != signed:
            return False
    return True


def test_one_admin_alone_changes_nothing(bed: Bed, tmp_path: Path) -> None:
    a, b = bed.ids["a"], bed.ids["b"]
    (first,) = mesh_everywhere(bed)
    assert first[0] == 1 and first[2] == 2 and {a, b} < first[1] and len(first[1]) == 3
    # Alone, a proposes to drop b and the quorum: every node holds it, none enforces it.
    out = bed.sh("a", "meshd", "admin-key", "rotate", "--remove", b, "--threshold", "1")
    assert "signed by 1 of the 2" in out and "meshd proposals sign" in out, out
    pid = proposal_id(out)
    took = bed.wait("the proposal on every node", lambda: held_everywhere(bed, pid, 1), 10)
    print(f"a proposal on every node in {took:.1f} s")
    listed = bed.sh("e", "meshd", "proposals")
    assert pid in listed and "1 of 2" in listed and "serial 2" in listed, listed
    # a takes it back: withdrawn everywhere, and no second signature can carry it now.
    out = bed.sh("a", "meshd", "proposals", "withdraw", pid)
    assert "withdrawn" in out, out
    bed.wait("withdrawn everywhere", lambda: held_everywhere(bed, pid, 0, withdrawn=True), 10)
    late = bed.sh("b", "sh", "-c", f"meshd proposals sign {pid} 2>&1; echo rc=$?", check=False)
    assert "withdrawn" in late and "rc=1" in late, late
    coup = tmp_path / "coup.def"
    out = bed.sh(
        "a", "meshd", "admin-key", "rotate", "--remove", b, "--threshold", "1", "--out", str(coup)
    )
    assert "signed by 1 of the 2" in out, out
    for node in "abcde":
        assert hand_in(bed, node, coup.read_bytes()) == "short_of_quorum"
    # Nor can it revoke: d is cut off by no one's word alone (the proposal stays held).
    out = bed.sh("a", "meshd", "revoke", "d")
    assert "signed by 1 of the 2" in out, out
    pid = proposal_id(out)
    bed.wait("the revocation proposed everywhere", lambda: held_everywhere(bed, pid, 1), 10)
    revocation = tmp_path / "revoke-d.rev"
    bed.sh("a", "meshd", "revoke", "d", "--out", str(revocation))
    for node in "abcde":
        added = f"meshd revocations add {revocation} 2>&1; echo rc=$?"
        out = bed.sh(node, "sh", "-c", added, check=False)
        assert "short_of_quorum" in out and "rc=1" in out, out
        assert client(bed, node).revocations() == []
    assert mesh_everywhere(bed) == {first}


def test_a_release_needs_two_admins_signatures(bed: Bed, tmp_path: Path) -> None:
    """`meshd release make` on a signs a release alone: no node's daemon takes it. Once b
    co-signs it (`meshd release sign`), published on a it reaches every node."""
    artifact = tmp_path / "meshd-9.9.9-py3-none-any.whl"
    artifact.write_bytes(os.urandom(100_000))
    manifest = tmp_path / "release.manifest"
    make = ["release", "make", str(artifact), "--version", "9.9.9", "--serial", "1"]
    out = bed.sh("a", "meshd", *make, "--out", str(manifest))
    assert "1 more with `meshd release sign" in out, out
    for node in "abcde":
        with pytest.raises(ControlError) as refused:
            client(bed, node).publish_release(manifest.read_bytes())
        assert refused.value.code == "release_short_of_quorum", refused.value
    publish = f"meshd release publish {manifest} {artifact} 2>&1; echo rc=$?"
    out = bed.sh("a", "sh", "-c", publish, check=False)
    assert "signed by 1 admin(s), the mesh asks for 2" in out and "rc=1" in out, out
    out = bed.sh("b", "meshd", "release", "sign", str(manifest))
    assert "signed for this mesh by 2 of its admins (2 needed)" in out, out
    out = bed.sh("a", "meshd", "release", "publish", str(manifest), str(artifact))
    assert "published" in out, out

    def everywhere() -> bool:
        return all((bed.status(n)["releases"]["held"] or {}).get("serial") == 1 for n in "bcde")

    took = bed.wait("the release on every node", everywhere, 60)
    print(f"a release two admins signed on every node in {took:.1f} s")


def test_two_admins_change_it_and_a_removed_one_counts_for_nothing(
    bed: Bed, tmp_path: Path
) -> None:
    a, b, c = bed.ids["a"], bed.ids["b"], bed.ids["c"]
    (first,) = mesh_everywhere(bed)
    testbed_admin = next(iter(first[1] - {a, b}))
    # a proposes c as an admin, b approves: in force everywhere.
    proposal = tmp_path / "add-c.def"
    bed.sh("a", "meshd", "admin-key", "rotate", "--add", c, "--out", str(proposal))
    out = bed.sh("b", "meshd", "admin-key", "approve", str(proposal))
    assert "serial 2 in force, signed by 2 admins" in out, out
    second = (2, first[1] | {c}, 2)
    took = bed.wait("serial 2 everywhere", lambda: mesh_everywhere(bed) == {second}, within=10)
    print(f"serial 2 (2 of 3 signatures) in force everywhere in {took:.1f} s")
    # a and c remove b.
    bed.sh("a", "meshd", "admin-key", "rotate", "--remove", b, "--out", str(proposal))
    out = bed.sh("c", "meshd", "admin-key", "approve", str(proposal))
    assert "serial 3 in force" in out, out
    third = (3, second[1] - {b}, 2)
    bed.wait("serial 3 everywhere", lambda: mesh_everywhere(bed) == {third}, within=10)
    # b, removed, and the testbed's key (still an admin) sign a coup: one signature counts.
    key_of_b = identity.load(bed.dir / "nodes" / "b" / "state").signing_key
    key_of_testbed = identity.load(bed.dir / "admin").signing_key
    held = MeshDefinition.from_json(client(bed, "a").mesh_definition().definition)
    assert held.serial == 3 and testbed_admin in held.admins
    coup = rotate_mesh(
        key_of_testbed, held, remove=[a, c], add=[b], threshold=1, issued_at=held.issued_at + 1
    )
    forked = Cosigned(coup).cosign(key_of_b).encode()
    for node in "abcde":
        assert hand_in(bed, node, forked) == "short_of_quorum"
    later = tmp_path / "later.def"
    bed.sh("a", "meshd", "admin-key", "rotate", "--threshold", "1", "--out", str(later))
    not_admin = bed.sh(
        "b", "sh", "-c", f"meshd admin-key approve {later} 2>&1; echo rc=$?", check=False
    )
    assert "holds no admin key" in not_admin and "rc=1" in not_admin, not_admin
    assert mesh_everywhere(bed) == {third}
    # A restarted node comes back under the definition in force.
    bed.run("kill", "c")
    bed.run("start", "c", "--wait")
    bed.wait("c back", lambda: bed.status("c")["neighbours"][0]["state"] == "up", within=30)
    assert mesh_everywhere(bed) == {third}


def test_two_admins_revoke_and_a_removed_one_cannot_help(bed: Bed, tmp_path: Path) -> None:
    (held,) = mesh_everywhere(bed)
    assert held[0] == 3 and bed.ids["b"] not in held[1]  # after the changes above
    # a's proposal to revoke d (the first test's) is still held, signed by a alone.
    (proposed,) = [p for p in client(bed, "c").proposals() if "revocation" in p["what"]]
    pid = proposed["id"]
    revocation = tmp_path / "revoke-d.rev"
    bed.sh("a", "meshd", "revoke", "d", "--out", str(revocation))
    with_b = tmp_path / "with-b.rev"
    key_of_b = identity.load(bed.dir / "nodes" / "b" / "state").signing_key
    with_b.write_bytes(
        Cosigned.decode(revocation.read_bytes(), Revocation).cosign(key_of_b).encode()
    )
    for node in "abcde":
        added = f"meshd revocations add {with_b} 2>&1; echo rc=$?"
        assert "short_of_quorum" in bed.sh(node, "sh", "-c", added, check=False)
    # b, removed, has no admin key to sign a proposal with; c has, and carries it.
    not_admin = bed.sh("b", "sh", "-c", f"meshd proposals sign {pid} 2>&1; echo rc=$?", check=False)
    assert "holds no admin key" in not_admin and "rc=1" in not_admin, not_admin
    out = bed.sh("c", "meshd", "proposals", "sign", pid)
    assert "carries its quorum" in out, out

    def revoked_everywhere() -> bool:
        for node in "abc":
            held = [r.get("record", r) for r in client(bed, node).revocations()]
            if [r["target"].get("node_id") for r in held] != [bed.ids["d"]]:
                return False
        return all(n["node_id"] != bed.ids["d"] for n in bed.status("a")["neighbours"])

    took = bed.wait("d revoked on a, b and c, and cut off", revoked_everywhere, within=15)
    print(f"a proposal's second signature in force on every node in {took:.1f} s")
    bed.wait(
        "the carried proposal forgotten",
        lambda: all(not client(bed, n).proposals() for n in "abce"),
        within=10,
    )


def test_one_admin_cuts_a_node_off_in_an_emergency_and_everyone_sees_it(bed: Bed) -> None:
    out = bed.sh("a", "meshd", "revoke", "e", "--emergency")
    assert out.startswith("emergency: revoked e "), out

    def cut_off() -> bool:
        meshes = [bed.status(n)["mesh"] for n in "abc"]
        return all(m["emergency_revoked"] == [bed.ids["e"]] for m in meshes) and all(
            n["node_id"] != bed.ids["e"] for n in bed.status("a")["neighbours"]
        )

    took = bed.wait("e's emergency revocation on a, b and c", cut_off, within=15)
    print(f"an emergency revocation by 1 admin in force on every node in {took:.1f} s")
    flagged = [r.get("record", r) for r in client(bed, "c").revocations()]
    assert [r["target"]["node_id"] for r in flagged if r.get("emergency")] == [bed.ids["e"]]
