"""Babel sub-TLVs (RFC 8966 section 4.4) and the RFC 9616 Timestamp sub-TLV.

A sub-TLV is Type (8) | Length (8) | Body, except Pad1 which is a single zero octet. The
mandatory bit (0x80 of the type) says what an implementation that doesn't know the sub-TLV
must do: skip it when clear, ignore the whole enclosing TLV when set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meshd.core.proto.babel_wire import BabelDecodeError, Reader, check_uint

SUBTLV_PAD1: Final = 0
SUBTLV_PADN: Final = 1
SUBTLV_TIMESTAMP: Final = 3  # RFC 9616 3.1 (IANA "Babel Sub-TLV Types")
# meshd's origin signature (meshd.core.routing.origin), in an Update. 112-126 is the registry's
# Experimental Use range without the mandatory bit: a Babel speaker that does not know it
# skips it and keeps the Update (RFC 8966 4.4), as tshark shows it: an unknown sub-TLV.
SUBTLV_ORIGIN_SIGNATURE: Final = 112
MANDATORY_BIT: Final = 0x80
ORIGIN_SIGNATURE_LENGTH: Final = 4 + 64  # time (u32) + Ed25519 signature

TLV_HELLO: Final = 4  # the two TLVs where RFC 9616 defines the Timestamp sub-TLV
TLV_IHU: Final = 5
TLV_UPDATE: Final = 8  # where meshd's OriginSignature goes


@dataclass(frozen=True)
class SubPad1:
    """One octet of padding."""


@dataclass(frozen=True)
class SubPadN:
    """``length`` octets of padding (must be zero, ignored on reception)."""

    length: int = 0

    def __post_init__(self) -> None:
        check_uint("SubPadN.length", self.length, 8)


@dataclass(frozen=True)
class HelloTimestamp:
    """RFC 9616 3.1, in a Hello: when the sender sent the packet, in its own clock
    (microseconds, modulo 2^32)."""

    transmit: int

    def __post_init__(self) -> None:
        check_uint("HelloTimestamp.transmit", self.transmit, 32)


@dataclass(frozen=True)
class IHUTimestamp:
    """RFC 9616 3.1, in an IHU: ``origin`` echoes the transmit timestamp of the last Hello
    heard from the neighbour, ``receive`` is when it arrived (the IHU sender's clock)."""

    origin: int
    receive: int

    def __post_init__(self) -> None:
        check_uint("IHUTimestamp.origin", self.origin, 32)
        check_uint("IHUTimestamp.receive", self.receive, 32)


@dataclass(frozen=True)
class OriginSignature:
    """meshd, in an Update: the originator's Ed25519 signature over (router-id, prefix,
    seqno, ``time``), ``time`` in Unix seconds (``meshd.core.routing.origin.signed_message``).
    Relays forward it unchanged with their own Updates of that route."""

    time: int
    signature: bytes

    def __post_init__(self) -> None:
        check_uint("OriginSignature.time", self.time, 32)
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise ValueError("OriginSignature.signature must be 64 bytes")


@dataclass(frozen=True)
class UnknownSubTLV:
    """A sub-TLV this codec doesn't interpret, kept so that it can be re-sent as it came."""

    code: int
    body: bytes = b""

    def __post_init__(self) -> None:
        check_uint("UnknownSubTLV.code", self.code, 8)
        if self.code in (SUBTLV_PAD1, SUBTLV_PADN):
            raise ValueError("use SubPad1 / SubPadN for sub-TLV types 0 and 1")
        if not isinstance(self.body, bytes):
            raise ValueError("UnknownSubTLV.body must be bytes")

    @property
    def mandatory(self) -> bool:
        return bool(self.code & MANDATORY_BIT)


SubTLV = SubPad1 | SubPadN | HelloTimestamp | IHUTimestamp | OriginSignature | UnknownSubTLV


def check_subtlvs(owner: str, tlv_type: int, sub_tlvs: object) -> tuple[SubTLV, ...]:
    """Misuse check of a TLV's ``sub_tlvs``; returns them as a tuple."""
    if not isinstance(sub_tlvs, tuple | list):
        raise ValueError(f"{owner}.sub_tlvs must be a tuple of sub-TLVs")
    for sub in sub_tlvs:
        if isinstance(sub, HelloTimestamp) and tlv_type != TLV_HELLO:
            raise ValueError(f"HelloTimestamp only goes in a Hello, not in {owner}")
        if isinstance(sub, IHUTimestamp) and tlv_type != TLV_IHU:
            raise ValueError(f"IHUTimestamp only goes in an IHU, not in {owner}")
        if isinstance(sub, OriginSignature) and tlv_type != TLV_UPDATE:
            raise ValueError(f"OriginSignature only goes in an Update, not in {owner}")
        if (
            isinstance(sub, UnknownSubTLV)
            and sub.code == SUBTLV_ORIGIN_SIGNATURE
            and tlv_type == TLV_UPDATE
            and len(sub.body) == ORIGIN_SIGNATURE_LENGTH
        ):
            raise ValueError(f"use OriginSignature for sub-TLV type 112 in {owner}")
        if (
            isinstance(sub, UnknownSubTLV)
            and sub.code == SUBTLV_TIMESTAMP
            and tlv_type in (TLV_HELLO, TLV_IHU)
        ):
            raise ValueError(f"use {owner}'s Timestamp class for sub-TLV type 3")
        if not isinstance(sub, SubTLV):
            raise ValueError(f"{owner}.sub_tlvs holds {sub!r}, not a sub-TLV")
    return tuple(sub_tlvs)


def encode_subtlvs(sub_tlvs: tuple[SubTLV, ...]) -> bytes:
    out = bytearray()
    for sub in sub_tlvs:
        if isinstance(sub, SubPad1):
            out.append(SUBTLV_PAD1)
            continue
        if isinstance(sub, SubPadN):
            code, body = SUBTLV_PADN, bytes(sub.length)
        elif isinstance(sub, HelloTimestamp):
            code, body = SUBTLV_TIMESTAMP, sub.transmit.to_bytes(4, "big")
        elif isinstance(sub, IHUTimestamp):
            code = SUBTLV_TIMESTAMP
            body = sub.origin.to_bytes(4, "big") + sub.receive.to_bytes(4, "big")
        elif isinstance(sub, OriginSignature):
            code, body = SUBTLV_ORIGIN_SIGNATURE, sub.time.to_bytes(4, "big") + sub.signature
        else:
            code, body = sub.code, sub.body
        if len(body) > 255:
            raise ValueError(f"sub-TLV {code} body of {len(body)} octets exceeds 255")
        out += bytes((code, len(body))) + body
    return bytes(out)


def decode_subtlvs(reader: Reader, tlv_type: int) -> tuple[tuple[SubTLV, ...], bool]:
    """Parse the rest of a TLV as sub-TLVs (RFC 8966 4.4).

    Returns the sub-TLVs and whether an unknown one had the mandatory bit set, in which
    case the caller must ignore the whole TLV (but still apply it to the parser state).
    """
    subs: list[SubTLV] = []
    mandatory_unknown = False
    while reader.remaining():
        code = reader.u8()
        if code == SUBTLV_PAD1:
            subs.append(SubPad1())
            continue
        if reader.remaining() < 1:
            raise BabelDecodeError("bad_subtlv", f"{reader.where}: sub-TLV {code} cut short")
        length = reader.u8()
        if length > reader.remaining():
            raise BabelDecodeError(
                "bad_subtlv",
                f"{reader.where}: sub-TLV {code} of length {length} overruns its TLV",
            )
        body = reader.take(length)
        if code == SUBTLV_PADN:
            subs.append(SubPadN(length))
        elif code == SUBTLV_TIMESTAMP and tlv_type == TLV_HELLO:
            # Interpretation (as babeld does): a longer body is read for its first field
            # and the rest ignored; a shorter one is dropped, the TLV still stands.
            if length >= 4:
                subs.append(HelloTimestamp(int.from_bytes(body[:4], "big")))
        elif code == SUBTLV_TIMESTAMP and tlv_type == TLV_IHU:
            if length >= 8:
                subs.append(
                    IHUTimestamp(int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big"))
                )
        elif (
            code == SUBTLV_ORIGIN_SIGNATURE
            and tlv_type == TLV_UPDATE
            and length == ORIGIN_SIGNATURE_LENGTH
        ):
            subs.append(OriginSignature(int.from_bytes(body[:4], "big"), body[4:]))
        else:
            subs.append(UnknownSubTLV(code, body))
            mandatory_unknown = mandatory_unknown or bool(code & MANDATORY_BIT)
    return tuple(subs), mandatory_unknown
