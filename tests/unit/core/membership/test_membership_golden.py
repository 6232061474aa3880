"""Golden vectors (tests/golden/membership): hex <-> JSON both ways, signatures, chain."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from meshd.core.membership import (
    Cosigned,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    MeshTrust,
    Reason,
    Revocation,
    decode_message,
    message_from_json,
    verify_membership,
)
from meshd.core.membership.rotation import check_successor
from tests.golden import vectors
from tests.golden.membership import make_vectors as GEN

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "membership"
FILES = sorted(p.name for p in GOLDEN.glob("*.json"))
# One signature each (co-signed ones and proposals have tests of their own).
RECORDS = [name for name in FILES if not name.startswith(("cosigned", "proposal"))]
_vector = vectors.reader(GOLDEN)


def test_checked_in_files_are_exactly_what_the_generator_makes() -> None:
    rendered = GEN.rendered()
    assert sorted(rendered) == FILES
    for name, text in rendered.items():
        assert (GOLDEN / name).read_text(encoding="utf-8") == text, f"regenerate {name}"


def test_fixed_keys_come_from_fixed_strings() -> None:
    # Pinned so that a change to the seeds shows up here and not only as a vector diff.
    assert GEN.node_id(GEN.ADMIN) == "1bIp9oL8-HSZ5a5KUeblk6jjcprDmKXwCrmTdIjmzP4"
    assert GEN.MESH_ID.hex() == "a2e8efa88f9a2fc610601fc30b9f0e1d"


@pytest.mark.parametrize("name", RECORDS)
def test_vector_both_directions_and_signature(name: str) -> None:
    vector = _vector(name)
    assert set(vector) == {"description", "hex", "json"}
    data = bytes.fromhex(vector["hex"])
    decoded = decode_message(data)
    assert decoded.to_json() == vector["json"]
    assert message_from_json(vector["json"]).encode().hex() == vector["hex"]
    assert decoded.encode() == data
    decoded.verify_signature()


def test_layout_of_the_mesh_definition_vector_by_hand() -> None:
    data = bytes.fromhex(_vector("mesh_definition.json")["hex"])
    assert data[:2] == bytes((0x01, 0x01))  # type: mesh definition, version 1
    assert data[2:5] == bytes((1, 0, 16)) and data[5:21] == GEN.MESH_ID  # field 1, 16 bytes
    assert data[21:24] == bytes((2, 0, 9)) and data[24:33] == b"Test Mesh"
    assert data[33:36] == bytes((3, 0, 5)) and data[36:41] == bytes((10, 77, 0, 0, 16))
    assert data[-67:-64] == bytes((9, 0, 64))  # the signature is the last field


def test_vectors_verify_as_a_chain_and_revocations_apply() -> None:
    mesh = MeshDefinition.decode(bytes.fromhex(_vector("mesh_definition.json")["hex"]))
    trust = MeshTrust.from_definition(mesh, [GEN.node_id(GEN.ADMIN)])
    member = MembershipCertificate.from_json(_vector("membership_admin.json")["json"])
    delegation = DelegationCertificate.from_json(_vector("delegation.json")["json"])
    delegated = MembershipCertificate.from_json(_vector("membership_delegated.json")["json"])
    t0 = GEN.T0
    assert verify_membership(member, [], trust, t0).name == "Bäckerei Nord"
    assert verify_membership(delegated, [delegation], trust, t0 + 3600).issuer == GEN.node_id(
        GEN.DELEGATE
    )

    for name in (
        "revocation_node.json",
        "revocation_membership.json",
        "revocation_delegation.json",
    ):
        assert trust.revocations.add(Revocation.from_json(_vector(name)["json"]))
    day = 86400
    verify_membership(member, [], trust, t0 + day - 1)
    with pytest.raises(MembershipError, match="revoked: .*node"):
        verify_membership(member, [], trust, t0 + day)
    verify_membership(delegated, [delegation], trust, t0 + 2 * day - 1)
    with pytest.raises(MembershipError) as excinfo:
        verify_membership(delegated, [delegation], trust, t0 + 2 * day)
    assert excinfo.value.reason is Reason.REVOKED


def test_the_quorum_vectors_follow_each_other_with_their_signatures() -> None:
    mesh = MeshDefinition.decode(bytes.fromhex(_vector("mesh_definition.json")["hex"]))
    quorum_data = bytes.fromhex(_vector("mesh_definition_quorum.json")["hex"])
    assert quorum_data[:2] == bytes((0x01, 0x02))  # a threshold: encoding version 2
    quorum = MeshDefinition.decode(quorum_data)
    assert (
        quorum.threshold == 2 and _vector("mesh_definition_quorum.json")["json"]["threshold"] == 2
    )
    vector = _vector("cosigned_definition.json")
    data = bytes.fromhex(vector["hex"])
    assert data[:2] == bytes((0x40, 0x01))  # type: cosigned, version 1
    signed = Cosigned.decode(data, MeshDefinition)
    assert signed.to_json() == vector["json"] and signed.encode() == data
    check_successor(mesh, Cosigned(quorum))
    check_successor(quorum, signed)
    assert signed.signers(quorum.admins) == {GEN.node_id(GEN.ADMIN), GEN.node_id(GEN.ADMIN_2)}
    with pytest.raises(MembershipError) as alone:
        check_successor(quorum, Cosigned(signed.record))
    assert alone.value.reason is Reason.SHORT_OF_QUORUM
    emergency = Revocation.decode(bytes.fromhex(_vector("revocation_emergency.json")["hex"]))
    assert emergency.emergency and emergency.encode()[:2] == bytes((0x04, 0x02))
    held = MeshTrust.from_definition(quorum, quorum.admins)
    assert held.revocations.add(emergency)  # one signature: the emergency threshold
    with pytest.raises(MembershipError) as short:
        held.revocations.add(replace(emergency, emergency=False).sign(GEN.ADMIN_2))
    assert short.value.reason is Reason.SHORT_OF_QUORUM


def test_the_proposal_vector_decodes_and_its_withdrawal_counts() -> None:
    from meshd.core.membership.proposals import Proposal, Proposals

    vector = _vector("proposal_revocation.json")
    data = bytes.fromhex(vector["hex"])
    assert data[:2] == bytes((0x41, 0x01))  # type: proposal, version 1
    proposal = Proposal.decode(data)
    assert proposal.to_json() == vector["json"] and proposal.encode() == data
    assert Proposal.from_json(vector["json"]) == proposal
    quorum = MeshDefinition.from_json(_vector("mesh_definition_quorum.json")["json"])
    trust = MeshTrust.from_definition(quorum, quorum.admins)
    heard = Proposals().heard(proposal, trust, GEN.T0 + 5 * 86400)
    assert heard.outcome == "new" and heard.proposal.withdrawn_by == {GEN.node_id(GEN.ADMIN_2)}
