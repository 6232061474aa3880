"""Hypothesis: random TLV lists round-trip through the codec; random and mutated bytes only
ever raise BabelDecodeError."""

from __future__ import annotations

import ipaddress
import json
from functools import reduce

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshd.core.proto.babel import (
    IHU,
    TLV,
    Ack,
    AckRequest,
    BabelDecodeError,
    Hello,
    HelloTimestamp,
    IHUTimestamp,
    NextHop,
    Pad1,
    PadN,
    ParserState,
    RouteRequest,
    RouterId,
    SeqnoRequest,
    SubPad1,
    SubPadN,
    SubTLV,
    UnknownSubTLV,
    Update,
    compress_prefixes,
    count_tlvs,
    decode_packet,
    decode_packet_detail,
    encode_packet,
    seqno_add,
    seqno_less,
)
from meshd.core.proto.babel_json import tlv_from_json, tlv_to_json

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
router_ids = st.binary(min_size=8, max_size=8)

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
link_local = st.integers(0, 2**64 - 1).map(lambda low: ipaddress.IPv6Address((0xFE80 << 112) | low))


def addresses(ae: int) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return ipv4 if ae == 1 else ipv6 if ae == 2 else link_local


@st.composite
def prefixes(draw: st.DrawFn, ae: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address = draw(addresses(ae))
    plen = draw(st.integers(0, 32 if ae == 1 else 128))
    if ae == 3:
        # Under 64 bits an AE 3 prefix is the implied fe80::/64 cut short.
        plen = draw(st.sampled_from([plen, 64, 128]))
    return ipaddress.ip_network((address, plen), strict=False)


unknown_codes = st.integers(2, 0x7F).filter(lambda c: c != 3)  # not mandatory, not known


def sub_tlvs(
    extra: st.SearchStrategy[SubTLV] | None = None,
) -> st.SearchStrategy[tuple[SubTLV, ...]]:
    choices: list[st.SearchStrategy[SubTLV]] = [
        st.just(SubPad1()),
        st.integers(0, 12).map(SubPadN),
        st.builds(UnknownSubTLV, unknown_codes, st.binary(max_size=12)),
    ]
    if extra is not None:
        choices.append(extra)
    return st.lists(st.one_of(choices), max_size=3).map(tuple)


@st.composite
def updates(draw: st.DrawFn) -> Update:
    ae = draw(st.integers(0, 3))
    return Update(
        ae=ae,
        prefix=None if ae == 0 else draw(prefixes(ae)),
        interval=draw(u16),
        seqno=draw(u16),
        metric=draw(u16),
        sets_default_prefix=ae in (1, 2) and draw(st.booleans()),
        sets_router_id=ae != 0 and draw(st.booleans()),
        sub_tlvs=draw(sub_tlvs()),
    )


@st.composite
def ihus(draw: st.DrawFn) -> IHU:
    ae = draw(st.integers(0, 3))
    return IHU(
        ae=ae,
        address=None if ae == 0 else draw(addresses(ae)),
        rxcost=draw(u16),
        interval=draw(u16),
        sub_tlvs=draw(sub_tlvs(st.builds(IHUTimestamp, u32, u32))),
    )


@st.composite
def next_hops(draw: st.DrawFn) -> NextHop:
    ae = draw(st.integers(1, 3))
    return NextHop(ae=ae, address=draw(addresses(ae)), sub_tlvs=draw(sub_tlvs()))


@st.composite
def route_requests(draw: st.DrawFn) -> RouteRequest:
    ae = draw(st.integers(0, 3))
    prefix = None if ae == 0 else draw(prefixes(ae))
    return RouteRequest(ae=ae, prefix=prefix, sub_tlvs=draw(sub_tlvs()))


@st.composite
def seqno_requests(draw: st.DrawFn) -> SeqnoRequest:
    ae = draw(st.integers(1, 3))
    return SeqnoRequest(
        ae=ae,
        prefix=draw(prefixes(ae)),
        seqno=draw(u16),
        hop_count=draw(u8),
        router_id=draw(router_ids),
        sub_tlvs=draw(sub_tlvs()),
    )


tlv_strategy: st.SearchStrategy[TLV] = st.one_of(
    st.just(Pad1()),
    st.builds(PadN, length=st.integers(0, 40)),
    st.builds(AckRequest, opaque=u16, interval=u16, sub_tlvs=sub_tlvs()),
    st.builds(Ack, opaque=u16, sub_tlvs=sub_tlvs()),
    st.builds(
        Hello,
        seqno=u16,
        interval=u16,
        unicast=st.booleans(),
        sub_tlvs=sub_tlvs(st.builds(HelloTimestamp, u32)),
    ),
    ihus(),
    st.builds(RouterId, router_id=router_ids, sub_tlvs=sub_tlvs()),
    next_hops(),
    updates(),
    route_requests(),
    seqno_requests(),
)
tlv_lists = st.lists(tlv_strategy, max_size=12)

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(tlv_lists)
def test_decode_inverts_encode(tlvs: list[TLV]) -> None:
    assert decode_packet(encode_packet(tlvs)) == tlvs


@FAST
@given(tlv_lists)
def test_compressed_packets_decode_to_the_same_prefixes(tlvs: list[TLV]) -> None:
    compressed = compress_prefixes(tlvs)
    data = encode_packet(compressed)
    assert len(data) <= len(encode_packet(tlvs))
    decoded = decode_packet(data)
    assert decoded == compressed
    assert [getattr(t, "prefix", None) for t in decoded] == [
        getattr(t, "prefix", None) for t in tlvs
    ]


@FAST
@given(tlv_lists)
def test_decoder_state_is_the_fold_of_the_tlvs(tlvs: list[TLV]) -> None:
    detail = decode_packet_detail(encode_packet(tlvs))
    for i, decoded in enumerate(detail.tlvs):
        expected = reduce(lambda state, tlv: state.after(tlv), tlvs[: i + 1], ParserState())
        assert decoded.state == expected


@FAST
@given(tlv_lists)
def test_tlvs_are_counted_from_their_headers_alone(tlvs: list[TLV]) -> None:
    detail = decode_packet_detail(encode_packet(tlvs))
    assert count_tlvs(encode_packet(tlvs)) == len(detail.tlvs) + len(detail.skipped)


@FAST
@given(tlv_lists)
def test_json_form_round_trips(tlvs: list[TLV]) -> None:
    as_json = json.loads(json.dumps([tlv_to_json(t) for t in tlvs]))
    assert [tlv_from_json(obj) for obj in as_json] == tlvs


def decodes_or_raises_babel_error(data: bytes) -> None:
    assert count_tlvs(data) <= len(data)  # never raises either
    try:
        decode_packet_detail(data)
    except BabelDecodeError as exc:
        assert exc.reason
        assert exc.reason.replace("_", "").isalpha()


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_babel_decode_error(data: bytes) -> None:
    decodes_or_raises_babel_error(data)


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=120))
def test_random_bodies_only_raise_babel_decode_error(body: bytes) -> None:
    # A valid header, so that the fuzzing reaches the TLVs.
    decodes_or_raises_babel_error(bytes((42, 2)) + len(body).to_bytes(2, "big") + body)


@settings(max_examples=200, deadline=None)
@given(tlv_lists, st.lists(st.tuples(st.integers(0, 10_000), u8), min_size=1, max_size=4))
def test_mutated_packets_only_raise_babel_decode_error(
    tlvs: list[TLV], edits: list[tuple[int, int]]
) -> None:
    data = bytearray(encode_packet(tlvs))
    for position, value in edits:
        data[position % len(data)] = value
    decodes_or_raises_babel_error(bytes(data))


@given(u16, st.integers(1, 0x7FFF))
def test_seqno_add_makes_newer(seqno: int, n: int) -> None:
    later = seqno_add(seqno, n)
    assert seqno_less(seqno, later)
    assert not seqno_less(later, seqno)


@given(u16, u16)
def test_seqno_less_is_antisymmetric(a: int, b: int) -> None:
    assert not (seqno_less(a, b) and seqno_less(b, a))
