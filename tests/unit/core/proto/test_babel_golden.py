"""Golden vectors for the Babel codec, checked in both directions, and a field-by-field
check of the bytes of Hello, IHU, Update and the RFC 9616 Timestamp sub-TLV against the
layouts in the RFCs (so that the vectors are not merely what the codec happens to emit)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey, VerifyKey

from meshd.core.proto.babel import (
    IHU,
    Hello,
    HelloTimestamp,
    IHUTimestamp,
    RouterId,
    Update,
    decode_packet,
    encode_packet,
)
from meshd.core.proto.babel_json import tlv_from_json, tlv_to_json
from meshd.core.routing.origin import signed_message

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "babel"
VECTORS = sorted(GOLDEN.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    return data


def test_there_is_a_vector_per_tlv_kind_and_ae() -> None:
    names = {p.stem for p in VECTORS}
    kinds = {t["type"] for p in VECTORS for t in json.loads(p.read_text())["tlvs"]}
    assert kinds == {
        "pad1",
        "padn",
        "ack_request",
        "ack",
        "hello",
        "ihu",
        "router_id",
        "next_hop",
        "update",
        "route_request",
        "seqno_request",
    }
    for ae in range(4):
        assert f"ihu_ae{ae}" in names
        assert f"update_ae{ae}" in names
    assert {"update_omitted_ae1", "update_omitted_ae2", "packet_combined"} <= names
    assert {"hello_timestamp", "ihu_timestamp"} <= names


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_decode_matches_golden_json(path: Path) -> None:
    vector = json.loads(path.read_text())
    assert vector["description"]
    decoded = decode_packet(bytes.fromhex(vector["hex"]))
    assert [tlv_to_json(t) for t in decoded] == vector["tlvs"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_encode_matches_golden_hex(path: Path) -> None:
    vector = json.loads(path.read_text())
    tlvs = [tlv_from_json(t) for t in vector["tlvs"]]
    assert encode_packet(tlvs).hex() == vector["hex"]


# --- hand checks against the RFC layouts -------------------------------------------------


def body(name: str) -> bytes:
    """The packet body of a vector, after checking the RFC 8966 4.2 header:
    Magic (8) = 42 | Version (8) = 2 | Body length (16)."""
    packet = bytes.fromhex(load(name)["hex"])
    assert packet[0] == 42
    assert packet[1] == 2
    assert int.from_bytes(packet[2:4], "big") == len(packet) - 4
    return packet[4:]


def test_hello_bytes_follow_rfc8966_4_6_5() -> None:
    # RFC 8966 4.6.5: Type = 4 | Length | Flags (16) | Seqno (16) | Interval (16)
    b = body("hello")
    assert b[0] == 4
    assert b[1] == 6  # no sub-TLVs: the natural length
    assert b[2:4] == b"\x00\x00"  # U flag clear: multicast
    assert int.from_bytes(b[4:6], "big") == 23456
    assert int.from_bytes(b[6:8], "big") == 400  # centiseconds
    assert decode_packet(bytes.fromhex(load("hello")["hex"])) == [Hello(seqno=23456, interval=400)]
    # 4.6.5: U (Unicast) is the most significant bit of Flags.
    assert body("hello_unicast")[2:4] == b"\x80\x00"


def test_hello_timestamp_bytes_follow_rfc9616_3_1() -> None:
    # RFC 9616 3.1, in a Hello: Type = 3 | Length = 4 | Transmit timestamp (32)
    b = body("hello_timestamp")
    assert b[1] == 6 + 6  # the sub-TLV is counted in the Hello's Length (RFC 8966 4.4)
    sub = b[8:]
    assert sub[0] == 3
    assert sub[1] == 4
    assert int.from_bytes(sub[2:6], "big") == 123456789
    (hello,) = decode_packet(bytes.fromhex(load("hello_timestamp")["hex"]))
    assert isinstance(hello, Hello)
    assert hello.sub_tlvs == (HelloTimestamp(123456789),)
    assert hello.timestamp == 123456789


def test_ihu_bytes_follow_rfc8966_4_6_6() -> None:
    # RFC 8966 4.6.6: Type = 5 | Length | AE | Reserved | Rxcost (16) | Interval (16) | Address
    b = body("ihu_ae3")
    assert b[0] == 5
    assert b[1] == 6 + 8
    assert b[2] == 3  # AE 3: link-local IPv6
    assert b[3] == 0
    assert int.from_bytes(b[4:6], "big") == 96
    assert int.from_bytes(b[6:8], "big") == 1200
    # 4.1.5: AE 3 sends only the low 8 octets; fe80::/64 is implied.
    assert b[8:16] == ipaddress.IPv6Address("fe80::21e:2fff:fe3a:4b5c").packed[8:]
    assert body("ihu_ae0")[1] == 6  # AE 0: no address at all
    assert body("ihu_ae1")[8:] == bytes([192, 168, 1, 1])
    assert len(body("ihu_ae2")[8:]) == 16


def test_ihu_timestamp_bytes_follow_rfc9616_3_1() -> None:
    # RFC 9616 3.1, in an IHU: Type = 3 | Length = 8 | Origin timestamp | Receive timestamp
    b = body("ihu_timestamp")
    sub = b[16:]
    assert sub[0] == 3
    assert sub[1] == 8
    assert int.from_bytes(sub[2:6], "big") == 123456789  # origin: the Hello's transmit
    assert int.from_bytes(sub[6:10], "big") == 123470000  # receive: when it arrived
    (ihu,) = decode_packet(bytes.fromhex(load("ihu_timestamp")["hex"]))
    assert isinstance(ihu, IHU)
    assert ihu.timestamp == IHUTimestamp(origin=123456789, receive=123470000)


def test_update_bytes_follow_rfc8966_4_6_9() -> None:
    # RFC 8966 4.6.9: Type = 8 | Length | AE | Flags | Plen | Omitted | Interval (16) |
    # Seqno (16) | Metric (16) | Prefix (ceil(Plen / 8) - Omitted octets)
    b = body("update_ae1")[12:]  # after the Router-Id TLV (4.6.7: 2 + 10 octets)
    assert b[0] == 8
    assert b[1] == 10 + 3
    assert b[2] == 1  # AE 1
    assert b[3] == 0  # no flags
    assert b[4] == 24  # Plen, in IPv4 bits
    assert b[5] == 0  # nothing omitted
    assert int.from_bytes(b[6:8], "big") == 1600
    assert int.from_bytes(b[8:10], "big") == 5
    assert int.from_bytes(b[10:12], "big") == 96
    assert b[12:] == bytes([10, 77, 3])

    # 4.6.9 flags: 0x80 Prefix (sets the default prefix), 0x40 Router-Id (from the prefix).
    b = body("update_ae2")
    assert b[3] == 0xC0
    assert b[4] == 128

    # Omitted octets come from the previous Update of the same AE with the Prefix flag.
    b = body("update_omitted_ae2")[12:]
    first, second = b[: 2 + b[1]], b[2 + b[1] :]
    assert first[3] == 0x80
    assert first[12:] == bytes.fromhex("fd4d657368000001")
    assert second[5] == 6  # Omitted
    assert second[12:] == bytes.fromhex("0002")  # 64 / 8 - 6 octets
    tlvs = decode_packet(bytes.fromhex(load("update_omitted_ae2")["hex"]))
    assert isinstance(tlvs[2], Update)
    assert tlvs[2].prefix == ipaddress.IPv6Network("fd4d:6573:6800:2::/64")

    # Wildcard retraction: AE 0, Plen 0, metric infinity, no prefix octets.
    assert body("update_ae0") == bytes.fromhex("080a00000000ffff002affff")


def test_origin_signature_bytes_and_signature() -> None:
    # meshd's sub-TLV in an Update (RFC 8966 4.4 layout): Type = 112 (no mandatory bit) |
    # Length = 68 | Time (32) | Ed25519 signature (64 octets) of signed_message.
    b = body("update_origin_signature")[12:]
    assert b[0] == 8 and b[1] == 10 + 4 + 70
    sub = b[16:]
    assert sub[0] == 112 and not sub[0] & 0x80 and sub[1] == 68
    time, signature = int.from_bytes(sub[2:6], "big"), sub[6:]
    assert time == 1_800_000_000
    key = VerifyKey(
        bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
    )
    assert key == SigningKey(bytes(range(32))).verify_key  # the seed the description names
    rid = bytes.fromhex("021e2ffffe3a4b5c")
    key.verify(signed_message(rid, ipaddress.ip_network("10.77.0.3/32"), 5, time), signature)
    # A Babel speaker that knows no type 112 skips it and keeps the Update (4.4): the bytes
    # with the sub-TLV's type changed to another unknown one still decode to the route.
    other = bytearray(bytes.fromhex(load("update_origin_signature")["hex"]))
    other[4 + 12 + 16] = 113
    (_, update) = decode_packet(bytes(other))
    assert isinstance(update, Update) and update.seqno == 5 and update.metric == 96


def test_router_id_bytes_follow_rfc8966_4_6_7() -> None:
    # Type = 6 | Length = 10 | Reserved (16) | Router-Id (64)
    b = body("router_id")
    assert b == bytes.fromhex("060a0000021e2ffffe3a4b5c")
    assert decode_packet(bytes.fromhex(load("router_id")["hex"])) == [
        RouterId(router_id=bytes.fromhex("021e2ffffe3a4b5c"))
    ]
