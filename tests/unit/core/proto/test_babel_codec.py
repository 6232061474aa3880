"""Behaviour of the Babel codec beyond the golden vectors: parser state, skipping rules,
errors with reason codes, misuse, seqno arithmetic."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

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
    UnknownSubTLV,
    Update,
    compress_prefixes,
    decode_packet,
    decode_packet_detail,
    encode_packet,
    seqno_add,
    seqno_less,
)

RID = bytes.fromhex("021e2ffffe3a4b5c")
net = ipaddress.ip_network
addr = ipaddress.ip_address


def packet(body_hex: str) -> bytes:
    body = bytes.fromhex(body_hex.replace(" ", ""))
    return bytes((42, 2)) + len(body).to_bytes(2, "big") + body


def update(prefix: str, **kw: object) -> Update:
    p = net(prefix)
    ae = 1 if p.version == 4 else 2
    fields: dict[str, object] = {"interval": 1600, "seqno": 1, "metric": 96}
    fields.update(kw)
    return Update(ae=ae, prefix=p, **fields)  # type: ignore[arg-type]


def reason(data: bytes) -> str:
    with pytest.raises(BabelDecodeError) as info:
        decode_packet(data)
    return info.value.reason


# --- parser state (RFC 8966 4.5) -------------------------------------------------------------


def test_router_id_and_next_hop_are_attributed_to_the_updates_that_follow() -> None:
    data = encode_packet(
        [
            RouterId(router_id=RID),
            NextHop(ae=1, address=addr("10.77.0.1")),
            update("10.77.3.0/24"),
            NextHop(ae=3, address=addr("fe80::1")),
            update("fd4d::/64"),
        ]
    )
    decoded = decode_packet_detail(data).tlvs
    v4, v6 = decoded[2].state, decoded[4].state
    assert v4.router_id == RID
    assert v4.next_hop(1) == addr("10.77.0.1")
    assert v4.next_hop(2) is None  # the sender itself
    assert v6.next_hop(2) == addr("fe80::1")
    assert v6.next_hop(1) == addr("10.77.0.1")


def test_router_id_flag_takes_the_low_64_bits_or_the_zero_padded_ipv4_address() -> None:
    # RFC 8966 4.6.9, Router-Id flag.
    v6 = update("fd4d:6573:6800:1:21e:2fff:fe3a:4b5c/128", sets_router_id=True)
    assert ParserState().after(v6).router_id == RID
    v4 = update("10.77.0.5/32", sets_router_id=True)
    assert ParserState().after(v4).router_id == bytes(4) + bytes([10, 77, 0, 5])


def test_state_starts_empty_in_every_packet() -> None:
    first = encode_packet([update("fd4d:1::/64", sets_default_prefix=True)])
    # The same Update with omitted octets in a packet of its own has nothing to take them from.
    second = bytearray(encode_packet([update("fd4d:1::/64")]))
    second[4 + 5] = 4  # Omitted
    assert decode_packet(first)
    assert reason(bytes(second)) == "no_default_prefix"


def test_default_prefix_is_per_ae() -> None:
    tlvs = [update("fd4d:1::/64", sets_default_prefix=True), update("10.1.0.0/16", omitted=1)]
    with pytest.raises(ValueError, match="no earlier Update"):
        encode_packet(tlvs)


def test_encoder_refuses_omitted_octets_that_differ_from_the_default_prefix() -> None:
    tlvs = [
        update("fd4d:1::/64", sets_default_prefix=True),
        update("fd4e:1::/64", omitted=2),
    ]
    with pytest.raises(ValueError, match="differ"):
        encode_packet(tlvs)


def test_omitted_may_exceed_the_prefix_octets() -> None:
    # 10.77.9.0/24 as default, then 10.77.0.0/16 omitting 3 octets: nothing on the wire,
    # the third octet (9) is masked away by the prefix length.
    tlvs = [
        update("10.77.9.0/24", sets_default_prefix=True),
        update("10.77.0.0/16", omitted=3),
    ]
    data = encode_packet(tlvs)
    assert data[-12:] == bytes.fromhex("080a 01 00 10 03 0640 0001 0060".replace(" ", ""))
    assert decode_packet(data) == tlvs


def test_compress_prefixes_produces_what_it_decodes_to() -> None:
    tlvs: list[TLV] = [
        RouterId(router_id=RID),
        update("fd4d:6573:6800:1::/64"),
        update("fd4d:6573:6800:2::/64"),
        update("10.77.1.0/24"),
        update("10.77.2.0/24"),
        update("fd4d:6573:6800:2:1::/80"),
    ]
    compressed = compress_prefixes(tlvs)
    assert [t.omitted for t in compressed if isinstance(t, Update)] == [0, 7, 0, 2, 9]
    data = encode_packet(compressed)
    assert len(data) < len(encode_packet(tlvs))
    assert decode_packet(data) == compressed


# --- skipping (RFC 8966 4.3, 4.4) ------------------------------------------------------------


def test_unknown_tlv_is_skipped_and_the_rest_decoded() -> None:
    data = packet("10 03 aabbcc" + "03 02 1234")  # type 16 (MAC, RFC 8967), then an Ack
    detail = decode_packet_detail(data)
    assert [d.tlv for d in detail.tlvs] == [Ack(opaque=0x1234)]
    assert [(s.tlv_type, s.offset, s.reason) for s in detail.skipped] == [(16, 4, "unknown_tlv")]


def test_unknown_non_mandatory_subtlv_is_kept() -> None:
    data = packet("03 06 1234 02 02 0102")  # Ack with a Diversity sub-TLV (type 2)
    assert decode_packet(data) == [Ack(opaque=0x1234, sub_tlvs=(UnknownSubTLV(2, b"\x01\x02"),))]


def test_unknown_mandatory_subtlv_ignores_the_tlv_but_not_its_state_change() -> None:
    # A Router-Id TLV carrying a mandatory sub-TLV (0x80 bit, here the source prefix of
    # RFC 9079) is ignored, yet still sets the router-id of the Updates that follow (4.4).
    tlvs: list[TLV] = [
        RouterId(router_id=RID, sub_tlvs=(UnknownSubTLV(0x80, b"\x00"),)),
        update("fd4d:1::/64", sets_default_prefix=True, sub_tlvs=(UnknownSubTLV(0x85),)),
        update("fd4d:1:0:1::/64", omitted=6),
    ]
    detail = decode_packet_detail(encode_packet(tlvs))
    assert [d.tlv for d in detail.tlvs] == [tlvs[2]]
    assert detail.tlvs[0].state.router_id == RID
    assert [(s.tlv_type, s.reason) for s in detail.skipped] == [
        (6, "unknown_mandatory_subtlv"),
        (8, "unknown_mandatory_subtlv"),
    ]
    assert detail.skipped[0].tlv == tlvs[0]


def test_trailer_is_ignored() -> None:
    data = encode_packet([Hello(seqno=1, interval=400)]) + bytes.fromhex("10 04 00000000")
    detail = decode_packet_detail(data)
    assert [d.tlv for d in detail.tlvs] == [Hello(seqno=1, interval=400)]
    assert detail.trailer == bytes.fromhex("1004 00000000".replace(" ", ""))


def test_padding_subtlvs_round_trip() -> None:
    hello = Hello(
        seqno=1,
        interval=400,
        sub_tlvs=(SubPad1(), SubPadN(3), HelloTimestamp(7), SubPad1()),
    )
    assert decode_packet(encode_packet([hello])) == [hello]


def test_timestamp_of_the_wrong_length_is_dropped_or_truncated() -> None:
    # babeld's reading of RFC 9616: shorter than the layout, ignored; longer, extra ignored.
    short = packet("04 0a 0000 0001 0190 03 02 aaaa")
    assert decode_packet(short) == [Hello(seqno=1, interval=400)]
    long = packet("05 14 00 00 0060 04b0 03 0c 00000001 00000002 ffffffff")
    assert decode_packet(long) == [
        IHU(ae=0, address=None, rxcost=96, interval=1200, sub_tlvs=(IHUTimestamp(1, 2),))
    ]


def test_timestamp_type_outside_hello_and_ihu_is_an_unknown_subtlv() -> None:
    data = packet("03 08 1234 03 04 00000001")
    assert decode_packet(data) == [
        Ack(opaque=0x1234, sub_tlvs=(UnknownSubTLV(3, bytes.fromhex("00000001")),))
    ]


# --- malformed packets: one error type, a reason code ---------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "truncated"),
        (b"\x2a\x02\x00", "truncated"),
        (b"\x2b\x02\x00\x00", "bad_magic"),
        (b"\x2a\x01\x00\x00", "bad_version"),
        (packet("")[:2] + b"\x00\x05\x00", "truncated"),  # body length past the end
        (packet("04"), "truncated"),  # type but no length
        (packet("04 08 0000 0001 0190"), "truncated"),  # length past the body
        (packet("04 04 0000 0001"), "bad_length"),  # Hello shorter than its fields
        (packet("05 08 01 00 0060 04b0 0a00"), "bad_length"),  # IHU address cut short
        (packet("05 06 04 00 0060 04b0"), "bad_ae"),
        (packet("07 02 00 00"), "bad_ae"),  # Next Hop MUST NOT be AE 0
        (packet("0a 0e 00 00 0001 7f00 021e2ffffe3a4b5c"), "bad_ae"),  # Seqno Request AE 0
        (packet("08 0e 01 00 21 00 0640 0001 0060 0a4d0300"), "bad_prefix_length"),
        (packet("08 0a 00 00 08 00 ffff 0001 ffff"), "bad_prefix_length"),  # AE 0, plen 8
        (packet("08 0a 03 00 80 01 0640 0001 0060"), "bad_omitted"),  # AE 3 omits nothing
        (packet("08 0a 01 00 20 05 0640 0001 0060"), "bad_omitted"),  # more than 4 octets
        (packet("08 0a 02 00 40 02 0640 0001 0060"), "no_default_prefix"),
        (packet("08 0a 00 40 00 00 ffff 0001 ffff"), "bad_flags"),  # router-id from nothing
        (packet("04 09 0000 0001 0190 03 04 00"), "bad_subtlv"),  # sub-TLV overruns
        (packet("04 07 0000 0001 0190 03"), "bad_subtlv"),  # sub-TLV type, no length
        (packet("09 03 01 20 0a"), "bad_length"),  # Route Request prefix cut short
    ],
)
def test_malformed_packets_raise_one_error_with_a_reason(data: bytes, expected: str) -> None:
    assert reason(data) == expected


def test_decode_error_carries_reason_and_message() -> None:
    with pytest.raises(BabelDecodeError) as info:
        decode_packet(packet("04 04 0000 0001"))
    assert info.value.reason == "bad_length"
    assert "offset 4" in info.value.message
    assert str(info.value).startswith("bad_length: ")


# --- misuse raises ValueError at once -------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Hello(seqno=65536, interval=400),
        lambda: Hello(seqno=-1, interval=400),
        lambda: Update(ae=2, prefix=net("::/0"), interval=1, seqno=70000, metric=0),
        lambda: Update(ae=1, prefix=net("fd4d::/64"), interval=1, seqno=1, metric=0),
        lambda: Update(ae=3, prefix=net("fd4d::/64"), interval=1, seqno=1, metric=0),
        lambda: Update(ae=0, prefix=None, interval=1, seqno=1, metric=0, sets_router_id=True),
        lambda: Update(ae=3, prefix=net("fe80::/64"), interval=1, seqno=1, metric=0, omitted=1),
        lambda: Update(ae=1, prefix=net("10.0.0.0/8"), interval=1, seqno=1, metric=0, omitted=5),
        lambda: Update(ae=4, prefix=net("10.0.0.0/8"), interval=1, seqno=1, metric=0),
        lambda: IHU(ae=1, address=addr("fe80::1"), rxcost=96, interval=1),
        lambda: IHU(ae=3, address=addr("2001:db8::1"), rxcost=96, interval=1),
        lambda: IHU(ae=0, address=addr("10.0.0.1"), rxcost=96, interval=1),
        lambda: NextHop(ae=0, address=None),  # type: ignore[arg-type]
        lambda: RouterId(router_id=b"short"),
        lambda: SeqnoRequest(ae=2, prefix=net("::/0"), seqno=1, hop_count=256, router_id=RID),
        lambda: SeqnoRequest(ae=0, prefix=None, seqno=1, hop_count=2, router_id=RID),  # type: ignore[arg-type]
        lambda: RouteRequest(ae=0, prefix=net("10.0.0.0/8")),
        lambda: PadN(length=256),
        lambda: AckRequest(opaque=1, interval=1 << 16),
        lambda: Ack(opaque=1, sub_tlvs=(HelloTimestamp(1),)),
        lambda: Hello(seqno=1, interval=1, sub_tlvs=(IHUTimestamp(1, 2),)),
        lambda: Hello(seqno=1, interval=1, sub_tlvs=(UnknownSubTLV(3, b"1234"),)),
        lambda: UnknownSubTLV(1, b""),
        lambda: HelloTimestamp(1 << 32),
    ],
)
def test_misuse_raises_value_error_at_once(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_plen_over_128_cannot_even_be_built() -> None:
    with pytest.raises(ValueError):
        net("fd4d::/129")


def test_encoder_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="exceeds 255"):
        encode_packet([Ack(opaque=1, sub_tlvs=(SubPadN(255),))])
    with pytest.raises(ValueError, match="Prefix flag"):
        encode_packet(
            [
                Update(
                    ae=3,
                    prefix=net("fe80::1/128"),
                    interval=1,
                    seqno=1,
                    metric=0,
                    sets_default_prefix=True,
                )
            ]
        )
    with pytest.raises(ValueError, match="not a Babel TLV"):
        encode_packet(["hello"])  # type: ignore[list-item]


def test_decoded_prefix_flag_on_ae3_changes_no_state() -> None:
    # RFC 8966 4.5: default prefixes exist only for the AEs that allow compression.
    data = packet("08 12 03 80 80 00 0640 0001 0060 021e2ffffe3a4b5c")
    detail = decode_packet_detail(data)
    assert detail.tlvs[0].state == ParserState()


def test_ae3_prefix_shorter_than_64_bits() -> None:
    tlv = Update(ae=3, prefix=net("fe80::/10"), interval=1, seqno=1, metric=0)
    data = encode_packet([tlv])
    assert data[4 + 4] == 10
    assert len(data) == 4 + 12  # no prefix octets: all of them are implied
    assert decode_packet(data) == [tlv]


def test_pad1_and_padn_are_decoded_in_place() -> None:
    tlvs: list[TLV] = [Pad1(), PadN(length=0), Hello(seqno=1, interval=1), PadN(length=5)]
    assert decode_packet(encode_packet(tlvs)) == tlvs


def test_non_zero_padding_is_accepted() -> None:
    assert decode_packet(packet("01 02 ffff")) == [PadN(length=2)]


def test_update_helpers() -> None:
    u = update("10.0.0.0/8", metric=0xFFFF)
    assert u.retraction
    assert not replace(u, metric=1).retraction


# --- seqno arithmetic (RFC 8966 3.2.1) ------------------------------------------------------


def test_seqno_add_wraps() -> None:
    assert seqno_add(65535, 1) == 0
    assert seqno_add(10, 5) == 15


def test_seqno_less_is_modular() -> None:
    assert seqno_less(1, 2)
    assert not seqno_less(2, 1)
    assert not seqno_less(5, 5)
    assert seqno_less(65535, 0)
    assert seqno_less(65000, 100)
    assert not seqno_less(100, 65000)
    assert seqno_less(0, 32767)
    assert not seqno_less(0, 32768)  # exactly half way round: neither is newer
    assert not seqno_less(32768, 0)


@pytest.mark.parametrize("bad", [-1, 65536, 1.5, True])
def test_seqno_helpers_refuse_non_seqnos(bad: object) -> None:
    with pytest.raises(ValueError):
        seqno_add(bad, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        seqno_less(1, bad)  # type: ignore[arg-type]


def test_the_codec_is_a_pure_core() -> None:
    # STYLE.md 1: pure cores import no I/O, clocks or event loops.
    import ast
    from pathlib import Path

    import meshd.core.proto

    forbidden = {"asyncio", "socket", "time", "datetime", "os", "sqlite3", "pyroute2", "aioquic"}
    for path in Path(meshd.core.proto.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & forbidden, (path.name, names)
