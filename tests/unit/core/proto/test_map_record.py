"""The map record: its canonical bytes, JSON form and signature, and what it refuses."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from meshd.core.membership import MembershipError
from meshd.core.proto.map_record import (
    MAX_LINKS,
    Location,
    MapLink,
    MapRecord,
    link_quality,
    sorted_links,
)
from tests.golden.map.make_vectors import KEY, NEIGHBOURS, record

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "map"


@pytest.mark.parametrize("name", ["record", "record_private"])
def test_the_golden_vectors_decode_verify_and_encode_back(name: str) -> None:
    vector = json.loads((GOLDEN / f"{name}.json").read_text())
    decoded = MapRecord.decode(bytes.fromhex(vector["hex"]))
    decoded.verify_signature()
    assert decoded.to_json() == vector["json"]
    assert MapRecord.from_json(vector["json"]).encode().hex() == vector["hex"]
    assert decoded == record(shown=name == "record")


def test_the_defaults_show_the_id_and_links_only() -> None:
    private = record(shown=False)
    assert (private.name, private.contact, private.location) == ("", "", None)
    assert {link.node_id: link.tq for link in private.links} == {
        NEIGHBOURS[0]: 255,
        NEIGHBOURS[1]: 87,
    }


def test_a_changed_byte_is_a_bad_signature() -> None:
    data = bytearray(record(shown=True).encode())
    data[data.index(b"Elm")] ^= 0x01  # the name, still printable text
    tampered = MapRecord.decode(bytes(data))
    with pytest.raises(MembershipError) as exc:
        tampered.verify_signature()
    assert str(exc.value.reason) == "bad_signature"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b + b"\x00",  # trailing bytes
        lambda b: b[:-1],  # truncated
        lambda b: b[:1] + b"\x02" + b[2:],  # an encoding version nobody knows
    ],
)
def test_bytes_that_are_no_record_are_malformed(mangle: object) -> None:
    with pytest.raises(MembershipError) as exc:
        MapRecord.decode(mangle(record(shown=True).encode()))  # type: ignore[operator]
    assert str(exc.value.reason) == "malformed"


def test_a_record_refuses_impossible_fields() -> None:
    good = record(shown=True)
    for bad in (
        {"lifetime_s": 10},  # shorter than a minute
        {"lifetime_s": 86_401},
        {"name": "x" * 65},
        {"name": "bell\x07"},  # control characters would rewrite a terminal
        {"links": (MapLink(good.issuer, 255),)},  # a link to itself
        {"links": tuple(reversed(good.links))},  # not in key order
        {"links": (good.links[0], good.links[0])},  # twice
    ):
        with pytest.raises(ValueError):
            replace(good, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MapLink(NEIGHBOURS[0], 256)
    with pytest.raises(ValueError):
        Location.parse("91,0")
    with pytest.raises(ValueError):
        Location.parse("53.1")


def test_more_links_than_fit_keep_the_best() -> None:
    from nacl.signing import SigningKey

    from meshd.core.keys import node_id_from_public

    many = {
        node_id_from_public(bytes(SigningKey(i.to_bytes(32, "big")).verify_key)): i % 256
        for i in range(1, MAX_LINKS + 11)
    }
    kept = sorted_links(many)
    assert len(kept) == MAX_LINKS
    assert min(link.tq for link in kept) >= sorted(many.values(), reverse=True)[MAX_LINKS - 1]
    replace(record(shown=False), links=kept).sign(KEY).verify_signature()


def test_link_quality_is_255_for_a_perfect_link_and_falls_with_cost() -> None:
    assert link_quality(96) == 255
    assert link_quality(192) == 128
    assert link_quality(0xFFFF) == 0
    assert link_quality(60) == 255  # never above a perfect link


def test_a_location_keeps_seven_decimals_both_ways() -> None:
    point = Location.parse("53.0793,-8.8017")
    assert (point.latitude, point.longitude) == (53.0793, -8.8017)
    as_json = record(shown=True).to_json()
    as_json["location"] = {"latitude": 53.07930001, "longitude": -8.8017}  # an 8th decimal
    with pytest.raises(MembershipError):
        MapRecord.from_json(as_json)
