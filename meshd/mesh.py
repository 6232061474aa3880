"""The control plane: QUIC sessions with the neighbours, membership checks, Babel.

Runs in the daemon's event loop. Each neighbour gets one QUIC session (both ends dial while
they have none; the transport keeps one when both succeed). Each side's first message is its
membership certificate; until it verifies against the mesh definition nothing else from the
session is read. A neighbour is a Babel link only while its certificate verifies *and* its
WireGuard tunnel carries packets (the liveness signal), so a tunnel that stops carrying
packets is a dead link even while the QUIC session over the underlay still answers.
Route changes go to a callback that applies them to the kernel. Timers run on the
monotonic clock (``now``); certificates are checked against the wall clock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshd.log import event
from meshd.membership import (
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    RevocationTarget,
    VerifiedMember,
    verify_membership,
)
from meshd.proto import session as messages
from meshd.proto.babel import BabelDecodeError, decode_packet_detail, encode_packet
from meshd.routing.babel import BabelRouter, RouteChange
from meshd.transport.certs import NodeCredentials
from meshd.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.transport.udp import PeerEvent, QuicTransport
from meshd.trust import OwnMembership

LINK_COST = 96  # RFC 8966 A.2.1 wired/tunnel cost, until RTT-based costs arrive
REDIAL_S = 2.0  # first redial; doubling up to REDIAL_MAX_S while the neighbour is silent
REDIAL_MAX_S = 30.0
SEQNO_FILE = "babel-seqno"


@dataclass(frozen=True)
class NeighbourInfo:
    name: str
    ifname: str  # its WireGuard interface
    quic_address: tuple[str, int]
    wireguard_public: bytes


@dataclass
class Peer:
    info: NeighbourInfo
    session_up: bool = False
    member: VerifiedMember | None = None
    wireguard_up: bool = False
    routing: bool = False  # a Babel link now
    next_dial: float = 0.0
    failed_dials: int = 0
    last_refusal: str | None = None

    @property
    def state(self) -> str:
        if self.routing:
            return "up"
        return "connecting" if self.session_up or not self.last_refusal else "down"


def router_id(node_id_bytes: bytes) -> bytes:
    """Babel router-id: 8 bytes of the node's key hash (RFC 8966 4.1.2: any unique id)."""
    return hashlib.sha256(node_id_bytes).digest()[:8]


class ControlPlane:
    def __init__(
        self,
        node_id: str,
        credentials: NodeCredentials,
        own: OwnMembership,
        neighbours: dict[str, NeighbourInfo],
        router: BabelRouter,
        apply_routes: Callable[[list[RouteChange]], None],
        state_dir: Path,
    ) -> None:
        self.node_id, self.credentials, self.own = node_id, credentials, own
        self.peers = {nid: Peer(info) for nid, info in neighbours.items()}
        self.router, self.apply_routes = router, apply_routes
        self.state_dir = state_dir
        self.transport: QuicTransport | None = None
        self._saved_seqno = router.seqno
        self._membership_message = messages.encode(
            messages.Membership(own.certificate.encode(), b"".join(d.encode() for d in own.chain))
        )

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        self.transport = await QuicTransport.listen(
            credentials=self.credentials,
            authorize=self.authorize,
            on_event=self.on_event,
            host=host,
            port=port,
        )
        event("control.listening", port=port)

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close("shutdown")

    # ---- sessions --------------------------------------------------------------------

    def authorize(self, node_id: str) -> str | None:
        """At the QUIC handshake: only configured neighbours, and none revoked."""
        if node_id not in self.peers:
            return "unknown_node"
        if self.own.trust.revocations.in_force(RevocationTarget.node(node_id), time.time()):
            return "revoked"
        return None

    def on_event(self, ev: PeerEvent) -> None:
        node_id = ev.peer_node_id or ""
        peer = self.peers.get(node_id)
        now = time.monotonic()
        if isinstance(ev.event, SessionUp) and peer is not None:
            if peer.session_up:  # a new session replaced the old one: start afresh
                peer.member = None
                self._reevaluate(node_id, peer, now)
            peer.session_up = True
            event("session.up", peer=peer.info.name, address=f"{ev.addr[0]}:{ev.addr[1]}")
            self._send(node_id, self._membership_message)
        elif isinstance(ev.event, MessageReceived) and peer is not None:
            self._on_message(node_id, peer, ev.event.data, now)
        elif isinstance(ev.event, SessionClosed):
            if peer is None or not ev.was_up:
                silent = ev.event.reason == "handshake_timeout"  # a neighbour not there yet
                event(
                    "session.timeout" if silent else "session.refused",
                    logging.INFO if silent else logging.WARNING,
                    peer=node_id or "?",
                    reason=ev.event.reason,
                    by_peer=ev.event.by_peer,
                )
                if peer is not None:
                    peer.last_refusal = ev.event.reason
                    peer.failed_dials += 1
                return
            event("session.down", peer=peer.info.name, reason=ev.event.reason)
            peer.failed_dials += 1  # reset once a session verifies: a refusing peer backs off
            peer.session_up = False
            peer.member = None
            peer.last_refusal = ev.event.reason
            self._reevaluate(node_id, peer, now)

    def _on_message(self, node_id: str, peer: Peer, data: bytes, now: float) -> None:
        try:
            msg = messages.decode(data)
        except messages.SessionMessageError as exc:
            self._refuse(node_id, peer, exc.reason, str(exc))
            return
        if isinstance(msg, messages.Membership):
            self._on_membership(node_id, peer, msg, now)
            return
        if peer.member is None:
            self._refuse(node_id, peer, "not_verified", "a message before the certificate")
            return
        try:
            tlvs = decode_packet_detail(msg.packet).tlvs
        except BabelDecodeError as exc:
            self._refuse(node_id, peer, f"babel_{exc.reason}", str(exc))
            return
        self.router.receive(node_id, tlvs, now)
        self.flush()

    def _on_membership(
        self, node_id: str, peer: Peer, msg: messages.Membership, now: float
    ) -> None:
        try:
            cert = MembershipCertificate.decode(msg.certificate)
            chain = (DelegationCertificate.decode(msg.delegation),) if msg.delegation else ()
            member = verify_membership(cert, chain, self.own.trust, time.time())
        except MembershipError as exc:  # malformed, or does not verify
            self._refuse(node_id, peer, str(exc.reason_code), exc.message)
            return
        if member.node_id != node_id:
            self._refuse(node_id, peer, "wrong_node_id", f"certificate for {member.node_id}")
            return
        if member.wireguard_public != peer.info.wireguard_public:
            self._refuse(node_id, peer, "wrong_wireguard_key", "not the configured key")
            return
        peer.member = member
        peer.last_refusal = None
        peer.failed_dials = 0
        event(
            "peer.verified",
            peer=peer.info.name,
            issuer=member.issuer,
            valid_until=member.valid_until,
        )
        self._reevaluate(node_id, peer, now)

    def _refuse(self, node_id: str, peer: Peer, reason: str, detail: str) -> None:
        """Bad input from a peer closes that session only, with the reason logged."""
        event("session.refused", logging.WARNING, peer=peer.info.name, reason=reason, detail=detail)
        peer.last_refusal = reason
        if self.transport is not None:
            self.transport.close_peer(node_id, reason)

    # ---- links -----------------------------------------------------------------------

    def wireguard_state(self, node_id: str, up: bool, now: float) -> None:
        """The WireGuard liveness of a neighbour's tunnel changed."""
        peer = self.peers.get(node_id)
        if peer is not None and peer.wireguard_up != up:
            peer.wireguard_up = up
            self._reevaluate(node_id, peer, now)

    def _reevaluate(self, node_id: str, peer: Peer, now: float) -> None:
        routing = peer.session_up and peer.member is not None and peer.wireguard_up
        if routing == peer.routing:
            return
        peer.routing = routing
        if routing:
            self.router.link_up(node_id, LINK_COST, now)
        else:
            self.router.link_down(node_id, now)
        event("babel.link_" + ("up" if routing else "down"), peer=peer.info.name)
        self.flush()

    # ---- time ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if self.transport is not None:
            for node_id, peer in self.peers.items():
                # Both ends dial while they have no session (a restarted node cannot wait
                # for its neighbour's idle timeout); the transport keeps one session.
                if not peer.session_up and now >= peer.next_dial:
                    backoff = REDIAL_S * 2 ** min(peer.failed_dials, 8)
                    peer.next_dial = now + min(backoff, REDIAL_MAX_S)
                    self.transport.dial(peer.info.quic_address, expected_node_id=node_id)
        self.router.tick(now)
        self.flush()

    def flush(self) -> None:
        for node_id, tlvs in self.router.drain_outgoing():
            if tlvs and self.peers.get(node_id) and self.peers[node_id].session_up:
                packet = encode_packet(tlvs)
                self._send(node_id, messages.encode(messages.BabelPacket(packet)))
        changes = self.router.drain_route_changes()
        if changes:
            self.apply_routes(changes)
        if self.router.seqno != self._saved_seqno:
            self._save_seqno(self.router.seqno)

    def _send(self, node_id: str, data: bytes) -> None:
        if self.transport is not None:
            try:
                self.transport.send_message(node_id, data)
            except (KeyError, ValueError) as exc:
                event("session.send_failed", logging.DEBUG, peer=node_id, error=str(exc))

    # ---- persistence -----------------------------------------------------------------

    def _save_seqno(self, seqno: int) -> None:
        """RFC 8966 3.5.4: a node that forgets its seqno is shunned until sources expire."""
        path = self.state_dir / SEQNO_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{seqno}\n")
        os.replace(tmp, path)
        self._saved_seqno = seqno

    # ---- status ----------------------------------------------------------------------

    def neighbour_status(self, node_id: str) -> dict[str, Any]:
        peer = self.peers[node_id]
        return {
            "session": "up" if peer.session_up else "down",
            "verified": peer.member is not None,
            "routing": peer.routing,
            "refusal": peer.last_refusal,
        }


def load_seqno(state_dir: Path) -> int:
    try:
        value = int((state_dir / SEQNO_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return int.from_bytes(os.urandom(2), "big")
    return value & 0xFFFF
