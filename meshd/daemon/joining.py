"""Joining the mesh with an invite: the new node's join-only step, before anything else
(issue 7; the pure parts are in meshd.core.invites, the bootstrap node's and issuer's side in
meshd.daemon.joins).

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
the others are closed. The answer is JOIN_GRANTED (the mesh definition, the certificate, the
issuer's delegation when a delegate issued it) or JOIN_REFUSED with a reason. A grant is
checked against the token and the admin keys the config pins
(``meshd.core.invites.join.accept_grant``) and stored (``meshd.adapters.trust.save_joined``:
mesh.cert, delegation.cert, membership.cert last); ``invite.token`` stays (provisioning
compares against it, and the normal start dials all of its endpoints as bootstrap
addresses). Then the daemon goes on with its normal start. A final refusal (reused, expired,
altered, revoked, unknown) is logged and ends meshd with ``JoinError``: exit status 78,
which the systemd unit does not restart; nothing is stored. When no bootstrap node can help
now (none answers, or its issuer is unreachable) every endpoint is dialled again, after a
pause that doubles up to ``RETRY_MAX_S``, for ``GIVE_UP_S``; then meshd exits 1 and its
service manager starts it again.

Why an ordinary session and no ALPN of its own: the TLS layer authenticates keys, not
membership (meshd.core.transport.certs); membership is the first message. A node without a
certificate passes the handshake like any key that is not revoked (a revoked key is refused
there, with ``revoked``), and the control plane (meshd.core.control) accepts exactly one
other first message, JOIN_REQUEST, which makes the session join-only: anything else closes
it, it is never a neighbour, and it is closed after ``JOIN_S``. The joining node needs
nothing but the endpoints its token names, and the bootstrap node's QUIC port is already
open to the underlay.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from meshd.adapters import trust
from meshd.adapters.quic import PeerEvent, QuicTransport
from meshd.core.invites import (
    TOKEN_FILE,
    BootstrapEndpoint,
    InviteError,
    InviteToken,
    JoinRequest,
    join_request,
    parse_token,
    verify_invite,
)
from meshd.core.invites.join import accept_grant
from meshd.core.invites.join import is_final as is_final_reason
from meshd.core.proto import session as messages
from meshd.core.transport.certs import NodeCredentials, node_certificate
from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.core.transport.session import SessionSettings
from meshd.log import event

if TYPE_CHECKING:
    from meshd.adapters.identity import Identity
    from meshd.config import Config

Answer = messages.JoinGranted | messages.JoinRefused
JOIN_SETTINGS = SessionSettings(idle_timeout=30.0, keepalive_interval=10.0, handshake_timeout=5.0)
ANSWER_S = 25.0  # for a bootstrap node's answer (it may forward to the issuer first)
RETRY_S = 2.0  # first pause between rounds, doubling to RETRY_MAX_S
RETRY_MAX_S = 30.0
GIVE_UP_S = 600.0  # then meshd exits (1) and its service manager starts it again
EXIT_REFUSED = 78  # EX_CONFIG: the invite will never do; the unit does not restart on it
# Session close reasons from a bootstrap node that are about us, not about it.
FINAL_CLOSE_REASONS = frozenset({"revoked"})


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
