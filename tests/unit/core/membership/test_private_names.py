"""Private household names (meshd.core.membership.names): the certificate holds a commitment, the
token carries the name, a neighbour is shown it (NAME) and checks it; everyone else sees the
node's id. Issue 19: the directory tells every member about every other, not their names."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from meshd.core.invites import BootstrapEndpoint, InviteError, Issuer, issue_invite, parse_token
from meshd.core.invites.token import InviteToken
from meshd.core.membership import MeshTrust, issue_membership, verify_membership
from meshd.core.membership.directory import Directory, Entry
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.membership.names import (
    PREFIX,
    SALT_LENGTH,
    NameOpening,
    commit,
    is_committed,
    salt_for_invite,
    shown,
)
from meshd.core.proto import session
from meshd.core.proto.session import Feature
from meshd.core.transport.events import SessionUp
from tests.golden.invites import make_vectors as GEN
from tests.unit.daemon.test_control_plane import World, membership_of

SALT = bytes(range(SALT_LENGTH))


def test_a_commitment_fits_a_certificate_name_and_hides_the_name() -> None:
    certified = commit("Haus am See", SALT)
    assert certified.startswith(PREFIX) and len(certified) == 59 and is_committed(certified)
    assert "Haus" not in certified and certified == commit("Haus am See", SALT)
    assert commit("Haus am See", bytes(SALT_LENGTH)) != certified  # the salt matters
    assert commit("Haus am see", SALT) != certified
    with pytest.raises(ValueError):
        commit("Haus", b"short")
    with pytest.raises(ValueError):
        commit("", SALT)


def test_only_the_right_name_and_salt_open_it() -> None:
    certified = commit("Haus am See", SALT)
    assert NameOpening("Haus am See", SALT).opens(certified)
    assert not NameOpening("Haus am Meer", SALT).opens(certified)
    assert not NameOpening("Haus am See", bytes(SALT_LENGTH)).opens(certified)
    assert not NameOpening("Haus am See", SALT).opens("Haus am See")  # not committed
    with pytest.raises(ValueError):
        NameOpening("bad\nname", SALT)


def test_what_a_person_sees() -> None:
    node = "A" * 43
    certified = commit("Haus am See", SALT)
    assert shown("Haus am See", node) == "Haus am See"  # a name shown mesh-wide
    assert shown(certified, node) == "node AAAAAAAA"
    assert shown(certified, node, NameOpening("Haus am See", SALT)) == "Haus am See"
    assert shown(certified, node, NameOpening("Lies", SALT)) == "node AAAAAAAA"


def _issuer() -> Issuer:
    mesh, _ = GEN.mesh_and_delegation()
    return Issuer(GEN.ADMIN, MeshTrust.from_definition(mesh, [GEN.node_id(GEN.ADMIN)]), None)


def _invite(name: str = "Haus am See", **more: object) -> InviteToken:
    return issue_invite(
        _issuer(),
        name=name,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.20"),
        bootstrap=[BootstrapEndpoint.from_address(GEN.node_id(GEN.ADMIN), "192.0.2.10:6697")],
        issued_at=GEN.T0,
        expires_at=GEN.T0 + 3600,
        invite_id=bytes(16),
        secret=bytes(range(32)),
        **more,  # type: ignore[arg-type]
    )


def test_an_invite_is_private_unless_the_name_is_to_be_shown() -> None:
    private = _invite()
    assert private.invite.name == commit("Haus am See", salt_for_invite(bytes(range(32))))
    assert private.node_name == "Haus am See" and private.opening is not None
    back = parse_token(private.text())
    assert (back.invite, back.secret, back.node_name) == (
        private.invite,
        private.secret,
        "Haus am See",
    )
    shown_name = _invite(show_name=True)
    assert shown_name.invite.name == "Haus am See" and shown_name.opening is None
    assert parse_token(shown_name.text()).node_name == "Haus am See"
    with pytest.raises(ValueError, match="must not begin"):
        _invite(PREFIX + "x", show_name=True)


def test_a_token_whose_name_was_changed_is_refused() -> None:
    private = _invite()
    raw = private.invite.encode() + private.secret
    for name in (b"Haus am Meer", b"\xff\xfe"):
        text = base64.urlsafe_b64encode(raw + name + bytes([len(name)])).rstrip(b"=").decode()
        with pytest.raises(InviteError):
            parse_token(text)
    plain = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # the name left out
    with pytest.raises(InviteError):
        parse_token(plain)


def test_a_private_certificate_verifies_and_its_directory_entry_holds_no_name() -> None:
    token = _invite()
    mesh, _ = GEN.mesh_and_delegation()
    trust = MeshTrust.from_definition(mesh, [GEN.node_id(GEN.ADMIN)])
    cert = issue_membership(
        GEN.ADMIN,
        mesh=mesh,
        node_id=GEN.node_id(GEN.JOINER),
        name=token.invite.name,
        wireguard_public=GEN.JOINER_WG,
        mesh_ipv4=token.invite.mesh_ipv4,
        not_before=GEN.T0,
        expires_at=GEN.T0 + 3600,
        serial=5,
    )
    verify_membership(cert, (), trust, GEN.T0 + 1)
    directory = Directory(trust)
    directory.add(Entry(cert), GEN.T0 + 1)
    stored = directory.encode()
    assert b"Haus" not in stored and token.invite.name.encode() in stored


def _private_world(tmp_path: Path) -> tuple[World, NameOpening]:
    world = World(tmp_path)
    opening = NameOpening("Haus am See", SALT)
    world.cp.core.name_opening = opening
    world.event(SessionUp(world.peer.node_id, session.MESHD_2))
    world.receive(
        session.encode(session.Capabilities(frozenset({"capabilities", "private_names"})))
    )
    return world, opening


def test_a_neighbour_is_shown_our_private_name_once_it_is_verified(tmp_path: Path) -> None:
    world, opening = _private_world(tmp_path)
    assert session.Name not in [type(m) for m in world.sent_to(world.peer.node_id)]
    world.receive(membership_of(world, world.cert(world.peer, "10.77.0.2")))
    assert session.Name(opening.salt, opening.name) in world.sent_to(world.peer.node_id)


def _private_cert(world: World, name: str) -> Any:
    cert = world.cert(world.peer, "10.77.0.2")
    return replace(cert, name=commit(name, SALT), signature=NO_SIGNATURE).sign(world.admin)


def test_a_neighbours_private_name_is_shown_once_it_opens_its_certificate(
    tmp_path: Path,
) -> None:
    world, _ = _private_world(tmp_path)
    world.receive(session.encode(session.Membership(_private_cert(world, "Ödön").encode())))
    peer = world.peer_state()
    assert peer.member is not None and peer.name == f"node {world.peer.node_id[:8]}"
    world.receive(session.encode(session.Name(SALT, "Eve")))  # not what was certified
    assert peer.name == f"node {world.peer.node_id[:8]}" and peer.refusals == {"bad_name": 1}
    world.receive(session.encode(session.Name(SALT, "Ödön")))
    assert peer.name == "Ödön" and world.transport.closed == []
    assert world.cp.core.peer_supports(peer, Feature.PRIVATE_NAMES)


def test_a_name_without_the_feature_closes_the_session(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.verified()
    world.receive(session.encode(session.Name(SALT, "n")))
    assert world.transport.closed and world.transport.closed[-1][1] == "unexpected_kind"
