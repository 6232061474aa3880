"""Joining the mesh with an invite, in the daemon: the new node's join-only step, and what
a bootstrap node and the invite's issuer do for it (issue 7; the pure parts are in
meshd.invites).

The joining node. ``meshd run`` on a node whose state directory holds ``invite.token``
(written by provisioning/provision) and no ``membership.cert`` joins before anything else:
before the kernel is touched, before the control plane or the control socket exist. It
parses the token and checks it as provisioning did (an altered or expired token is refused
here, without a packet sent), loads the keys provisioning made, and builds the join request
(its new keys, proving the token's secret; the secret itself never leaves the node). It
dials every bootstrap endpoint of the token at once, each from a QUIC transport of its own
(so that two addresses of one node are two independent sessions): meshd's ordinary
sessions, TLS with its own Ed25519 key, the bootstrap's key checked against the endpoint's
node id. The first session that comes up carries one JOIN_REQUEST (meshd.core.proto.session);
the others are closed. The answer is JOIN_GRANTED (the mesh definition, the certificate,
the issuer's delegation when a delegate issued it) or JOIN_REFUSED with a reason. A grant
is checked against the token and the admin keys the config pins
(``meshd.invites.join.accept_grant``) and stored (``meshd.trust.save_joined``: mesh.cert,
delegation.cert, membership.cert last); ``invite.token`` stays (provisioning compares
against it, and the normal start dials all of its endpoints as bootstrap addresses). Then
the daemon goes on with its normal start. A final refusal (reused, expired, altered,
revoked, unknown) is logged and ends meshd with ``JoinError``: exit status 78, which the
systemd unit does not restart; nothing is stored. When no bootstrap node can help now
(none answers, or its issuer is unreachable) every endpoint is dialled again, after a
pause that doubles up to ``RETRY_MAX_S``, for ``GIVE_UP_S``; then meshd exits 1 and its
service manager starts it again.

Why an ordinary session and no ALPN of its own: the TLS layer authenticates keys, not
membership (meshd.transport.certs); membership is the first message. A node without a
certificate passes the handshake like any key that is not revoked (a revoked key is
refused there, with ``revoked``), and the control plane (meshd.core.control) accepts exactly
one other first message, JOIN_REQUEST, which makes the session join-only: anything else
closes it, it is never a neighbour, and it is closed after ``JOIN_S``. The joining node needs
nothing but the endpoints its token names, and the bootstrap node's QUIC port is already
open to the underlay.

The bootstrap node (``JoinService.on_join_request``) checks what needs no store
(``check_forwardable``: the invite against its own mesh, the proof, the request being the
session key's own), so a bad token stops at the first node. The invite's issuer decides:
when that is this node, it redeems here; otherwise it forwards the request over the mesh
to the issuer and relays the answer (the issuer's store is the single truth, so a token is
redeemed once however many bootstrap nodes see it). Forwarding uses a relay session like
an exit session (meshd.exits): QUIC over the mesh to the issuer's mesh address, both sides
showing their certificate first. The relay listens on the node's mesh IPv6 address (which
anyone derives from a node id, meshd.core.addressing) on the exit sessions' port, with an ALPN
of its own (``RELAY_ALPN``), so relay and exit sessions never meet: the exit service has
the same port on the mesh IPv4 address. An issuer that does not answer within
``FORWARD_S`` is reported to the joining node as ``issuer_unreachable`` (it tries another
bootstrap node, or later).

The issuer (``redeem_here``, on the kernel thread: SQLite) calls
``meshd.invites.redeem`` with its store (``state_dir/invites.sqlite``, made by ``meshd
invite``): a node that issued nothing has no store and refuses ``unknown_invite``.

Renewal takes the same path (the rules are in meshd.core.membership.renewal). Once the node's
certificate is due (``renew_at``), a node that can issue its own address (an admin, or a
delegate whose pool holds it) renews it itself; any other asks its verified neighbours in
turn, one RENEW_REQUEST every ``renew_retry_s`` on the neighbour session (its current
certificate and chain). A neighbour that can issue that address answers RENEW_GRANTED or
RENEW_REFUSED; one that cannot forwards the request, as a bootstrap node forwards a join,
over a relay session to the certificate's issuer, or else an admin, whichever Babel has a
route to, and relays the answer. The node checks the grant (``accept_renewal``: the same
identity, a later end), stores it (``trust.save_joined``: each file atomically, the same
names; the definition and chain as they are) and uses it at once: ControlPlane.renewed
sends it on every verified session as a second MEMBERSHIP, so neighbours see it without a
reconnect. A grant from another delegate is refused by a node that holds a delegation of
its own: ``delegation.cert`` holds one or the other (the chain, or what it may issue).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nacl.signing import SigningKey

from meshd import trust
from meshd.config import MembershipSettings
from meshd.core import session_policy as policy
from meshd.core.control.effects import RenewalMessage
from meshd.core.endpoints import Address
from meshd.core.errors import BadInput
from meshd.core.membership import (
    MembershipCertificate,
    MembershipError,
    OwnMembership,
    VerifiedMember,
)
from meshd.core.membership.renewal import (
    RenewalError,
    RenewalIssuer,
    RenewalReason,
    accept_renewal,
    renew,
    renew_at,
)
from meshd.core.proto import session as messages
from meshd.daemon.control import ControlService
from meshd.invites import (
    TOKEN_FILE,
    BootstrapEndpoint,
    Invite,
    InviteError,
    InviteReason,
    InviteToken,
    Issuer,
    JoinRefusal,
    JoinRequest,
    decode_invite,
    decode_join_request,
    join_request,
    parse_token,
    redeem,
    verify_invite,
)
from meshd.invites.join import ISSUER_UNREACHABLE, STORE_FAILED, accept_grant, check_forwardable
from meshd.invites.join import is_final as is_final_reason
from meshd.invites.store import STORE_FILE, SqliteInviteStore
from meshd.log import event
from meshd.transport.certs import NodeCredentials, node_certificate
from meshd.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.transport.session import SessionSettings
from meshd.transport.udp import PeerEvent, QuicTransport

if TYPE_CHECKING:
    from meshd.config import Config
    from meshd.identity import Identity

Kernel = Callable[..., Awaitable[Any]]
Answer = messages.JoinGranted | messages.JoinRefused
RenewAnswer = messages.RenewGranted | messages.RenewRefused
Request = messages.JoinRequestMessage | messages.RenewRequest

# The joining node.
JOIN_SETTINGS = SessionSettings(idle_timeout=30.0, keepalive_interval=10.0, handshake_timeout=5.0)
ANSWER_S = 25.0  # for a bootstrap node's answer (it may forward to the issuer first)
RETRY_S = 2.0  # first pause between rounds, doubling to RETRY_MAX_S
RETRY_MAX_S = 30.0
GIVE_UP_S = 600.0  # then meshd exits (1) and its service manager starts it again
EXIT_REFUSED = 78  # EX_CONFIG: the invite will never do; the unit does not restart on it
# Session close reasons from a bootstrap node that are about us, not about it.
FINAL_CLOSE_REASONS = frozenset({"revoked"})

# The bootstrap node and the issuer.
RELAY_ALPN = "meshd-join/1"
RELAY_SETTINGS = SessionSettings(
    alpn_protocols=(RELAY_ALPN,), idle_timeout=30.0, keepalive_interval=10.0, handshake_timeout=5.0
)
FORWARD_S = 10.0  # the issuer's answer, forwarded; then issuer_unreachable
REDIAL_S = 2.0  # between dials of an issuer while requests wait for it
RELAY_VERIFY_S = 10.0  # a relay session whose certificate has not verified by then closes
MAX_RELAY_SESSIONS = 64
MAX_FORWARDS = 64  # join and renewal requests waiting for their issuers' answers
DEFAULT_RENEWAL = MembershipSettings()


class JoinError(Exception):
    """The join ended without a certificate; ``reason`` is a reason code, ``final`` whether
    the invite can ever do (exit status EXIT_REFUSED when not)."""

    def __init__(self, reason: str, message: str, final: bool = True) -> None:
        super().__init__(
            f"{'the invite is refused' if final else 'not joined'} ({reason}): {message}"
        )
        self.reason, self.message, self.final = reason, message, final


def needs_join(state_dir: Path) -> bool:
    """An invite waits and the node has no certificate yet: join before anything else."""
    return (state_dir / TOKEN_FILE).exists() and not (state_dir / trust.MEMBERSHIP_FILE).exists()


def read_token(state_dir: Path) -> InviteToken | None:
    """The node's invite token; None when there is none. JoinError when it is unreadable
    or not a token exactly as issued (malformed, bad_signature, bad_secret)."""
    path = state_dir / TOKEN_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise JoinError("unreadable", f"{path}: {exc}") from None
    try:
        return parse_token(text)
    except InviteError as exc:
        raise JoinError(str(exc.reason), f"{path}: {exc.message}") from None


def bootstrap_endpoints(state_dir: Path) -> tuple[BootstrapEndpoint, ...]:
    """Every bootstrap endpoint of the node's invite (the config keeps one per node): the
    normal start dials them all. None when there is no token, or it does not parse."""
    try:
        token = read_token(state_dir)
    except JoinError:
        return ()
    return token.invite.bootstrap if token is not None else ()


@dataclass(frozen=True)
class Outcome:
    """How one round of dialling ended: an answer from ``endpoint``, or its session closed
    (``closed``), or no session at all (``failures``: per endpoint address, why)."""

    endpoint: BootstrapEndpoint | None = None
    answer: Answer | None = None
    closed: str | None = None
    failures: tuple[tuple[str, str], ...] = ()


class JoinClient:
    """Dials bootstrap endpoints as the joining node's identity and asks one of them."""

    def __init__(
        self, credentials: NodeCredentials, settings: SessionSettings = JOIN_SETTINGS
    ) -> None:
        self.credentials = credentials
        self.settings = settings

    async def attempt(
        self,
        endpoints: tuple[BootstrapEndpoint, ...],
        message: messages.JoinRequestMessage,
        answer_s: float = ANSWER_S,
    ) -> Outcome:
        """Dial every endpoint at once; send ``message`` on the first session up; wait for
        its answer. Each endpoint gets a transport (a UDP socket) of its own."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, PeerEvent]] = asyncio.Queue()
        transports: list[QuicTransport | None] = []
        failures: dict[int, str] = {}
        try:
            for index, endpoint in enumerate(endpoints):
                try:
                    opened = await QuicTransport.listen(
                        credentials=self.credentials,
                        authorize=_anyone,  # the dial itself expects the endpoint's node id
                        on_event=functools.partial(_put, queue, index),
                        host="::" if endpoint.host.version == 6 else "0.0.0.0",
                        port=0,
                        settings=self.settings,
                    )
                except OSError as exc:
                    failures[index] = f"socket: {exc.strerror or exc}"
                    transports.append(None)
                    continue
                transports.append(opened)
                opened.dial((str(endpoint.host), endpoint.port), endpoint.node_id)
            chosen: int | None = None
            deadline = loop.time() + self.settings.handshake_timeout + 1.0
            while len(failures) < len(endpoints):
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        index, ev = await queue.get()
                except TimeoutError:
                    break
                node_id = ev.peer_node_id or ""
                transport = transports[index]
                assert transport is not None
                if chosen is None and isinstance(ev.event, SessionUp):
                    chosen, deadline = index, loop.time() + answer_s
                    if ev.event.protocol in messages.WITH_CAPABILITIES:  # its first message
                        capabilities = messages.Capabilities(messages.FEATURES)
                        transport.send_message(node_id, messages.encode(capabilities))
                    transport.send_message(node_id, messages.encode(message))
                    event("join.asking", bootstrap=endpoints[index].address, node=node_id[:8])
                elif isinstance(ev.event, SessionUp):
                    transport.close_peer(node_id, "not_needed")
                elif chosen is None and isinstance(ev.event, SessionClosed):
                    failures[index] = ev.event.reason
                elif index == chosen and isinstance(ev.event, SessionClosed):
                    return Outcome(endpoints[index], closed=ev.event.reason)
                elif index == chosen and isinstance(ev.event, MessageReceived):
                    answer = _answer(ev.event.data)
                    if answer is not None:
                        return Outcome(endpoints[index], answer=answer)
            if chosen is not None:
                return Outcome(endpoints[chosen], closed="no_answer")
            return Outcome(
                failures=tuple(
                    (e.address, failures.get(i, "no_answer")) for i, e in enumerate(endpoints)
                )
            )
        finally:
            for left in transports:
                if left is not None:
                    await left.close("done")


def _anyone(node_id: str) -> str | None:
    return None


def _put(queue: asyncio.Queue[tuple[int, PeerEvent]], index: int, ev: PeerEvent) -> None:
    queue.put_nowait((index, ev))


def _answer(data: bytes) -> Answer | None:
    """A join answer; anything else the bootstrap node says (its MEMBERSHIP) is skipped."""
    try:
        msg = messages.decode(data)
    except messages.SessionMessageError:
        return None
    return msg if isinstance(msg, messages.JoinGranted | messages.JoinRefused) else None


async def join_mesh(
    cfg: Config, ident: Identity, stopping: asyncio.Event, client: JoinClient | None = None
) -> BootstrapEndpoint | None:
    """Redeem the state directory's invite token: on success the membership files are
    stored and the endpoint that answered is returned; None when stopped first. JoinError
    when the invite is refused or no bootstrap node answered within GIVE_UP_S."""
    state_dir = cfg.node.state_dir
    token = read_token(state_dir)
    if token is None:
        raise JoinError("no_invite", f"{state_dir / TOKEN_FILE}: missing")
    invite = token.invite
    try:
        verify_invite(invite, time.time(), admins=invite.admins)
    except InviteError as exc:
        raise JoinError(str(exc.reason), exc.message) from None
    if cfg.node.mesh_ipv4 != invite.mesh_ipv4 or not set(cfg.mesh.admin_keys) & set(invite.admins):
        raise JoinError(
            "config_mismatch",
            f"the config is not this invite's (mesh address {cfg.node.mesh_ipv4}, the invite "
            f"gives {invite.mesh_ipv4}; or no admin key in common): provision it again",
        )
    request = join_request(token, ident.signing_key, ident.wireguard_public)
    message = messages.JoinRequestMessage(invite.encode(), request.encode())
    client = client or JoinClient(
        node_certificate(ident.signing_key),
        replace(JOIN_SETTINGS, alpn_protocols=cfg.control.protocols),
    )
    event(
        "join.started",
        invite=invite.invite_id.hex(),
        name=token.node_name,
        mesh_ipv4=str(invite.mesh_ipv4),
        endpoints=len(invite.bootstrap),
    )
    started = time.monotonic()
    pause = RETRY_S
    while True:
        attempt = asyncio.ensure_future(client.attempt(invite.bootstrap, message))
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({attempt, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if stopping.is_set():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            return None
        outcome = attempt.result()
        if _finish(cfg, token, request, outcome):
            assert outcome.endpoint is not None
            return outcome.endpoint
        if time.monotonic() - started > GIVE_UP_S:
            raise JoinError(
                "unreachable",
                f"no bootstrap node of the invite answered within {GIVE_UP_S:.0f} s",
                final=False,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), pause)
        if stopping.is_set():
            return None
        pause = min(2 * pause, RETRY_MAX_S)


def _finish(cfg: Config, token: InviteToken, request: JoinRequest, outcome: Outcome) -> bool:
    """Act on one round's outcome: True once joined; JoinError on a final refusal; False
    (after logging why) when the next round may do better."""
    where = outcome.endpoint.address if outcome.endpoint else None
    answer = outcome.answer
    if isinstance(answer, messages.JoinGranted):
        try:
            joined = accept_grant(
                token,
                request,
                cfg.mesh.admin_keys,
                answer.definition,
                answer.certificate,
                answer.delegation,
                time.time(),
            )
        except InviteError as exc:  # a broken or lying bootstrap node: ask another
            event("join.bad_answer", logging.WARNING, bootstrap=where, reason=exc.message)
            return False
        try:
            trust.save_joined(
                cfg.node.state_dir,
                joined.definition,
                joined.certificate,
                joined.delegation,
                token.opening,
            )
        except OSError as exc:  # the issuer hands the same certificate back next time
            raise JoinError("not_stored", f"{cfg.node.state_dir}: {exc}", final=False) from None
        event(
            "join.joined",
            bootstrap=where,
            name=token.node_name,
            mesh_ipv4=str(joined.member.mesh_ipv4),
            issuer=joined.member.issuer[:8],
            valid_until=joined.member.valid_until,
        )
        return True
    if isinstance(answer, messages.JoinRefused):
        final = is_final_reason(answer.reason)
        event(
            "join.refused",
            logging.ERROR if final else logging.WARNING,
            bootstrap=where,
            reason=answer.reason,
            detail=answer.detail,
        )
        if final:
            raise JoinError(answer.reason, answer.detail or "refused by the mesh")
        return False
    if outcome.closed is not None:
        event("join.session_closed", logging.WARNING, bootstrap=where, reason=outcome.closed)
        if outcome.closed in FINAL_CLOSE_REASONS:
            raise JoinError(outcome.closed, f"the bootstrap node {where} refused this node")
        return False
    reasons = ", ".join(f"{address} {reason}" for address, reason in outcome.failures)
    event("join.unreachable", logging.WARNING, endpoints=reasons)
    for address, reason in outcome.failures:  # refused at the handshake: about us
        if reason in FINAL_CLOSE_REASONS:
            raise JoinError(reason, f"the bootstrap node {address} refused this node")
    return False


# ---- the bootstrap node and the issuer -----------------------------------------------


@dataclass
class _Forward:
    """A join request a bootstrap node passed on to the invite's issuer, or a neighbour's
    renewal request passed on to an issuer of its address."""

    joiner: str
    issuer: str
    message: Request
    deadline: float
    sent: bool = False


@dataclass
class RenewalState:
    """Where this node's own renewal stands (``meshd status``: ``membership``)."""

    state: str = "valid"  # valid, due, asking, renewed, refused
    asking: str | None = None  # the neighbour asked last
    asked_at: float = 0.0  # monotonic
    asked: int = 0  # requests sent since the certificate became due
    last_refusal: str | None = None
    renewed_at: float | None = None  # wall clock, the last renewal


@dataclass
class _RelayPeer:
    node_id: str
    since: float
    member: VerifiedMember | None = None
    # A relay session has no CAPABILITIES: it comes up unverified (session policy).
    session_state: policy.SessionState = policy.SessionState.UNVERIFIED


class JoinService:
    """The bootstrap node's and the issuer's side of joins (see the module doc)."""

    def __init__(
        self,
        node_id: str,
        signing_key: SigningKey,
        control: ControlService,
        state_dir: Path,
        kernel: Kernel,
        *,
        relay_host: str,
        relay_port: int,
        relay_address: Callable[[str], Address],
        renewal: MembershipSettings = DEFAULT_RENEWAL,
    ) -> None:
        self.node_id, self.signing_key, self.control = node_id, signing_key, control
        self.renewal_settings = renewal
        self.renewal = RenewalState()
        self.state_dir, self.kernel = state_dir, kernel
        self.relay_host, self.relay_port, self.relay_address = relay_host, relay_port, relay_address
        self.transport: QuicTransport | None = None
        self.forwards: dict[str, _Forward] = {}  # by joining node
        self.relay_peers: dict[str, _RelayPeer] = {}
        self._dialled: dict[str, float] = {}  # issuer -> when we last dialled it
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.control.on_join = self.on_join_request
        self.control.on_renewal = self.on_renewal
        try:
            self.transport = await QuicTransport.listen(
                credentials=self.control.credentials,
                authorize=self.authorize,
                on_event=self.on_relay_event,
                host=self.relay_host,
                port=self.relay_port,
                settings=RELAY_SETTINGS,
            )
        except OSError as exc:
            # Joins for our own invites still work; forwarded ones get issuer_unreachable.
            event("join.relay_unavailable", logging.WARNING, error=str(exc))
            return
        event("join.relay_listening", address=f"[{self.relay_host}]:{self.relay_port}")

    async def close(self) -> None:
        self.control.on_join = None
        self.control.on_renewal = None
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            await self.transport.close("shutdown")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the bootstrap node: a joining node asks (the control plane hands it over) ----

    def on_join_request(self, joiner: str, msg: messages.JoinRequestMessage) -> None:
        try:
            invite, request = check_forwardable(
                msg.invite,
                msg.request,
                joiner,
                self.control.core.own.trust,
                self.control.core.clock.now(),
            )
        except InviteError as exc:
            self._answer(joiner, messages.JoinRefused(joiner, str(exc.reason), _short(exc.message)))
            return
        event(
            "join.request",
            joiner=joiner[:8],
            name=invite.name,
            invite=invite.invite_id.hex(),
            issuer=invite.issuer[:8],
        )
        if invite.issuer == self.node_id:
            self._spawn(self._redeem_for(joiner, invite, request))
            return
        if joiner not in self.forwards and len(self.forwards) >= MAX_FORWARDS:
            self._answer(
                joiner, messages.JoinRefused(joiner, ISSUER_UNREACHABLE, "too many joins at once")
            )
            return
        self.forwards[joiner] = _Forward(joiner, invite.issuer, msg, time.monotonic() + FORWARD_S)
        event("join.forwarding", joiner=joiner[:8], issuer=invite.issuer[:8])
        self._flush(invite.issuer, time.monotonic())

    async def _redeem_for(self, joiner: str, invite: Invite, request: JoinRequest) -> None:
        answer = await self.kernel(self.redeem_here, invite, request, self.control.core.clock.now())
        self._answer(joiner, answer)

    def _answer(self, joiner: str, answer: Answer | RenewAnswer) -> None:
        """To the joining node, on its join-only session; to a renewing neighbour, on its
        neighbour session."""
        if isinstance(answer, RenewAnswer):
            refused = isinstance(answer, messages.RenewRefused)
            event(
                "renewal.refused_node" if refused else "renewal.granted_node",
                logging.WARNING if refused else logging.INFO,
                node=joiner[:8],
                reason=answer.reason if isinstance(answer, messages.RenewRefused) else None,
            )
            if not self.control.send_to_member(joiner, answer):
                event("renewal.answer_lost", logging.WARNING, node=joiner[:8])
            return
        if isinstance(answer, messages.JoinRefused):
            event(
                "join.refused_node",
                logging.WARNING,
                joiner=joiner[:8],
                reason=answer.reason,
                detail=answer.detail,
            )
        else:
            event("join.granted_node", joiner=joiner[:8])
        if not self.control.answer_join(joiner, answer):
            event("join.answer_lost", logging.WARNING, joiner=joiner[:8], why="session gone")

    # ---- the issuer ------------------------------------------------------------------

    def redeem_here(self, invite: Invite, request: JoinRequest, now: float) -> Answer:
        """This node issued ``invite``: decide with its store (on the kernel thread)."""
        own = self.control.core.own

        def refuse(reason: str, text: str) -> messages.JoinRefused:
            return messages.JoinRefused(request.node_id, reason, _short(text))

        path = self.state_dir / STORE_FILE
        if not path.exists():
            return refuse(InviteReason.UNKNOWN_INVITE, f"{self.node_id} has no invite store")
        try:
            delegation = None if self.node_id in own.trust.admins else own.delegation
            issuer = Issuer(self.signing_key, own.trust, delegation)
        except ValueError as exc:
            return refuse(InviteReason.UNTRUSTED_ISSUER, f"this node cannot issue: {exc}")
        try:
            store = SqliteInviteStore(path)
            try:
                result = redeem(store, issuer, invite, request, now)
            finally:
                store.close()
        except OSError as exc:
            return refuse(STORE_FAILED, str(exc))
        if isinstance(result, JoinRefusal):
            event(
                "join.redeem_refused",
                logging.WARNING,
                invite=invite.invite_id.hex(),
                reason=str(result.reason),
                detail=result.message,
            )
            return refuse(str(result.reason), result.message)
        event(
            "join.redeemed",
            invite=invite.invite_id.hex(),
            name=invite.name,
            node=request.node_id[:8],
            mesh_ipv4=str(invite.mesh_ipv4),
        )
        return messages.JoinGranted(
            own.trust.definition.encode(),
            result.encode(),
            issuer.delegation.encode() if issuer.delegation is not None else b"",
        )

    # ---- relay sessions (bootstrap node <-> issuer, over the mesh) ----------------------

    def authorize(self, node_id: str) -> str | None:
        return self.control.core.neighbours.admits(node_id, self.relay_peers, MAX_RELAY_SESSIONS)

    def _flush(self, issuer: str, now: float) -> None:
        """Send what waits for ``issuer`` once its relay session verified; dial it if none."""
        waiting = [f for f in self.forwards.values() if f.issuer == issuer and not f.sent]
        if not waiting or self.transport is None:
            return
        peer = self.relay_peers.get(issuer)
        if peer is not None and peer.member is not None:
            for forward in waiting:
                forward.sent = True
                self._send(issuer, forward.message)
            return
        if peer is None and now - self._dialled.get(issuer, -REDIAL_S) >= REDIAL_S:
            self._dialled[issuer] = now
            self.transport.dial(self.relay_address(issuer), issuer)

    def on_relay_event(self, ev: PeerEvent) -> None:
        node_id = ev.peer_node_id or ""
        now = time.monotonic()
        if isinstance(ev.event, SessionUp | SessionClosed):
            self._dialled.pop(node_id, None)  # that dial is over: the next may go at once
        if isinstance(ev.event, SessionUp) and node_id:
            self.relay_peers[node_id] = _RelayPeer(node_id, now)
            self._send_raw(node_id, self.control.core.membership_message)
        elif isinstance(ev.event, MessageReceived) and node_id in self.relay_peers:
            self._on_relay_message(self.relay_peers[node_id], ev.event.data)
        elif isinstance(ev.event, SessionClosed):
            if ev.was_up:
                self.relay_peers.pop(node_id, None)
            for forward in self.forwards.values():
                if forward.issuer == node_id:
                    forward.sent = False  # asked again on the next session, until the deadline
            if not ev.was_up and ev.event.reason not in ("duplicate",):
                event(
                    "join.relay_failed",
                    logging.WARNING,
                    peer=node_id[:8] or "?",
                    reason=ev.event.reason,
                )

    def _on_relay_message(self, peer: _RelayPeer, data: bytes) -> None:
        try:
            msg = messages.decode(data)
            policy.check(policy.SessionKind.JOIN_RELAY, peer.session_state, msg, ())
            if isinstance(msg, messages.Membership):
                peer.member, _ = policy.check_membership(
                    msg, self.control.core.own, peer.node_id, self.control.core.clock.now()
                )
                peer.session_state = policy.advance(
                    peer.session_state, policy.SessionInput.CERTIFIED
                )
                self._flush(peer.node_id, time.monotonic())
            elif isinstance(msg, messages.JoinRequestMessage):
                self._on_forwarded(peer, msg)
            elif isinstance(msg, messages.RenewRequest):
                event("renewal.forwarded_request", relay=peer.node_id[:8])
                self._send(peer.node_id, self.renew_for(msg, None))
            elif isinstance(msg, messages.JoinGranted | messages.JoinRefused | RenewAnswer):
                self._on_issuer_answer(peer, msg)
        except BadInput as exc:
            self._close(peer.node_id, exc.reason, exc.message)

    def _on_forwarded(self, peer: _RelayPeer, msg: messages.JoinRequestMessage) -> None:
        """A bootstrap node passes on a request for one of our invites."""
        try:
            invite = decode_invite(msg.invite)
            request = decode_join_request(msg.request)
        except InviteError as exc:
            # The bootstrap node checked both before forwarding: it is broken, or lies.
            detail = f"forwarded request: {exc.message}"
            raise policy.Refusal(str(exc.reason), detail) from None
        event("join.forwarded_request", relay=peer.node_id[:8], invite=invite.invite_id.hex())
        self._spawn(self._redeem_for_relay(peer.node_id, invite, request))

    async def _redeem_for_relay(self, relay: str, invite: Invite, request: JoinRequest) -> None:
        answer = await self.kernel(self.redeem_here, invite, request, self.control.core.clock.now())
        self._send(relay, answer)

    def _on_issuer_answer(self, peer: _RelayPeer, msg: Answer | RenewAnswer) -> None:
        if isinstance(msg, messages.JoinRefused | messages.RenewRefused):
            joiner = msg.node_id
        else:
            try:
                joiner = MembershipCertificate.decode(msg.certificate).node_id
            except MembershipError as exc:
                raise policy.Refusal("malformed", f"JOIN_GRANTED: {exc.message}") from None
        forward = self.forwards.get(joiner)
        if (
            forward is None
            or forward.issuer != peer.node_id
            or isinstance(forward.message, messages.RenewRequest) != isinstance(msg, RenewAnswer)
        ):
            return  # answered already (a retry's second answer), or not ours to relay
        del self.forwards[joiner]
        self._answer(joiner, msg)
        if not any(f.issuer == peer.node_id for f in self.forwards.values()):
            self._close(peer.node_id, "done", "")

    def tick(self, now: float) -> None:
        self._renewal_tick(now)
        for joiner, forward in list(self.forwards.items()):
            if now >= forward.deadline:
                del self.forwards[joiner]
                why = f"no answer from the issuer {forward.issuer} within {FORWARD_S:.0f} s"
                late: Answer | RenewAnswer = (
                    messages.RenewRefused(joiner, ISSUER_UNREACHABLE, why)
                    if isinstance(forward.message, messages.RenewRequest)
                    else messages.JoinRefused(joiner, ISSUER_UNREACHABLE, why)
                )
                self._answer(joiner, late)
            else:
                self._flush(forward.issuer, now)
        for peer in list(self.relay_peers.values()):
            if peer.member is None and now - peer.since > RELAY_VERIFY_S:
                self._close(peer.node_id, "not_verified", "no certificate")

    # ---- renewal: the issuer and the neighbour that forwards ---------------------------

    def _issuer(self) -> RenewalIssuer:
        own = self.control.core.own
        delegation = None if self.node_id in own.trust.admins else own.delegation
        return RenewalIssuer(self.signing_key, own.trust, delegation)

    def renew_for(
        self, msg: messages.RenewRequest, session_node_id: str | None
    ) -> messages.RenewGranted | messages.RenewRefused:
        """Renew the certificate in ``msg`` here. On a neighbour session it must be the
        session's own node's; a relay forwards only what its neighbour asked (None)."""
        try:
            cert, chain = policy.decode_credential(msg)
        except MembershipError as exc:
            return messages.RenewRefused(
                session_node_id or self.node_id, "malformed", _short(exc.message)
            )
        requester = cert.node_id
        if session_node_id is not None and requester != session_node_id:
            return messages.RenewRefused(
                session_node_id, "wrong_node_id", f"a certificate for {requester}"
            )
        issuer = self._issuer()
        try:
            fresh = renew(
                issuer,
                cert,
                chain,
                self.control.core.clock.now(),
                secrets.randbits(63),
                self.renewal_settings.renew_grace_s,
                self.renewal_settings.clock_tolerance_s,
            )
        except (MembershipError, RenewalError) as exc:
            return messages.RenewRefused(requester, str(exc.reason), _short(exc.message))
        event("renewal.issued", node=requester[:8], name=fresh.name, valid_until=fresh.expires_at)
        delegation = issuer.delegation.encode() if issuer.delegation is not None else b""
        return messages.RenewGranted(fresh.encode(), delegation)

    def on_renewal(self, node_id: str, msg: RenewalMessage) -> None:
        """RENEW_* from a verified neighbour: its request, or the answer to ours."""
        if not isinstance(msg, messages.RenewRequest):
            self._on_renew_answer(node_id, msg)
            return
        try:
            cert, _ = policy.decode_credential(msg)
        except MembershipError as exc:
            self._answer(node_id, messages.RenewRefused(node_id, "malformed", _short(exc.message)))
            return
        event("renewal.request", node=node_id[:8], name=cert.name)
        if cert.node_id != node_id or self._issuer().covers(cert):
            self._answer(node_id, self.renew_for(msg, node_id))
            return
        target = self._renewal_issuer_for(cert)
        if target is None:
            self._answer(
                node_id,
                messages.RenewRefused(
                    node_id, ISSUER_UNREACHABLE, "no route to an issuer of that address"
                ),
            )
            return
        if node_id not in self.forwards and len(self.forwards) >= MAX_FORWARDS:
            self._answer(node_id, messages.RenewRefused(node_id, ISSUER_UNREACHABLE, "busy"))
            return
        self.forwards[node_id] = _Forward(node_id, target, msg, time.monotonic() + FORWARD_S)
        event("renewal.forwarding", node=node_id[:8], issuer=target[:8])
        self._flush(target, time.monotonic())

    def _renewal_issuer_for(self, cert: MembershipCertificate) -> str | None:
        """Whom to forward a renewal to: the certificate's issuer, else an admin; the first
        of them that Babel has a route to (the testbed's admin, say, is no node)."""
        selected = self.control.core.router.selected()
        for candidate in (cert.issuer, *self.control.core.own.trust.admins):
            host = self.relay_address(candidate)[0]
            if candidate != self.node_id and ipaddress.ip_network(f"{host}/128") in selected:
                return candidate
        return None

    # ---- renewal: this node's own certificate ------------------------------------------

    def _renewal_tick(self, now: float) -> None:
        own, state = self.control.core.own, self.renewal
        if self.control.core.clock.now() < renew_at(
            own.certificate, self.renewal_settings.renew_margin_s
        ):
            if state.state not in ("renewed", "valid"):
                state.state = "valid"
            return
        if state.asking is not None and now - state.asked_at < self.renewal_settings.renew_retry_s:
            return
        if state.state in ("valid", "renewed"):
            state.state = "due"
            state.asked = 0
            event("renewal.due", expires_at=own.certificate.expires_at)
        request = messages.RenewRequest(
            own.certificate.encode(), b"".join(d.encode() for d in own.chain)
        )
        state.asked_at = now
        if self._issuer().covers(own.certificate):
            state.asking = self.node_id
            self._spawn(self._install(self.node_id, self.renew_for(request, self.node_id)))
            return
        members = sorted(
            p.node_id for p in self.control.core.peers.values() if p.member is not None
        )
        if not members:
            state.asking = None
            return
        after = [m for m in members if state.asking is not None and m > state.asking]
        state.asking = (after or members)[0]
        state.asked += 1
        state.state = "asking"
        event("renewal.asking", neighbour=state.asking[:8], attempt=state.asked)
        self.control.send_to_member(state.asking, request)

    def _on_renew_answer(self, node_id: str, msg: RenewAnswer) -> None:
        if node_id != self.renewal.asking:
            return  # not asked, or answered after we moved on
        self._spawn(self._install(node_id, msg))

    async def _install(self, node_id: str, msg: RenewAnswer) -> None:
        """Check a grant, store it, use it; or note the refusal (the next neighbour is asked
        at the next retry)."""
        state, own = self.renewal, self.control.core.own
        if isinstance(msg, messages.RenewRefused):
            state.last_refusal = f"{msg.reason}: {msg.detail}" if msg.detail else msg.reason
            state.state = "refused"
            event(
                "renewal.refused",
                logging.WARNING,
                by=node_id[:8],
                reason=msg.reason,
                detail=msg.detail,
            )
            return
        try:
            cert, chain = policy.decode_credential(msg)
            chain = chain if cert.issuer not in own.trust.admins else ()
            member = accept_renewal(
                own.certificate,
                cert,
                chain,
                own.trust,
                self.control.core.clock.now(),
                self.renewal_settings.clock_tolerance_s,
            )
            ours = own.delegation  # what this node may issue, or the chain of its certificate
            if chain and ours is not None and ours.delegate == self.node_id and chain[0] != ours:
                raise RenewalError(
                    RenewalReason.CANNOT_ISSUE,
                    "issued by a delegate; this node keeps its own delegation",
                )
        except (MembershipError, RenewalError) as exc:
            state.last_refusal, state.state = f"{exc.reason}: {exc.message}", "refused"
            event("renewal.bad_grant", logging.WARNING, by=node_id[:8], reason=str(exc))
            return
        delegation = chain[0] if chain else None
        try:
            await self.kernel(
                trust.save_joined, self.state_dir, own.trust.definition, cert, delegation
            )
        except OSError as exc:
            state.last_refusal, state.state = f"not_stored: {exc}", "refused"
            event("renewal.not_stored", logging.ERROR, error=str(exc))
            return
        kept = delegation if delegation is not None else own.delegation
        held = self.control.core.own.trust  # a newer mesh definition may have come meanwhile
        self.control.renewed(OwnMembership(held, cert, tuple(chain), kept, member))
        state.asking, state.state, state.last_refusal = None, "renewed", None
        state.renewed_at = self.control.core.clock.now()
        event(
            "renewal.renewed",
            by=node_id[:8],
            issuer=cert.issuer[:8],
            valid_until=member.valid_until,
        )

    def renewal_status(self) -> dict[str, Any]:
        cert, state = self.control.core.own.certificate, self.renewal
        return {
            "expires_at": cert.expires_at,
            "not_before": cert.not_before,
            "issuer": cert.issuer,
            "serial": cert.serial,
            "renew_at": renew_at(cert, self.renewal_settings.renew_margin_s),
            "renewal": state.state,
            "asking": state.asking,
            "asked": state.asked,
            "last_refusal": state.last_refusal,
            "renewed_at": state.renewed_at,
        }

    def _close(self, node_id: str, reason: str, detail: str) -> None:
        if reason != "done":
            event(
                "join.relay_refused",
                logging.WARNING,
                peer=node_id[:8],
                reason=reason,
                detail=detail,
            )
        if self.transport is not None:
            self.transport.close_peer(node_id, reason)

    def _send(self, node_id: str, message: messages.SessionMessage) -> None:
        self._send_raw(node_id, messages.encode(message))

    def _send_raw(self, node_id: str, data: bytes) -> None:
        if self.transport is not None and (why := self.transport.try_send(node_id, data)):
            event("join.send_failed", logging.DEBUG, peer=node_id[:8], error=why)


def _short(text: str) -> str:
    """A refusal's detail, cut to what JOIN_REFUSED carries."""
    raw = text.encode()[: messages.MAX_JOIN_DETAIL]
    return raw.decode(errors="ignore")
