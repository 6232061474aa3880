"""The beacon wire format (meshd.core.proto.beacon): golden vectors both ways, every reason code,
and Hypothesis: random or mutated bytes only ever raise BeaconError."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.core.proto.beacon import (
    BEACON_SIZE,
    MAGIC,
    Beacon,
    BeaconError,
    BeaconReason,
    decode_beacon,
    make_beacon,
    parse_beacon,
)
from tests.golden import vectors
from tests.golden.beacon import make_vectors as GEN

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "beacon"
FILES = sorted(p.name for p in GOLDEN.glob("*.json"))
_vector = vectors.reader(GOLDEN)


KEY = SigningKey(bytes(range(32)))
MESH_ID = bytes.fromhex("00112233445566778899aabbccddeeff")


def valid(**kwargs: Any) -> bytes:
    fields: dict[str, Any] = {
        "mesh_id": MESH_ID,
        "quic_port": 6697,
        "timestamp_ms": 1_767_225_600_000,
    }
    fields.update(kwargs)
    return make_beacon(KEY, **fields).encode()


def reason_of(data: bytes) -> BeaconReason:
    with pytest.raises(BeaconError) as excinfo:
        decode_beacon(data)
    return excinfo.value.reason


# -- golden vectors --------------------------------------------------------------------


def test_checked_in_files_are_exactly_what_the_generator_makes() -> None:
    rendered = GEN.rendered()
    assert sorted(rendered) == FILES == ["beacon.json", "beacon_solicit.json"]
    for name, text in rendered.items():
        assert (GOLDEN / name).read_text(encoding="utf-8") == text, f"regenerate {name}"


def test_fixed_key_is_the_membership_vectors_test_node() -> None:
    assert GEN.node_id(GEN.NODE) == "wJqnU3NRB1AemMf689ObyaSbxMMtOPXmavK6tVA8d3k"
    assert GEN.MESH_ID.hex() == "a2e8efa88f9a2fc610601fc30b9f0e1d"


@pytest.mark.parametrize("name", FILES)
def test_vector_both_directions_and_signature(name: str) -> None:
    vector = _vector(name)
    assert set(vector) == {"description", "hex", "json"}
    data = bytes.fromhex(vector["hex"])
    decoded = decode_beacon(data)  # verifies the signature
    assert decoded.to_json() == vector["json"]
    from_json = Beacon.from_json(vector["json"])
    assert from_json.encode().hex() == vector["hex"]
    assert from_json == decoded
    assert decoded.encode() == data


def test_layout_of_the_vector_by_hand() -> None:
    data = bytes.fromhex(_vector("beacon.json")["hex"])
    assert len(data) == BEACON_SIZE == 128
    assert data[0:4] == b"MSHB" and data[4] == 1 and data[5] == 0  # magic, version, flags
    assert data[6:22] == GEN.MESH_ID
    assert data[22:54] == bytes(GEN.NODE.verify_key)
    assert data[54:56] == (6697).to_bytes(2, "big")
    assert data[56:64] == (GEN.T0_MS + 1234).to_bytes(8, "big")
    GEN.NODE.verify_key.verify(b"meshd-beacon-v1\0" + data[:64], data[64:])
    solicit = bytes.fromhex(_vector("beacon_solicit.json")["hex"])
    assert solicit[5] == 0x01 and solicit[54:56] == (40000).to_bytes(2, "big")


# -- every reason code -----------------------------------------------------------------


def test_reasons_for_framing() -> None:
    data = valid()
    assert reason_of(b"") is BeaconReason.TRUNCATED
    assert reason_of(b"MS") is BeaconReason.TRUNCATED
    assert reason_of(MAGIC) is BeaconReason.TRUNCATED
    assert reason_of(data[:-1]) is BeaconReason.TRUNCATED
    assert reason_of(b"GET / HTTP/1.1\r\n") is BeaconReason.BAD_MAGIC
    assert reason_of(b"X") is BeaconReason.BAD_MAGIC
    assert reason_of(data[:4] + b"\x02" + data[5:]) is BeaconReason.BAD_VERSION
    assert reason_of(data[:4] + b"\x02") is BeaconReason.BAD_VERSION  # before the length
    assert reason_of(data + b"\x00") is BeaconReason.TRAILING_BYTES


def test_reasons_for_fields() -> None:
    data = valid()
    assert reason_of(data[:5] + b"\x02" + data[6:]) is BeaconReason.BAD_FLAGS
    assert reason_of(data[:54] + b"\x00\x00" + data[56:]) is BeaconReason.BAD_PORT
    assert reason_of(data[:22] + bytes(32) + data[54:]) is BeaconReason.BAD_NODE_ID
    # The identity point (small order) is a "valid" encoding that no honest key has.
    identity = (1).to_bytes(32, "little")
    assert reason_of(data[:22] + identity + data[54:]) is BeaconReason.BAD_NODE_ID
    other = bytes(SigningKey(bytes(32)).verify_key)
    assert reason_of(data[:22] + other + data[54:]) is BeaconReason.BAD_SIGNATURE
    assert reason_of(data[:-1] + bytes([data[-1] ^ 1])) is BeaconReason.BAD_SIGNATURE
    later = data[:56] + struct.pack(">Q", 1_767_225_600_001) + data[64:]
    assert reason_of(later) is BeaconReason.BAD_SIGNATURE


def test_parse_does_not_verify_but_decode_does() -> None:
    data = valid()
    forged = data[:-1] + bytes([data[-1] ^ 0x80])
    assert parse_beacon(forged).quic_port == 6697
    assert reason_of(forged) is BeaconReason.BAD_SIGNATURE


def test_a_signature_by_someone_else_does_not_verify() -> None:
    beacon = Beacon(MESH_ID, node_id_from_public(bytes(KEY.verify_key)), 6697, 1)
    mallory = SigningKey(bytes(range(1, 33)))
    stolen = replace(beacon, signature=bytes(mallory.sign(beacon.signed_bytes()).signature))
    assert reason_of(stolen.encode()) is BeaconReason.BAD_SIGNATURE


def test_accepts_a_bytearray_or_memoryview() -> None:
    data = valid()
    assert decode_beacon(bytearray(data)).encode() == data
    assert decode_beacon(memoryview(data)).encode() == data


def test_json_form_refuses_malformed_fields() -> None:
    good = decode_beacon(valid()).to_json()
    broken: Any
    for broken in (
        [],
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "solicit"},
        {**good, "type": "hello"},
        {**good, "version": 2},
        {**good, "mesh_id": "00"},
        {**good, "mesh_id": str(good["mesh_id"]).upper()},
        {**good, "node_id": "nope"},
        {**good, "quic_port": 0},
        {**good, "quic_port": "6697"},
        {**good, "timestamp_ms": -1},
        {**good, "timestamp_ms": True},
        {**good, "solicit": 1},
        {**good, "signature": "zz"},
    ):
        with pytest.raises(BeaconError) as excinfo:
            Beacon.from_json(broken)
        assert excinfo.value.reason is BeaconReason.MALFORMED


# -- our own misuse raises at once -----------------------------------------------------


def test_misuse_is_a_value_error() -> None:
    node_id = node_id_from_public(bytes(KEY.verify_key))
    with pytest.raises(ValueError, match="mesh_id"):
        Beacon(b"short", node_id, 1, 1)
    with pytest.raises(ValueError, match="node id"):
        Beacon(MESH_ID, "not-a-node-id", 1, 1)
    with pytest.raises(ValueError, match="quic_port"):
        Beacon(MESH_ID, node_id, 65536, 1)
    with pytest.raises(ValueError, match="timestamp_ms"):
        Beacon(MESH_ID, node_id, 1, 2**64)
    with pytest.raises(ValueError, match="is not the beacon's node"):
        Beacon(MESH_ID, node_id, 1, 1).sign(SigningKey(bytes(32)))


# -- properties ------------------------------------------------------------------------

beacons = st.builds(
    lambda seed, mesh_id, port, ts, solicit: make_beacon(
        SigningKey(seed), mesh_id=mesh_id, quic_port=port, timestamp_ms=ts, solicit=solicit
    ),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=16, max_size=16),
    st.integers(1, 0xFFFF),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)


@given(beacons)
def test_round_trip(beacon: Beacon) -> None:
    data = beacon.encode()
    assert len(data) == BEACON_SIZE < 200
    assert decode_beacon(data) == beacon
    assert Beacon.from_json(json.loads(json.dumps(beacon.to_json()))) == beacon


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_beacon_error(data: bytes) -> None:
    with pytest.raises(BeaconError):
        decode_beacon(data)


@given(st.binary(min_size=BEACON_SIZE - 5, max_size=BEACON_SIZE - 5))
def test_random_bodies_behind_a_good_header_only_raise_beacon_error(rest: bytes) -> None:
    with pytest.raises(BeaconError):
        decode_beacon(MAGIC + b"\x01" + rest)


@given(
    beacons,
    st.lists(st.tuples(st.integers(0, BEACON_SIZE - 1), st.integers(1, 255)), min_size=1),
)
def test_any_mutation_of_a_valid_beacon_is_refused(
    beacon: Beacon, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(beacon.encode())
    for index, mask in flips:
        data[index] ^= mask
    if bytes(data) == beacon.encode():  # the flips cancelled out
        return
    with pytest.raises(BeaconError) as excinfo:
        decode_beacon(bytes(data))
    first = min(i for i in range(BEACON_SIZE) if data[i] != beacon.encode()[i])
    expected = {
        range(0, 4): {BeaconReason.BAD_MAGIC},
        range(4, 5): {BeaconReason.BAD_VERSION},
    }
    for region, reasons in expected.items():
        if first in region:
            assert excinfo.value.reason in reasons


@given(beacons, st.integers(0, BEACON_SIZE - 1), st.binary(max_size=40))
def test_cut_or_extended_beacons_are_refused(beacon: Beacon, cut: int, extra: bytes) -> None:
    data = beacon.encode()
    with pytest.raises(BeaconError) as excinfo:
        decode_beacon(data[:cut])
    assert excinfo.value.reason is BeaconReason.TRUNCATED
    if extra:
        with pytest.raises(BeaconError) as excinfo:
            decode_beacon(data + extra)
        assert excinfo.value.reason is BeaconReason.TRAILING_BYTES
