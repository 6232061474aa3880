"""Messages on a neighbour's QUIC session (pure): one kind byte, then the body.

    MEMBERSHIP (1): u16 length | membership certificate | u16 length | delegation (0: none)
    BABEL (2):      one RFC 8966 packet (magic 42, version 2, body), as on UDP port 6696

The certificate and delegation are the canonical bytes of meshd.membership; the first
message each side sends is its MEMBERSHIP, and nothing else is accepted before it verifies.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MEMBERSHIP = 1
BABEL = 2


class SessionMessageError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Membership:
    certificate: bytes
    delegation: bytes = b""


@dataclass(frozen=True)
class BabelPacket:
    packet: bytes


SessionMessage = Membership | BabelPacket


def encode(message: SessionMessage) -> bytes:
    if isinstance(message, Membership):
        for part in (message.certificate, message.delegation):
            if len(part) > 0xFFFF:
                raise ValueError("certificate or delegation longer than 65535 bytes")
        return (
            bytes([MEMBERSHIP])
            + struct.pack("!H", len(message.certificate))
            + message.certificate
            + struct.pack("!H", len(message.delegation))
            + message.delegation
        )
    return bytes([BABEL]) + message.packet


def decode(data: bytes) -> SessionMessage:
    if not data:
        raise SessionMessageError("empty", "empty session message")
    kind, body = data[0], data[1:]
    if kind == BABEL:
        return BabelPacket(body)
    if kind != MEMBERSHIP:
        raise SessionMessageError("unknown_kind", f"unknown session message kind {kind}")
    parts: list[bytes] = []
    for what in ("certificate", "delegation"):
        if len(body) < 2:
            raise SessionMessageError("truncated", f"no length for the {what}")
        (length,) = struct.unpack("!H", body[:2])
        if len(body) < 2 + length:
            raise SessionMessageError("truncated", f"{what} shorter than its length")
        parts.append(body[2 : 2 + length])
        body = body[2 + length :]
    if body:
        raise SessionMessageError("trailing_bytes", f"{len(body)} bytes after the message")
    if not parts[0]:
        raise SessionMessageError("no_certificate", "membership message without a certificate")
    return Membership(parts[0], parts[1])
