"""Renewal in the daemon (meshd.joins.JoinService with meshd.daemon.control.ControlService), wired
together in memory with the recording transports of test_control_plane: a node whose
certificate is due asks a neighbour, which issues (an admin here) or refuses with a reason;
the node checks the grant, stores it in its state directory and shows it to neighbours."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from meshd.adapters import identity, trust
from meshd.adapters.quic import PeerEvent
from meshd.config import MembershipSettings
from meshd.core.membership import (
    MembershipCertificate,
    MeshTrust,
    OwnMembership,
    RevocationTarget,
    create_mesh,
    issue_membership,
    revoke,
    verify_membership,
)
from meshd.core.proto import session
from meshd.core.routing.babel import BabelRouter
from meshd.core.transport.events import MessageReceived, SessionUp
from meshd.daemon import joins
from tests.unit.daemon.test_control_plane import FakeLinks, FakeTransport, control
from tests.unit.daemon.test_join import inline

NOW = int(time.time())
ADMIN = SigningKey(bytes([9]) * 32)
ADMIN_ID = identity.node_id_from_public(bytes(ADMIN.verify_key))
ASK_AT_ONCE = MembershipSettings(renew_margin_s=10**6, renew_retry_s=2.0)


class Node:
    def __init__(self, tmp: Path, name: str, ident: identity.Identity, ipv4: str, mesh_def: Any):
        self.ident, self.node_id, self.dir = ident, ident.node_id, tmp / name
        self.trust = MeshTrust.from_definition(mesh_def, [ADMIN_ID])
        self.cert = issue_membership(
            ADMIN,
            mesh=mesh_def,
            node_id=ident.node_id,
            name=name,
            wireguard_public=ident.wireguard_public,
            mesh_ipv4=ipaddress.IPv4Address(ipv4),
            not_before=NOW - 1000,
            expires_at=NOW + 3600,
            serial=1,
        )
        trust.save_joined(self.dir, mesh_def, self.cert, None)
        own = OwnMembership(
            self.trust, self.cert, (), None, verify_membership(self.cert, (), self.trust, NOW)
        )
        self.cp = control(
            ident,
            own,
            BabelRouter(name.encode() * 8, 1, 0.0),
            FakeLinks(),
            lambda changes: None,
            self.dir,
        )
        self.transport = FakeTransport()
        self.cp.transport = self.transport  # type: ignore[assignment]
        self.svc = joins.JoinService(
            self.node_id,
            ident.signing_key,
            self.cp,
            self.dir,
            inline,
            relay_host="::1",
            relay_port=0,
            relay_address=lambda node_id: ("fd6d::1", 6699),
            renewal=ASK_AT_ONCE,
        )
        self.cp.on_renewal = self.svc.on_renewal

    def hear(self, other: Node, data: bytes) -> None:
        self.cp.on_event(PeerEvent(other.node_id, ("100.64.0.9", 6697), MessageReceived(data)))

    def meet(self, other: Node) -> None:
        """A verified session both ways."""
        for one, two in ((self, other), (other, self)):
            one.cp.on_event(PeerEvent(two.node_id, ("100.64.0.9", 6697), SessionUp(two.node_id)))
            one.hear(two, two.cp.core.membership_message)

    def deliver(self, to: Node) -> list[session.SessionMessage]:
        """What this node sent ``to`` since the last delivery, handed over."""
        out = [(n, d) for n, d in self.transport.sent if n == to.node_id]
        self.transport.sent = [(n, d) for n, d in self.transport.sent if n != to.node_id]
        for _, data in out:
            to.hear(self, data)
        return [session.decode(d) for _, d in out]


def line(tmp: Path, admin_in_the_middle: bool = True) -> tuple[Node, Node]:
    """a (an admin of the mesh when ``admin_in_the_middle``) and c, neighbours."""
    a_ident, c_ident = identity.generate(tmp / "a"), identity.generate(tmp / "c")
    mesh_def = create_mesh(
        ADMIN,
        mesh_id=b"L" * 16,
        name="t",
        ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
        ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
        issued_at=NOW - 2000,
        other_admins=[a_ident.node_id] if admin_in_the_middle else [],
    )
    a = Node(tmp, "a", a_ident, "10.77.0.1", mesh_def)
    c = Node(tmp, "c", c_ident, "10.77.0.3", mesh_def)
    a.meet(c)
    for node in (a, c):
        node.transport.sent.clear()
    return a, c


def test_a_due_certificate_is_renewed_by_a_neighbour_stored_and_shown(tmp_path: Path) -> None:
    async def body() -> None:
        a, c = line(tmp_path)
        c.svc.tick(time.monotonic())
        (request,) = c.deliver(a)
        assert request == session.RenewRequest(c.cert.encode())
        assert c.svc.own_renewal.status()["renewal"] == "asking"
        (granted,) = a.deliver(c)
        assert isinstance(granted, session.RenewGranted) and not granted.delegation
        await asyncio.sleep(0.05)  # stored as a task (the kernel thread's job)
        fresh = c.cp.core.own.certificate
        assert fresh.issuer == a.node_id and fresh.expires_at > c.cert.expires_at
        stored = MembershipCertificate.decode((c.dir / trust.MEMBERSHIP_FILE).read_bytes())
        assert stored == fresh
        status = c.svc.own_renewal.status()
        assert (status["renewal"], status["expires_at"]) == ("renewed", fresh.expires_at)
        # a sees it at once, on the session it has: a second MEMBERSHIP.
        (shown,) = c.deliver(a)
        assert shown == session.Membership(fresh.encode())
        peer = a.cp.core.peers[c.node_id]
        assert peer.member is not None and peer.member.certificate == fresh
        # And c is not due again for a long time (no margin from now on).
        c.svc.own_renewal.settings = MembershipSettings()
        c.svc.tick(time.monotonic() + 10)
        assert c.deliver(a) == []

    asyncio.run(body())


def test_an_admin_renews_its_own_certificate_without_asking(tmp_path: Path) -> None:
    async def body() -> None:
        a, c = line(tmp_path)
        a.svc.tick(time.monotonic())
        await asyncio.sleep(0.05)
        assert a.cp.core.own.certificate.issuer == a.node_id
        assert a.svc.own_renewal.status()["renewal"] == "renewed"
        assert a.deliver(c) == [session.Membership(a.cp.core.own.certificate.encode())]

    asyncio.run(body())


def test_the_issuer_refuses_a_revoked_node_and_someone_elses_certificate(tmp_path: Path) -> None:
    a, c = line(tmp_path)
    request = session.RenewRequest(a.cert.encode())  # a's certificate, on c's session
    c.transport.sent.append((a.node_id, session.encode(request)))
    c.deliver(a)
    (refused,) = a.deliver(c)
    assert refused == session.RenewRefused(
        c.node_id, "wrong_node_id", f"a certificate for {a.node_id}"
    )
    a.cp.core.own.trust.revocations.add(
        revoke(
            ADMIN,
            mesh=a.cp.core.own.trust.definition,
            target=RevocationTarget.certificate(c.cert),
            revoked_at=NOW - 1,
        )
    )
    answer = a.svc.renew_for(session.RenewRequest(c.cert.encode()), c.node_id)
    assert isinstance(answer, session.RenewRefused) and answer.reason == "revoked"


def test_a_neighbour_without_a_route_to_any_issuer_says_so(tmp_path: Path) -> None:
    async def body() -> None:
        a, c = line(tmp_path, admin_in_the_middle=False)
        c.svc.tick(time.monotonic())
        c.deliver(a)
        (refused,) = a.deliver(c)
        assert isinstance(refused, session.RenewRefused)
        assert refused.reason == "issuer_unreachable"
        await asyncio.sleep(0.05)
        status = c.svc.own_renewal.status()
        assert status["renewal"] == "refused" and status["last_refusal"].startswith(
            "issuer_unreachable"
        )
        assert c.cp.core.own.certificate == c.cert  # nothing changed, nothing stored
        assert MembershipCertificate.decode((c.dir / trust.MEMBERSHIP_FILE).read_bytes()) == c.cert

    asyncio.run(body())


def test_a_grant_for_other_keys_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    async def body() -> None:
        a, c = line(tmp_path)
        c.svc.tick(time.monotonic())
        c.deliver(a)
        a.transport.sent.clear()
        wrong = issue_membership(
            ADMIN,
            mesh=a.cp.core.own.trust.definition,
            node_id=c.node_id,
            name="c",
            wireguard_public=b"X" * 32,
            mesh_ipv4=ipaddress.IPv4Address("10.77.0.3"),
            not_before=NOW,
            expires_at=NOW + 7200,
            serial=9,
        )
        c.hear(a, session.encode(session.RenewGranted(wrong.encode())))
        await asyncio.sleep(0.05)
        status = c.svc.own_renewal.status()
        assert status["renewal"] == "refused" and "wireguard_public" in status["last_refusal"]
        assert MembershipCertificate.decode((c.dir / trust.MEMBERSHIP_FILE).read_bytes()) == c.cert

    asyncio.run(body())
