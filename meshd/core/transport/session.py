"""A sans-IO neighbour session over QUIC: aioquic's ``QuicConnection`` plus our rules.

- The protocol version is the TLS ALPN: each end offers and accepts
  ``SessionSettings.alpn_protocols`` (newest first) and the accepting end picks the first of
  its own list that the dialler offered (aioquic ``tls.negotiate``); ``protocol`` and
  ``SessionUp`` carry the one chosen. With none in common the server's TLS alert
  (no_application_protocol) ends the handshake: both ends report ``version_unsupported``.
- Both ends present their node certificate (the server requests the client's, see
  ``_aioquic_private``); TLS does no CA validation. On ``HandshakeCompleted`` each end takes
  the peer's Ed25519 key as its node id, checks it against the expected one (when dialling a
  known neighbour) and asks ``authorize(node_id)``; a refusal closes the connection with an
  application error and the reason code as the reason phrase, which the peer receives.
- Control messages: length-prefixed frames (``framing``) on one bidirectional stream, opened
  by the dialling side. A broken frame closes this session only.
- Unreliable messages: RFC 9221 DATAGRAM frames, guarded so that one is never queued unless
  the peer advertised support and it fits in a packet.
- Keep-alive: aioquic has none; a PING frame after ``keepalive_interval`` of silence.
- Handshake deadline: aioquic has none either (only the idle timeout, which every packet
  pushes back); a server session not up ``handshake_timeout`` after its first datagram is
  dropped without a word (``drop``).

No I/O and no clock: the owner passes ``now`` in, sends ``datagrams_to_send(now)``, calls
``handle_timer(now)`` at ``get_timer()`` and reads ``next_event()``.
"""

from __future__ import annotations

import enum
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicErrorCode
from aioquic.quic.packet import (
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    QuicProtocolVersion,
    pull_quic_header,
)
from aioquic.tls import AlertDescription

from meshd.core.proto.session import PROTOCOLS, VERSION_UNSUPPORTED
from meshd.core.transport import _aioquic_private as private
from meshd.core.transport.certs import (
    CertificateKeyError,
    NodeCredentials,
    node_id_from_certificate,
)
from meshd.core.transport.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    DatagramReceived,
    MessageReceived,
    SessionClosed,
    SessionEvent,
    SessionUp,
)
from meshd.core.transport.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    OPEN_FRAME,
    FrameDecoder,
    FrameError,
    encode_frame,
    varint_size,
)

ALPN_PROTOCOLS = PROTOCOLS  # neighbour sessions' versions, newest first (meshd.core.proto.session)
# RFC 9001 4.8: a TLS alert is sent as the QUIC CRYPTO_ERROR 0x100 + its description.
_NO_COMMON_ALPN = QuicErrorCode.CRYPTO_ERROR + AlertDescription.no_application_protocol
CONNECTION_ID_LENGTH = 8  # aioquic's default; the adapter parses short headers with it
CONTROL_STREAM_ID = 0  # RFC 9000 2.1: the first client-initiated bidirectional stream

# Application error codes (CONNECTION_CLOSE type 0x1d); the reason phrase carries the code.
ERROR_CLOSED = 0x0
ERROR_REFUSED = 0x1
ERROR_PROTOCOL = 0x2
ERROR_DUPLICATE = 0x3

# The largest DATAGRAM payload that fits an empty 1-RTT packet, whatever the peer's
# connection id length: a datagram that can never fit stays at the head of aioquic's queue
# and blocks every later one (REFERENCES.md). Short header = 1 + cid (<= 20, RFC 9000 17.3)
# + 2 (aioquic's packet number size); AEAD tag 16; frame = type 1 + varint length + data.
_SHORT_HEADER_MAX = 1 + 20 + 2
_AEAD_TAG = 16

# Reason phrases are sent on the wire; keep them short (RFC 9000 19.19 allows any length).
_MAX_REASON = 64

Authorize = Callable[[str], "str | None"]


@dataclass(frozen=True)
class SessionSettings:
    alpn_protocols: tuple[str, ...] = field(
        default=ALPN_PROTOCOLS,
        metadata={"help": "TLS ALPN ids (protocol versions) offered and accepted, newest first"},
    )
    idle_timeout: float = field(
        default=30.0, metadata={"help": "seconds of silence before the session is dropped"}
    )
    keepalive_interval: float | None = field(
        default=10.0,
        metadata={"help": "seconds of silence before a PING is sent; None disables it"},
    )
    max_frame_size: int = field(
        default=DEFAULT_MAX_FRAME_SIZE, metadata={"help": "largest control message, bytes"}
    )
    max_datagram_frame_size: int | None = field(
        default=1200,
        metadata={"help": "RFC 9221 transport parameter; None disables datagrams"},
    )
    max_udp_payload: int = field(
        default=1200, metadata={"help": "largest UDP payload we send (QUIC minimum 1200)"}
    )
    receive_burst: int = field(
        default=4 * 1024 * 1024,
        metadata={
            "help": "octets of datagrams a session may receive at once: more than a full"
            " route table and certificate directory"
        },
    )
    receive_rate: int = field(
        default=128 * 1024,
        metadata={
            "help": "octets a second a session may receive after that; beyond, its"
            " datagrams are dropped before they are decrypted (the sender's congestion"
            " control slows it down)"
        },
    )
    handshake_timeout: float = field(
        default=5.0,
        metadata={
            "help": "seconds a session may take to come up: a dial then fails, and one"
            " accepted from a peer is dropped without a word"
        },
    )

    def __post_init__(self) -> None:
        if (
            not isinstance(self.alpn_protocols, tuple)
            or not self.alpn_protocols
            or len(set(self.alpn_protocols)) != len(self.alpn_protocols)
            or not all(
                isinstance(p, str) and p.isascii() and 1 <= len(p) <= 255
                for p in self.alpn_protocols
            )
        ):
            raise ValueError("alpn_protocols must be a tuple of distinct ASCII ids, 1..255 long")
        if self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if self.keepalive_interval is not None and not (
            0 < self.keepalive_interval < self.idle_timeout
        ):
            raise ValueError("keepalive_interval must be positive and below idle_timeout")
        if self.max_frame_size < 1:
            raise ValueError("max_frame_size must be positive")
        if self.max_udp_payload < 1200:
            raise ValueError("max_udp_payload must be at least 1200 (RFC 9000 14)")
        if self.handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive")


class SessionState(enum.Enum):
    HANDSHAKE = "handshake"
    UP = "up"
    CLOSED = "closed"  # SessionClosed emitted; aioquic may still be closing or draining
    TERMINATED = "terminated"  # aioquic is done; the owner may forget the session


class SessionNotUp(RuntimeError):
    """Our own misuse: sending on a session that is not up."""


def destination_cid(data: bytes, host_cid_length: int = CONNECTION_ID_LENGTH) -> bytes | None:
    """The destination connection id of a datagram's first packet, None if unparsable."""
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=host_cid_length)
    except (ValueError, BufferReadError):
        return None
    return header.destination_cid


def initial_header(data: bytes) -> QuicHeader | None:
    """For a datagram that may open a session: its first packet's header (the client's
    chosen destination cid, its own cid, and the token a Retry gave it, if any).

    None unless it is a QUIC v1 INITIAL in a datagram of at least 1200 bytes (RFC 9000
    14.1: smaller ones must be dropped; this also limits amplification).
    """
    if len(data) < 1200:
        return None
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=CONNECTION_ID_LENGTH)
    except (ValueError, BufferReadError):
        return None
    if (
        header.packet_type != QuicPacketType.INITIAL
        or header.version != QuicProtocolVersion.VERSION_1
    ):
        return None
    return header


class Session:
    """One neighbour session; create with ``Session.dial`` or ``Session.accept``."""

    def __init__(
        self,
        *,
        credentials: NodeCredentials,
        authorize: Authorize,
        is_client: bool,
        settings: SessionSettings | None = None,
        expected_node_id: str | None = None,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
    ) -> None:
        self.settings = settings or SessionSettings()
        self.is_client = is_client
        self.expected_node_id = expected_node_id
        self.peer_node_id: str | None = None
        self.protocol: str | None = None  # the ALPN both ends agreed on, once they did
        self.state = SessionState.HANDSHAKE
        self._authorize = authorize
        configuration = QuicConfiguration(
            is_client=is_client,
            alpn_protocols=list(self.settings.alpn_protocols),
            idle_timeout=self.settings.idle_timeout,
            max_datagram_frame_size=self.settings.max_datagram_frame_size,
            max_datagram_size=self.settings.max_udp_payload,
            verify_mode=ssl.CERT_NONE,  # no CA: we check the peer's key ourselves
            connection_id_length=CONNECTION_ID_LENGTH,
            certificate=credentials.certificate,
            private_key=credentials.private_key,
        )
        self._quic = private.RequestClientCertificateConnection(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        self._events: deque[SessionEvent] = deque()
        self._decoder = FrameDecoder(self.settings.max_frame_size)
        self._last_activity: float | None = None
        self._handshake_deadline: float | None = None  # a server's, from its first datagram
        self._ping_uid = 0
        self._handshake_completed = False
        self._early: list[quic_events.StreamDataReceived] = []  # data before we are up
        self._stream_open = False  # the server has seen the client open the control stream
        self._outbox: list[bytes] = []  # the server's frames held until then
        self._events.append(ConnectionIdIssued(self._quic.host_cid))

    @classmethod
    def dial(
        cls,
        *,
        credentials: NodeCredentials,
        authorize: Authorize,
        addr: NetworkAddress,
        now: float,
        expected_node_id: str | None = None,
        settings: SessionSettings | None = None,
    ) -> Session:
        session = cls(
            credentials=credentials,
            authorize=authorize,
            is_client=True,
            settings=settings,
            expected_node_id=expected_node_id,
        )
        session._quic.connect(addr, now=now)
        session._last_activity = now
        # A dial that is not up by then ends too: waiting for the idle timeout would leave
        # a neighbour that is not there (yet) undialled for minutes.
        session._handshake_deadline = now + session.settings.handshake_timeout
        return session

    @classmethod
    def accept(
        cls,
        *,
        credentials: NodeCredentials,
        authorize: Authorize,
        original_destination_connection_id: bytes,
        settings: SessionSettings | None = None,
        retry_source_connection_id: bytes | None = None,
    ) -> Session:
        """A server session for a client's first INITIAL (see ``initial_header``).

        Feed it that datagram next. The owner routes datagrams addressed to that INITIAL's
        destination cid here too, until the client switches to ours. After a Retry (RFC
        9000 8.1.2, done by the owner: aioquic has it only in its asyncio server), the
        INITIAL that carries a valid token opens the session with the cid the client first
        chose (from the token) as ``original_destination_connection_id`` and the Retry's
        source cid (the INITIAL's destination cid) as ``retry_source_connection_id``: both
        go into our transport parameters, which the client checks (RFC 9000 7.3).
        """
        return cls(
            credentials=credentials,
            authorize=authorize,
            is_client=False,
            settings=settings,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )

    # -- input -------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        """Feed one UDP payload. Garbage is dropped by aioquic or closes this session."""
        if self.state is SessionState.TERMINATED:
            return
        if self._handshake_deadline is None and not self.is_client:
            # Before the handshake aioquic's only clock is the idle timeout, and every packet
            # that decrypts pushes it back (RFC 9000 10.1): a client that never finishes
            # would hold this session as long as it keeps sending. The deadline is absolute.
            self._handshake_deadline = now + self.settings.handshake_timeout
        self._last_activity = now
        try:
            self._quic.receive_datagram(data, addr, now=now)
        except (BufferReadError, ValueError, IndexError) as exc:
            # aioquic turns protocol errors into a CONNECTION_CLOSE itself; this is a
            # last line for parser errors it lets through, so a peer's bytes never raise.
            self._close_now(ERROR_PROTOCOL, f"undecodable_packet:{type(exc).__name__}")
        self._process(now)

    def handle_timer(self, now: float) -> None:
        if self.state is SessionState.TERMINATED:
            return
        deadline = self._pending_handshake_deadline()
        if deadline is not None and now >= deadline:
            self.drop("handshake_timeout")
            return
        if not self._has_path():
            return
        keepalive_at = self._keepalive_at()
        if keepalive_at is not None and now >= keepalive_at:
            # aioquic has no keep-alive (REFERENCES.md): a PING is ack-eliciting, so the
            # peer's idle timer and, with its ACK, ours restart (RFC 9000 10.1, 10.1.2).
            self._ping_uid += 1
            self._quic.send_ping(self._ping_uid)
            self._last_activity = now
        quic_timer = self._quic.get_timer()
        if quic_timer is not None and now >= quic_timer:
            self._quic.handle_timer(now=now)
        self._process(now)

    # -- output ------------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        if self.state is SessionState.TERMINATED or not self._has_path():
            return []  # a server has no network path before its first datagram
        datagrams = self._quic.datagrams_to_send(now=now)
        self._process(now)
        return datagrams

    def get_timer(self) -> float | None:
        if self.state is SessionState.TERMINATED:
            return None
        deadline = self._pending_handshake_deadline()
        if not self._has_path():
            return deadline  # aioquic has no timer yet: only ours can end this session
        timers = [
            t for t in (self._quic.get_timer(), self._keepalive_at(), deadline) if t is not None
        ]
        return min(timers) if timers else None

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def is_up(self) -> bool:
        return self.state is SessionState.UP

    @property
    def is_terminated(self) -> bool:
        return self.state is SessionState.TERMINATED

    @property
    def heard_from_peer(self) -> bool:
        """Whether a packet from the peer has decrypted yet.

        RFC 9001 5.2: INITIAL keys derive from the destination cid the client chose, so any
        client's INITIAL decrypts. A server session whose first datagram left this False
        was opened by bytes that only look like an INITIAL: nothing is worth keeping.
        """
        return private.received_a_packet(self._quic)

    # -- commands ----------------------------------------------------------------------

    def send_message(self, data: bytes) -> None:
        """Queue one control message (reliable, ordered). Raise on misuse."""
        if not self.is_up:
            raise SessionNotUp(f"session is {self.state.value}")
        frame = encode_frame(data, self.settings.max_frame_size)
        if not self.is_client and not self._stream_open:
            # The control stream is the dialler's (client-initiated, id 0): the server may
            # only write to it once the client's first frame opened it. Until then, hold.
            self._outbox.append(frame)
            return
        self._quic.send_stream_data(CONTROL_STREAM_ID, frame)

    @property
    def max_datagram_payload(self) -> int | None:
        """The largest datagram ``send_datagram`` accepts now; None when unavailable."""
        if not self.is_up or self.settings.max_datagram_frame_size is None:
            return None
        remote = private.remote_max_datagram_frame_size(self._quic)
        if remote is None:  # the peer did not advertise RFC 9221 support
            return None
        frame_limit = min(
            remote,  # RFC 9221 3: the whole frame, type and length included
            self.settings.max_udp_payload - _SHORT_HEADER_MAX - _AEAD_TAG,
        )
        payload = frame_limit - 1 - 2
        while payload > 0 and 1 + varint_size(payload) + payload > frame_limit:
            payload -= 1
        return payload if payload > 0 else None

    def send_datagram(self, data: bytes) -> None:
        """Queue one unreliable message; ValueError when it cannot be sent (never queued).

        aioquic's ``send_datagram_frame`` checks neither the peer's support (a DATAGRAM to a
        peer that did not advertise it is a PROTOCOL_VIOLATION that kills the connection) nor
        the size (one that cannot fit a packet blocks the queue for good).
        """
        limit = self.max_datagram_payload
        if limit is None:
            if not self.is_up:
                raise SessionNotUp(f"session is {self.state.value}")
            raise ValueError("datagrams are not enabled on this session (or by the peer)")
        if len(data) > limit:
            raise ValueError(f"datagram of {len(data)} bytes exceeds the {limit} limit")
        self._quic.send_datagram_frame(data)

    def close(self, reason: str = "closed", error_code: int = ERROR_CLOSED) -> None:
        """Close with a reason code the peer receives; emits SessionClosed at once."""
        if self.state in (SessionState.CLOSED, SessionState.TERMINATED):
            return
        self._close_now(error_code, reason)

    def drop(self, reason: str) -> None:
        """Forget a session that is not up, sending nothing; terminates it at once.

        Emits SessionClosed unless the session was already closed. For half-open sessions
        (from addresses anyone can forge): a CONNECTION_CLOSE would only be one more
        datagram to whoever the address names. A real client that got our first flight
        hears nothing and waits for its own timeout. An up session is ``close``d instead:
        raise.
        """
        if self.state is SessionState.UP:
            raise RuntimeError("a session that is up is closed, not dropped")
        if self.state is SessionState.HANDSHAKE:
            self._events.append(
                SessionClosed(reason=reason[:_MAX_REASON], peer_node_id=self._named())
            )
        self.state = SessionState.TERMINATED

    # -- internals ---------------------------------------------------------------------

    def _has_path(self) -> bool:
        # A server has no peer address (and aioquic cannot send) before a valid INITIAL.
        return self._quic.get_peer_address() is not None

    def _pending_handshake_deadline(self) -> float | None:
        return self._handshake_deadline if self.state is SessionState.HANDSHAKE else None

    def _keepalive_at(self) -> float | None:
        interval = self.settings.keepalive_interval
        if interval is None or not self.is_up or self._last_activity is None:
            return None
        if not self.is_client:
            # The dialler pings; the accepting side only backs it up, later. Were both
            # to ping after the same silence, the idle cost would double (a PING and its
            # ACK from each side); receiving the dialler's PING resets this clock.
            interval = min(2 * interval, (interval + self.settings.idle_timeout) / 2)
        return self._last_activity + interval

    def _close_now(self, error_code: int, reason: str) -> None:
        reason = reason[:_MAX_REASON]
        if self.state in (SessionState.HANDSHAKE, SessionState.UP):
            self.state = SessionState.CLOSED
            self._events.append(
                SessionClosed(reason=reason, error_code=error_code, peer_node_id=self._named())
            )
        self._quic.close(error_code=error_code, reason_phrase=reason)

    def _named(self) -> str | None:
        """Whom a session's end concerns: the peer it verified, else, for a dial that never
        saw a certificate, the node it meant to reach (whose redials then back off: a dial
        nobody answers would otherwise be tried again every REDIAL_S for ever)."""
        if self.peer_node_id is None and self.is_client:
            return self.expected_node_id
        return self.peer_node_id

    def _process(self, now: float) -> None:
        while (event := self._quic.next_event()) is not None:
            self._handle_quic_event(event, now)
        if (
            self.state is SessionState.HANDSHAKE
            and self._handshake_completed
            and private.handshake_confirmed(self._quic)
        ):
            self._decide(now)

    def _handle_quic_event(self, event: quic_events.QuicEvent, now: float) -> None:
        if isinstance(event, quic_events.ConnectionIdIssued):
            self._events.append(ConnectionIdIssued(event.connection_id))
        elif isinstance(event, quic_events.ConnectionIdRetired):
            self._events.append(ConnectionIdRetired(event.connection_id))
        elif isinstance(event, quic_events.HandshakeCompleted):
            self._on_handshake_completed(event, now)
        elif isinstance(event, quic_events.StreamDataReceived):
            self._on_stream_data(event)
        elif isinstance(event, quic_events.StreamReset):
            if self.is_up:
                self._close_now(ERROR_PROTOCOL, "stream_reset")
        elif isinstance(event, quic_events.DatagramFrameReceived):
            if self.is_up:
                self._events.append(DatagramReceived(event.data))
        elif isinstance(event, quic_events.ConnectionTerminated):
            self._on_terminated(event)

    def _on_handshake_completed(self, event: quic_events.HandshakeCompleted, now: float) -> None:
        if self.state is not SessionState.HANDSHAKE:
            return
        self._handshake_completed = True
        certificate = private.peer_certificate(self._quic)
        if certificate is not None:
            try:
                self.peer_node_id = node_id_from_certificate(certificate)
            except CertificateKeyError:
                self.peer_node_id = None
        if event.alpn_protocol not in self.settings.alpn_protocols:
            # aioquic refuses this in TLS already (either side); a last line all the same.
            self._close_now(ERROR_REFUSED, VERSION_UNSUPPORTED)
            return
        self.protocol = event.alpn_protocol
        # The dialler decides once the handshake is confirmed (HANDSHAKE_DONE, RFC 9001
        # 4.1.2), i.e. once the server has accepted it too, for two reasons:
        # - TLS 1.3 completes on the client first: deciding now would report the session
        #   up to a client that the server then refuses;
        # - before confirmation aioquic also sends a close in HANDSHAKE packets, where an
        #   application close loses its reason (RFC 9000 10.2.3), and the peer reads that
        #   one first: a client refusal would reach the server without its reason.
        # The server is confirmed as soon as it completes, so it decides now.

    def _decide(self, now: float) -> None:
        """Check the peer's node id and ask ``authorize``: up, or closed with a reason."""
        certificate = private.peer_certificate(self._quic)
        if certificate is None:
            self._close_now(ERROR_REFUSED, "no_certificate")
            return
        if self.peer_node_id is None:
            self._close_now(ERROR_REFUSED, "not_ed25519")
            return
        node_id = self.peer_node_id
        if self.expected_node_id is not None and node_id != self.expected_node_id:
            self._close_now(ERROR_REFUSED, "wrong_node_id")
            return
        reason = self._authorize(node_id)
        if reason is not None:
            self._close_now(ERROR_REFUSED, reason)
            return
        self.state = SessionState.UP
        self._last_activity = now
        if self.is_client:
            self._quic.send_stream_data(CONTROL_STREAM_ID, OPEN_FRAME)
        assert self.protocol is not None  # set on HandshakeCompleted, before this
        self._events.append(SessionUp(node_id, self.protocol))
        early, self._early = self._early, []
        for data_event in early:
            self._on_stream_data(data_event)

    def _hold_early(self, event: quic_events.StreamDataReceived) -> None:
        """Stream data that arrives before the dialler's handshake is confirmed (the server
        speaks as soon as it is up, and its first messages can overtake HANDSHAKE_DONE):
        aioquic has acknowledged it, so it is kept, bounded, until the session is up."""
        held = sum(len(e.data) for e in self._early) + len(event.data)
        if held > 2 * self.settings.max_frame_size:
            self._close_now(ERROR_PROTOCOL, "frame_too_large")
            return
        self._early.append(event)

    def _on_stream_data(self, event: quic_events.StreamDataReceived) -> None:
        if self.state is SessionState.HANDSHAKE:
            self._hold_early(event)
            return
        if not self.is_up:
            return
        if event.stream_id != CONTROL_STREAM_ID:
            self._close_now(ERROR_PROTOCOL, "unexpected_stream")
            return
        if not self._stream_open:
            self._stream_open = True
            for frame in self._outbox:
                self._quic.send_stream_data(CONTROL_STREAM_ID, frame)
            self._outbox.clear()
        try:
            frames = self._decoder.feed(event.data)
        except FrameError as exc:
            self._close_now(ERROR_PROTOCOL, exc.reason)
            return
        for payload in frames:
            self._events.append(MessageReceived(payload))
        if event.end_stream:
            self._close_now(ERROR_PROTOCOL, "stream_finished")

    def _on_terminated(self, event: quic_events.ConnectionTerminated) -> None:
        was_open = self.state in (SessionState.HANDSHAKE, SessionState.UP)
        self.state = SessionState.TERMINATED
        if not was_open:
            return  # we closed it and already said why
        by_peer = False
        peer_node_id = self._named()
        if event.error_code == _NO_COMMON_ALPN:
            # The accepting end found no version of the dialler's it speaks: its alert
            # reaches the dialler (a transport close in an INITIAL keeps its code). Neither
            # has seen a certificate yet, so the dialler names the node it meant to reach.
            reason = VERSION_UNSUPPORTED
            by_peer = self.is_client
        elif (
            event.error_code == QuicErrorCode.INTERNAL_ERROR
            and event.frame_type == QuicFrameType.PADDING
            and event.reason_phrase == "Idle timeout"
        ):
            # aioquic's own idle-timeout event (QuicConnection.handle_timer); it never sends
            # such a CONNECTION_CLOSE, so no peer close looks like this.
            reason = "handshake_timeout" if not self._handshake_completed else "idle_timeout"
        elif event.frame_type is None:  # application close: the peer's reason code
            by_peer = True
            reason = (
                event.reason_phrase[:_MAX_REASON] or f"application_error_0x{event.error_code:x}"
            )
        else:
            reason = f"quic_error_0x{event.error_code:x}"
        self._events.append(
            SessionClosed(
                reason=reason,
                by_peer=by_peer,
                error_code=event.error_code,
                peer_node_id=peer_node_id,
            )
        )
