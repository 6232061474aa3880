"""The control plane's session logic (meshd/mesh.py) with a recording stand-in for the QUIC
transport: what it sends, whom it refuses and why, and when a neighbour is a Babel link."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd import identity, mesh
from meshd.membership import (
    MeshTrust,
    create_mesh,
    issue_membership,
    verify_membership,
)
from meshd.proto import session
from meshd.proto.babel import Hello, encode_packet
from meshd.routing.babel import BabelRouter
from meshd.transport.certs import node_certificate
from meshd.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.transport.udp import PeerEvent
from meshd.trust import OwnMembership

NOW = int(time.time())
ADDR = ("100.64.0.2", 6697)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.closed: list[tuple[str, str]] = []
        self.dialled: list[tuple[tuple[str, int], str | None]] = []

    def send_message(self, node_id: str, data: bytes) -> None:
        self.sent.append((node_id, data))

    def close_peer(self, node_id: str, reason: str = "closed") -> None:
        self.closed.append((node_id, reason))

    def dial(self, addr: tuple[str, int], expected_node_id: str | None = None) -> None:
        self.dialled.append((addr, expected_node_id))


class World:
    def __init__(self, tmp: Path) -> None:
        self.admin = SigningKey(bytes([7]) * 32)
        self.mesh = create_mesh(
            self.admin,
            mesh_id=bytes(16),
            name="t",
            ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
            ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
            issued_at=NOW,
        )
        self.trust = MeshTrust.from_definition(
            self.mesh, [identity.node_id_from_public(bytes(self.admin.verify_key))]
        )
        self.me = identity.generate(tmp / "me")
        self.peer = identity.generate(tmp / "peer")
        my_cert = self.cert(self.me, "10.77.0.1")
        own = OwnMembership(
            self.trust, my_cert, (), None, verify_membership(my_cert, (), self.trust, NOW)
        )
        self.routes: list[Any] = []
        self.cp = mesh.ControlPlane(
            self.me.node_id,
            node_certificate(self.me.signing_key),
            own,
            {
                self.peer.node_id: mesh.NeighbourInfo(
                    "peer", "mwx", ADDR, self.peer.wireguard_public
                )
            },
            BabelRouter(b"\x01" * 8, 1, 0.0),
            self.routes.extend,
            tmp / "me",
        )
        self.transport = FakeTransport()
        self.cp.transport = self.transport  # type: ignore[assignment]

    def cert(self, ident: identity.Identity, ip: str, wg: bytes | None = None) -> Any:
        return issue_membership(
            self.admin,
            mesh=self.mesh,
            node_id=ident.node_id,
            name="n",
            wireguard_public=wg or ident.wireguard_public,
            mesh_ipv4=ipaddress.IPv4Address(ip),
            not_before=NOW - 60,
            expires_at=NOW + 3600,
            serial=1,
        )

    def event(self, ev: Any, was_up: bool = True) -> None:
        self.cp.on_event(PeerEvent(self.peer.node_id, ADDR, ev, was_up))

    def receive(self, data: bytes) -> None:
        self.event(MessageReceived(data))

    def peer_state(self) -> mesh.Peer:
        return self.cp.peers[self.peer.node_id]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def membership_of(world: World, cert: Any) -> bytes:
    return session.encode(session.Membership(cert.encode()))


def test_session_up_sends_our_certificate_first(world: World) -> None:
    world.event(SessionUp(world.peer.node_id))
    ((to, data),) = world.transport.sent
    assert to == world.peer.node_id
    msg = session.decode(data)
    assert isinstance(msg, session.Membership)
    assert msg.certificate == world.cp.own.certificate.encode()


def test_a_link_needs_session_certificate_and_tunnel(world: World) -> None:
    peer = world.peer_state()
    world.event(SessionUp(world.peer.node_id))
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    assert peer.member is not None and not peer.routing  # tunnel not yet carrying packets
    world.cp.wireguard_state(world.peer.node_id, True, 1.0)
    assert peer.routing and peer.state == "up"
    assert world.cp.router._links  # the Babel link is up
    world.cp.wireguard_state(world.peer.node_id, False, 2.0)
    assert not peer.routing
    world.cp.wireguard_state(world.peer.node_id, True, 3.0)
    world.event(SessionClosed("idle_timeout", False, 0, world.peer.node_id))
    assert not peer.routing and peer.member is None and peer.last_refusal == "idle_timeout"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda w: session.encode(
                session.BabelPacket(encode_packet([Hello(seqno=1, interval=400)]))
            ),
            "not_verified",
        ),
        (lambda w: b"\x07junk", "unknown_kind"),
        (lambda w: session.encode(session.Membership(b"\x02\x01garbage")), "malformed"),
        (lambda w: membership_of(w, w.cert(w.me, "10.77.0.9")), "wrong_node_id"),
        (
            lambda w: membership_of(w, w.cert(w.peer, "10.77.0.2", wg=bytes(32))),
            "wrong_wireguard_key",
        ),
    ],
)
def test_bad_input_closes_that_session_with_a_reason(world: World, make: Any, reason: str) -> None:
    world.event(SessionUp(world.peer.node_id))
    world.receive(make(world))
    assert world.transport.closed == [(world.peer.node_id, reason)]
    assert world.peer_state().member is None and world.peer_state().last_refusal == reason


def test_a_certificate_from_another_admin_is_refused(world: World, tmp_path: Path) -> None:
    forger = SigningKey(bytes([9]) * 32)
    forged_mesh = create_mesh(
        forger,
        mesh_id=bytes(16),
        name="t",
        ipv4_prefix=world.mesh.ipv4_prefix,
        ipv6_prefix=world.mesh.ipv6_prefix,
        issued_at=NOW,
    )
    cert = issue_membership(
        forger,
        mesh=forged_mesh,
        node_id=world.peer.node_id,
        name="p",
        wireguard_public=world.peer.wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.2"),
        not_before=NOW - 60,
        expires_at=NOW + 3600,
        serial=1,
    )
    world.event(SessionUp(world.peer.node_id))
    world.receive(membership_of(world, cert))
    assert world.transport.closed == [(world.peer.node_id, "unknown_issuer")]


def test_unknown_nodes_are_refused_at_the_handshake(world: World) -> None:
    assert world.cp.authorize(world.me.node_id) == "unknown_node"
    assert world.cp.authorize(world.peer.node_id) is None


def test_dials_back_off_while_the_neighbour_is_silent(world: World) -> None:
    world.cp.transport = world.transport  # type: ignore[assignment]
    times = []
    for step in range(400):
        now = step * 0.25
        before = len(world.transport.dialled)
        world.cp.tick(now)
        if len(world.transport.dialled) > before:
            times.append(now)
            world.event(
                SessionClosed("handshake_timeout", False, 0, world.peer.node_id), was_up=False
            )
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # The backoff doubles with each failed dial and stops at 30 s.
    assert gaps[:4] == pytest.approx([2.0, 4.0, 8.0, 16.0]) and max(gaps) == pytest.approx(30.0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_from_a_peer_never_raises(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
        world.event(SessionUp(world.peer.node_id))
        world.receive(data)
        assert len(world.transport.closed) <= 1
