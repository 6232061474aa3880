"""Joining with an invite (meshd.daemon.joining, joins; meshd.core.invites.join): the checks a
bootstrap node and the joining node make (pure), the control plane's join-only sessions and
the bootstrap and issuer roles with recording stand-ins, then whole joins over real QUIC
sessions on 127.0.0.1: a joining node, a bootstrap node that forwards to the issuer, the
issuer with its SQLite store; refusals (reused, expired, altered, revoked) change
nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nacl.signing import SigningKey

from meshd import config
from meshd.adapters import identity, trust
from meshd.adapters.invite_store import SqliteInviteStore
from meshd.adapters.quic import PeerEvent, QuicTransport
from meshd.core.control import plane
from meshd.core.invites import (
    TOKEN_FILE,
    BootstrapEndpoint,
    InviteError,
    InviteToken,
    Issuer,
    issue_invite,
    join_request,
)
from meshd.core.invites.join import accept_grant, check_forwardable, is_final
from meshd.core.membership import (
    SCOPE_ALL,
    MeshTrust,
    OwnMembership,
    RevocationTarget,
    create_mesh,
    issue_delegation,
    issue_membership,
    revoke,
    verify_membership,
)
from meshd.core.proto import session
from meshd.core.routing.babel import BabelRouter
from meshd.core.transport.certs import node_certificate
from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.core.transport.session import SessionSettings
from meshd.daemon import control as shell
from meshd.daemon import joining, joins
from tests.unit.daemon.test_control_plane import FakeLinks, FakeTransport, control

NOW = int(time.time())
LOOPBACK = "127.0.0.1"
ADMIN = SigningKey(bytes([7]) * 32)
ADMIN_ID = identity.node_id_from_public(bytes(ADMIN.verify_key))
MESH = create_mesh(
    ADMIN,
    mesh_id=bytes(range(16)),
    name="t",
    ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
    ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
    issued_at=NOW - 1000,
)
POOL = ipaddress.IPv4Network("10.77.1.0/24")
T = TypeVar("T")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


class Member:
    """A node of the mesh with its control plane; ``issuer`` holds a delegation for
    invites and memberships from POOL (as every testbed node does)."""

    def __init__(self, tmp: Path, name: str, ipv4: str, issuer: bool = False) -> None:
        self.dir = tmp / name
        self.ident = identity.generate(self.dir)
        self.node_id = self.ident.node_id
        self.delegation = (
            issue_delegation(
                ADMIN,
                mesh=MESH,
                delegate=self.node_id,
                scope=SCOPE_ALL,
                not_before=NOW - 1000,
                expires_at=NOW + 86400,
                serial=50,
                ipv4_pool=POOL,
            )
            if issuer
            else None
        )
        self.trust = MeshTrust.from_definition(MESH, [ADMIN_ID])
        cert = certificate(self.ident, name, ipaddress.IPv4Address(ipv4))
        member = verify_membership(cert, (), self.trust, NOW)
        own = OwnMembership(self.trust, cert, (), self.delegation, member)
        self.cp = control(
            self.ident,
            own,
            BabelRouter(bytes([len(name)]) * 8, 1, 0.0),
            FakeLinks(),
            lambda changes: None,
            self.dir,
        )

    def issue(
        self,
        bootstrap: list[BootstrapEndpoint],
        *,
        issued_at: int = NOW - 10,
        lifetime_s: int = 3600,
        address: str = "10.77.1.1",
        record: bool = True,
    ) -> InviteToken:
        assert self.delegation is not None
        token = issue_invite(
            Issuer(self.ident.signing_key, self.trust, self.delegation),
            name="newhome",
            mesh_ipv4=ipaddress.IPv4Address(address),
            bootstrap=bootstrap,
            issued_at=issued_at,
            expires_at=issued_at + lifetime_s,
            invite_id=secrets.token_bytes(16),
            secret=secrets.token_bytes(32),
        )
        if record:
            store = SqliteInviteStore.open(self.dir)
            store.record_issued(token.invite)
            store.close()
        return token


def certificate(ident: identity.Identity, name: str, ipv4: ipaddress.IPv4Address) -> Any:
    return issue_membership(
        ADMIN,
        mesh=MESH,
        node_id=ident.node_id,
        name=name,
        wireguard_public=ident.wireguard_public,
        mesh_ipv4=ipv4,
        not_before=NOW - 1000,
        expires_at=NOW + 86400,
        serial=1,
    )


def message_for(token: InviteToken, joiner: identity.Identity) -> session.JoinRequestMessage:
    request = join_request(token, joiner.signing_key, joiner.wireguard_public)
    return session.JoinRequestMessage(token.invite.encode(), request.encode())


def joining_node(
    tmp: Path, name: str, token: InviteToken
) -> tuple[config.Config, identity.Identity]:
    """A node as provisioning leaves it: keys, the token, a config from the invite."""
    state = tmp / name
    ident = identity.generate(state)
    (state / TOKEN_FILE).write_text(token.text() + "\n")
    text = (
        f'[node]\nname = "{token.invite.name}"\nstate_dir = "{state}"\n'
        f'mesh_ipv4 = "{token.invite.mesh_ipv4}"\n\n[mesh]\n'
        f'ipv4_prefix = "{token.invite.ipv4_prefix}"\nadmin_keys = ["{ADMIN_ID}"]\n'
    )
    return config.parse(text, str(state / "meshd.toml")), ident


def altered(token: InviteToken) -> bytes:
    """The invite's bytes with its name changed, the issuer's signature left as it was."""
    invite = dataclasses.replace(token.invite, name="someone else")
    return invite.encode()


# ---- the pure checks -----------------------------------------------------------------


def test_a_bootstrap_node_checks_the_invite_and_the_proof(tmp_path: Path) -> None:
    issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
    joiner = identity.generate(tmp_path / "n")
    token = issuer.issue([BootstrapEndpoint.from_address(issuer.node_id, "192.0.2.1:6697")])
    msg = message_for(token, joiner)
    invite, request = check_forwardable(msg.invite, msg.request, joiner.node_id, issuer.trust, NOW)
    assert invite == token.invite and request.node_id == joiner.node_id

    def reason(*args: Any, now: float = NOW) -> str:
        with pytest.raises(InviteError) as info:
            check_forwardable(*args, issuer.trust, now)
        return str(info.value.reason)

    other = identity.generate(tmp_path / "other")
    assert reason(msg.invite, msg.request, other.node_id) == "bad_proof"  # not its own request
    assert reason(altered(token), msg.request, joiner.node_id) == "bad_signature"
    assert reason(msg.invite, msg.request, joiner.node_id, now=NOW + 3600 + 301) == "expired"
    second = issuer.issue([BootstrapEndpoint.from_address(issuer.node_id, "192.0.2.1:6697")])
    assert reason(second.invite.encode(), msg.request, joiner.node_id) == "bad_proof"
    assert reason(msg.invite, b"\x06junk", joiner.node_id) == "malformed"


def test_the_joining_node_accepts_only_a_grant_for_its_own_request(tmp_path: Path) -> None:
    issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
    joiner = identity.generate(tmp_path / "n")
    token = issuer.issue([BootstrapEndpoint.from_address(issuer.node_id, "192.0.2.1:6697")])
    msg = message_for(token, joiner)
    request = join_request(token, joiner.signing_key, joiner.wireguard_public)
    store = SqliteInviteStore.open(issuer.dir)
    from meshd.core.invites import redeem

    cert = redeem(
        store,
        Issuer(issuer.ident.signing_key, issuer.trust, issuer.delegation),
        token.invite,
        request,
        NOW,
    )
    store.close()
    assert not isinstance(cert, Exception) and hasattr(cert, "encode")
    assert issuer.delegation is not None
    grant = (MESH.encode(), cert.encode(), issuer.delegation.encode())
    joined = accept_grant(token, request, (ADMIN_ID,), *grant, NOW)
    assert joined.member.node_id == joiner.node_id and joined.delegation == issuer.delegation
    assert joined.member.mesh_ipv4 == token.invite.mesh_ipv4

    def reason(*args: Any) -> str:
        with pytest.raises(InviteError) as info:
            accept_grant(token, request, *args, NOW)
        assert info.value.reason == "bad_answer"
        return info.value.message

    assert "not a pinned admin key" in reason((issuer.node_id,), *grant)
    assert "does not verify" in reason((ADMIN_ID,), MESH.encode(), cert.encode(), b"")
    someone = certificate(identity.generate(tmp_path / "x"), "newhome", token.invite.mesh_ipv4)
    assert "node id" in reason((ADMIN_ID,), MESH.encode(), someone.encode(), b"")
    assert "malformed" in reason((ADMIN_ID,), b"\x01junk", cert.encode(), b"")
    del msg


def test_which_refusals_end_the_join() -> None:
    for final in ("already_redeemed", "expired", "bad_signature", "revoked", "unknown_invite"):
        assert is_final(final)
    for transient in ("issuer_unreachable", "join_unavailable", "store_failed"):
        assert not is_final(transient)


# ---- join-only sessions on the control plane (recording stand-ins) --------------------


@pytest.fixture
def bootstrap(tmp_path: Path) -> tuple[Member, FakeTransport, list[tuple[str, Any]]]:
    member = Member(tmp_path, "b", "10.77.0.2")
    transport = FakeTransport()
    member.cp.transport = transport  # type: ignore[assignment]
    asked: list[tuple[str, Any]] = []
    member.cp.on_join = lambda node_id, msg: asked.append((node_id, msg))
    return member, transport, asked


def test_a_join_request_makes_the_session_join_only(
    bootstrap: tuple[Member, FakeTransport, list[tuple[str, Any]]], tmp_path: Path
) -> None:
    member, transport, asked = bootstrap
    joiner = identity.generate(tmp_path / "n")
    addr = ("100.64.0.9", 40000)
    member.cp.on_event(PeerEvent(joiner.node_id, addr, SessionUp(joiner.node_id)))
    request = session.JoinRequestMessage(b"\x05invite", b"\x06request")
    member.cp.on_event(PeerEvent(joiner.node_id, addr, MessageReceived(session.encode(request))))
    assert asked == [(joiner.node_id, request)]
    peer = member.cp.core.peers[joiner.node_id]
    assert peer.joining and not peer.is_neighbour and transport.closed == []
    refused = session.JoinRefused(joiner.node_id, "expired", "too late")
    assert member.cp.answer_join(joiner.node_id, refused)
    assert session.decode(transport.sent[-1][1]) == refused
    # Anything else on it closes it: a second request, or a certificate.
    member.cp.on_event(PeerEvent(joiner.node_id, addr, MessageReceived(session.encode(request))))
    assert transport.closed == [(joiner.node_id, "unexpected_kind")]
    # A session that stays join-only too long is closed.
    other = identity.generate(tmp_path / "m")
    member.cp.on_event(PeerEvent(other.node_id, addr, SessionUp(other.node_id)))
    member.cp.on_event(PeerEvent(other.node_id, addr, MessageReceived(session.encode(request))))
    member.cp.tick(time.monotonic() + plane.VERIFY_S + 1)
    assert (other.node_id, "not_verified") not in transport.closed
    member.cp.tick(time.monotonic() + plane.JOIN_S + 1)
    assert (other.node_id, "join_timeout") in transport.closed


def test_a_member_or_a_node_without_a_join_service_cannot_ask(
    bootstrap: tuple[Member, FakeTransport, list[tuple[str, Any]]], tmp_path: Path
) -> None:
    member, transport, asked = bootstrap
    joiner = identity.generate(tmp_path / "n")
    addr = ("100.64.0.9", 40000)
    request = session.encode(session.JoinRequestMessage(b"\x05invite", b"\x06request"))
    member.cp.on_join = None
    member.cp.on_event(PeerEvent(joiner.node_id, addr, SessionUp(joiner.node_id)))
    member.cp.on_event(PeerEvent(joiner.node_id, addr, MessageReceived(request)))
    assert transport.closed == [(joiner.node_id, "join_unavailable")] and asked == []
    assert not member.cp.answer_join(joiner.node_id, session.JoinRefused(joiner.node_id, "x"))


# ---- the bootstrap and issuer roles (recording stand-ins for the relay) ----------------


class FakeRelay(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.up: set[str] = set()

    def peers(self) -> dict[str, tuple[str, int]]:
        return {n: ("::1", 1) for n in self.up}


async def inline(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


def service(member: Member) -> tuple[joins.JoinService, FakeRelay]:
    svc = joins.JoinService(
        member.node_id,
        member.ident.signing_key,
        member.cp,
        member.dir,
        inline,
        relay_host="::1",
        relay_port=0,
        relay_address=lambda node_id: (f"relay-of-{node_id[:4]}", 6699),
    )
    relay = FakeRelay()
    svc.transport = relay  # type: ignore[assignment]
    member.cp.on_join = svc.on_join_request
    return svc, relay


@dataclasses.dataclass
class Forwarding:
    """A joiner's request shown to b, a bootstrap node that did not issue the invite: b
    holds it for the issuer a and has dialled a's relay."""

    issuer: Member
    boot: Member
    control: FakeTransport  # b's neighbour sessions (the joiner's among them)
    svc: joins.JoinService  # b's
    relay: FakeRelay  # b's relay sessions
    joiner: identity.Identity
    msg: session.JoinRequestMessage


def forwarding(tmp_path: Path) -> Forwarding:
    issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
    boot = Member(tmp_path, "b", "10.77.0.2")
    control = FakeTransport()
    boot.cp.transport = control  # type: ignore[assignment]
    svc, relay = service(boot)
    joiner = identity.generate(tmp_path / "n")
    token = issuer.issue([BootstrapEndpoint.from_address(boot.node_id, "192.0.2.2:6697")])
    addr = ("100.64.0.9", 40000)
    boot.cp.on_event(PeerEvent(joiner.node_id, addr, SessionUp(joiner.node_id)))
    msg = message_for(token, joiner)
    boot.cp.on_event(PeerEvent(joiner.node_id, addr, MessageReceived(session.encode(msg))))
    return Forwarding(issuer, boot, control, svc, relay, joiner, msg)


def test_a_bootstrap_node_forwards_to_the_issuer_and_relays_its_answer(tmp_path: Path) -> None:
    async def body() -> None:
        f = forwarding(tmp_path)
        issuer, boot, control, svc, relay, joiner, msg = (
            f.issuer, f.boot, f.control, f.svc, f.relay, f.joiner, f.msg
        )  # fmt: skip
        assert relay.dialled == [((f"relay-of-{issuer.node_id[:4]}", 6699), issuer.node_id)]
        # The relay session comes up: each side shows its certificate, then the request goes.
        svc.on_relay_event(PeerEvent(issuer.node_id, ("::1", 1), SessionUp(issuer.node_id)))
        assert relay.sent[0][1] == boot.cp.core.membership_message
        svc.on_relay_event(
            PeerEvent(
                issuer.node_id, ("::1", 1), MessageReceived(issuer.cp.core.membership_message)
            )
        )
        assert session.decode(relay.sent[-1][1]) == msg
        # The issuer (another service) answers; the bootstrap relays it and closes the relay.
        isvc, irelay = service(issuer)
        isvc.on_relay_event(PeerEvent(boot.node_id, ("::1", 2), SessionUp(boot.node_id)))
        isvc.on_relay_event(
            PeerEvent(boot.node_id, ("::1", 2), MessageReceived(boot.cp.core.membership_message))
        )
        isvc.on_relay_event(
            PeerEvent(boot.node_id, ("::1", 2), MessageReceived(session.encode(msg)))
        )
        await asyncio.sleep(0.05)  # the redemption runs as a task
        answer = session.decode(irelay.sent[-1][1])
        assert isinstance(answer, session.JoinGranted)
        svc.on_relay_event(
            PeerEvent(issuer.node_id, ("::1", 1), MessageReceived(session.encode(answer)))
        )
        assert session.decode(control.sent[-1][1]) == answer
        assert control.sent[-1][0] == joiner.node_id
        assert relay.closed == [(issuer.node_id, "done")] and svc.forwards == {}

    run(body)


def test_an_issuer_that_does_not_answer_is_reported_unreachable(tmp_path: Path) -> None:
    f = forwarding(tmp_path)
    svc, relay, control = f.svc, f.relay, f.control
    svc.tick(time.monotonic() + 3)  # dials again while it waits
    assert len(relay.dialled) == 2
    svc.tick(time.monotonic() + joins.FORWARD_S + 1)
    answer = session.decode(control.sent[-1][1])
    assert isinstance(answer, session.JoinRefused) and answer.reason == "issuer_unreachable"


def test_a_node_that_issued_nothing_refuses_unknown_invite(tmp_path: Path) -> None:
    issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
    joiner = identity.generate(tmp_path / "n")
    token = issuer.issue(
        [BootstrapEndpoint.from_address(issuer.node_id, "192.0.2.1:6697")], record=False
    )
    assert not (issuer.dir / "invites.sqlite").exists()  # issued elsewhere, or the store lost
    svc, _ = service(issuer)
    request = join_request(token, joiner.signing_key, joiner.wireguard_public)
    answer = svc.redeem_here(token.invite, request, time.time())
    assert isinstance(answer, session.JoinRefused) and answer.reason == "unknown_invite"
    assert not (issuer.dir / "invites.sqlite").exists()


# ---- whole joins over real QUIC on 127.0.0.1 -----------------------------------------


class Mesh:
    """An issuer ``a`` and a bootstrap node ``b``, each with its control plane's QUIC
    transport and its join service's relay, on 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.a = Member(tmp, "a", "10.77.0.1", issuer=True)
        self.b = Member(tmp, "b", "10.77.0.2")
        self.relays: dict[str, tuple[str, int]] = {}
        self.services: list[joins.JoinService] = []

    async def start(self) -> None:
        for member in (self.a, self.b):
            member.cp.transport = await QuicTransport.listen(
                credentials=member.cp.credentials,
                authorize=member.cp.core.authorize,
                on_event=member.cp.on_event,
                host=LOOPBACK,
                port=0,
                settings=shell.SESSION_SETTINGS,
            )
            svc = joins.JoinService(
                member.node_id,
                member.ident.signing_key,
                member.cp,
                member.dir,
                lambda fn, *args: asyncio.to_thread(fn, *args),
                relay_host="::1",  # as on a node: its mesh IPv6 address
                relay_port=0,
                relay_address=self.relays.__getitem__,
            )
            await svc.start()
            assert svc.transport is not None
            self.relays[member.node_id] = svc.transport.local_address
            self.services.append(svc)

    async def close(self) -> None:
        for svc in self.services:
            await svc.close()
        for member in (self.a, self.b):
            if member.cp.transport is not None:
                await member.cp.transport.close()

    def endpoint(self, member: Member) -> BootstrapEndpoint:
        assert member.cp.transport is not None
        host, port = member.cp.transport.local_address
        return BootstrapEndpoint(member.node_id, ipaddress.IPv4Address(host), port)


@asynccontextmanager
async def running(tmp: Path) -> AsyncIterator[Mesh]:
    world = Mesh(tmp)
    await world.start()

    async def tick() -> None:
        while True:
            for svc in world.services:
                svc.tick(time.monotonic())
            await asyncio.sleep(0.1)

    ticker = asyncio.ensure_future(tick())
    try:
        yield world
    finally:
        ticker.cancel()
        await world.close()


def test_a_node_joins_through_a_bootstrap_node_that_forwards_to_the_issuer(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with running(tmp_path) as world:
            token = world.a.issue([world.endpoint(world.b)])
            cfg, ident = joining_node(tmp_path, "n", token)
            assert joining.needs_join(cfg.node.state_dir)
            via = await joining.join_mesh(cfg, ident, asyncio.Event())
            assert via == world.endpoint(world.b)
            own = trust.load(cfg.node.state_dir, cfg.mesh.admin_keys, ident.node_id, time.time())
            assert own.member.mesh_ipv4 == token.invite.mesh_ipv4
            assert own.member.issuer == world.a.node_id and own.chain == (world.a.delegation,)
            assert not joining.needs_join(cfg.node.state_dir)
            assert (cfg.node.state_dir / TOKEN_FILE).read_text().strip() == token.text()
            record = SqliteInviteStore.open(world.a.dir).lookup(token.invite.invite_id)
            assert record is not None and record.redeemed_by == ident.node_id
            # The join-only session is gone from the bootstrap node: never a neighbour.
            # (Its close takes a few ticks; a loaded machine may need more than 0.2 s.)
            for _ in range(50):
                if ident.node_id not in world.b.cp.core.peers:
                    break
                await asyncio.sleep(0.1)
            assert ident.node_id not in world.b.cp.core.peers

            # The same token, another node, at the issuer itself this time: refused.
            token_again = dataclasses.replace(token)
            cfg2, ident2 = joining_node(tmp_path, "m", token_again)
            with pytest.raises(joining.JoinError) as info:
                await joining.join_mesh(cfg2, ident2, asyncio.Event())
            assert info.value.reason == "already_redeemed" and info.value.final
            assert not (cfg2.node.state_dir / trust.MEMBERSHIP_FILE).exists()
            assert not (cfg2.node.state_dir / trust.MESH_FILE).exists()

    run(body)


def test_the_mesh_refuses_a_reused_an_expired_and_an_altered_token(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(tmp_path) as world:
            client_of = lambda ident: joining.JoinClient(  # noqa: E731
                node_certificate(ident.signing_key), SessionSettings(handshake_timeout=2.0)
            )
            boot = world.endpoint(world.b)
            token = world.a.issue([boot])
            first = identity.generate(tmp_path / "first")
            outcome = await client_of(first).attempt((boot,), message_for(token, first))
            assert isinstance(outcome.answer, session.JoinGranted)
            # The same node asking again (its answer was lost) gets the same certificate.
            again = await client_of(first).attempt((boot,), message_for(token, first))
            assert again.answer == outcome.answer

            def refusal(outcome: joining.Outcome) -> str:
                assert isinstance(outcome.answer, session.JoinRefused), outcome
                return outcome.answer.reason

            second = identity.generate(tmp_path / "second")
            reused = await client_of(second).attempt((boot,), message_for(token, second))
            assert refusal(reused) == "already_redeemed"
            expired_token = world.a.issue([boot], issued_at=NOW - 7200, lifetime_s=3600)
            expired = await client_of(second).attempt((boot,), message_for(expired_token, second))
            assert refusal(expired) == "expired"
            fresh = world.a.issue([boot], address="10.77.1.9")
            msg = message_for(fresh, second)
            bad = session.JoinRequestMessage(altered(fresh), msg.request)
            assert refusal(await client_of(second).attempt((boot,), bad)) == "bad_signature"
            # Nothing changed: the fresh invite is still redeemable, by the right request.
            store = SqliteInviteStore.open(world.a.dir)
            record = store.lookup(fresh.invite.invite_id)
            assert record is not None and record.redeemed_by is None
            store.close()

            # A revoked node is refused at the handshake, with the reason.
            revocation = revoke(
                ADMIN,
                mesh=MESH,
                target=RevocationTarget.node(second.node_id),
                revoked_at=NOW - 1,
            )
            world.b.trust.revocations.add(revocation)
            closed = await client_of(second).attempt((boot,), msg)
            assert closed.failures == ((boot.address, "revoked"),)
            cfg, ident = joining_node(tmp_path, "third", fresh)
            (cfg.node.state_dir / "identity.key").write_bytes(
                (tmp_path / "second" / "identity.key").read_bytes()
            )
            with pytest.raises(joining.JoinError) as info:
                await joining.join_mesh(cfg, identity.load(cfg.node.state_dir), asyncio.Event())
            assert info.value.reason == "revoked" and info.value.final
            del ident

    run(body)


def test_a_bad_token_is_refused_before_any_packet(tmp_path: Path) -> None:
    async def body() -> None:
        issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
        nowhere = BootstrapEndpoint.from_address(issuer.node_id, "192.0.2.1:6697")
        expired = issuer.issue([nowhere], issued_at=NOW - 7200, lifetime_s=3600)
        cfg, ident = joining_node(tmp_path, "n", expired)
        with pytest.raises(joining.JoinError) as info:
            await joining.join_mesh(cfg, ident, asyncio.Event())
        assert info.value.reason == "expired" and info.value.final
        token_file = cfg.node.state_dir / TOKEN_FILE
        text = token_file.read_text().strip()
        token_file.write_text(text[:40] + ("A" if text[40] != "A" else "B") + text[41:])
        with pytest.raises(joining.JoinError) as info:
            await joining.join_mesh(cfg, ident, asyncio.Event())
        assert info.value.reason in ("bad_signature", "malformed", "bad_secret")
        assert token_file.exists() and not joining.needs_join(tmp_path / "nothing")

    run(body)


def test_no_bootstrap_node_answering_is_retried_until_stopped(tmp_path: Path) -> None:
    async def body() -> None:
        issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
        with socket_bound() as port:  # a UDP port where nothing answers QUIC
            nowhere = BootstrapEndpoint.from_address(issuer.node_id, f"127.0.0.1:{port}")
            token = issuer.issue([nowhere])
            cfg, ident = joining_node(tmp_path, "n", token)
            client = joining.JoinClient(
                node_certificate(ident.signing_key), SessionSettings(handshake_timeout=0.5)
            )
            stopping = asyncio.Event()
            task = asyncio.ensure_future(joining.join_mesh(cfg, ident, stopping, client))
            await asyncio.sleep(2.5)
            assert not task.done()
            stopping.set()
            assert await task is None
            assert not (cfg.node.state_dir / trust.MEMBERSHIP_FILE).exists()

    run(body)


class socket_bound:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_a_relay_session_is_closed_when_it_shows_no_certificate(tmp_path: Path) -> None:
    issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
    svc, relay = service(issuer)
    stranger = identity.generate(tmp_path / "s")
    svc.on_relay_event(PeerEvent(stranger.node_id, ("::1", 3), SessionUp(stranger.node_id)))
    data = session.encode(session.JoinRequestMessage(b"\x05i", b"\x06r"))
    svc.on_relay_event(PeerEvent(stranger.node_id, ("::1", 3), MessageReceived(data)))
    assert relay.closed == [(stranger.node_id, "not_verified")]
    svc.on_relay_event(
        PeerEvent(stranger.node_id, ("::1", 3), SessionClosed("not_verified", False, 1))
    )
    assert stranger.node_id not in svc.relay_peers


# ---- the daemon: join first, then dial every endpoint of the invite --------------------


def test_the_daemon_refused_a_join_touches_nothing(tmp_path: Path) -> None:
    from meshd.adapters.wg.fake import FakeBackend
    from meshd.daemon.node import Node
    from tests.unit.fake_netlink import FakeNetlink

    issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
    nowhere = BootstrapEndpoint.from_address(issuer.node_id, "192.0.2.1:6697")
    expired = issuer.issue([nowhere], issued_at=NOW - 7200, lifetime_s=3600)
    cfg, ident = joining_node(tmp_path, "n", expired)
    netlink = FakeNetlink()
    node = Node(cfg, ident, FakeBackend(), netlink, sysctl_root=tmp_path / "sys")
    with pytest.raises(joining.JoinError) as info:
        asyncio.run(node.run())
    assert info.value.reason == "expired" and info.value.final
    assert netlink.addrs == {"lo": set()} and node.control is None
    assert sorted(p.name for p in cfg.node.state_dir.iterdir()) == [
        "identity.key",
        "identity.pub",
        TOKEN_FILE,
        "wireguard.key",
        "wireguard.pub",
    ]


def test_the_daemon_dials_every_endpoint_of_its_invite_the_one_that_let_it_in_first(
    tmp_path: Path,
) -> None:
    issuer = Member(tmp_path, "a", "10.77.0.1", issuer=True)
    other = identity.generate(tmp_path / "b").node_id
    endpoints = [
        BootstrapEndpoint.from_address(issuer.node_id, "100.64.0.1:6697"),
        BootstrapEndpoint.from_address(issuer.node_id, "100.64.2.1:6697"),
        BootstrapEndpoint.from_address(other, "100.64.0.2:6697"),
    ]
    token = issuer.issue(endpoints)
    cfg, _ = joining_node(tmp_path, "n", token)
    invited = joining.bootstrap_endpoints(Path(cfg.node.state_dir))
    bootstrap = shell.bootstrap_peers(cfg, invited, endpoints[1])
    assert bootstrap[0] == (issuer.node_id, ("100.64.2.1", 6697), "")
    assert {(n, a) for n, a, _ in bootstrap} == {
        (e.node_id, (str(e.host), e.port)) for e in endpoints
    }
