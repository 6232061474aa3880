"""Gateway adverts (meshd/core/proto/gateway.py) and the choice of exit
(meshd/core/routing/gateways.py)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.core.proto.gateway import (
    ADVERT_SIZE,
    GatewayAdvert,
    GatewayError,
    decode_advert,
    make_advert,
)
from meshd.core.routing.gateways import GatewayTable

VECTOR = Path(__file__).resolve().parents[3] / "golden" / "gateway" / "advert.json"
NOW = 1_767_225_600
MESH = bytes(range(16))
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(3)]
IDS = [node_id_from_public(bytes(k.verify_key)) for k in KEYS]


def advert(i: int, seqno: int = 1, **terms: object) -> GatewayAdvert:
    fields: dict[str, object] = {
        "mesh_id": MESH,
        "mesh_ipv4": ipaddress.IPv4Address(f"10.77.0.{i + 1}"),
        "exit_port": 51999,
        "seqno": seqno,
        "issued_at": NOW,
        "lifetime_s": 90,
    }
    return make_advert(KEYS[i], **{**fields, **terms})


# -- the wire format ------------------------------------------------------------------------


def test_golden_vector_both_ways() -> None:
    vector = json.loads(VECTOR.read_text())
    decoded = decode_advert(bytes.fromhex(vector["hex"]))
    assert decoded.to_json() == vector["json"]
    assert GatewayAdvert.from_json(vector["json"]).encode().hex() == vector["hex"]
    assert len(bytes.fromhex(vector["hex"])) == ADVERT_SIZE


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda b: b[:-1], "bad_length"),
        (lambda b: b"\x02" + b[1:], "bad_version"),
        (lambda b: b[:1] + b"\x80" + b[2:], "bad_flags"),
        (lambda b: b[:54] + b"\0\0" + b[56:], "bad_port"),
        (lambda b: b[:100] + b"\x01" + b[101:], "bad_reserved"),
        (lambda b: b[:60] + b"\0\0\0\x09" + b[64:], "bad_signature"),  # a relay raised seqno
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "bad_signature"),
    ],
)
def test_spoiled_adverts_are_refused_with_the_reason(spoil: object, reason: str) -> None:
    data = advert(0).encode()
    with pytest.raises(GatewayError) as info:
        decode_advert(spoil(data))  # type: ignore[operator]
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=ADVERT_SIZE, max_size=ADVERT_SIZE) | st.binary(max_size=300))
def test_any_bytes_decode_or_raise_gateway_error(data: bytes) -> None:
    with contextlib.suppress(GatewayError):
        decode_advert(data)


# -- the choice -----------------------------------------------------------------------------


def test_the_lowest_metric_wins_and_each_candidate_says_why() -> None:
    table = GatewayTable()
    for i in range(3):
        assert table.offer(advert(i), NOW)
    choice = table.choose({IDS[0]: 288, IDS[1]: 96}, NOW)
    assert choice.selected == IDS[1] and choice.changed
    why = {c.node_id: c.reason for c in choice.candidates}
    assert why[IDS[1]].startswith("selected")
    assert why[IDS[0]] == "metric 288, not 96"
    assert why[IDS[2]] == "no route to it"


def test_newer_adverts_replace_older_and_are_passed_on_once() -> None:
    table = GatewayTable()
    assert table.offer(advert(0, seqno=5), NOW)
    assert not table.offer(advert(0, seqno=5), NOW)  # a copy: not passed on again
    assert not table.offer(advert(0, seqno=4), NOW)  # older
    assert table.offer(advert(0, seqno=6, available=False), NOW)
    assert not table.offer(advert(1, issued_at=NOW - 100), NOW)  # expired already


def test_a_withdrawn_gateway_is_left_for_the_next() -> None:
    table = GatewayTable()
    table.offer(advert(0), NOW)
    table.offer(advert(1), NOW)
    assert table.choose({IDS[0]: 96, IDS[1]: 192}, NOW).selected == IDS[0]
    table.offer(advert(0, seqno=2, available=False), NOW)
    choice = table.choose({IDS[0]: 96, IDS[1]: 192}, NOW)
    assert choice.selected == IDS[1] and choice.changed
    assert {c.node_id: c.reason for c in choice.candidates}[IDS[0]].startswith("withdrawn")


def test_hysteresis_keeps_the_current_gateway_unless_much_better() -> None:
    table = GatewayTable()
    table.offer(advert(0), NOW)
    table.offer(advert(1), NOW)
    assert table.choose({IDS[0]: 192, IDS[1]: 200}, NOW).selected == IDS[0]
    kept = table.choose({IDS[0]: 250, IDS[1]: 192}, NOW)  # better by 58: not enough
    assert kept.selected == IDS[0] and not kept.changed
    assert table.choose({IDS[0]: 400, IDS[1]: 192}, NOW).selected == IDS[1]


def test_a_full_gateway_keeps_its_users_but_takes_no_new_ones() -> None:
    table = GatewayTable()
    table.offer(advert(0), NOW)
    table.offer(advert(1), NOW)
    assert table.choose({IDS[0]: 96, IDS[1]: 192}, NOW).selected == IDS[0]
    table.offer(advert(0, seqno=2, accepts_new=False), NOW)
    assert table.choose({IDS[0]: 96, IDS[1]: 192}, NOW).selected == IDS[0]  # still ours
    fresh = GatewayTable()
    fresh.offer(advert(0, seqno=2, accepts_new=False), NOW)
    fresh.offer(advert(1), NOW)
    choice = fresh.choose({IDS[0]: 96, IDS[1]: 192}, NOW)
    assert choice.selected == IDS[1]
    assert {c.node_id: c.reason for c in choice.candidates}[IDS[0]] == "not taking new users"


def test_adverts_expire_and_nothing_is_chosen_without_one() -> None:
    table = GatewayTable()
    table.offer(advert(0), NOW)
    assert table.choose({IDS[0]: 96}, NOW + 89).selected == IDS[0]
    gone = table.choose({IDS[0]: 96}, NOW + 90)
    assert gone.selected is None and gone.changed and gone.candidates == ()


def test_a_gateway_that_refused_us_is_passed_over_with_its_reason() -> None:
    table = GatewayTable()
    for i in (0, 1):
        table.offer(advert(i), NOW)
    choice = table.choose({IDS[0]: 96, IDS[1]: 300}, NOW, refused={IDS[0]: "blocked"})
    assert choice.selected == IDS[1]
    reasons = {c.node_id: c.reason for c in choice.candidates}
    assert reasons[IDS[0]] == "refused us: blocked"
