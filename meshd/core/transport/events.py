"""Events a session hands to its owner (immutable, like h11's)."""

from __future__ import annotations

from dataclasses import dataclass

from meshd.core.proto.session import MESHD_1


@dataclass(frozen=True)
class SessionUp:
    """Handshake done, the peer's node id checked and authorized; ``protocol`` is the
    version (ALPN id) both ends agreed on."""

    peer_node_id: str
    protocol: str = MESHD_1


@dataclass(frozen=True)
class MessageReceived:
    """One control frame's payload (opaque bytes to the transport)."""

    data: bytes


@dataclass(frozen=True)
class DatagramReceived:
    """One unreliable message (RFC 9221 DATAGRAM frame)."""

    data: bytes


@dataclass(frozen=True)
class SessionClosed:
    """The session is over; emitted once.

    ``reason`` is a reason code: ours or the peer's (``unknown``, ``revoked``,
    ``wrong_node_id``, ``duplicate``, ``frame_too_large``...), ``version_unsupported`` (no
    protocol version in common: then a dialler's ``peer_node_id`` is the node it dialled,
    since nobody showed a certificate), ``idle_timeout``,
    ``handshake_timeout``, ``evicted`` (a half-open session dropped to make room for a
    newer one), or ``quic_error_0x..`` for a transport error.
    ``by_peer`` tells whether the peer closed it.
    """

    reason: str
    by_peer: bool = False
    error_code: int = 0
    peer_node_id: str | None = None


@dataclass(frozen=True)
class ConnectionIdIssued:
    """For the adapter: datagrams to this connection id now belong to this session."""

    connection_id: bytes


@dataclass(frozen=True)
class ConnectionIdRetired:
    connection_id: bytes


SessionEvent = (
    SessionUp
    | MessageReceived
    | DatagramReceived
    | SessionClosed
    | ConnectionIdIssued
    | ConnectionIdRetired
)
