"""The control plane's part in the certificate lifecycle (meshd.core.control), with the recording
stand-ins of test_control_plane: a neighbour's renewed certificate replacing the old one
on a live session, our own renewed one shown to every neighbour, RENEW_* handed on, and
the mesh's time (CLOCK) correcting a stale clock, but never a good one."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Any

import pytest

from meshd.core.membership import OwnMembership, issue_membership, verify_membership
from meshd.core.proto import session
from meshd.core.transport.events import SessionUp
from tests.unit.daemon.test_control_plane import NOW, World, membership_of

DAY = 86400


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def cert_at(
    world: World, who: Any, not_before: int, expires_at: int, wg: bytes | None = None
) -> Any:
    return issue_membership(
        world.admin,
        mesh=world.mesh,
        node_id=who.node_id,
        name="n",
        wireguard_public=wg or who.wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.2"),
        not_before=not_before,
        expires_at=expires_at,
        serial=2,
    )


def test_a_renewed_certificate_replaces_the_old_one_on_the_live_session(world: World) -> None:
    world.verified()
    fresh = cert_at(world, world.peer, NOW, NOW + 30 * DAY)
    world.receive(session.encode(session.Membership(fresh.encode())))
    peer = world.peer_state()
    assert peer.member is not None and peer.member.valid_until == NOW + 30 * DAY
    assert peer.credential is not None and peer.credential[0] == fresh
    assert world.transport.closed == []


def test_a_renewed_certificate_must_verify_and_keep_the_keys(world: World) -> None:
    world.verified()
    expired = cert_at(world, world.peer, NOW - 2 * DAY, NOW - DAY)
    world.receive(session.encode(session.Membership(expired.encode())))
    assert world.transport.closed == [(world.peer.node_id, "expired")]
    world.verified()
    rekeyed = cert_at(world, world.peer, NOW, NOW + DAY, wg=b"K" * 32)
    world.receive(session.encode(session.Membership(rekeyed.encode())))
    assert world.transport.closed[-1] == (world.peer.node_id, "changed_keys")


def test_our_renewed_certificate_goes_to_every_verified_neighbour(world: World) -> None:
    world.verified()
    old = world.cp.core.own
    fresh = issue_membership(
        world.admin,
        mesh=world.mesh,
        node_id=world.me.node_id,
        name="n",
        wireguard_public=world.me.wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.1"),
        not_before=NOW,
        expires_at=NOW + 30 * DAY,
        serial=3,
    )
    member = verify_membership(fresh, (), old.trust, NOW)
    world.transport.sent.clear()
    world.cp.renewed(OwnMembership(old.trust, fresh, (), None, member))
    ((to, data),) = world.transport.sent
    assert to == world.peer.node_id
    assert session.decode(data) == session.Membership(fresh.encode())
    assert world.cp.core.membership_message == data  # and on every session from now on


def test_renewal_messages_from_a_member_go_to_the_renewal_service(world: World) -> None:
    got: list[tuple[str, Any]] = []
    world.cp.on_renewal = lambda node_id, msg: got.append((node_id, msg))
    world.verified()
    request = session.RenewRequest(world.cert(world.peer, "10.77.0.2").encode())
    world.receive(session.encode(request))
    assert got == [(world.peer.node_id, request)]
    world.cp.on_renewal = None
    world.receive(session.encode(request))
    assert world.transport.closed[-1] == (world.peer.node_id, "renewal_unavailable")


def test_a_renewal_request_before_the_certificate_is_refused(world: World) -> None:
    world.cp.on_renewal = lambda node_id, msg: pytest.fail("handed on unverified")
    world.event(SessionUp(world.peer.node_id))
    request = session.RenewRequest(world.cert(world.peer, "10.77.0.2").encode())
    world.receive(session.encode(request))
    assert world.transport.closed == [(world.peer.node_id, "not_verified")]


# ---- the mesh's time -------------------------------------------------------------------


def stale(world: World, offset_s: float) -> None:
    """Our clock reads ``offset_s`` off (as a Pi without RTC might)."""
    world.cp.core.clock.test_offset_s = offset_s


def test_a_stale_clock_learns_the_time_from_a_verified_peer(world: World) -> None:
    stale(world, -180 * DAY)
    world.event(SessionUp(world.peer.node_id))
    # The peer says the true time; its certificate is "not yet valid" by our clock.
    world.receive(session.encode(session.Clock(int(time.time() * 1000))))
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    assert world.peer_state().member is not None
    assert world.cp.core.clock.consensus.correction_s == pytest.approx(180 * DAY, abs=5)
    assert abs(world.cp.core.clock.now() - time.time()) < 5


def test_without_the_peers_clock_a_stale_node_reads_its_floor_and_refuses(world: World) -> None:
    """180 days behind, the clock reads its floor (our own certificate's start, here);
    a certificate from an hour after that is not valid yet without the peer's word."""
    stale(world, -180 * DAY)
    assert world.cp.core.clock.now() == world.cp.core.clock.floor >= NOW - 60
    world.event(SessionUp(world.peer.node_id))
    later = cert_at(world, world.peer, int(world.cp.core.clock.floor) + 3600, NOW + DAY)
    world.receive(session.encode(session.Membership(later.encode())))
    assert world.transport.closed == [(world.peer.node_id, "not_yet_valid")]
    assert world.cp.core.clock.consensus.correction_s == 0


def test_a_peer_with_a_stale_clock_never_moves_a_good_one(world: World) -> None:
    world.event(SessionUp(world.peer.node_id))
    world.receive(session.encode(session.Clock((NOW - 180 * DAY) * 1000)))
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    assert world.peer_state().member is not None
    assert world.cp.core.clock.consensus.correction_s == 0


def test_an_expired_peer_cannot_turn_our_clock_back_to_before_we_were_certified(
    world: World,
) -> None:
    expired = cert_at(world, world.peer, NOW - 30 * DAY, NOW - 20 * DAY)
    world.event(SessionUp(world.peer.node_id))
    world.receive(session.encode(session.Clock((NOW - 25 * DAY) * 1000)))
    world.receive(session.encode(session.Membership(expired.encode())))
    assert world.transport.closed == [(world.peer.node_id, "expired")]
    assert world.cp.core.clock.consensus.correction_s == 0


def test_the_first_message_is_our_corrected_time(world: World) -> None:
    stale(world, -180 * DAY)
    world.cp.core.clock.report("someone", 180 * DAY, at=0.0, sessions=1)
    world.event(SessionUp(world.peer.node_id))
    first = session.decode(world.transport.sent[0][1])
    assert isinstance(first, session.Clock) and abs(first.unix_ms / 1000 - time.time()) < 5
