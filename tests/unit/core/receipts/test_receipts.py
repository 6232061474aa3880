"""The Receipt record: checks, canonical bytes, strict JSON, signing, tamper evidence."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.adapters.identity import node_id_from_public
from meshd.core.membership.canonical import walk
from meshd.core.receipts import (
    Receipt,
    ReceiptError,
    ReceiptReason,
    format_line,
    parse_line,
    verify_receipt,
)
from meshd.core.receipts.receipt import RECEIPT_LENGTH
from tests.unit.receipt_fixtures import CONSUMER, MESH, PROVIDER, STRANGER, T0, nid, receipt

U64_MAX = 2**64 - 1
MESH_ID = MESH.mesh_id


def _fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "mesh_id": MESH_ID,
        "provider": nid(PROVIDER),
        "consumer": nid(CONSUMER),
        "epoch": 1,
        "seq": 1,
        "relayed_for_bytes": 10,
        "relayed_to_bytes": 20,
        "not_before": T0,
        "not_after": T0 + 30,
    }
    return {**fields, **changes}


# --- building one: our own misuse raises at once ------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"mesh_id": bytes(15)},
        {"provider": "not a node id"},
        {"consumer": nid(PROVIDER)},  # relaying for oneself
        {"seq": -1},
        {"epoch": 2**64},
        {"relayed_for_bytes": True},  # a bool is not a count
        {"not_after": 1.5},
        {"signature": bytes(63)},
    ],
)
def test_impossible_fields_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Receipt(**_fields(**changes))


def test_only_the_consumer_signs_and_only_an_ordered_window() -> None:
    unsigned = Receipt(**_fields())
    with pytest.raises(ValueError, match="not the consumer"):
        unsigned.sign(PROVIDER)
    with pytest.raises(ValueError, match="after not_after"):
        replace(unsigned, not_before=T0 + 31).sign(CONSUMER)
    unsigned.sign(CONSUMER).verify_signature()


def test_an_unsigned_or_foreign_signature_does_not_verify() -> None:
    unsigned = Receipt(**_fields())
    with pytest.raises(ReceiptError) as excinfo:
        unsigned.verify_signature()
    assert excinfo.value.reason is ReceiptReason.BAD_SIGNATURE
    # The consumer's signature over the same bytes without the receipt domain is refused:
    # a signature made for another kind of message never verifies as a receipt.
    body = unsigned.signed_bytes().removeprefix(b"meshd-receipt-v1\0")
    stray = replace(unsigned, signature=bytes(CONSUMER.sign(body).signature))
    with pytest.raises(ReceiptError, match="bad_signature"):
        stray.verify_signature()


def test_the_encoding_is_ten_fields_in_order_and_224_bytes() -> None:
    data = receipt(5, 1, 2).encode()
    tag, version, fields = walk(data)
    assert (tag, version, len(data)) == (0x11, 1, RECEIPT_LENGTH)
    assert [len(value) for _, value in fields] == [16, 32, 32, 8, 8, 8, 8, 8, 8, 64]


# --- reading one: bad input is a ReceiptError(malformed) -----------------------------


@pytest.mark.parametrize(
    "spoil",
    [
        lambda data: data + b"\x00",  # trailing bytes
        lambda data: data[:-1],  # truncated
        lambda data: bytes((0x02,)) + data[1:],  # a membership certificate's tag
        lambda data: data[:1] + b"\x02" + data[2:],  # an unknown version
        lambda data: b"",
    ],
)
def test_decode_refuses_anything_but_the_canonical_bytes(spoil: Any) -> None:
    with pytest.raises(ReceiptError) as excinfo:
        Receipt.decode(spoil(receipt(1).encode()))
    assert excinfo.value.reason is ReceiptReason.MALFORMED


def test_decode_refuses_provider_equal_to_consumer() -> None:
    data = bytearray(receipt(1).encode())
    data[24:56] = data[59:91]  # provider key := consumer key
    with pytest.raises(ReceiptError, match="same node"):
        Receipt.decode(bytes(data))


@pytest.mark.parametrize(
    "spoil",
    [
        lambda obj: obj.pop("seq"),
        lambda obj: obj.update(extra=1),
        lambda obj: obj.update(seq="1"),
        lambda obj: obj.update(seq=1.0),
        lambda obj: obj.update(seq=True),
        lambda obj: obj.update(seq=-1),
        lambda obj: obj.update(seq=2**64),
        lambda obj: obj.update(mesh_id=obj["mesh_id"].upper()),
        lambda obj: obj.update(signature=obj["signature"][:-2]),
        lambda obj: obj.update(provider=obj["provider"] + "="),
        lambda obj: obj.update(consumer=None),
    ],
)
def test_json_is_strict(spoil: Any) -> None:
    obj = receipt(1).to_json()
    spoil(obj)
    with pytest.raises(ReceiptError) as excinfo:
        Receipt.from_json(obj)
    assert excinfo.value.reason is ReceiptReason.MALFORMED


def test_verify_receipt_checks_mesh_time_bounds_and_signature() -> None:
    good = receipt(1)
    verify_receipt(good, MESH_ID)
    verify_receipt(good, None)
    cases = [
        (good, bytes(16), ReceiptReason.WRONG_MESH),
        (replace(good, not_before=good.not_after + 1), MESH_ID, ReceiptReason.BAD_TIME_BOUNDS),
        (replace(good, seq=2), MESH_ID, ReceiptReason.BAD_SIGNATURE),
        (replace(good, consumer=nid(STRANGER)), MESH_ID, ReceiptReason.BAD_SIGNATURE),
    ]
    for bad, mesh_id, reason in cases:
        with pytest.raises(ReceiptError) as excinfo:
            verify_receipt(bad, mesh_id)
        assert excinfo.value.reason is reason


# --- properties -------------------------------------------------------------------------

u64 = st.integers(0, U64_MAX)
node_ids = st.binary(min_size=32, max_size=32).map(node_id_from_public)
pairs = st.lists(node_ids, min_size=2, max_size=2, unique=True)  # provider, consumer
receipts = st.builds(
    lambda mesh_id, pair, numbers, signature: Receipt(mesh_id, *pair, *numbers, signature),
    st.binary(min_size=16, max_size=16),
    pairs,
    st.tuples(u64, u64, u64, u64, u64, u64),
    st.binary(min_size=64, max_size=64),
)


@given(receipts)
def test_bytes_and_json_round_trip(original: Receipt) -> None:
    data = original.encode()
    assert Receipt.decode(data) == original
    assert Receipt.decode(data).encode() == data
    assert Receipt.from_json(json.loads(json.dumps(original.to_json()))) == original
    assert parse_line(format_line(original)) == original


signed = st.builds(
    lambda seq, relayed_for, relayed_to, epoch, at: receipt(
        seq, relayed_for, relayed_to, epoch=epoch, at=at
    ),
    u64,
    u64,
    u64,
    u64,
    st.integers(0, U64_MAX - 30),
)


@settings(max_examples=300, deadline=None)
@given(signed, st.data())
def test_any_single_byte_tamper_fails_verification(good: Receipt, data: st.DataObject) -> None:
    encoded = bytearray(good.encode())
    index = data.draw(st.integers(0, len(encoded) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    encoded[index] ^= flip
    with pytest.raises(ReceiptError) as excinfo:
        verify_receipt(Receipt.decode(bytes(encoded)), good.mesh_id)
    assert excinfo.value.reason in {
        ReceiptReason.MALFORMED,
        ReceiptReason.WRONG_MESH,
        ReceiptReason.BAD_TIME_BOUNDS,
        ReceiptReason.BAD_SIGNATURE,
    }


@settings(max_examples=200, deadline=None)
@given(signed, st.sampled_from(list(receipt(1).to_json())), st.data())
def test_changing_any_json_field_fails_verification(
    good: Receipt, name: str, data: st.DataObject
) -> None:
    obj = good.to_json()
    value = obj[name]
    if isinstance(value, int):
        obj[name] = data.draw(u64.filter(lambda v: v != value), label="new value")
    else:
        assert isinstance(value, str)
        position = data.draw(st.integers(0, len(value) - 1), label="position")
        replacement = "0" if value[position] != "0" else "1"
        obj[name] = value[:position] + replacement + value[position + 1 :]
    with pytest.raises(ReceiptError):
        verify_receipt(Receipt.from_json(obj), good.mesh_id)


# --- the export reader's fast path for canonical lines -----------------------------------


def _strict_parse(line: str) -> Receipt | str:
    """The reference: json, unique keys, then Receipt.from_json; the reason on refusal."""
    try:
        pairs = json.loads(line, object_pairs_hook=lambda p: p)
        obj = dict(pairs)
        if len(obj) != len(pairs) or obj.pop("type", None) != "receipt":
            return "malformed"
        if type(obj.get("version")) is not int or obj.pop("version") != 1:
            return "malformed"
        return Receipt.from_json(obj)
    except (ValueError, ReceiptError):
        return "malformed"


def _fast_or_strict(line: str) -> Receipt | str:
    try:
        record = parse_line(line)
    except ReceiptError as exc:
        assert exc.reason is ReceiptReason.MALFORMED
        return "malformed"
    assert isinstance(record, Receipt)
    return record


@pytest.mark.parametrize(
    "spoil",
    [
        lambda line: line.replace('"seq":1,', '"seq":01,'),
        lambda line: line.replace('"seq":1,', '"seq":1.0,'),
        lambda line: line.replace('"seq":1,', '"seq":-1,'),
        lambda line: line.replace('"seq":1,', f'"seq":{2**64},'),
        lambda line: line.replace('"seq":1,', f'"seq":{2**64 - 1},'),  # 20 digits: strict path
        lambda line: line.replace('"seq":1,', '"seq":1,"seq":2,'),
        lambda line: line.replace('"mesh_id":"', '"mesh_id":"A').replace(
            '0","provider', '","provider'
        ),
        lambda line: line.replace(nid(CONSUMER), nid(PROVIDER)),  # provider = consumer
        lambda line: line.replace(nid(CONSUMER), nid(CONSUMER)[:-1] + "_"),  # not canonical
        lambda line: line.replace('"version":1', '"version":true'),
        lambda line: line.replace('"epoch"', '"\\u0065poch"'),  # an escape: the same key
        lambda line: " \t" + line + "\r\n",
        lambda line: line.replace(",", ", "),
        lambda line: line + "x",
    ],
)
def test_canonical_lines_read_as_the_strict_reader_reads_them(spoil: Any) -> None:
    line = spoil(format_line(receipt(1)))
    assert _fast_or_strict(line) == _strict_parse(line)


@settings(max_examples=300)
@given(receipts, st.integers(0, 10_000), st.characters(codec="ascii"))
def test_any_one_character_changed_reads_as_the_strict_reader_reads_it(
    original: Receipt, where: int, character: str
) -> None:
    line = format_line(original)
    where %= len(line)
    line = line[:where] + character + line[where + 1 :]
    assert _fast_or_strict(line) == _strict_parse(line)
