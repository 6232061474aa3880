"""Proposals (issue 27 item 2): a change admins sign together, held by every node until
it carries the quorum, lapses or is withdrawn; what a member, a removed admin or a forger
sends in one counts for nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from meshd.adapters.trust import load_proposals
from meshd.core.control import effects as fx
from meshd.core.errors import BadInput
from meshd.core.membership import (
    Cosigned,
    MembershipError,
    MeshTrust,
    RevocationTarget,
    revoke,
)
from meshd.core.membership.messages import signature_good
from meshd.core.membership.proposals import TTL_S, Proposal, Proposals, Refused
from meshd.core.membership.rotation import adopt, rotate_mesh
from meshd.core.proto import session
from meshd.core.transport.events import SessionUp
from tests.unit.core.membership.test_membership_quorum import FIRST, A, B, C, D, nid
from tests.unit.daemon.test_control_plane import NOW, World, membership_of


def trust() -> MeshTrust:
    return MeshTrust.from_definition(FIRST, [nid(A)])


def all_three() -> MeshTrust:
    """The same admins, all three needed."""
    return MeshTrust.from_definition(rotate_mesh(A, FIRST, threshold=3, issued_at=NOW), [nid(A)])


def revoking(target: str, by: SigningKey = A, emergency: bool = False, at: int = NOW) -> Proposal:
    record = revoke(
        by, mesh=FIRST, target=RevocationTarget.node(target), revoked_at=at, emergency=emergency
    )
    return Proposal(Cosigned(record))


def reasons(proposals: Proposals, proposal: Proposal, t: MeshTrust) -> str:
    with pytest.raises(BadInput) as refused:
        proposals.heard(proposal, t, NOW)
    return str(refused.value.reason)


def test_a_proposal_is_held_until_a_second_admin_signs_and_then_carried() -> None:
    held, t = Proposals(), trust()
    p = revoking(nid(D))
    assert Proposal.decode(p.encode()) == p
    assert held.heard(p, t, NOW).outcome == "new"
    assert held.heard(p, t, NOW).outcome == "same"  # gossip repeats
    assert [q.id for q in held] == [p.id] and held.needed(p, t) == 2
    heard = held.heard(p.cosign(B), t, NOW)
    assert heard.outcome == "carried" and heard.signed is not None
    assert len(heard.signed.signers(FIRST.admins)) == 2
    assert not list(held)  # taken as if handed in: the proposal is gone
    t.revocations.add(heard.signed)
    assert reasons(held, p, t) == "stale"  # a late copy brings nothing back


def test_a_next_definition_is_carried_by_two_of_three() -> None:
    held, t = Proposals(), trust()
    nxt = Proposal(Cosigned(rotate_mesh(A, FIRST, remove=[nid(C)], issued_at=NOW)))
    assert held.heard(nxt, t, NOW).outcome == "new"
    heard = held.heard(Proposal.decode(nxt.cosign(C).encode()), t, NOW)
    assert heard.outcome == "carried" and heard.signed is not None
    after = adopt(t, heard.signed)
    assert after is not None and nid(C) not in after.definition.admins
    assert reasons(held, nxt, after) == "stale"


def test_co_signatures_merge_as_they_spread_and_only_admins_count() -> None:
    held, three = Proposals(), all_three()
    p = revoking(nid(D))
    by_d = Proposal(p.signed.cosign(D))  # a member's signature: never held or passed on
    heard = held.heard(by_d, three, NOW)
    assert heard.outcome == "new" and heard.proposal.signed.signatures == ()
    assert held.heard(p.cosign(B), three, NOW).outcome == "grew"
    assert held.heard(p.cosign(C), three, NOW).outcome == "carried"


def test_a_forged_signature_or_withdrawal_refuses_that_copy_only() -> None:
    held, t = Proposals(), trust()
    p = revoking(nid(D))
    assert held.heard(p, t, NOW).outcome == "new"
    forged = Cosigned(p.record, ((nid(B), bytes(64)),))
    assert reasons(held, Proposal(forged), t) == "bad_signature"
    stolen = p.withdraw(B)
    wrong = Proposal(p.signed, ((nid(B), stolen.withdrawn[0][1][:-1] + b"x"),))
    assert reasons(held, wrong, t) == "bad_signature"
    assert list(held) == [p]  # what was held stays, untouched


def test_no_admin_no_proposal_and_a_member_cannot_fill_the_table() -> None:
    held, t = Proposals(), trust()
    by_member = replace(revoking(nid(C)).record, issuer=nid(D)).sign(D)
    assert reasons(held, Proposal(Cosigned(by_member)), t) == "unknown_issuer"
    for n in range(8):
        held.heard(revoking(nid(D), at=NOW - n), t, NOW)
    assert reasons(held, revoking(nid(D), at=NOW - 9), t) == "issuer_proposals_full"
    assert held.heard(revoking(nid(D), by=B), t, NOW).outcome == "new"  # another admin's


def test_a_withdrawn_signature_counts_for_nothing_and_a_withdrawn_proposal_stays_dead() -> None:
    held = Proposals()
    p = revoking(nid(D))
    three = all_three()
    held.heard(p.cosign(B), three, NOW)
    assert held.heard(p.withdraw(B), three, NOW).outcome == "grew"
    (kept,) = held
    assert kept.signed.signatures == () and kept.withdrawn_by == {nid(B)}
    assert held.heard(p.cosign(B), three, NOW).outcome == "same"  # B cannot sign it again
    assert held.heard(p.cosign(C), three, NOW).outcome == "grew"  # 2 of 3: not carried
    assert held.heard(p.withdraw(A), three, NOW).outcome == "grew"
    (dead,) = held
    assert dead.dropped
    assert held.heard(p.cosign(C), three, NOW).outcome == "same"  # an old copy: nothing new
    # Withdrawn before anyone seconded it: a second signature is refused.
    early = Proposals()
    early.heard(p.withdraw(A), three, NOW)
    assert reasons(early, p.cosign(B), three) == "withdrawn"


def test_proposals_lapse_and_come_from_no_future() -> None:
    held, t = Proposals(), trust()
    assert reasons(held, revoking(nid(D), at=NOW - TTL_S - 1), t) == "expired"
    assert reasons(held, revoking(nid(D), at=NOW + 3600), t) == "from_the_future"
    p = revoking(nid(D))
    held.heard(p, t, NOW)
    assert held.prune(t, NOW + TTL_S - 1) == []
    assert held.prune(t, NOW + TTL_S + 1) == [held.get(p.id) or p]
    assert not list(held)


def test_a_new_definition_voids_what_a_removed_admin_proposed() -> None:
    held, t = Proposals(), trust()
    held.heard(revoking(nid(D), by=C), t, NOW)
    without_c = rotate_mesh(A, FIRST, remove=[nid(C)], issued_at=NOW)
    after = adopt(t, Cosigned(without_c).cosign(B))
    assert after is not None
    nxt = Proposal(Cosigned(rotate_mesh(A, FIRST, add=[nid(D)], issued_at=NOW)))
    held.heard(nxt, t, NOW)  # serial 2 too: overtaken once serial 2 is in force
    assert [p.record.issuer for p in held.prune(after, NOW)] == [nid(C), nid(A)]


def test_a_proposal_heard_again_and_again_verifies_each_signature_once() -> None:
    """Gossip repeats a proposal, and it is judged at every step of hearing it: each
    signature is verified once, then remembered by its very bytes."""
    held, three = Proposals(), all_three()
    p = revoking(nid(D)).cosign(B)
    signature_good.cache_clear()
    for _ in range(3):
        held.heard(Proposal.decode(p.encode()), three, NOW)
    info = signature_good.cache_info()
    assert (info.misses, info.hits > 0) == (2, True), info
    forged = Proposal(Cosigned(p.record, ((nid(B), bytes(64)),)))
    assert reasons(held, forged, three) == "bad_signature"  # other bytes: verified, refused


def test_anything_but_a_proposal_is_malformed() -> None:
    p = revoking(nid(D))
    for data in (b"", p.signed.encode(), p.encode()[:-1], p.encode() + b"\0"):
        with pytest.raises(MembershipError) as refused:
            Proposal.decode(data)
        assert refused.value.reason == "malformed"
    assert isinstance(Refused("stale", "x"), BadInput)


# ---- over the sessions (the control plane) ---------------------------------------------


def test_a_neighbours_proposal_is_held_passed_on_shown_to_newcomers_and_carried(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    two = rotate_mesh(world.admin, world.mesh, add=[nid(B)], threshold=2, issued_at=NOW + 1)
    assert world.cp.adopt_definition(Cosigned(two))
    other = World(tmp_path / "x").peer
    for who, ip in ((world.peer, "10.77.0.2"), (other, "10.77.0.3")):
        world.verified(who=who, ip=ip)
        world.cp.core.peers[who.node_id].features = frozenset(session.FEATURES)
    record = revoke(world.admin, mesh=two, target=RevocationTarget.node(nid(D)), revoked_at=NOW + 2)
    proposal = Proposal(Cosigned(record))
    world.transport.sent.clear()
    world.receive(session.encode(session.ProposalMessage(proposal.encode())))
    assert [p.id for p in world.cp.core.proposals] == [proposal.id]
    assert world.cp.core.own.trust.revocations.get(record.target) is None  # 1 of 2
    assert load_proposals(world.cp.state_dir) == [proposal.encode()]  # a restart keeps it
    passed = [m for m in world.sent_to(other.node_id) if isinstance(m, session.ProposalMessage)]
    assert passed == [session.ProposalMessage(proposal.encode())]
    assert not world.sent_to(world.peer.node_id)  # not back to where it came from
    # Bad ones are counted against the sender, whose session stays.
    world.receive(session.encode(session.ProposalMessage(b"\x41\x01")))
    forged = Proposal(Cosigned(record, ((nid(B), bytes(64)),)))
    world.receive(session.encode(session.ProposalMessage(forged.encode())))
    refusals = world.peer_state().refusals
    assert refusals["proposal_malformed"] == 1 and refusals["proposal_bad_signature"] == 1
    assert world.peer_state().session_up
    # A neighbour that verifies now is shown what is held.
    third = World(tmp_path / "y").peer
    world.event(SessionUp(third.node_id), who=third)
    world.cp.core.peers[third.node_id].features = frozenset(session.FEATURES)
    world.receive(membership_of(world, world.cert(third, "10.77.0.4")), who=third)
    shown = [m for m in world.sent_to(third.node_id) if isinstance(m, session.ProposalMessage)]
    assert shown == [session.ProposalMessage(proposal.encode())]
    # B's signature carries it: revoked here, and the proposal is forgotten.
    world.receive(session.encode(session.ProposalMessage(proposal.cosign(B).encode())))
    assert world.cp.core.own.trust.revocations.get(record.target) == record
    assert not list(world.cp.core.proposals) and load_proposals(world.cp.state_dir) == []


def test_proposals_loaded_one_by_one_are_stored_once(tmp_path: Path) -> None:
    """A start hears the stored proposals one by one: one write stores them all."""
    world = World(tmp_path)
    two = rotate_mesh(world.admin, world.mesh, add=[nid(B)], threshold=2, issued_at=NOW + 1)
    assert world.cp.adopt_definition(Cosigned(two))
    core = world.cp.core
    core.drain()
    for target in (nid(C), nid(D)):
        record = revoke(world.admin, mesh=two, target=RevocationTarget.node(target), revoked_at=NOW)
        core.hear_proposal(Proposal(Cosigned(record)), 1.0)
    saves = [e for e in core.drain() if isinstance(e, fx.SaveProposals)]
    assert len(saves) == 1 and len(saves[0].proposals) == 2
