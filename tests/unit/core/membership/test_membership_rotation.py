"""Admin key rotation: the pure core (the next definition, which one a node adopts, the
chain a restarted node follows) and the control plane adopting one from a session: stored,
spread, and every neighbour judged again under it."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from meshd.adapters import trust
from meshd.adapters.identity import node_id_from_public
from meshd.core.membership import (
    Cosigned,
    MembershipError,
    MeshDefinition,
    MeshTrust,
    Reason,
    RevocationTarget,
    create_mesh,
    issue_membership,
    revoke,
)
from meshd.core.membership.rotation import adopt, chain_anchors, check_successor, rotate_mesh
from meshd.core.proto import session
from meshd.core.transport.events import SessionUp
from tests.unit.daemon.test_control_plane import NOW, World

OLD, NEW, OTHER = (SigningKey(bytes([n]) * 32) for n in (21, 22, 23))
C = Cosigned  # a definition as it travels: with other admins' signatures, if any


def nid(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


FIRST = create_mesh(
    OLD,
    mesh_id=b"Q" * 16,
    name="rotating",
    ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
    ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
    issued_at=NOW,
)
BOTH = rotate_mesh(OLD, FIRST, add=[nid(NEW)], issued_at=NOW + 1)
ONLY_NEW = rotate_mesh(NEW, BOTH, remove=[nid(OLD)], issued_at=NOW + 2)


def test_rotation_is_two_steps_each_signed_by_a_current_admin() -> None:
    assert (BOTH.serial, set(BOTH.admins)) == (2, {nid(OLD), nid(NEW)})
    assert (ONLY_NEW.serial, ONLY_NEW.admins, ONLY_NEW.issuer) == (3, (nid(NEW),), nid(NEW))
    assert (ONLY_NEW.mesh_id, ONLY_NEW.ipv4_prefix) == (FIRST.mesh_id, FIRST.ipv4_prefix)
    with pytest.raises(ValueError, match="not an admin"):
        rotate_mesh(NEW, FIRST, add=[nid(OTHER)], issued_at=NOW)
    with pytest.raises(ValueError, match="its own removal"):
        rotate_mesh(OLD, BOTH, remove=[nid(OLD)], issued_at=NOW)


def test_a_node_adopts_only_a_successor_of_what_it_holds() -> None:
    held = MeshTrust.from_definition(FIRST, [nid(OLD)])
    assert adopt(held, C(FIRST)) is None  # gossip repeats
    both = adopt(held, C(BOTH))
    assert both is not None and both.definition == BOTH
    assert adopt(both, C(BOTH)) is None
    # Skipping a step: serial 3 is signed by NEW, which serial 1 does not know.
    with pytest.raises(MembershipError) as skipped:
        adopt(held, C(ONLY_NEW))
    assert skipped.value.reason is Reason.UNKNOWN_ISSUER
    forged = replace(BOTH, signature=bytes(64))
    with pytest.raises(MembershipError) as bad:
        adopt(held, C(forged))
    assert bad.value.reason is Reason.BAD_SIGNATURE
    moved = create_mesh(
        OLD,
        mesh_id=FIRST.mesh_id,
        name=FIRST.name,
        ipv4_prefix=ipaddress.IPv4Network("10.78.0.0/16"),
        ipv6_prefix=FIRST.ipv6_prefix,
        issued_at=NOW,
        serial=2,
    )
    with pytest.raises(MembershipError, match="prefixes"):
        check_successor(FIRST, C(moved))


def test_revocations_of_a_removed_admin_are_kept_only_when_signed_again() -> None:
    held = adopt(MeshTrust.from_definition(FIRST, [nid(OLD)]), C(BOTH))
    assert held is not None
    by_old = revoke(OLD, mesh=FIRST, target=RevocationTarget.node(nid(OTHER)), revoked_at=NOW)
    resigned = revoke(NEW, mesh=BOTH, target=RevocationTarget.node(nid(OTHER)), revoked_at=NOW - 1)
    held.revocations.add(by_old)
    held.revocations.add(resigned)  # a second earlier: it is the one kept
    after = adopt(held, C(ONLY_NEW))
    assert after is not None and list(after.revocations) == [resigned]


def test_a_restarted_node_follows_the_chain_from_the_key_it_pinned() -> None:
    first, both, only_new = C(FIRST), C(BOTH), C(ONLY_NEW)
    assert chain_anchors([only_new, first, both], [nid(OLD)]) >= {nid(NEW)}
    assert chain_anchors([first, only_new], [nid(OLD)]) == {nid(OLD)}  # a missing link
    assert chain_anchors([both, only_new], [nid(OTHER)]) == {nid(OTHER)}  # not from a pin
    MeshTrust.from_definition(ONLY_NEW, chain_anchors([first, both, only_new], [nid(OLD)]))


# ---- the control plane -----------------------------------------------------------------


def test_a_definition_from_a_session_is_adopted_stored_spread_and_enforced(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    admin_id = nid(world.admin)
    trust.save_joined(tmp_path / "me", C(world.mesh), world.cp.core.own.certificate, None)
    second = rotate_mesh(world.admin, world.mesh, add=[nid(NEW)], issued_at=NOW + 1)
    world.verified()
    world.transport.sent.clear()
    world.receive(session.encode(session.MeshDefinitionMessage(second.encode())))
    assert world.cp.core.own.trust.definition == second
    assert MeshDefinition.decode((tmp_path / "me" / trust.MESH_FILE).read_bytes()) == second
    assert [d.record.serial for d in trust.load_chain(tmp_path / "me")] == [1, 2]
    assert world.transport.sent == []  # not back to where it came from
    # A new session hears it before our certificate; a certificate by the new key verifies.
    other = World(tmp_path / "x").peer
    world.event(SessionUp(other.node_id), who=other)
    kinds = [type(session.decode(d)) for to, d in world.transport.sent if to == other.node_id]
    assert kinds == [session.Clock, session.MeshDefinitionMessage, session.Membership]
    by_new = issue_membership(
        NEW,
        mesh=second,
        node_id=other.node_id,
        name="o",
        wireguard_public=other.wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.9"),
        not_before=NOW - 60,
        expires_at=NOW + 3600,
        serial=1,
    )
    world.receive(session.encode(session.Membership(by_new.encode())), who=other)
    assert world.cp.core.peers[other.node_id].member is not None
    # Dropping the first admin: the peer certified by it is dropped at once.
    third = rotate_mesh(NEW, second, remove=[admin_id], issued_at=NOW + 2)
    world.receive(session.encode(session.MeshDefinitionMessage(third.encode())), who=other)
    assert world.cp.core.own.trust.admins == (nid(NEW),)
    assert (world.peer.node_id, "unknown_issuer") in world.transport.closed
    assert world.cp.core.peers[other.node_id].member is not None
    # An old one again changes nothing; a forged one is rejected, the session kept.
    closed = list(world.transport.closed)
    world.receive(session.encode(session.MeshDefinitionMessage(second.encode())), who=other)
    forged = replace(rotate_mesh(NEW, third, add=[nid(OTHER)], issued_at=NOW), signature=bytes(64))
    world.receive(session.encode(session.MeshDefinitionMessage(forged.encode())), who=other)
    assert world.cp.core.own.trust.definition == third and world.transport.closed == closed
