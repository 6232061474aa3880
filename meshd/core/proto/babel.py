"""The Babel wire format (RFC 8966 section 4) as a pure codec, with the RFC 9616 Timestamp
sub-TLV. This module is the public face: import from here.

    encode_packet([Hello(seqno=1, interval=400)]) -> bytes
    decode_packet(data) -> [Hello(seqno=1, interval=400)]

Packets from peers that are malformed raise BabelDecodeError(reason, message) and nothing
else; values that cannot be encoded raise ValueError when the dataclass is built (or, for
what depends on earlier TLVs such as omitted prefix octets, when the packet is encoded).
Unknown TLVs, and TLVs with an unknown mandatory sub-TLV, are skipped (RFC 8966 4.3, 4.4):
``decode_packet`` leaves them out, ``decode_packet_detail`` lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

from meshd.core.proto.babel_codec import KNOWN_TYPES, decode_tlv, encode_tlv
from meshd.core.proto.babel_subtlv import (
    HelloTimestamp,
    IHUTimestamp,
    OriginSignature,
    SubPad1,
    SubPadN,
    SubTLV,
    UnknownSubTLV,
)
from meshd.core.proto.babel_tlv import (
    IHU,
    METRIC_INFINITY,
    PAD1,
    TLV,
    Ack,
    AckRequest,
    Hello,
    NextHop,
    Pad1,
    PadN,
    ParserState,
    RouteRequest,
    RouterId,
    SeqnoRequest,
    Update,
)
from meshd.core.proto.babel_wire import (
    AE_IPV4,
    AE_IPV6,
    AE_LINK_LOCAL,
    AE_WILDCARD,
    BabelDecodeError,
    Reader,
    prefix_octets,
)

__all__ = [
    "AE_IPV4",
    "AE_IPV6",
    "AE_LINK_LOCAL",
    "AE_WILDCARD",
    "BABEL_PORT",
    "IHU",
    "METRIC_INFINITY",
    "TLV",
    "Ack",
    "AckRequest",
    "BabelDecodeError",
    "DecodedPacket",
    "DecodedTLV",
    "Hello",
    "HelloTimestamp",
    "IHUTimestamp",
    "NextHop",
    "OriginSignature",
    "Pad1",
    "PadN",
    "ParserState",
    "RouteRequest",
    "RouterId",
    "SeqnoRequest",
    "SkippedTLV",
    "SubPad1",
    "SubPadN",
    "SubTLV",
    "UnknownSubTLV",
    "Update",
    "compress_prefixes",
    "decode_packet",
    "decode_packet_detail",
    "encode_packet",
    "seqno_add",
    "seqno_less",
]

MAGIC: Final = 42  # RFC 8966 4.2
VERSION: Final = 2
HEADER_LENGTH: Final = 4
BABEL_PORT: Final = 6696  # RFC 8966 5 (IANA), for pcaps and tools
MAX_BODY: Final = 0xFFFF


# --- packets (RFC 8966 4.2) ----------------------------------------------------------------


def encode_packet(tlvs: Iterable[TLV]) -> bytes:
    """Magic | Version | Body length | TLVs; no trailer.

    Raises ValueError for what cannot be sent: a TLV body over 255 octets, a body over
    65535, an Update omitting octets that the default prefix of its AE doesn't hold.
    """
    state = ParserState()
    body = bytearray()
    for tlv in tlvs:
        body += encode_tlv(tlv, state)
        state = state.after(tlv)
    if len(body) > MAX_BODY:
        raise ValueError(f"packet body of {len(body)} octets exceeds {MAX_BODY}")
    return bytes((MAGIC, VERSION)) + len(body).to_bytes(2, "big") + bytes(body)


@dataclass(frozen=True)
class DecodedTLV:
    """A TLV with the parser state after it: for an Update, ``state.router_id`` is its
    source and ``state.next_hop(ae)`` its next hop (None: the packet's sender)."""

    tlv: TLV
    state: ParserState
    offset: int  # of the TLV's Type octet in the packet


@dataclass(frozen=True)
class SkippedTLV:
    """A TLV the decoder passed over: ``unknown_tlv`` or ``unknown_mandatory_subtlv``.

    A skipped known TLV still changed the parser state (RFC 8966 4.4), which is why the
    states come with the decoded TLVs rather than being recomputed from them.
    """

    tlv_type: int
    offset: int
    reason: str
    tlv: TLV | None = None  # the known TLV that was ignored, for display


@dataclass(frozen=True)
class DecodedPacket:
    tlvs: tuple[DecodedTLV, ...]
    skipped: tuple[SkippedTLV, ...]
    trailer: bytes  # after the body; ignored (RFC 8966 4.2)


def decode_packet_detail(data: bytes) -> DecodedPacket:
    """Decode a whole packet, keeping the parser state and what was skipped."""
    data = bytes(data)
    header = Reader(data, 0, len(data), "truncated", "packet header")
    magic, version, body_length = header.u8(), header.u8(), header.u16()
    if magic != MAGIC:
        raise BabelDecodeError("bad_magic", f"magic is {magic}, not {MAGIC}")
    if version != VERSION:
        raise BabelDecodeError("bad_version", f"version is {version}, not {VERSION}")
    end = HEADER_LENGTH + body_length
    if end > len(data):
        raise BabelDecodeError(
            "truncated",
            f"body length {body_length} but only {len(data) - HEADER_LENGTH} octets follow",
        )
    state = ParserState()
    decoded: list[DecodedTLV] = []
    skipped: list[SkippedTLV] = []
    body = Reader(data, HEADER_LENGTH, end, "truncated", "packet body")
    while body.pos < end:
        offset = body.pos
        tlv_type = data[offset]
        if tlv_type == PAD1:
            body.pos += 1
            decoded.append(DecodedTLV(Pad1(), state, offset))
            continue
        # Type and length read in place; the Reader only says what ran out, if one did.
        length = data[offset + 1] if offset + 1 < end else 0
        start = offset + 2
        if start + length > end:
            body.where = (tlv_type, offset)
            body.pos = offset + 1
            body.u8()
            body.take(length)
        body.pos = start + length
        if tlv_type not in KNOWN_TYPES:
            skipped.append(SkippedTLV(tlv_type, offset, "unknown_tlv"))
            continue
        tlv, ignore = decode_tlv(data, start, start + length, tlv_type, state)
        state = state.after(tlv)
        if ignore:
            skipped.append(SkippedTLV(tlv_type, offset, "unknown_mandatory_subtlv", tlv))
        else:
            decoded.append(DecodedTLV(tlv, state, offset))
    return DecodedPacket(tuple(decoded), tuple(skipped), data[end:])


def count_tlvs(data: bytes) -> int:
    """How many TLVs a packet's body holds, by their headers alone (a few hundred
    nanoseconds a TLV, what decoding them costs a hundred times over): what a receiver
    budgets before it decodes. A packet that does not parse counts what came before the
    flaw (decoding it then says what is wrong)."""
    end = min(len(data), HEADER_LENGTH + int.from_bytes(data[2:4], "big"))
    pos, count = HEADER_LENGTH, 0
    while pos < end:
        count += 1
        pos += 1 if data[pos] == PAD1 else 2 + (data[pos + 1] if pos + 1 < end else 0)
    return count


def decode_packet(data: bytes) -> list[TLV]:
    """The TLVs of a packet that a receiver acts on, in order."""
    return [d.tlv for d in decode_packet_detail(data).tlvs]


def compress_prefixes(tlvs: Iterable[TLV]) -> list[TLV]:
    """Rewrite AE 1 and AE 2 Updates to omit the leading octets they share with the
    previous Update of the same AE (RFC 8966 4.6.9), each setting the default prefix."""
    state = ParserState()
    out: list[TLV] = []
    for tlv in tlvs:
        if isinstance(tlv, Update) and tlv.ae in (AE_IPV4, AE_IPV6) and tlv.prefix is not None:
            packed = tlv.prefix.network_address.packed
            default = state.default_prefix(tlv.ae) or b""
            limit = min(prefix_octets(tlv.prefix.prefixlen), len(default))
            omitted = 0
            while omitted < limit and packed[omitted] == default[omitted]:
                omitted += 1
            tlv = replace(tlv, omitted=omitted, sets_default_prefix=True)
        out.append(tlv)
        state = state.after(tlv)
    return out


# --- sequence numbers (RFC 8966 3.2.1): arithmetic modulo 2^16 ----------------------------


def _check_seqno(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be a seqno in 0..65535, not {value!r}")


def seqno_add(seqno: int, n: int) -> int:
    """``seqno`` + ``n`` modulo 2^16."""
    _check_seqno("seqno", seqno)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 0xFFFF:
        raise ValueError(f"n must be in 0..65535, not {n!r}")
    return (seqno + n) & 0xFFFF


def seqno_less(a: int, b: int) -> bool:
    """``a`` is older than ``b``: 0 < (b - a) mod 2^16 < 2^15 (RFC 8966 3.2.1)."""
    _check_seqno("a", a)
    _check_seqno("b", b)
    return 0 < ((b - a) & 0xFFFF) < 0x8000
