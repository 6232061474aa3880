"""The control plane's session logic (meshd.core.control, in its shell meshd.daemon.control)
with recording stand-ins for the QUIC transport and the node's links: what it sends, whom
it refuses and why, which links it asks for, whom it dials and forgets, and when a
neighbour is a Babel link."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.adapters import identity
from meshd.adapters.quic import PeerEvent
from meshd.adapters.trust import load_revocations
from meshd.core.control import neighbours, plane, routes
from meshd.core.control.peer import LinkSpec, Peer, Source
from meshd.core.membership import (
    DEFAULT_SKEW_S,
    MeshTrust,
    OwnMembership,
    Revocation,
    RevocationSet,
    RevocationTarget,
    create_mesh,
    issue,
    issue_membership,
    revoke,
    verify_membership,
)
from meshd.core.membership.clock import MeshClock
from meshd.core.proto import session
from meshd.core.proto.babel import AE_IPV4, Hello, RouterId, Update, decode_packet, encode_packet
from meshd.core.routing.babel import BabelRouter
from meshd.core.transport.certs import node_certificate
from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.daemon.control import ControlService, Links

NOW = int(time.time())
ADDR = ("100.64.0.2", 6697)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.closed: list[tuple[str, str]] = []
        self.dialled: list[tuple[tuple[str, int], str | None]] = []
        self.verified_ids: list[str] = []

    def verified(self, node_id: str) -> None:
        self.verified_ids.append(node_id)

    def send_message(self, node_id: str, data: bytes) -> None:
        self.sent.append((node_id, data))

    def try_send(self, node_id: str, data: bytes) -> str | None:
        self.send_message(node_id, data)
        return None

    def close_peer(self, node_id: str, reason: str = "closed") -> None:
        self.closed.append((node_id, reason))

    def dial(self, addr: tuple[str, int], expected_node_id: str | None = None) -> None:
        self.dialled.append((addr, expected_node_id))


class FakeLinks:
    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.ensured: list[LinkSpec] = []
        self.removed: list[str] = []

    def link_port(self, node_id: str) -> int:
        return self.ports.setdefault(node_id, 51820 + len(self.ports))

    def ensure_link(self, spec: LinkSpec) -> None:
        self.ensured.append(spec)

    def remove_link(self, node_id: str) -> None:
        self.removed.append(node_id)


def control(
    me: identity.Identity,
    own: OwnMembership,
    router: BabelRouter,
    links: Links,
    apply_routes: Any,
    state_dir: Path,
    *,
    protocols: tuple[str, ...] = session.PROTOCOLS,
    clock: MeshClock | None = None,
    **options: Any,
) -> ControlService:
    """The plane (with ``options``) in its shell, as the node builds them."""
    core = plane.ControlPlane(
        me.node_id,
        own,
        router,
        clock or MeshClock(time.time, DEFAULT_SKEW_S),
        links.link_port,
        **options,
    )
    certificate = node_certificate(me.signing_key)
    return ControlService(core, certificate, links, apply_routes, state_dir, protocols=protocols)


class World:
    def __init__(self, tmp: Path, *, accept_unsigned: bool = False) -> None:
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
        self.links = FakeLinks()
        self.cp = control(
            self.me,
            own,
            BabelRouter(b"\x01" * 8, 1, 0.0),
            self.links,
            self.routes.extend,
            tmp / "me",
            bootstrap=((self.peer.node_id, ADDR, "peer"),),
            signing_key=self.me.signing_key,
            accept_unsigned=accept_unsigned,
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

    def event(self, ev: Any, was_up: bool = True, who: identity.Identity | None = None) -> None:
        self.cp.on_event(PeerEvent((who or self.peer).node_id, ADDR, ev, was_up))

    def receive(self, data: bytes, who: identity.Identity | None = None) -> None:
        self.event(MessageReceived(data), who=who)

    def verified(self, who: identity.Identity | None = None, ip: str = "10.77.0.2") -> None:
        who = who or self.peer
        self.event(SessionUp(who.node_id), who=who)
        self.receive(membership_of(self, self.cert(who, ip)), who=who)

    def sent_to(self, node_id: str) -> list[Any]:
        return [session.decode(d) for to, d in self.transport.sent if to == node_id]

    def peer_state(self) -> Peer:
        return self.cp.core.peers[self.peer.node_id]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def membership_of(world: World, cert: Any) -> bytes:
    return session.encode(session.Membership(cert.encode()))


def test_session_up_sends_our_clock_then_our_certificate(world: World) -> None:
    world.event(SessionUp(world.peer.node_id))
    (to, clock), (_, data) = world.transport.sent
    assert to == world.peer.node_id
    assert isinstance(session.decode(clock), session.Clock)
    msg = session.decode(data)
    assert isinstance(msg, session.Membership)
    assert msg.certificate == world.cp.core.own.certificate.encode()


def test_a_link_needs_session_certificate_and_tunnel(world: World) -> None:
    peer = world.peer_state()
    world.event(SessionUp(world.peer.node_id))
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    assert peer.member is not None and not peer.routing  # tunnel not yet carrying packets
    world.cp.wireguard_state(world.peer.node_id, True, 1.0)
    assert peer.routing and peer.state("up") == "up"  # its tunnel carrying packets
    assert world.cp.core.router._links  # the Babel link is up
    world.cp.wireguard_state(world.peer.node_id, False, 2.0)
    assert not peer.routing
    world.cp.wireguard_state(world.peer.node_id, True, 3.0)
    world.event(SessionClosed("idle_timeout", False, 0, world.peer.node_id))
    assert not peer.routing and peer.member is None and peer.last_refusal == "idle_timeout"


def test_babel_output_of_a_burst_leaves_together(tmp_path: Path) -> None:
    """Updates that arrive within FLUSH_DELAY_S give one batch of route changes and one
    packet per neighbour, not one per update received. (Their origins are made up: taken
    as meshd/1's unsigned routes are.)"""
    world = World(tmp_path / "w", accept_unsigned=True)
    other = identity.generate(tmp_path / "other")
    for who, ip in ((world.peer, "10.77.0.2"), (other, "10.77.0.3")):
        world.verified(who=who, ip=ip)
        world.cp.wireguard_state(who.node_id, True, 1.0)
    world.cp.flush()
    world.transport.sent.clear()
    world.routes.clear()
    hosts = range(10, 15)

    def update(host: int) -> bytes:
        prefix = ipaddress.ip_network(f"10.77.0.{host}/32")
        tlv = Update(ae=AE_IPV4, prefix=prefix, interval=1600, seqno=1, metric=96)
        packet = encode_packet([RouterId(router_id=bytes([host]) * 8), tlv])
        return session.encode(session.BabelPacket(packet))

    async def burst() -> None:
        for host in hosts:
            world.receive(update(host))
        assert world.routes == [] and world.transport.sent == []  # not yet
        await asyncio.sleep(plane.FLUSH_DELAY_S * 3)

    asyncio.run(burst())
    assert sorted(str(c.prefix) for c in world.routes) == [f"10.77.0.{h}/32" for h in hosts]
    [packet] = [m for m in world.sent_to(other.node_id) if isinstance(m, session.BabelPacket)]
    updates = [t for t in decode_packet(packet.packet) if isinstance(t, Update)]
    assert sorted(str(t.prefix) for t in updates) == [f"10.77.0.{h}/32" for h in hosts]


def test_routes_a_member_may_not_announce_are_refused_counted_and_the_session_kept(
    world: World, tmp_path: Path
) -> None:
    other = identity.generate(tmp_path / "other")
    for who, ip in ((world.peer, "10.77.0.2"), (other, "10.77.0.3")):
        world.verified(who=who, ip=ip)
        world.cp.wireguard_state(who.node_id, True, 1.0)
    world.cp.flush()
    world.routes.clear()
    peer_rid = routes.router_id(bytes(world.peer.signing_key.verify_key))
    announced = ["0.0.0.0/1", "128.0.0.0/1", "192.168.1.0/24", "172.31.0.2/32", "10.77.0.3/32",
                 "10.77.0.1/32", "10.77.0.2/32"]  # fmt: skip
    tlvs: list[Any] = [RouterId(router_id=peer_rid)]
    for text in announced:
        prefix = ipaddress.ip_network(text)
        tlvs.append(Update(ae=AE_IPV4, prefix=prefix, interval=1600, seqno=1, metric=0))

    async def receive() -> None:  # Babel input is flushed from the event loop
        world.receive(session.encode(session.BabelPacket(encode_packet(tlvs))))
        world.cp.flush()

    asyncio.run(receive())
    assert [str(c.prefix) for c in world.routes] == ["10.77.0.2/32"]  # only its own
    peer = world.peer_state()
    assert peer.refusals == {
        "prefix_not_host": 3,
        "prefix_outside_mesh": 1,
        "wrong_origin": 2,  # the other neighbour's address, and ours
    }
    assert peer.session_up and peer.routing and peer.last_refusal is None


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda w: session.encode(
                session.BabelPacket(encode_packet([Hello(seqno=1, interval=400)]))
            ),
            "not_verified",
        ),
        (lambda w: b"\x7fjunk", "unknown_kind"),
        (lambda w: session.encode(session.ExitRequest()), "not_verified"),
        (lambda w: session.encode(session.Membership(b"\x02\x01garbage")), "malformed"),
        (lambda w: membership_of(w, w.cert(w.me, "10.77.0.9")), "wrong_node_id"),
        (lambda w: session.encode(session.Link(51820)), "not_verified"),
        (lambda w: b"\x03\x00", "bad_length"),
        (lambda w: b"\x04\x01\x01", "too_many"),
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


def test_any_member_may_connect_but_not_as_us_nor_revoked(world: World, tmp_path: Path) -> None:
    stranger = identity.generate(tmp_path / "stranger")
    assert world.cp.core.authorize(stranger.node_id) is None  # its certificate comes next
    assert world.cp.core.authorize(world.me.node_id) == "own_node_id"
    world.trust.revocations.add(revoke_node(world, stranger))
    assert world.cp.core.authorize(stranger.node_id) == "revoked"


def revoke_node(world: World, who: identity.Identity) -> Any:
    return revoke(
        world.admin,
        mesh=world.mesh,
        target=RevocationTarget.node(who.node_id),
        revoked_at=NOW - 1,
    )


def test_the_link_is_built_from_the_ports_both_sides_announce(world: World) -> None:
    world.verified()
    (link,) = [m for m in world.sent_to(world.peer.node_id) if isinstance(m, session.Link)]
    assert link.wireguard_port == 51820
    assert world.links.ensured == []  # the peer's port is still unknown
    world.receive(session.encode(session.Link(52000)))
    (spec,) = world.links.ensured
    assert spec.endpoint == (ADDR[0], 52000) and spec.listen_port == 51820
    assert spec.wireguard_public == world.peer.wireguard_public  # from its certificate
    assert spec.ifname == world.peer_state().ifname and spec.name == "n"
    world.receive(session.encode(session.Link(52000)))
    assert len(world.links.ensured) == 1  # nothing changed, nothing asked


def test_endpoints_are_shared_both_ways(world: World, tmp_path: Path) -> None:
    third = identity.generate(tmp_path / "third")
    world.verified()
    world.cp.on_event(PeerEvent(third.node_id, ("100.64.9.2", 6697), SessionUp(third.node_id)))
    world.receive(membership_of(world, world.cert(third, "10.77.0.3")), who=third)
    # The newcomer hears where the peer is; the peer hears where the newcomer is.
    told_third = [m for m in world.sent_to(third.node_id) if isinstance(m, session.Endpoints)]
    assert told_third == [session.Endpoints((session.Endpoint(world.peer.node_id, *ADDR),))]
    told_peer = [m for m in world.sent_to(world.peer.node_id) if isinstance(m, session.Endpoints)]
    assert told_peer == [session.Endpoints((session.Endpoint(third.node_id, "100.64.9.2", 6697),))]


def test_a_shared_endpoint_is_tried_a_few_times_then_dropped(world: World, tmp_path: Path) -> None:
    far = identity.generate(tmp_path / "far")
    world.verified()
    world.cp.core.neighbours.local_subnets = [ipaddress.IPv4Network("100.64.5.0/24")]
    news = session.Endpoints(
        (
            session.Endpoint(far.node_id, "100.64.5.5", 6697),
            session.Endpoint(far.node_id, "100.65.5.5", 6697),  # not on our segments
            session.Endpoint(far.node_id, "fe80::1", 6697),  # not worth sharing: ignored
            session.Endpoint(world.me.node_id, "100.64.5.1", 6697),  # ourselves: ignored
        )
    )
    world.receive(session.encode(news))
    assert far.node_id in world.cp.core.peers and not world.cp.core.peers[far.node_id].is_neighbour
    for step in range(400):
        world.cp.tick(step * 0.25)
        if world.transport.dialled and world.transport.dialled[-1][1] == far.node_id:
            world.event(SessionClosed("handshake_timeout", False, 0, far.node_id), False, far)
    tries = [a for a, n in world.transport.dialled if n == far.node_id]
    assert tries == [("100.64.5.5", 6697)] * neighbours.SHARED_TRIES
    assert far.node_id not in world.cp.core.peers


def test_a_neighbour_cannot_make_us_dial_more_than_a_few_addresses_of_a_node(
    world: World, tmp_path: Path
) -> None:
    far = identity.generate(tmp_path / "far")
    world.verified()
    world.cp.core.neighbours.local_subnets = [ipaddress.IPv4Network("100.64.0.0/16")]
    many = [session.Endpoint(far.node_id, f"100.64.7.{n}", 6697) for n in range(1, 101)]
    world.receive(session.encode(session.Endpoints(tuple(many))))
    held = set(world.cp.core.peers[far.node_id].addresses)
    assert len(held) == neighbours.MAX_SHARED_ADDRESSES
    refused = 100 - neighbours.MAX_SHARED_ADDRESSES
    assert world.peer_state().refusals.get("endpoint_addresses_full") == refused
    assert world.cp.core.neighbours.refusals.get("addresses_full") == refused
    for step in range(400):
        world.cp.tick(step * 0.25)
        if world.transport.dialled and world.transport.dialled[-1][1] == far.node_id:
            world.event(SessionClosed("handshake_timeout", False, 0, far.node_id), False, far)
    tries = [a for a, n in world.transport.dialled if n == far.node_id]
    assert tries and set(tries) <= held  # a few dials of those, then it is forgotten


def test_revocations_spread_and_cut_the_revoked_node_off(world: World, tmp_path: Path) -> None:
    third = identity.generate(tmp_path / "third")
    world.verified()
    world.cp.on_event(PeerEvent(third.node_id, ("100.64.9.2", 6697), SessionUp(third.node_id)))
    world.receive(membership_of(world, world.cert(third, "10.77.0.3")), who=third)
    world.receive(session.encode(session.Link(52000)), who=third)
    record = revoke_node(world, third).encode()
    world.receive(session.encode(session.Revocations((record, b"\x02garbage"))))
    # Passed on to everyone but the sender, kept on disk, and the node is cut off.
    assert session.Revocations((record,)) in world.sent_to(third.node_id)
    assert session.Revocations((record,)) not in world.sent_to(world.peer.node_id)
    assert (world.cp.state_dir / "revocations").exists()
    assert (third.node_id, "revoked") in world.transport.closed
    assert world.links.removed == [third.node_id] and third.node_id not in world.cp.core.peers
    assert world.peer_state().member is not None  # the sender's session is unaffected
    # A restarted node knows it from its state directory.
    fresh = RevocationSet(world.mesh.mesh_id, world.trust.admins)
    load_revocations(world.cp.state_dir, fresh)
    assert len(fresh) == 1
    # A newcomer gets the whole set as soon as it verifies.
    late = identity.generate(tmp_path / "late")
    world.cp.on_event(PeerEvent(late.node_id, ("100.64.8.2", 6697), SessionUp(late.node_id)))
    world.receive(membership_of(world, world.cert(late, "10.77.0.4")), who=late)
    assert session.Revocations((record,)) in world.sent_to(late.node_id)


def test_a_flood_of_one_kind_is_counted_and_the_rest_still_served(world: World) -> None:
    world.verified()
    budget = session.budget.BUDGETS["link"]
    for k in range(50):  # each a new port: each would reconfigure the link
        world.receive(session.encode(session.Link(52000 + k)))
    # The burst is taken (a fraction of a token more may have come back meanwhile).
    assert len(world.links.ensured) == budget.burst
    peer = world.peer_state()
    assert peer.refusals == {"rate_link": 50 - budget.burst}
    assert peer.session_up and world.transport.closed == []
    # Other kinds draw on their own budgets: a revocation still spreads and is enforced.
    record = revoke_node(world, world.me).encode()
    world.receive(session.encode(session.Revocations((record,))))
    assert (world.cp.state_dir / "revocations").exists()
    # A new session starts with full budgets.
    world.verified()
    world.receive(session.encode(session.Link(53000)))
    assert world.links.ensured[-1].endpoint == (ADDR[0], 53000)


def test_a_forged_admin_signature_closes_the_session(world: World, tmp_path: Path) -> None:
    stranger = SigningKey(bytes([9]) * 32)
    not_admin = [
        issue._signed(
            Revocation,
            stranger,
            mesh_id=world.mesh.mesh_id,
            target=RevocationTarget.node(identity.generate(tmp_path / f"n{k}").node_id),
            revoked_at=NOW - 1,
        ).encode()
        for k in range(3)
    ]
    world.verified()
    heard: list[tuple[str, dict[str, Any]]] = []

    def journal(name: str, /, level: int = 0, **fields: Any) -> None:
        heard.append((name, fields))

    world.cp.core.trust.journal = journal
    world.receive(session.encode(session.Revocations(tuple(not_admin))))
    # Signed by no admin: refused, counted one by one, one warning line; the session stays.
    assert world.peer_state().refusals == {"revocation_unknown_issuer": 3}
    assert [(name, fields["refused"]) for name, fields in heard] == [("revocation.rejected", 3)]
    assert world.transport.closed == []
    good = revoke_node(world, identity.generate(tmp_path / "x")).encode()
    forged = bytearray(revoke_node(world, identity.generate(tmp_path / "y")).encode())
    forged[-1] ^= 1  # the admin's signature, spoiled
    after = revoke_node(world, identity.generate(tmp_path / "z")).encode()
    world.receive(session.encode(session.Revocations((good, bytes(forged), after))))
    # What verified before the forgery is taken; nothing after it is read.
    assert world.transport.closed == [(world.peer.node_id, "forged_revocation")]
    held = {r.encode() for r in world.cp.core.own.trust.revocations}
    assert good in held and after not in held
    assert world.peer_state().refusals["revocation_bad_signature"] == 1


def test_a_neighbour_gone_for_long_loses_its_link(world: World, tmp_path: Path) -> None:
    world.verified()
    world.receive(session.encode(session.Link(52000)))
    world.event(SessionClosed("idle_timeout", False, 0, world.peer.node_id))
    world.cp.tick(time.monotonic() + world.cp.core.neighbours.forget_after_s + 1)
    assert world.links.removed == [world.peer.node_id]
    assert world.peer.node_id in world.cp.core.peers  # a bootstrap peer is still dialled


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


def test_a_stranger_that_never_verifies_is_closed_and_forgotten(
    world: World, tmp_path: Path
) -> None:
    stranger = identity.generate(tmp_path / "stranger")
    world.event(SessionUp(stranger.node_id), who=stranger)
    since = world.cp.core.peers[stranger.node_id].session_since
    world.cp.tick(since + plane.VERIFY_S - 1)
    assert world.transport.closed == []
    world.cp.tick(since + plane.VERIFY_S + 1)
    assert world.transport.closed == [(stranger.node_id, "not_verified")]
    world.event(SessionClosed("not_verified", False, 0, stranger.node_id), who=stranger)
    # Nothing kept, and never dialled back at the address it came from.
    assert stranger.node_id not in world.cp.core.peers
    world.cp.tick(since + 100)
    assert all(n != stranger.node_id for _, n in world.transport.dialled)


def test_a_tunnel_that_comes_back_redials_at_once(world: World) -> None:
    world.verified()
    world.receive(session.encode(session.Link(52000)))
    world.cp.wireguard_state(world.peer.node_id, True, 1.0)
    world.event(SessionClosed("idle_timeout", False, 0, world.peer.node_id))  # a long cut
    peer = world.peer_state()
    peer.failed_dials, peer.next_dial = 8, 1000.0  # backed off while the underlay was gone
    world.cp.wireguard_state(world.peer.node_id, False, 2.0)
    world.cp.wireguard_state(world.peer.node_id, True, 3.0)  # healed
    world.cp.tick(3.0)
    assert world.transport.dialled[-1] == (ADDR, world.peer.node_id)


def test_an_address_a_neighbour_holds_is_not_dialled_for_another_node(
    world: World, tmp_path: Path
) -> None:
    stranger = identity.generate(tmp_path / "stranger")
    world.verified()  # the peer's session comes from ADDR
    world.cp.discovered(stranger.node_id, ADDR, Source.BEACON, 1.0)
    world.cp.tick(1.0)
    assert stranger.node_id not in world.cp.core.peers
    assert all(n != stranger.node_id for _, n in world.transport.dialled)


def test_a_live_neighbour_whose_certificate_expires_is_dropped(world: World) -> None:
    world.verified()
    world.receive(session.encode(session.Link(52000)))
    world.cp.wireguard_state(world.peer.node_id, True, 1.0)
    assert world.peer_state().routing
    expiry = NOW + 3600
    world.cp.core.clock.system = lambda: expiry + 60  # within the clock-skew tolerance
    world.cp.enforce_membership(2.0)
    assert world.peer_state().routing
    world.cp.core.clock.system = lambda: expiry + DEFAULT_SKEW_S + 1
    world.cp.enforce_membership(3.0)
    assert world.transport.closed == [(world.peer.node_id, "expired")]
    assert world.links.removed == [world.peer.node_id]
    assert not world.cp.core.router._links  # no longer a Babel link


def test_gateway_adverts_are_flooded_once_and_shown_with_a_reason(
    world: World, tmp_path: Path
) -> None:
    from meshd.core.proto.gateway import make_advert

    third = identity.generate(tmp_path / "third")
    world.verified()
    world.cp.on_event(PeerEvent(third.node_id, ("100.64.9.2", 6697), SessionUp(third.node_id)))
    world.receive(membership_of(world, world.cert(third, "10.77.0.3")), who=third)
    gateway = identity.generate(tmp_path / "gateway")  # a member we know of, not a neighbour
    world.cp.core.trust.add_to_directory((world.cert(gateway, "10.77.0.9"), ()))
    advert = make_advert(
        gateway.signing_key,
        mesh_id=world.mesh.mesh_id,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.9"),
        exit_port=51999,
        seqno=1,
        issued_at=int(time.time()),  # not NOW: taken at import, maybe minutes ago
        lifetime_s=90,
    )
    message = session.encode(session.Gateway(advert.encode()))
    world.receive(message)
    world.receive(message)  # a copy from another way round: not passed on again
    assert world.sent_to(third.node_id).count(session.Gateway(advert.encode())) == 1
    assert session.Gateway(advert.encode()) not in world.sent_to(world.peer.node_id)
    world.receive(session.encode(session.Gateway(advert.encode()[:-1] + b"\0")))
    assert world.transport.closed == []  # a spoiled advert is dropped, the session kept
    world.cp.tick(time.monotonic())  # the choice is made each tick, status only reads it
    status = world.cp.core.gateways.status()
    assert status["selected"] is None
    (candidate,) = status["candidates"]
    assert candidate["node_id"] == advert.node_id and candidate["reason"] == "no route to it"
    assert candidate["mesh_ipv4"] == "10.77.0.9"


def test_an_advert_is_taken_only_from_a_member_for_its_own_address_and_time(
    world: World, tmp_path: Path
) -> None:
    """A key proves no membership: a member advertising another's address (that one's
    metric would win it users) or one issued in the future (it would never expire) is
    refused, counted in the sending neighbour's refusals and not passed on; the session
    stays. An advert of a key whose certificate is not here (a key no admin certified, or
    a new member's advert that outran its certificate) is held, neither used, passed on
    nor counted, and taken with the next tick once its certificate arrives."""
    from meshd.core.proto.gateway import make_advert

    third = identity.generate(tmp_path / "third")
    world.verified()
    world.cp.on_event(PeerEvent(third.node_id, ("100.64.9.2", 6697), SessionUp(third.node_id)))
    world.receive(membership_of(world, world.cert(third, "10.77.0.3")), who=third)
    member = identity.generate(tmp_path / "member")
    world.cp.core.trust.add_to_directory((world.cert(member, "10.77.0.9"), ()))
    newcomer = identity.generate(tmp_path / "newcomer")
    now = int(time.time())

    def advert(key: SigningKey, address: str, issued_at: int = now) -> bytes:
        return make_advert(
            key,
            mesh_id=world.mesh.mesh_id,
            mesh_ipv4=ipaddress.IPv4Address(address),
            exit_port=51999,
            seqno=1,
            issued_at=issued_at,
            lifetime_s=90,
        ).encode()

    def passed_on() -> list[session.Gateway]:
        return [m for m in world.sent_to(third.node_id) if isinstance(m, session.Gateway)]

    lies = {
        "gateway_not_its_address": advert(member.signing_key, "10.77.0.3"),
        "gateway_from_the_future": advert(member.signing_key, "10.77.0.9", now + 86400),
    }
    for data in lies.values():
        world.receive(session.encode(session.Gateway(data)))
    early = advert(newcomer.signing_key, "10.77.0.8")
    world.receive(session.encode(session.Gateway(early)))
    assert world.peer_state().refusals == dict.fromkeys(lies, 1)
    assert passed_on() == [] and world.transport.closed == []
    assert world.cp.core.gateways.table.adverts == {}
    world.receive(session.encode(session.Gateway(advert(member.signing_key, "10.77.0.9"))))
    assert list(world.cp.core.gateways.table.adverts) == [member.node_id]  # the control
    # The newcomer's certificate arrives: its held advert is taken and passed on.
    world.cp.core.trust.add_to_directory((world.cert(newcomer, "10.77.0.8"), ()))
    world.cp.tick(time.monotonic())
    assert newcomer.node_id in world.cp.core.gateways.table.adverts
    assert session.Gateway(early) in passed_on()
    assert world.cp.core.gateways.held == {}


def test_a_next_hop_whose_traffic_gets_no_answer_is_kept_out_and_shown(tmp_path: Path) -> None:
    """meshd.core.routing.progress in the control plane: flows to 10.77.0.9 through the peer get
    no answer, another neighbour has a route there too: the peer is kept out of it."""
    from meshd.core.routing.progress import TCP, FlowSample

    world = World(tmp_path / "w", accept_unsigned=True)  # made-up origins: taken as meshd/1's
    other = identity.generate(tmp_path / "other")
    for who, ip in ((world.peer, "10.77.0.2"), (other, "10.77.0.3")):
        world.verified(who=who, ip=ip)
        world.cp.wireguard_state(who.node_id, True, 1.0)
    far = ipaddress.ip_network("10.77.0.9/32")

    async def announce(*updates: tuple[identity.Identity, int, int]) -> None:
        for who, seqno, metric in updates:  # Babel input is flushed from the event loop
            tlv = Update(ae=AE_IPV4, prefix=far, interval=1600, seqno=seqno, metric=metric)
            packet = encode_packet([RouterId(router_id=bytes([9]) * 8), tlv])
            world.receive(session.encode(session.BabelPacket(packet)), who=who)
        await asyncio.sleep(plane.FLUSH_DELAY_S * 3)

    asyncio.run(announce((world.peer, 1, 0), (other, 1, 96)))
    assert world.cp.core.router.selected()[far].next_hop == world.peer.node_id

    def flows(sent: int) -> list[FlowSample]:
        return [FlowSample(7, TCP, far.network_address, sent, 0)]

    for t, sent in ((2.0, 1), (3.0, 2), (5.0, 4)):
        world.cp.observe_progress(flows(sent), t)
    # The other route is unfeasible (we advertised the peer's, shorter): the origin is asked
    # for a newer seqno, and its answer through the other neighbour is taken.
    assert far not in world.cp.core.router.selected()
    asyncio.run(announce((other, 2, 96)))
    assert world.cp.core.router.selected()[far].next_hop == other.node_id
    (hole,) = world.cp.black_hole_status()
    assert (hole["destination"], hole["via"], hole["name"]) == (str(far), world.peer.node_id, "n")
    assert hole["reason"] == "no_progress" and hole["unanswered"] == 4
