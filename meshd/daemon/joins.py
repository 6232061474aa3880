"""Joins and renewals for other nodes, in the daemon: what a bootstrap node and an invite's
issuer do for a joining node, and what a neighbour does for a renewing one (issue 7; the
pure parts are in meshd.core.invites and meshd.core.membership.renewal; the joining node's own
side is meshd.daemon.joining).

The bootstrap node (``JoinService.on_join_request``) checks what needs no store
(``check_forwardable``: the invite against its own mesh, the proof, the request being the
session key's own), so a bad token stops at the first node. The invite's issuer decides:
when that is this node, it redeems here; otherwise it forwards the request over the mesh
to the issuer and relays the answer (the issuer's store is the single truth, so a token is
redeemed once however many bootstrap nodes see it). Forwarding uses a relay session like
an exit session (meshd.daemon.exits): QUIC over the mesh to the issuer's mesh address,
both sides showing their certificate first. The relay listens on the node's mesh IPv6
address (which anyone derives from a node id, meshd.core.addressing) on the exit sessions'
port, with an ALPN of its own (``RELAY_ALPN``), so relay and exit sessions never meet: the
exit service has the same port on the mesh IPv4 address. An issuer that does not answer
within ``FORWARD_S`` is reported to the joining node as ``issuer_unreachable`` (it tries
another bootstrap node, or later).

The issuer (``redeem_here``, on the kernel thread: SQLite) calls
``meshd.core.invites.redeem`` with its store (``state_dir/invites.sqlite``, made by ``meshd
invite``): a node that issued nothing has no store and refuses ``unknown_invite``.

Renewals take the same path (the rules are in meshd.core.membership.renewal): a neighbour
that can issue the renewing node's address answers RENEW_GRANTED or RENEW_REFUSED; one
that cannot forwards the request, as a bootstrap node forwards a join, over a relay
session to the certificate's issuer, or else an admin, whichever Babel has a route to,
and relays the answer. This node's own renewal is meshd.daemon.renewal's.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nacl.signing import SigningKey

from meshd.adapters.invite_store import STORE_FILE, SqliteInviteStore
from meshd.adapters.quic import PeerEvent, QuicTransport
from meshd.config import MembershipSettings
from meshd.core import session_policy as policy
from meshd.core.control.effects import RenewalMessage
from meshd.core.endpoints import Address
from meshd.core.errors import BadInput
from meshd.core.invites import (
    Invite,
    InviteError,
    InviteReason,
    Issuer,
    JoinRefusal,
    JoinRequest,
    decode_invite,
    decode_join_request,
    redeem,
)
from meshd.core.invites.join import ISSUER_UNREACHABLE, STORE_FAILED, check_forwardable
from meshd.core.membership import (
    MembershipCertificate,
    MembershipError,
    VerifiedMember,
)
from meshd.core.membership.renewal import (
    RenewalError,
    RenewalIssuer,
    renew,
)
from meshd.core.proto import session as messages
from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.core.transport.session import SessionSettings
from meshd.daemon.control import ControlService
from meshd.daemon.joining import Answer
from meshd.daemon.renewal import OwnRenewal, RenewAnswer
from meshd.daemon.tasks import Kernel, Tasks
from meshd.log import event

if TYPE_CHECKING:
    pass

Request = messages.JoinRequestMessage | messages.RenewRequest

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
        self.state_dir, self.kernel = state_dir, kernel
        self.relay_host, self.relay_port, self.relay_address = relay_host, relay_port, relay_address
        self.transport: QuicTransport | None = None
        self.forwards: dict[str, _Forward] = {}  # by joining node
        self.relay_peers: dict[str, _RelayPeer] = {}
        self._dialled: dict[str, float] = {}  # issuer -> when we last dialled it
        self.tasks = Tasks("joins")
        # This node's own certificate, renewed before it expires (meshd.daemon.renewal).
        self.own_renewal = OwnRenewal(
            node_id,
            control,
            state_dir,
            kernel,
            renewal,
            self._issuer,
            self.renew_for,
            self.tasks.spawn,
        )

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
        await self.tasks.cancel()
        if self.transport is not None:
            await self.transport.close("shutdown")

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
            self.tasks.spawn(self._redeem_for(joiner, invite, request))
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
            own.trust.signed_definition.encode(),
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
        self.tasks.spawn(self._redeem_for_relay(peer.node_id, invite, request))

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
        self.own_renewal.tick(now)
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
            self.own_renewal.on_answer(node_id, msg)
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
