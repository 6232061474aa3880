"""Packet shaping for the Babel core: the parser state of TLVs that never went through
bytes, and cutting a list of TLVs into packets that each carry their Router-Ids."""

from __future__ import annotations

from collections.abc import Iterable

from meshd.core.proto.babel import TLV, DecodedTLV, ParserState, RouterId


def with_parser_state(tlvs: Iterable[TLV]) -> list[DecodedTLV]:
    """The TLVs of a packet with the parser state a decoder would give them (RFC 8966
    4.5), for wiring routers together without encoding bytes."""
    state = ParserState()
    out: list[DecodedTLV] = []
    for tlv in tlvs:
        state = state.after(tlv)
        out.append(DecodedTLV(tlv, state, 0))
    return out


def packetize(items: Iterable[tuple[bytes | None, TLV]], limit: int) -> list[list[TLV]]:
    """Packets of at most ``limit`` TLVs from (router-id or None, TLV) pairs: a Router-Id
    TLV goes before an Update whenever the packet's router-id (RFC 8966 4.5) differs."""
    packets: list[list[TLV]] = []
    packet: list[TLV] = []
    current: bytes | None = None
    for router_id, tlv in items:
        needs_id = router_id is not None and router_id != current
        if packet and len(packet) + 1 + needs_id > limit:
            packets.append(packet)
            packet, current = [], None
            needs_id = router_id is not None
        if needs_id and router_id is not None:
            packet.append(RouterId(router_id=router_id))
            current = router_id
        packet.append(tlv)
    if packet:
        packets.append(packet)
    return packets
