"""Addresses and identities at the control plane (issue 28, item 4), on the pure core: a
neighbour certified with a mesh address another member holds is refused
(``address_in_use``) and counted, as a MEMBERSHIP and as a directory entry; a neighbour
whose address a member certified first turns up in the directory is dropped; a
delegate's members hold at most ``issuer_link_limit`` of our ports; and when the port
range is used up the newcomer is refused (``no_free_port``), never the handler raising."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from nacl.signing import SigningKey

from meshd.adapters import identity
from meshd.core.control import effects as fx
from meshd.core.control import plane
from meshd.core.membership import (
    DelegationCertificate,
    MembershipCertificate,
    OwnMembership,
    issue_delegation,
    issue_membership,
    verify_membership,
)
from meshd.core.membership.clock import MeshClock
from meshd.core.membership.directory import Entry
from meshd.core.membership.messages import SCOPE_ALL
from meshd.core.proto import session
from meshd.core.routing.babel import BabelRouter
from tests.unit.core.control.test_control_core import ADMIN, MESH, TRUST, WALL

ADDR = ("100.64.0.2", 6697)
DELEGATE = SigningKey(bytes([8]) * 32)
DELEGATION = issue_delegation(
    ADMIN,
    mesh=MESH,
    delegate=identity.node_id_from_public(bytes(DELEGATE.verify_key)),
    scope=SCOPE_ALL,
    ipv4_pool=ipaddress.IPv4Network("10.77.16.0/24"),
    not_before=int(WALL) - 600,
    expires_at=int(WALL) + 86400,
    serial=100,
)


def certificate(
    who: identity.Identity,
    ip: str,
    *,
    age_s: int = 60,
    by: DelegationCertificate | None = None,
) -> MembershipCertificate:
    return issue_membership(
        ADMIN if by is None else DELEGATE,
        mesh=MESH,
        node_id=who.node_id,
        name="n",
        wireguard_public=who.wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address(ip),
        not_before=int(WALL) - age_s,
        expires_at=int(WALL) + 3600,
        serial=1,
        delegation=by,
    )


class Node:
    """Our node at 10.77.0.1, with ``ports`` WireGuard ports for its links."""

    def __init__(self, tmp: Path, ports: int = 100, issuer_link_limit: int | None = None) -> None:
        self.tmp = tmp
        me = identity.generate(tmp / "me")
        mine = certificate(me, "10.77.0.1", age_s=3600)
        own = OwnMembership(TRUST, mine, (), None, verify_membership(mine, (), TRUST, WALL))
        self.free = list(range(51820, 51820 + ports))
        self.ports: dict[str, int] = {}
        self.core = plane.ControlPlane(
            me.node_id,
            own,
            BabelRouter(b"\x01" * 8, 1, 0.0),
            MeshClock(lambda: WALL, 300),
            self.link_port,
            issuer_link_limit=issuer_link_limit,
            accept_unsigned=True,
        )
        self.core.drain()
        self.count = 0

    def link_port(self, node_id: str) -> int | None:
        if node_id not in self.ports:
            if not self.free:
                return None
            self.ports[node_id] = self.free.pop(0)
        return self.ports[node_id]

    def identity(self) -> identity.Identity:
        self.count += 1
        return identity.generate(self.tmp / f"n{self.count}")

    def shows(
        self, who: identity.Identity, cert: MembershipCertificate, now: float = 1.0
    ) -> list[fx.Effect]:
        """A session with ``who`` comes up and shows ``cert`` (and its delegation)."""
        self.core.session_up(who.node_id, ADDR, session.MESHD_2, now)
        for message in (
            session.Capabilities(session.FEATURES),
            session.Membership(
                cert.encode(), DELEGATION.encode() if cert.issuer != ADMIN_ID else b""
            ),
        ):
            self.core.session_message(who.node_id, session.encode(message), now)
        return self.core.drain()

    def closed(self, effects: list[fx.Effect]) -> list[tuple[str, str]]:
        return [(e.node_id, e.reason) for e in effects if isinstance(e, fx.Close)]


ADMIN_ID = identity.node_id_from_public(bytes(ADMIN.verify_key))


def test_a_neighbour_with_a_used_address_is_refused_and_counted(tmp_path: Path) -> None:
    node = Node(tmp_path)
    first, second, third = node.identity(), node.identity(), node.identity()
    assert node.closed(node.shows(first, certificate(first, "10.77.0.2", age_s=600))) == []
    effects = node.shows(second, certificate(second, "10.77.0.2", age_s=60))
    assert node.closed(effects) == [(second.node_id, "address_in_use")]
    assert node.core.peers[second.node_id].refusals == {"address_in_use": 1}
    assert node.core.peers[second.node_id].member is None
    assert node.core.peers[first.node_id].member is not None  # the first keeps it
    # Our own address, whatever its certificate's date.
    effects = node.shows(third, certificate(third, "10.77.0.1", age_s=86400))
    assert node.closed(effects) == [(third.node_id, "address_in_use")]


def test_a_directory_entry_with_a_used_address_is_counted_for_its_sender(tmp_path: Path) -> None:
    node = Node(tmp_path)
    relay, far = node.identity(), node.identity()
    node.shows(relay, certificate(relay, "10.77.0.2"))
    entry = Entry(certificate(far, "10.77.0.2", age_s=30))  # the relay's address
    node.core.session_message(
        relay.node_id, session.encode(session.DirectoryEntries((entry.encoded,))), 2.0
    )
    assert node.closed(node.core.drain()) == []  # a relay may only pass it on
    assert node.core.peers[relay.node_id].refusals == {"directory_address_in_use": 1}
    assert far.node_id not in node.core.trust.directory


def test_a_neighbour_whose_address_was_certified_first_to_another_is_dropped(
    tmp_path: Path,
) -> None:
    """The second holder got in first (the first holder's certificate had not come yet):
    once it comes through the directory, the second is dropped at the next check, counted,
    and its link removed; every node that holds both keeps the same one."""
    node = Node(tmp_path)
    later, relay, earlier = node.identity(), node.identity(), node.identity()
    node.shows(later, certificate(later, "10.77.0.9", age_s=60))
    node.core.session_message(later.node_id, session.encode(session.Link(52000)), 1.0)
    node.shows(relay, certificate(relay, "10.77.0.3"))
    entry = Entry(certificate(earlier, "10.77.0.9", age_s=600))
    node.core.session_message(
        relay.node_id, session.encode(session.DirectoryEntries((entry.encoded,))), 2.0
    )
    node.core.drain()
    node.core.enforce_membership(3.0)
    effects = node.core.drain()
    assert (later.node_id, "address_in_use") in node.closed(effects)
    assert fx.RemoveLink(later.node_id) in effects
    peer = node.core.peers.get(later.node_id)
    assert peer is None or peer.member is None
    assert node.core.trust.directory.member(earlier.node_id) is not None
    assert later.node_id not in node.core.trust.directory


def test_one_delegates_members_hold_at_most_the_limit_of_links(tmp_path: Path) -> None:
    node = Node(tmp_path, ports=10, issuer_link_limit=2)
    minted = [node.identity() for _ in range(4)]
    refused = []
    for k, who in enumerate(minted):
        cert = certificate(who, f"10.77.16.{k + 1}", by=DELEGATION)
        refused += node.closed(node.shows(who, cert))
    assert refused == [(m.node_id, "issuer_link_limit") for m in minted[2:]]
    assert node.core.neighbours.refusals == {"issuer_link_limit": 2}  # they are forgotten
    assert len(node.ports) == 2  # no port for the refused
    # An admin's member is not bounded by the delegate's share.
    admins = node.identity()
    assert node.closed(node.shows(admins, certificate(admins, "10.77.0.5"))) == []
    # A delegate's member that holds its port already comes back (a new session).
    assert (
        node.closed(node.shows(minted[0], certificate(minted[0], "10.77.16.1", by=DELEGATION)))
        == []
    )


def test_no_free_port_refuses_the_newcomer_and_serves_the_rest(tmp_path: Path) -> None:
    node = Node(tmp_path, ports=2)
    a, b, c = node.identity(), node.identity(), node.identity()
    for k, who in enumerate((a, b)):
        effects = node.shows(who, certificate(who, f"10.77.0.{k + 2}"))
        links = [session.decode(e.data) for e in effects if isinstance(e, fx.Send)]
        assert session.Link(51820 + k) in links
    effects = node.shows(c, certificate(c, "10.77.0.4"))  # no exception
    assert node.closed(effects) == [(c.node_id, "no_free_port")]
    assert node.core.peers[c.node_id].refusals == {"no_free_port": 1}
    assert node.core.neighbours.refusals == {"no_free_port": 1}
    assert node.core.peers[a.node_id].member is not None
    assert node.core.peers[b.node_id].member is not None
    # a forgotten neighbour frees its port for the next one
    node.core.neighbours.forget(node.core.peers[a.node_id])
    node.free.append(node.ports.pop(a.node_id))
    node.core.session_closed(c.node_id, ADDR, "no_free_port", False, True, 2.0)
    assert node.closed(node.shows(c, certificate(c, "10.77.0.4"), now=3.0)) == []


def test_a_neighbour_forgotten_before_its_link_was_built_gives_its_port_back(
    tmp_path: Path,
) -> None:
    """A member that verifies and never sends LINK holds one of our ports: forgotten, it
    gives it back (else every such identity would hold one for good)."""
    node = Node(tmp_path)
    who = node.identity()
    node.shows(who, certificate(who, "10.77.0.2"))
    peer = node.core.peers[who.node_id]
    assert peer.own_port is not None and peer.link is None
    node.core.neighbours.forget(peer)
    assert fx.RemoveLink(who.node_id) in node.core.drain()
    assert peer.own_port is None
