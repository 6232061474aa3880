"""Encoding and decoding of one Babel TLV (RFC 8966 4.6), given the parser state (4.5)."""

from __future__ import annotations

import struct
from typing import Final

from meshd.core.proto.babel_subtlv import decode_subtlvs, encode_subtlvs
from meshd.core.proto.babel_tlv import (
    ACK,
    ACK_REQUEST,
    HELLO,
    HELLO_UNICAST,
    IHU,
    IHU_TYPE,
    NEXT_HOP,
    PAD1,
    PADN,
    ROUTE_REQUEST,
    ROUTER_ID,
    SEQNO_REQUEST,
    TLV,
    UPDATE,
    UPDATE_PREFIX_FLAG,
    UPDATE_ROUTER_ID_FLAG,
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
    AE_WILDCARD,
    BabelDecodeError,
    Reader,
    decode_address,
    decode_prefix,
    encode_address,
    encode_prefix,
)

# --- encoding ------------------------------------------------------------------------------


def _tlv_bytes(tlv_type: int, body: bytes) -> bytes:
    if len(body) > 255:
        raise ValueError(f"TLV {tlv_type} body of {len(body)} octets exceeds 255")
    return bytes((tlv_type, len(body))) + body


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


TLV_CLASSES: Final = (
    AckRequest,
    Ack,
    Hello,
    IHU,
    RouterId,
    NextHop,
    Update,
    RouteRequest,
    SeqnoRequest,
)


def encode_tlv(tlv: TLV, state: ParserState) -> bytes:
    """The wire form of ``tlv`` in a packet whose parser state before it is ``state``."""
    if isinstance(tlv, Pad1):
        return bytes((PAD1,))
    if isinstance(tlv, PadN):
        return _tlv_bytes(PADN, bytes(tlv.length))
    if not isinstance(tlv, TLV_CLASSES):
        raise ValueError(f"not a Babel TLV: {tlv!r}")
    subs = encode_subtlvs(tlv.sub_tlvs)
    if isinstance(tlv, AckRequest):
        return _tlv_bytes(ACK_REQUEST, bytes(2) + _u16(tlv.opaque) + _u16(tlv.interval) + subs)
    if isinstance(tlv, Ack):
        return _tlv_bytes(ACK, _u16(tlv.opaque) + subs)
    if isinstance(tlv, Hello):
        flags = HELLO_UNICAST if tlv.unicast else 0
        return _tlv_bytes(HELLO, _u16(flags) + _u16(tlv.seqno) + _u16(tlv.interval) + subs)
    if isinstance(tlv, IHU):
        head = bytes((tlv.ae, 0)) + _u16(tlv.rxcost) + _u16(tlv.interval)
        return _tlv_bytes(IHU_TYPE, head + encode_address(tlv.ae, tlv.address) + subs)
    if isinstance(tlv, RouterId):
        return _tlv_bytes(ROUTER_ID, bytes(2) + tlv.router_id + subs)
    if isinstance(tlv, NextHop):
        return _tlv_bytes(NEXT_HOP, bytes((tlv.ae, 0)) + encode_address(tlv.ae, tlv.address) + subs)
    if isinstance(tlv, Update):
        if tlv.sets_default_prefix and tlv.ae not in (AE_IPV4, AE_IPV6):
            # Receivers disagree on what this means (babeld and Wireshark apply it to AE 2),
            # so never send it.
            raise ValueError(f"Update: the Prefix flag is meaningless with AE {tlv.ae}")
        plen = tlv.prefix.prefixlen if tlv.prefix is not None else 0
        flags = (UPDATE_PREFIX_FLAG if tlv.sets_default_prefix else 0) | (
            UPDATE_ROUTER_ID_FLAG if tlv.sets_router_id else 0
        )
        prefix = encode_prefix(tlv.ae, tlv.prefix, tlv.omitted, state.default_prefix(tlv.ae))
        head = bytes((tlv.ae, flags, plen, tlv.omitted))
        head += _u16(tlv.interval) + _u16(tlv.seqno) + _u16(tlv.metric)
        return _tlv_bytes(UPDATE, head + prefix + subs)
    if isinstance(tlv, RouteRequest):
        plen = tlv.prefix.prefixlen if tlv.prefix is not None else 0
        prefix = encode_prefix(tlv.ae, tlv.prefix, 0, None)
        return _tlv_bytes(ROUTE_REQUEST, bytes((tlv.ae, plen)) + prefix + subs)
    # What is left is a SeqnoRequest.
    head = bytes((tlv.ae, tlv.prefix.prefixlen)) + _u16(tlv.seqno)
    head += bytes((tlv.hop_count, 0)) + tlv.router_id
    prefix = encode_prefix(tlv.ae, tlv.prefix, 0, None)
    return _tlv_bytes(SEQNO_REQUEST, head + prefix + subs)


# --- decoding ------------------------------------------------------------------------------

# Natural length of each known TLV before any address/prefix octets (RFC 8966 4.6).
MIN_BODY: Final = {
    PADN: 0,
    ACK_REQUEST: 6,
    ACK: 2,
    HELLO: 6,
    IHU_TYPE: 6,
    ROUTER_ID: 10,
    NEXT_HOP: 2,
    UPDATE: 10,
    ROUTE_REQUEST: 2,
    SEQNO_REQUEST: 14,
}


def decode_tlv(
    data: bytes, start: int, end: int, tlv_type: int, state: ParserState
) -> tuple[TLV, bool]:
    """Decode the known TLV whose body is ``data[start:end]``.

    Returns the TLV and whether it must be ignored for an unknown mandatory sub-TLV.
    """
    r = Reader(data, start, end, "bad_length", (tlv_type, start - 2))
    if end - start < MIN_BODY[tlv_type]:
        raise BabelDecodeError(
            "bad_length",
            f"{r.where}: length {end - start} is below its minimum {MIN_BODY[tlv_type]}",
        )
    if tlv_type == PADN:
        return PadN(length=end - start), False
    if tlv_type == ACK_REQUEST:
        r.u16()  # reserved
        opaque, interval = r.u16(), r.u16()
        subs, ignore = decode_subtlvs(r, tlv_type)
        return AckRequest(opaque=opaque, interval=interval, sub_tlvs=subs), ignore
    if tlv_type == ACK:
        opaque = r.u16()
        subs, ignore = decode_subtlvs(r, tlv_type)
        return Ack(opaque=opaque, sub_tlvs=subs), ignore
    if tlv_type == HELLO:
        flags, seqno, interval = r.u16(), r.u16(), r.u16()
        subs, ignore = decode_subtlvs(r, tlv_type)
        unicast = bool(flags & HELLO_UNICAST)
        return Hello(seqno=seqno, interval=interval, unicast=unicast, sub_tlvs=subs), ignore
    if tlv_type == IHU_TYPE:
        ae = r.u8()
        r.u8()  # reserved
        rxcost, interval = r.u16(), r.u16()
        address = decode_address(ae, r)
        subs, ignore = decode_subtlvs(r, tlv_type)
        tlv: TLV = IHU(ae=ae, address=address, rxcost=rxcost, interval=interval, sub_tlvs=subs)
        return tlv, ignore
    if tlv_type == ROUTER_ID:
        r.u16()  # reserved
        router_id = r.take(8)
        subs, ignore = decode_subtlvs(r, tlv_type)
        return RouterId(router_id=router_id, sub_tlvs=subs), ignore
    if tlv_type == NEXT_HOP:
        ae = r.u8()
        r.u8()  # reserved
        address = decode_address(ae, r)
        if address is None:
            raise BabelDecodeError("bad_ae", f"{r.where}: a Next Hop MUST NOT use AE 0")
        subs, ignore = decode_subtlvs(r, tlv_type)
        return NextHop(ae=ae, address=address, sub_tlvs=subs), ignore
    if tlv_type == UPDATE:
        return _decode_update(r, state)
    if tlv_type == ROUTE_REQUEST:
        ae, plen = r.u8(), r.u8()
        prefix = decode_prefix(ae, plen, 0, r, None)
        subs, ignore = decode_subtlvs(r, tlv_type)
        return RouteRequest(ae=ae, prefix=prefix, sub_tlvs=subs), ignore
    if tlv_type == SEQNO_REQUEST:
        ae, plen, seqno = r.u8(), r.u8(), r.u16()
        hop_count = r.u8()
        r.u8()  # reserved
        router_id = r.take(8)
        if ae == AE_WILDCARD:
            raise BabelDecodeError("bad_ae", f"{r.where}: a Seqno Request MUST NOT use AE 0")
        prefix = decode_prefix(ae, plen, 0, r, None)
        assert prefix is not None  # AE 0 refused above
        subs, ignore = decode_subtlvs(r, tlv_type)
        tlv = SeqnoRequest(
            ae=ae,
            prefix=prefix,
            seqno=seqno,
            hop_count=hop_count,
            router_id=router_id,
            sub_tlvs=subs,
        )
        return tlv, ignore
    raise AssertionError(f"decode_tlv called for unknown TLV type {tlv_type}")


_UPDATE_HEAD: Final = struct.Struct("!BBBBHHH")


def _decode_update(r: Reader, state: ParserState) -> tuple[TLV, bool]:
    # MIN_BODY[UPDATE] octets, checked by the caller
    ae, flags, plen, omitted, interval, seqno, metric = _UPDATE_HEAD.unpack_from(r.data, r.pos)
    r.pos += _UPDATE_HEAD.size
    prefix = decode_prefix(ae, plen, omitted, r, state.default_prefix(ae))
    sets_router_id = bool(flags & UPDATE_ROUTER_ID_FLAG)
    if sets_router_id and ae == AE_WILDCARD:
        raise BabelDecodeError("bad_flags", f"{r.where}: Router-Id flag on an AE 0 Update")
    subs, ignore = decode_subtlvs(r, UPDATE)
    update = Update(
        ae=ae,
        prefix=prefix,
        interval=interval,
        seqno=seqno,
        metric=metric,
        sets_default_prefix=bool(flags & UPDATE_PREFIX_FLAG),
        sets_router_id=sets_router_id,
        omitted=omitted,
        sub_tlvs=subs,
    )
    return update, ignore


KNOWN_TYPES: Final = frozenset(MIN_BODY)
