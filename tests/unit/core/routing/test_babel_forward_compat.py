"""What a newer node may send that this one does not know, as RFC 8966 says to treat it:
an unknown TLV is ignored whole (4.3); an unknown sub-TLV is skipped, unless its type has
the mandatory bit (0x80, types 128-255), and then the whole TLV that holds it is ignored,
except for the parser state a Router-Id, Next Hop or Update sets (4.4). Checked in the
codec and, one level up, in what the router acts on (meshd/core/control/plane.py feeds it
``decode_packet_detail(...).tlvs``)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from meshd.core.proto.babel import (
    AE_IPV4,
    AE_IPV6,
    IHU,
    TLV,
    Ack,
    AckRequest,
    Hello,
    HelloTimestamp,
    NextHop,
    RouteRequest,
    RouterId,
    SeqnoRequest,
    UnknownSubTLV,
    Update,
    decode_packet,
    decode_packet_detail,
    encode_packet,
)
from meshd.core.routing.babel import BabelParams, BabelRouter

RID = bytes.fromhex("021e2ffffe3a4b5c")
OTHER_RID = bytes.fromhex("00000000000000bb")
NH4 = ipaddress.IPv4Address("100.64.0.7")
P4 = ipaddress.ip_network("10.77.0.9/32")
P6 = ipaddress.ip_network("fd6d:6573:6864::9/128")


def raw_tlv(tlv_type: int, body: bytes) -> bytes:
    return bytes((tlv_type, len(body))) + body


def packet_of(*parts: bytes | TLV) -> bytes:
    """A packet of TLVs and raw TLV bytes mixed, in order (raw parts change no state)."""
    body = b""
    for part in parts:
        body += part if isinstance(part, bytes) else encode_packet([part])[4:]
    return bytes((42, 2)) + len(body).to_bytes(2, "big") + body


def update(prefix: ipaddress.IPv4Network | ipaddress.IPv6Network, **kw: object) -> Update:
    ae = AE_IPV4 if prefix.version == 4 else AE_IPV6
    fields: dict[str, object] = {"interval": 1600, "seqno": 7, "metric": 96}
    fields.update(kw)
    return Update(ae=ae, prefix=prefix, **fields)  # type: ignore[arg-type]


# One of each known TLV that can hold sub-TLVs.
WITH_SUBTLVS: list[TLV] = [
    AckRequest(opaque=1, interval=200),
    Ack(opaque=1),
    Hello(seqno=5, interval=400),
    IHU(ae=0, address=None, rxcost=96, interval=1200),
    RouterId(router_id=RID),
    NextHop(ae=AE_IPV4, address=NH4),
    update(P4),
    RouteRequest(ae=AE_IPV4, prefix=P4),
    SeqnoRequest(ae=AE_IPV4, prefix=P4, seqno=8, hop_count=64, router_id=RID),
]
IDS = [type(t).__name__ for t in WITH_SUBTLVS]


# --- unknown TLVs (RFC 8966 4.3) ------------------------------------------------------------


@pytest.mark.parametrize(
    "tlv_type",
    [11, 16, 17, 18, 100, 223, 224, 254, 255],  # unassigned, RFC 8967's MAC/PC/..., experimental
)
def test_an_unknown_tlv_is_ignored_whole_and_changes_no_state(tlv_type: int) -> None:
    # Its body looks like sub-TLVs, one mandatory: an unknown TLV's body is never read.
    body = bytes.fromhex("00 80 00 ff 02 0102")
    data = packet_of(
        RouterId(router_id=RID),
        NextHop(ae=AE_IPV4, address=NH4),
        raw_tlv(tlv_type, body),
        raw_tlv(tlv_type, b""),
        update(P4),
    )
    detail = decode_packet_detail(data)
    assert [d.tlv for d in detail.tlvs] == [
        RouterId(router_id=RID),
        NextHop(ae=AE_IPV4, address=NH4),
        update(P4),
    ]
    state = detail.tlvs[-1].state
    assert state.router_id == RID and state.next_hop(AE_IPV4) == NH4
    assert [(s.tlv_type, s.reason, s.tlv) for s in detail.skipped] == [
        (tlv_type, "unknown_tlv", None),
        (tlv_type, "unknown_tlv", None),
    ]


def test_an_unknown_tlv_shaped_like_a_router_id_sets_none() -> None:
    # Type 6 is Router-Id; a type 0x86 TLV with the same body is not one.
    data = packet_of(RouterId(router_id=RID), raw_tlv(0x86, bytes(2) + OTHER_RID), update(P4))
    assert decode_packet_detail(data).tlvs[-1].state.router_id == RID


# --- unknown sub-TLVs without the mandatory bit: skipped (4.4) ------------------------------


@pytest.mark.parametrize("code", [2, 0x42, 0x7F])
@pytest.mark.parametrize("tlv", WITH_SUBTLVS, ids=IDS)
def test_an_unknown_subtlv_without_the_mandatory_bit_leaves_the_tlv_in_force(
    tlv: TLV, code: int
) -> None:
    unknown = UnknownSubTLV(code, b"\x01\x02\x03")
    sent = replace(tlv, sub_tlvs=(unknown,))  # type: ignore[type-var]
    detail = decode_packet_detail(encode_packet([sent]))
    assert detail.skipped == ()
    (decoded,) = detail.tlvs
    assert decoded.tlv == sent  # the TLV stands; the sub-TLV is there only to be skipped
    assert replace(decoded.tlv, sub_tlvs=()) == tlv  # type: ignore[type-var]


def test_a_known_subtlv_beside_an_unknown_one_is_still_read() -> None:
    hello = Hello(
        seqno=5,
        interval=400,
        sub_tlvs=(UnknownSubTLV(0x7F, b"new"), HelloTimestamp(123456), UnknownSubTLV(2)),
    )
    assert decode_packet(encode_packet([hello])) == [hello]


# --- unknown sub-TLVs with the mandatory bit: the TLV is ignored (4.4) ------------------------


@pytest.mark.parametrize("code", [0x80, 0x81, 0xC0, 0xFF])
@pytest.mark.parametrize("tlv", WITH_SUBTLVS, ids=IDS)
def test_an_unknown_mandatory_subtlv_ignores_its_tlv_and_only_that(tlv: TLV, code: int) -> None:
    ignored = replace(tlv, sub_tlvs=(UnknownSubTLV(2), UnknownSubTLV(code, b"\x00")))  # type: ignore[type-var]
    after = Ack(opaque=0xBEEF)
    detail = decode_packet_detail(encode_packet([ignored, after]))
    assert [d.tlv for d in detail.tlvs] == [after]
    assert [(s.reason, s.tlv) for s in detail.skipped] == [("unknown_mandatory_subtlv", ignored)]


def test_an_ignored_next_hop_still_sets_the_next_hop() -> None:
    # RFC 8966 4.4: "except for updating the parser state by a Router-Id, Next Hop, or
    # Update TLV".
    data = encode_packet(
        [
            RouterId(router_id=RID),
            NextHop(ae=AE_IPV4, address=NH4, sub_tlvs=(UnknownSubTLV(0x80),)),
            update(P4),
        ]
    )
    detail = decode_packet_detail(data)
    assert [d.tlv for d in detail.tlvs] == [RouterId(router_id=RID), update(P4)]
    assert detail.tlvs[-1].state.next_hop(AE_IPV4) == NH4


def test_an_ignored_update_still_sets_the_router_id_and_default_prefix() -> None:
    first = ipaddress.ip_network("fd6d:6573:6864::1/128")
    ignored = update(
        first, sets_router_id=True, sets_default_prefix=True, sub_tlvs=(UnknownSubTLV(0x80),)
    )
    follower = update(P6, omitted=14)  # its first 14 octets come from the ignored one
    detail = decode_packet_detail(encode_packet([ignored, follower]))
    assert [d.tlv for d in detail.tlvs] == [follower]
    state = detail.tlvs[0].state
    assert state.router_id == first.network_address.packed[8:]
    assert state.default_prefix(AE_IPV6) == first.network_address.packed


# --- what the router acts on --------------------------------------------------------------


def router() -> BabelRouter:
    r = BabelRouter(bytes(8), 100, 0.0, BabelParams())
    r.link_up("n", 96, 0.0)
    r.drain_outgoing()
    return r


@pytest.mark.parametrize(
    ("parts", "installed"),
    [
        ((RouterId(router_id=RID), raw_tlv(200, b"\xff" * 9), update(P4)), True),
        ((RouterId(router_id=RID), update(P4, sub_tlvs=(UnknownSubTLV(0x7F, b"x"),))), True),
        ((RouterId(router_id=RID), update(P4, sub_tlvs=(UnknownSubTLV(0x80, b"x"),))), False),
        ((RouterId(router_id=RID, sub_tlvs=(UnknownSubTLV(0x80),)), update(P4)), True),
    ],
    ids=["unknown_tlv", "unknown_subtlv", "mandatory_subtlv", "ignored_router_id_still_sets"],
)
def test_the_router_routes_by_what_the_rules_keep(
    parts: tuple[bytes | TLV, ...], installed: bool
) -> None:
    r = router()
    r.receive("n", decode_packet_detail(packet_of(*parts)).tlvs, 1.0)
    route = r.selected().get(P4)
    assert (route is not None) == installed
    if route is not None:
        assert (route.next_hop, route.router_id) == ("n", RID)
