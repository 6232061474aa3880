"""Protocol versions in the control plane (meshd.core.control): what a meshd/2 session starts
with, what a meshd/1 one never carries, features gating sends, and a dial refused for want
of a common version counted and shown. The session pair under it is tested in
test_transport_session.py; the recording transport is test_control_plane.py's."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from meshd.core.proto import session
from meshd.core.proto.babel import OriginSignature, Update, decode_packet
from meshd.core.proto.session import FEATURES, MESHD_1, MESHD_2, VERSION_UNSUPPORTED, Feature
from meshd.core.routing.babel import BabelRouter
from meshd.core.routing.origin import signed_message
from meshd.core.transport.events import SessionClosed, SessionUp
from meshd.daemon import control as shell
from tests.unit.daemon.test_control_plane import FakeLinks, World, control, membership_of


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def capabilities(*names: str) -> bytes:
    return session.encode(session.Capabilities(frozenset(names)))


def up(world: World, protocol: str) -> None:
    world.event(SessionUp(world.peer.node_id, protocol))


def sent_kinds(world: World) -> list[type]:
    return [type(m) for m in world.sent_to(world.peer.node_id)]


def test_a_meshd2_session_starts_with_our_capabilities_then_clock_and_certificate(
    world: World,
) -> None:
    up(world, MESHD_2)
    first, *rest = world.sent_to(world.peer.node_id)
    assert first == session.Capabilities(FEATURES)
    assert "capabilities" in first.features
    assert [type(m) for m in rest] == [session.Clock, session.Membership]
    peer = world.peer_state()
    assert peer.protocol == MESHD_2 and peer.features == frozenset()


def test_a_meshd1_session_never_carries_capabilities(world: World) -> None:
    up(world, MESHD_1)
    assert sent_kinds(world) == [session.Clock, session.Membership]
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    assert world.transport.closed == []
    peer = world.peer_state()
    assert peer.member is not None and peer.protocol == MESHD_1 and peer.features == frozenset()
    assert not world.cp.core.peer_supports(world.peer.node_id, Feature.CAPABILITIES)
    assert session.Capabilities not in sent_kinds(world)  # nothing new for an old peer
    status = peer.status()
    assert (status["protocol"], status["features"]) == (MESHD_1, [])


def test_capabilities_are_taken_and_unknown_names_ignored(world: World) -> None:
    up(world, MESHD_2)
    assert not world.cp.core.peer_supports(world.peer.node_id, Feature.CAPABILITIES)  # not yet
    world.receive(capabilities("capabilities", "teleport", "zz_from_meshd_9"))
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    assert world.transport.closed == []
    peer = world.peer_state()
    assert peer.member is not None
    assert peer.features == frozenset({Feature.CAPABILITIES})  # what this build knows
    assert world.cp.core.peer_supports(world.peer.node_id, Feature.CAPABILITIES)
    assert world.cp.core.peer_supports(peer, Feature.CAPABILITIES)
    assert not world.cp.core.peer_supports("not a neighbour", Feature.CAPABILITIES)
    status = peer.status()
    assert (status["protocol"], status["features"]) == (MESHD_2, ["capabilities"])


def test_a_peer_that_announces_nothing_supports_nothing(world: World) -> None:
    up(world, MESHD_2)
    world.receive(capabilities())
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    assert world.transport.closed == [] and world.peer_state().member is not None
    assert not world.cp.core.peer_supports(world.peer.node_id, Feature.CAPABILITIES)


@pytest.mark.parametrize(
    ("protocol", "messages", "reason"),
    [
        # Anything before CAPABILITIES on meshd/2: the peer broke the version it agreed on.
        (MESHD_2, [lambda w: session.encode(session.Clock(1))], "no_capabilities"),
        (MESHD_2, [lambda w: membership_of(w, w.cert(w.peer, "10.77.0.2"))], "no_capabilities"),
        # Once only, and never on meshd/1 (an old node would not know the kind at all).
        (MESHD_2, [lambda w: capabilities("capabilities")] * 2, "unexpected_kind"),
        (MESHD_1, [lambda w: capabilities("capabilities")], "unexpected_kind"),
        # Malformed: refused with the codec's reason.
        (MESHD_2, [lambda w: b"\x15\x02\x01a"], "truncated"),
        (MESHD_2, [lambda w: b"\x15\x01\x01A"], "malformed"),
        (MESHD_2, [lambda w: b"\x15\x02\x01b\x01a"], "not_canonical"),
        (MESHD_2, [lambda w: b"\x15\x41"], "too_many"),
    ],
)
def test_capabilities_out_of_place_or_malformed_close_the_session_counted(
    world: World, protocol: str, messages: list[Any], reason: str
) -> None:
    up(world, protocol)
    for make in messages:
        world.receive(make(world))
    assert world.transport.closed == [(world.peer.node_id, reason)]
    peer = world.peer_state()
    assert peer.last_refusal == reason and peer.refusals == {reason: 1}


def test_a_new_session_starts_its_features_afresh(world: World) -> None:
    up(world, MESHD_2)
    world.receive(capabilities("capabilities"))
    assert world.peer_state().features == {Feature.CAPABILITIES}
    up(world, MESHD_1)  # the neighbour restarted as an older build: a new session replaces
    peer = world.peer_state()
    assert (peer.protocol, peer.features) == (MESHD_1, frozenset())
    world.receive(capabilities("capabilities"))
    assert world.transport.closed == [(world.peer.node_id, "unexpected_kind")]


def test_a_session_down_forgets_its_version(world: World) -> None:
    up(world, MESHD_2)
    world.receive(capabilities("capabilities"))
    world.event(SessionClosed("idle_timeout", False, 0, world.peer.node_id))
    peer = world.peer_state()
    assert (peer.protocol, peer.features) == (None, frozenset())
    assert not world.cp.core.peer_supports(peer, Feature.CAPABILITIES)
    assert peer.status()["protocol"] is None


def test_a_dial_refused_for_its_version_is_counted_and_shown(world: World) -> None:
    refused = SessionClosed(VERSION_UNSUPPORTED, True, 0x178, world.peer.node_id)
    world.event(refused, was_up=False)
    world.event(refused, was_up=False)
    peer = world.peer_state()
    assert peer.refusals == {VERSION_UNSUPPORTED: 2}
    assert peer.last_refusal == VERSION_UNSUPPORTED and peer.state(None) == "down"
    assert peer.status()["refusal"] == VERSION_UNSUPPORTED
    # Other handshake failures are not the neighbour's doing: shown, not counted.
    world.event(SessionClosed("handshake_timeout", False, 0, world.peer.node_id), was_up=False)
    assert peer.refusals == {VERSION_UNSUPPORTED: 2}


def test_the_versions_offered_follow_the_config(world: World, tmp_path: Path) -> None:
    assert world.cp.session_settings.alpn_protocols == (MESHD_2, MESHD_1)
    routes: list[Any] = []
    (tmp_path / "old").mkdir()  # its state directory
    old = control(
        world.me,
        world.cp.core.own,
        BabelRouter(b"\x02" * 8, 1, 0.0),
        FakeLinks(),
        routes.extend,
        tmp_path / "old",
        protocols=(MESHD_1,),  # config control.protocols = ["meshd/1"]
    )
    assert old.session_settings.alpn_protocols == (MESHD_1,)
    assert old.session_settings.idle_timeout == shell.SESSION_SETTINGS.idle_timeout


def _own_updates(world: World) -> list[Update]:
    """The Updates of our own address in the Babel packets sent to the peer."""
    found = []
    for message in world.sent_to(world.peer.node_id):
        if isinstance(message, session.BabelPacket):
            found += [t for t in decode_packet(message.packet) if isinstance(t, Update)]
    return [u for u in found if u.prefix == OWN_PREFIX]


OWN_PREFIX = ipaddress.ip_network("10.77.0.1/32")


@pytest.mark.parametrize(
    ("protocol", "features", "signed"),
    [
        (MESHD_2, ("capabilities", "signed_routes"), True),
        (MESHD_2, ("capabilities",), False),  # a meshd/2 build from before signed routes
        (MESHD_1, (), False),  # meshd/1's wire format: no sub-TLV it never sent
    ],
)
def test_route_signatures_go_only_to_peers_that_announced_them(
    world: World, protocol: str, features: tuple[str, ...], signed: bool
) -> None:
    world.cp.core.router.announce(OWN_PREFIX)
    up(world, protocol)
    if protocol == MESHD_2:
        world.receive(capabilities(*features))
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    world.cp.wireguard_state(world.peer.node_id, True, 1.0)
    world.cp.flush()
    (update,) = _own_updates(world)
    proofs = [s for s in update.sub_tlvs if isinstance(s, OriginSignature)]
    assert bool(proofs) is signed
    if signed:
        message = signed_message(
            world.cp.core.router.router_id, OWN_PREFIX, update.seqno, proofs[0].time
        )
        world.me.signing_key.verify_key.verify(message, proofs[0].signature)
    status = world.cp.core.routes.status()
    assert status["signed"] == 1 and status["unsigned_routes"] == "refuse"
