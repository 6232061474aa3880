"""The admin quorum (issue 27): a definition that sets a threshold, the signatures other
admins add to the next one, which count, a definition a neighbour sends before its
certificate verifies (held, then adopted only from a member), and revocations, which take
the same quorum (co-signatures merged as they spread, judged again when the admins
change, and verified offline in a receipts export)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.core.membership import (
    Cosigned,
    MembershipError,
    MeshDefinition,
    MeshTrust,
    Reason,
    RevocationKind,
    RevocationSet,
    RevocationTarget,
    create_mesh,
    issue_membership,
    revoke,
)
from meshd.core.membership.canonical import MessageType
from meshd.core.membership.rotation import adopt, chain_anchors, rotate_mesh
from meshd.core.proto import session
from meshd.core.receipts.errors import ReceiptReason
from meshd.core.receipts.export import export_lines
from meshd.core.receipts.verify import verify_export
from meshd.core.transport.events import SessionUp
from tests.unit.daemon.test_control_plane import NOW, World

A, B, C, D = (SigningKey(bytes([n]) * 32) for n in (31, 32, 33, 34))


def nid(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


def two_of_three(signer: SigningKey = A) -> MeshDefinition:
    return create_mesh(
        signer,
        mesh_id=b"K" * 16,
        name="quorum",
        ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
        ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
        issued_at=NOW,
        other_admins=[nid(k) for k in (A, B, C) if k is not signer],
        threshold=2,
    )


FIRST = two_of_three()


def test_a_threshold_of_one_keeps_the_first_encoding_and_two_takes_version_two() -> None:
    one = replace(FIRST, threshold=1).sign(A)
    assert one.encode()[1] == 1 and one.to_json().get("threshold") is None
    assert FIRST.encode()[:2] == bytes((MessageType.MESH_DEFINITION, 2))
    assert MeshDefinition.decode(FIRST.encode()) == FIRST
    assert MeshDefinition.from_json(FIRST.to_json()) == FIRST
    assert FIRST.to_json()["threshold"] == 2
    FIRST.verify_signature()
    # Version 2 spelling a threshold of 1 is a second encoding of a version 1 record.
    as_v2 = bytearray(FIRST.encode())
    as_v2[as_v2.index(bytes((8, 0, 1, 2))) + 3] = 1
    with pytest.raises(MembershipError, match="version 2 for a version 1"):
        MeshDefinition.decode(bytes(as_v2))
    with pytest.raises(MembershipError, match="encoding version 1 has none"):
        MeshDefinition.from_json({**one.to_json(), "threshold": 1})
    with pytest.raises(ValueError, match="threshold of 4 with 3"):
        rotate_mesh(A, FIRST, threshold=4, issued_at=NOW)


def test_cosignatures_travel_with_the_record_and_only_admins_count() -> None:
    proposal = Cosigned(rotate_mesh(A, FIRST, add=[nid(D)], issued_at=NOW + 1))
    assert proposal.encode() == proposal.record.encode()  # nobody else signed: unwrapped
    signed = proposal.cosign(D).cosign(B).cosign(B)
    by_key = sorted((B, D), key=lambda k: bytes(k.verify_key))
    assert [s for s, _ in signed.signatures] == [nid(k) for k in by_key]
    again = Cosigned.decode(signed.encode(), MeshDefinition)
    assert again == signed and signed.encode()[0] == MessageType.COSIGNED
    assert signed.signers(FIRST.admins) == {nid(A), nid(B)}  # D is no admin of serial 1
    assert signed.cosign(A) == signed  # the issuer's signature is the record's own
    tampered = Cosigned(
        signed.record, ((signed.signatures[0][0], bytes(64)),) + signed.signatures[1:]
    )
    with pytest.raises(MembershipError) as bad:
        tampered.signers([s for s, _ in signed.signatures])
    assert bad.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(MembershipError) as junk:
        Cosigned.decode(bytes((MessageType.COSIGNED, 1, 1, 0, 1, 0)), MeshDefinition)
    assert junk.value.reason is Reason.MALFORMED


def test_one_admin_alone_changes_nothing_two_do() -> None:
    held = MeshTrust.from_definition(FIRST, [nid(A)])
    # A alone removes B and C and lowers the threshold: short of the quorum, no effect.
    coup = Cosigned(rotate_mesh(A, FIRST, remove=[nid(B), nid(C)], threshold=1, issued_at=NOW))
    with pytest.raises(MembershipError) as alone:
        adopt(held, coup)
    assert alone.value.reason is Reason.SHORT_OF_QUORUM
    # With B's signature, C is removed.
    without_c = Cosigned(rotate_mesh(A, FIRST, remove=[nid(C)], issued_at=NOW + 1)).cosign(B)
    after = adopt(held, without_c)
    assert after is not None and set(after.admins) == {nid(A), nid(B)}
    assert after.definition.threshold == 2 and after.cosignatures == without_c.signatures
    assert after.signed_definition == without_c
    # C, removed, signs with A to put D in: C counts for nothing, so it is short.
    with_d = Cosigned(rotate_mesh(A, without_c.record, add=[nid(D)], issued_at=NOW + 2))
    with pytest.raises(MembershipError) as removed:
        adopt(after, with_d.cosign(C))
    assert removed.value.reason is Reason.SHORT_OF_QUORUM
    # Putting C back takes the quorum without C: A and B.
    back = Cosigned(rotate_mesh(B, without_c.record, add=[nid(C)], issued_at=NOW + 3))
    assert adopt(after, back.cosign(A)) is not None
    # A restarted node follows the chain only through links that carry their quorum.
    chain = [Cosigned(FIRST), without_c, back.cosign(A)]
    assert nid(C) in chain_anchors(chain, [nid(A)])
    assert chain_anchors([Cosigned(FIRST), coup], [nid(A)]) == set(FIRST.admins)


def test_a_definition_from_a_neighbour_not_verified_is_held_until_its_certificate_is(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    second = Cosigned(rotate_mesh(world.admin, world.mesh, add=[nid(D)], issued_at=NOW + 1))
    other = World(tmp_path / "x").peer
    world.event(SessionUp(other.node_id), who=other)
    world.receive(session.encode(session.MeshDefinitionMessage(second.encode())), who=other)
    assert world.cp.core.own.trust.definition == world.mesh  # held, not adopted
    # Its certificate, by D, verifies only under the definition it sent: adopted.
    by_d = issue_membership(
        D,
        mesh=second.record,
        node_id=other.node_id,
        name="o",
        wireguard_public=other.wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.9"),
        not_before=NOW - 60,
        expires_at=NOW + 3600,
        serial=1,
    )
    world.receive(session.encode(session.Membership(by_d.encode())), who=other)
    assert world.cp.core.own.trust.definition == second.record
    assert world.cp.core.peers[other.node_id].member is not None


def test_a_stranger_cannot_hand_over_a_definition(tmp_path: Path) -> None:
    world = World(tmp_path)
    second = Cosigned(rotate_mesh(world.admin, world.mesh, add=[nid(D)], issued_at=NOW + 1))
    stranger = World(tmp_path / "x").peer
    world.event(SessionUp(stranger.node_id), who=stranger)
    world.receive(session.encode(session.MeshDefinitionMessage(second.encode())), who=stranger)
    # A certificate that is someone else's (certificates are public), then none at all.
    someone = world.cp.core.own.certificate
    world.receive(session.encode(session.Membership(someone.encode())), who=stranger)
    assert world.cp.core.own.trust.definition == world.mesh
    refusals = world.cp.core.peers[stranger.node_id].refusals
    assert refusals.get("definition_from_stranger") == 1


# ---- revocations under the quorum ------------------------------------------------------


def test_a_revocation_takes_the_quorum_and_its_cosignatures_merge() -> None:
    held = RevocationSet.of(FIRST)
    target = RevocationTarget.node(nid(D))
    alone = revoke(A, mesh=FIRST, target=target, revoked_at=NOW)
    with pytest.raises(MembershipError) as short:
        held.add(alone)
    assert short.value.reason is Reason.SHORT_OF_QUORUM and held.get(target) is None
    with pytest.raises(MembershipError) as stranger:
        held.add(replace(alone, issuer=nid(D)).sign(D))
    assert stranger.value.reason is Reason.UNKNOWN_ISSUER
    assert held.add(Cosigned(alone).cosign(B).cosign(D))  # D's is no admin's: not kept
    assert held.signed(target).signatures == Cosigned(alone).cosign(B).signatures
    assert not held.add(Cosigned(alone).cosign(B))  # a repeat
    assert held.add(Cosigned(alone).cosign(C))  # C's signature too now
    by_key = sorted((B, C), key=lambda k: bytes(k.verify_key))
    assert [s for s, _ in held.signed(target).signatures] == [nid(k) for k in by_key]
    # A definition that removes B keeps it: A and C still sign it.
    trust = MeshTrust(FIRST, held)
    without_b = Cosigned(rotate_mesh(A, FIRST, remove=[nid(B)], issued_at=NOW + 1)).cosign(C)
    after = adopt(trust, without_b)
    assert after is not None and after.revocations.get(target) == alone
    # One signed by A and B only is dropped when B is removed: A alone is short.
    other = RevocationTarget.node(nid(C))
    held.add(Cosigned(revoke(A, mesh=FIRST, target=other, revoked_at=NOW)).cosign(B))
    after = adopt(MeshTrust(FIRST, held), without_b)
    assert after is not None and after.revocations.get(other) is None


def test_a_cosigned_revocation_in_an_export_verifies_offline() -> None:
    target = RevocationTarget.node(nid(D))
    signed = Cosigned(revoke(A, mesh=FIRST, target=target, revoked_at=NOW)).cosign(B)
    lines = list(export_lines(FIRST, revocations=[signed]))
    assert json.loads(lines[1])["type"] == "cosigned"
    report = verify_export(lines, admin_keys=[nid(A)])
    assert report.ok and report.membership_checked, report.rejections
    short = list(export_lines(FIRST, revocations=[signed.record]))
    assert [r.reason for r in verify_export(short, admin_keys=[nid(A)]).rejections] == [
        ReceiptReason.INVALID_REVOCATION
    ]


def test_an_emergency_revocation_takes_the_lower_threshold_only_where_one_is_set() -> None:
    target = RevocationTarget.node(nid(D))
    emergency = revoke(A, mesh=FIRST, target=target, revoked_at=NOW, emergency=True)
    with pytest.raises(MembershipError, match="no emergency revocations"):
        RevocationSet.of(FIRST).add(emergency)  # FIRST sets none
    with_path = Cosigned(rotate_mesh(A, FIRST, emergency_threshold=1, issued_at=NOW + 1))
    after = adopt(MeshTrust.from_definition(FIRST, [nid(A)]), with_path.cosign(B))
    assert after is not None and after.definition.emergency_threshold == 1
    assert after.revocations.add(emergency) and after.revocations.get(target) == emergency
    # Lowering the threshold takes the emergency one down with it; a certificate's
    # revocation is never an emergency.
    assert rotate_mesh(A, with_path.record, threshold=1, issued_at=NOW).emergency_threshold == 1
    with pytest.raises(ValueError, match="emergency threshold of 3 above 2"):
        rotate_mesh(A, FIRST, emergency_threshold=3, issued_at=NOW)
    certificate = RevocationTarget(RevocationKind.MEMBERSHIP, nid(A), 7)
    with pytest.raises(ValueError, match="only a node's"):
        revoke(A, mesh=FIRST, target=certificate, revoked_at=NOW, emergency=True)
