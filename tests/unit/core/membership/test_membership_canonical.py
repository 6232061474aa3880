"""The canonical encoding: one byte string per value, everything else refused."""

from __future__ import annotations

import contextlib
import ipaddress
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshd.core.membership.canonical import (
    ENCODING_VERSION,
    DecodeError,
    MessageType,
    Reader,
    Writer,
    check_text,
    walk,
)

T = MessageType.MEMBERSHIP_CERTIFICATE


def _sample() -> bytes:
    w = Writer(T)
    w.u8(7)
    w.u64(2**40 + 3)
    w.fixed(b"\xaa" * 4, 4)
    w.text("Grüße", 1, 64)
    w.ipv4(ipaddress.IPv4Address("10.77.0.5"))
    w.ipv6(ipaddress.IPv6Address("fd00::1"))
    w.ipv4net(ipaddress.IPv4Network("10.77.0.0/16"))
    w.ipv6net(ipaddress.IPv6Network("fd6d:6573:6864::/48"))
    w.fixed_list([b"\x01\x01", b"\x02\x00"], 2)
    return w.getvalue()


def _read(data: bytes) -> tuple[object, ...]:
    r = Reader(data, T)
    values = (
        r.u8("a"),
        r.u64("b"),
        r.fixed("c", 4),
        r.text("d", 1, 64),
        r.ipv4("e"),
        r.ipv6("f"),
        r.ipv4net("g"),
        r.ipv6net("h"),
        r.fixed_list("i", 2, 1, 4),
    )
    r.end()
    return values


def test_layout_is_type_version_then_tag_length_value() -> None:
    w = Writer(T)
    w.u8(7)
    w.u64(258)
    assert w.getvalue() == bytes.fromhex("0201010001070200080000000000000102")


def test_round_trip_of_every_value_kind() -> None:
    assert _read(_sample()) == (
        7,
        2**40 + 3,
        b"\xaa" * 4,
        "Grüße",
        ipaddress.IPv4Address("10.77.0.5"),
        ipaddress.IPv6Address("fd00::1"),
        ipaddress.IPv4Network("10.77.0.0/16"),
        ipaddress.IPv6Network("fd6d:6573:6864::/48"),
        (b"\x01\x01", b"\x02\x00"),
    )


def _field_offsets(data: bytes) -> list[int]:
    offsets, offset = [], 2
    while offset < len(data):
        offsets.append(offset)
        offset += 3 + int.from_bytes(data[offset + 1 : offset + 3], "big")
    return offsets


def _replace_value(data: bytes, index: int, value: bytes) -> bytes:
    start = _field_offsets(data)[index]
    end = start + 3 + int.from_bytes(data[start + 1 : start + 3], "big")
    return data[:start] + bytes((data[start],)) + len(value).to_bytes(2, "big") + value + data[end:]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d + b"\x00", "trailing"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[:2], "truncated"),
        (lambda d: b"", "shorter than the header"),
        (lambda d: bytes((0x03,)) + d[1:], "type tag 0x03"),
        (lambda d: d[:1] + bytes((ENCODING_VERSION + 1,)) + d[2:], "unknown encoding version"),
        # field 1 and field 2 swapped: out of order
        (
            lambda d: d[:2] + d[6:17] + d[2:6] + d[17:],
            "field tag 2, expected 1",
        ),
        # a field repeated
        (lambda d: d[:6] + d[2:6] + d[6:], "field tag 1, expected 2"),
        (lambda d: _replace_value(d, 1, bytes(7)), "length 7, expected 8"),
        (lambda d: _replace_value(d, 3, b"\xff\xfe"), "utf-8"),
        (lambda d: _replace_value(d, 3, "Gru\u0308ße".encode()), "NFC"),
        (lambda d: _replace_value(d, 3, b"a\x1b[2J"), "control"),
        (lambda d: _replace_value(d, 3, b""), "length 0, expected 1..64"),
        (lambda d: _replace_value(d, 6, bytes((10, 77, 0, 1, 16))), "host bits"),
        (lambda d: _replace_value(d, 6, bytes((10, 77, 0, 0, 33))), "netmask"),
        (lambda d: _replace_value(d, 7, bytes(16) + b"\x81"), "netmask"),
        (lambda d: _replace_value(d, 8, b"\x02\x00\x01\x01"), "ascending"),
        (lambda d: _replace_value(d, 8, b"\x01\x01\x01\x01"), "ascending"),
        (lambda d: _replace_value(d, 8, b"\x01\x01\x01"), "multiple of 2"),
        (lambda d: _replace_value(d, 8, b""), "length 0, expected 2..8"),
    ],
)
def test_decoder_refuses_non_canonical_input(mutate: object, match: str) -> None:
    assert callable(mutate)
    with pytest.raises(DecodeError, match=match):
        _read(mutate(_sample()))


def test_reader_refuses_non_bytes() -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        Reader(bytearray(b"\x02\x01"), T)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda w: w.u8(256), "u8 out of range"),
        (lambda w: w.u64(-1), "u64 out of range"),
        (lambda w: w.u64(2**64), "u64 out of range"),
        (lambda w: w.fixed(b"abc", 4), "expected 4 bytes"),
        (lambda w: w.text("", 1, 4), "1 to 4"),
        (lambda w: w.text("a\nb", 1, 4), "control"),
        (lambda w: w.fixed_list([b"b", b"a"], 1), "ascending"),
        (lambda w: w.fixed_list([b"ab"], 1), "1 bytes"),
        (lambda w: w.fixed(bytes(70000), 70000), "too long"),
    ],
)
def test_writer_refuses_misuse(write: object, match: str) -> None:
    assert callable(write)
    with pytest.raises(ValueError, match=match):
        write(Writer(T))


def test_check_text_refuses_non_strings() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        check_text(b"abc", 1, 4)  # type: ignore[arg-type]


def test_walk_splits_any_message_without_a_schema() -> None:
    tag, version, fields = walk(_sample())
    assert (tag, version) == (T, ENCODING_VERSION)
    assert [t for t, _ in fields] == list(range(1, 10))
    assert fields[3][1] == "Grüße".encode()
    for bad in (b"\x02", _sample()[:-1], _sample()[:4], _sample()[:2] + b"\x02\x00\x00"):
        with pytest.raises(DecodeError):
            walk(bad)


@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        _read(data)
    with contextlib.suppress(DecodeError):
        walk(data)


@given(
    st.integers(0, 255),
    st.integers(0, 2**64 - 1),
    st.text(min_size=1, max_size=16)
    .map(lambda s: unicodedata.normalize("NFC", s))
    .filter(lambda s: s.isprintable() and len(s.encode()) <= 64),
    st.lists(st.binary(min_size=3, max_size=3), min_size=1, max_size=5, unique=True),
)
def test_round_trip_and_reencode_is_identity(
    small: int, big: int, text: str, items: list[bytes]
) -> None:
    w = Writer(T)
    w.u8(small)
    w.u64(big)
    w.text(text, 1, 64)
    w.fixed_list(sorted(items), 3)
    data = w.getvalue()
    r = Reader(data, T)
    assert (r.u8("a"), r.u64("b"), r.text("c", 1, 64), r.fixed_list("d", 3, 1, 5)) == (
        small,
        big,
        text,
        tuple(sorted(items)),
    )
    r.end()
