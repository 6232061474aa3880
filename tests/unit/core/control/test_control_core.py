"""The control plane's core (meshd.core.control.plane) on its own: inputs with ``now``,
effects out, no transport, no files, no event loop, a clock that is a number. What the
shell does with the effects is test_control_plane.py's (through meshd.daemon.control)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from nacl.signing import SigningKey

from meshd.adapters import identity
from meshd.core.control import effects as fx
from meshd.core.control import plane
from meshd.core.membership import (
    MeshTrust,
    OwnMembership,
    RevocationTarget,
    create_mesh,
    issue_membership,
    revoke,
    verify_membership,
)
from meshd.core.membership.clock import MeshClock
from meshd.core.proto import session
from meshd.core.proto.babel import AE_IPV4, RouterId, Update, encode_packet
from meshd.core.routing.babel import BabelRouter
from meshd.core.session_policy import SessionState

WALL = 1_800_000_000.0
ADDR = ("100.64.0.2", 6697)
ADMIN = SigningKey(bytes([7]) * 32)
MESH = create_mesh(
    ADMIN,
    mesh_id=bytes(16),
    name="t",
    ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
    ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
    issued_at=int(WALL),
)
TRUST = MeshTrust.from_definition(MESH, [identity.node_id_from_public(bytes(ADMIN.verify_key))])


def cert(who: identity.Identity, ip: str) -> bytes:
    return issue_membership(
        ADMIN,
        mesh=MESH,
        node_id=who.node_id,
        name="n",
        wireguard_public=who.wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address(ip),
        not_before=int(WALL) - 60,
        expires_at=int(WALL) + 3600,
        serial=1,
    ).encode()


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.me = identity.generate(tmp / "me")
        self.peer = identity.generate(tmp / "peer")
        mine = issue_membership(
            ADMIN,
            mesh=MESH,
            node_id=self.me.node_id,
            name="me",
            wireguard_public=self.me.wireguard_public,
            mesh_ipv4=ipaddress.IPv4Address("10.77.0.1"),
            not_before=int(WALL) - 60,
            expires_at=int(WALL) + 3600,
            serial=1,
        )
        own = OwnMembership(TRUST, mine, (), None, verify_membership(mine, (), TRUST, WALL))
        self.wall = WALL
        self.core = plane.ControlPlane(
            self.me.node_id,
            own,
            BabelRouter(b"\x01" * 8, 1, 0.0),
            MeshClock(lambda: self.wall, 300),
            lambda node_id: 51900,
            accept_unsigned=True,
        )
        self.startup = self.core.drain()

    def up(self, now: float = 1.0) -> list[fx.Effect]:
        self.core.session_up(self.peer.node_id, ADDR, session.MESHD_2, now)
        self.core.session_message(
            self.peer.node_id, session.encode(session.Capabilities(session.FEATURES)), now
        )
        return self.core.drain()

    def receive(self, message: session.SessionMessage, now: float = 1.0) -> list[fx.Effect]:
        self.core.session_message(self.peer.node_id, session.encode(message), now)
        return self.core.drain()

    def verified(self) -> list[fx.Effect]:
        self.up()
        return self.receive(session.Membership(cert(self.peer, "10.77.0.2")))


def sent(effects: list[fx.Effect]) -> list[type]:
    return [type(session.decode(e.data)) for e in effects if isinstance(e, fx.Send)]


def test_a_session_up_asks_for_capabilities_clock_and_certificate_in_that_order(
    tmp_path: Path,
) -> None:
    world = Mesh(tmp_path)
    world.core.session_up(world.peer.node_id, ADDR, session.MESHD_2, 1.0)
    effects = world.core.drain()
    assert sent(effects) == [session.Capabilities, session.Clock, session.Membership]
    assert world.core.drain() == []  # taken once
    clock = session.decode(effects[1].data)  # type: ignore[union-attr]
    assert isinstance(clock, session.Clock) and clock.unix_ms == int(WALL * 1000)


def test_the_mesh_clock_starts_no_earlier_than_our_own_certificate(tmp_path: Path) -> None:
    world = Mesh(tmp_path)
    # Its start, or the mesh definition's if later: kept, so that a restart starts there.
    floor = max(WALL - 60, MESH.issued_at)
    assert world.startup == [fx.SaveClockFloor(floor)]
    world.wall = WALL - 86400  # a Pi that boots a day behind
    assert world.core.clock.now() == floor


def test_anything_before_the_certificate_is_a_close_effect(tmp_path: Path) -> None:
    world = Mesh(tmp_path)
    world.up()
    effects = world.receive(session.Link(52000))
    assert effects == [fx.Close(world.peer.node_id, "not_verified")]
    peer = world.core.peers[world.peer.node_id]
    assert peer.refusals == {"not_verified": 1}
    # The session stays where it was until the transport says it closed.
    assert peer.session_state is SessionState.UNVERIFIED
    world.core.session_closed(world.peer.node_id, ADDR, "not_verified", False, True, 2.0)
    assert peer.session_state is SessionState.DOWN


def test_a_verified_neighbour_gets_a_link_and_routes_once_its_tunnel_carries(
    tmp_path: Path,
) -> None:
    world = Mesh(tmp_path)
    effects = world.verified()
    assert session.Link in sent(effects)
    effects = world.receive(session.Link(52000))
    (link,) = [e for e in effects if isinstance(e, fx.EnsureLink)]
    assert link.spec.endpoint == (ADDR[0], 52000) and link.spec.listen_port == 51900
    world.core.neighbours.wireguard_state(world.peer.node_id, True, 2.0)
    assert world.core.peers[world.peer.node_id].routing
    # Babel starts talking on the new link: its packets go as messages on the session.
    assert set(sent(world.core.drain())) == {session.BabelPacket}


def test_babel_input_arms_the_one_timer_and_flush_disarms_it(tmp_path: Path) -> None:
    world = Mesh(tmp_path)
    world.verified()
    world.core.neighbours.wireguard_state(world.peer.node_id, True, 2.0)
    world.core.drain()
    update = Update(
        ae=AE_IPV4,
        prefix=ipaddress.ip_network("10.77.0.2/32"),
        interval=1600,
        seqno=1,
        metric=96,
    )
    packet = encode_packet([RouterId(router_id=bytes([9]) * 8), update])
    world.receive(session.BabelPacket(packet), now=5.0)
    assert world.core.flush_at == 5.0 + plane.FLUSH_DELAY_S
    world.receive(session.BabelPacket(packet), now=5.01)
    assert world.core.flush_at == 5.0 + plane.FLUSH_DELAY_S  # one timer for the burst
    world.core.flush()
    assert world.core.flush_at is None


def test_a_revocation_is_stored_spread_and_enforced_as_effects(tmp_path: Path) -> None:
    world = Mesh(tmp_path)
    world.verified()
    world.core.drain()
    target = RevocationTarget.node(world.peer.node_id)
    record = revoke(ADMIN, mesh=MESH, target=target, revoked_at=int(WALL) - 1)
    world.core.add_revocation_records([record.encode()], 3.0)
    effects = world.core.drain()
    kinds = [type(e) for e in effects]
    assert fx.SaveRevocations in kinds
    assert fx.Close(world.peer.node_id, "revoked") in effects
    assert world.peer.node_id not in world.core.peers


def test_the_mesh_clock_is_the_number_the_shell_gives(tmp_path: Path) -> None:
    world = Mesh(tmp_path)
    world.verified()
    world.core.enforce_membership(2.0)
    assert world.core.drain() == []  # valid now
    world.wall = WALL + 3600 + 301  # past expiry and the skew tolerance
    world.core.enforce_membership(3.0)
    assert fx.Close(world.peer.node_id, "expired") in world.core.drain()
