from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshd.core.proto import session


def test_golden_membership_bytes() -> None:
    msg = session.Membership(b"\x02\x01cert", b"\x03\x01dg")
    assert session.encode(msg).hex() == "01" + "0006" + b"\x02\x01cert".hex() + "0004" + (
        b"\x03\x01dg".hex()
    )
    assert session.decode(session.encode(msg)) == msg


def test_babel_is_the_packet_after_the_kind() -> None:
    pkt = bytes.fromhex("2a020000")
    assert session.encode(session.BabelPacket(pkt)) == b"\x02" + pkt
    assert session.decode(b"\x02" + pkt) == session.BabelPacket(pkt)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x7fabc", "unknown_kind"),
        (b"\x0d\x00", "truncated"),
        (b"\x0d\x00\x03abc", "truncated"),
        (b"\x0d\x00\x00x", "truncated"),
        (b"\x0e\x00\x00\x00\x01c\x00\x00", "no_certificate"),
        (b"\x0e\x00\x01d\x00\x01c\x00\x00extra", "trailing_bytes"),
        (b"\x0f" + bytes(32), "truncated"),
        (b"\x0f" + bytes(32) + b"\x05abc", "truncated"),
        (b"\x0f" + bytes(32) + b"\x03a-b", "malformed"),
        (b"\x0f" + bytes(32) + b"\x01a\xff", "malformed"),
        (b"\x0f" + bytes(32) + b"\x01a" + b"x" * 257, "too_long"),
        (b"\x0a" + bytes(31), "truncated"),
        (b"\x0a" + bytes(32) + b"no such", "malformed"),
        (b"\x0b" + bytes(223), "truncated"),
        (b"\x0c" + bytes(15), "bad_length"),
        (b"\x07x", "bad_length"),
        (b"\x08\x00", "bad_length"),
        (b"\x08\x00\x00", "bad_port"),
        (b"\x09", "malformed"),
        (b"\x09no such", "malformed"),
        (b"\x01\x00", "truncated"),
        (b"\x01\x00\x05abc", "truncated"),
        (b"\x01\x00\x01a\x00\x00extra", "trailing_bytes"),
        (b"\x01\x00\x00\x00\x00", "no_certificate"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(session.SessionMessageError) as info:
        session.decode(data)
    assert info.value.reason == reason


@given(st.binary(max_size=64))
def test_random_bytes_only_raise_the_session_error(data: bytes) -> None:
    try:
        msg = session.decode(data)
    except session.SessionMessageError:
        return
    assert session.encode(msg) == data


def test_join_kinds_round_trip() -> None:
    node = "6_cSl_eD_EcEs7H7E3spevBBRFO65JLnrdxqh8wfVnI"
    for msg in (
        session.JoinRequestMessage(b"\x05invite", b"\x06request"),
        session.JoinGranted(b"\x01mesh", b"\x02cert"),
        session.JoinGranted(b"\x01mesh", b"\x02cert", b"\x03delegation"),
        session.JoinRefused(node, "already_redeemed", "invite 00ff was redeemed — already"),
        session.JoinRefused(node, "expired"),
    ):
        assert session.decode(session.encode(msg)) == msg
    assert session.encode(session.JoinRefused(node, "expired"))[:1] == b"\x0f"


@pytest.mark.parametrize(
    "make",
    [
        lambda: session.JoinRequestMessage(b"", b"request"),
        lambda: session.JoinRequestMessage(b"invite", b""),
        lambda: session.JoinGranted(b"", b"cert"),
        lambda: session.JoinRefused("not a node id", "expired"),
        lambda: session.JoinRefused("6_cSl_eD_EcEs7H7E3spevBBRFO65JLnrdxqh8wfVnI", "no such"),
        lambda: session.JoinRefused("6_cSl_eD_EcEs7H7E3spevBBRFO65JLnrdxqh8wfVnI", "x", "y" * 257),
    ],
)
def test_join_kinds_refuse_our_own_misuse(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


# --- CAPABILITIES (meshd/2) ------------------------------------------------------------------


def test_capabilities_golden_bytes_are_sorted_whatever_the_set_order() -> None:
    msg = session.Capabilities(frozenset({"directory", "capabilities"}))
    data = session.encode(msg)
    assert data.hex() == "15" + "02" + "0c" + b"capabilities".hex() + "09" + b"directory".hex()
    assert session.decode(data) == msg
    assert session.encode(session.Capabilities(frozenset())) == b"\x15\x00"


def test_this_builds_features_are_named_for_the_wire() -> None:
    assert session.Feature.CAPABILITIES in session.FEATURES
    assert all(session.is_feature_name(str(f)) for f in session.Feature)
    assert session.PROTOCOLS == ("meshd/2", "meshd/1")  # newest first


def test_unknown_feature_names_decode_as_they_came() -> None:
    # A newer node's names: the codec keeps them, the control plane ignores them.
    msg = session.decode(b"\x15\x02\x01a\x0cteleport_v99")
    assert msg == session.Capabilities(frozenset({"a", "teleport_v99"}))


def test_the_largest_capabilities_round_trip() -> None:
    names = frozenset(f"f{i:02d}_" + "x" * 28 for i in range(session.MAX_FEATURES))
    assert all(len(n) == session.MAX_FEATURE_NAME for n in names)
    msg = session.Capabilities(names)
    assert session.decode(session.encode(msg)) == msg


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x15", "truncated"),
        (b"\x15\x01", "truncated"),
        (b"\x15\x01\x05abc", "truncated"),
        (b"\x15\x02\x01a", "truncated"),
        (b"\x15\x01\x00", "malformed"),  # an empty name
        (b"\x15\x01\x01A", "malformed"),  # upper case
        (b"\x15\x01\x02a-", "malformed"),
        (b"\x15\x01\x02a\xff", "malformed"),
        (b"\x15\x01\x21" + b"a" * 33, "malformed"),  # longer than 32
        (b"\x15\x02\x01b\x01a", "not_canonical"),  # unsorted
        (b"\x15\x02\x01a\x01a", "not_canonical"),  # repeated
        (b"\x15\x41" + b"\x01a" * 65, "too_many"),
        (b"\x15\x01\x01aextra", "trailing_bytes"),
    ],
)
def test_malformed_capabilities(data: bytes, reason: str) -> None:
    with pytest.raises(session.SessionMessageError) as info:
        session.decode(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "features",
    [
        {"capabilities"},  # a set, not a frozenset
        frozenset({""}),
        frozenset({"Upper"}),
        frozenset({"x" * 33}),
        frozenset({f"f{i}" for i in range(65)}),
    ],
)
def test_capabilities_refuse_our_own_misuse(features: object) -> None:
    with pytest.raises(ValueError):
        session.Capabilities(features)  # type: ignore[arg-type]


@given(st.frozensets(st.from_regex(r"[a-z0-9_]{1,32}", fullmatch=True), max_size=64))
def test_any_capabilities_round_trip(features: frozenset[str]) -> None:
    msg = session.Capabilities(features)
    assert session.decode(session.encode(msg)) == msg


def test_release_kinds_round_trip_as_documented() -> None:
    fetch = session.ReleaseFetch(7, 65_536, 32_768)
    part = session.ReleasePart(7, 65_536, b"wheel")
    assert session.encode(fetch).hex() == "1c" + f"{7:016x}" + f"{65_536:016x}" + f"{32_768:08x}"
    assert session.encode(part) == b"\x1d" + bytes(7) + b"\x07" + bytes(5) + b"\x01\x00\x00wheel"
    for msg in (session.Release(b"\x30manifest"), fetch, part):
        assert session.decode(session.encode(msg)) == msg


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x1b", "truncated"),
        (b"\x1c" + bytes(19), "bad_length"),
        (b"\x1c" + bytes(20), "bad_length"),  # a fetch of nothing
        (b"\x1c" + bytes(16) + (32_769).to_bytes(4, "big"), "bad_length"),
        (b"\x1d" + bytes(16), "bad_length"),  # a part of nothing
        (b"\x1d" + bytes(16) + bytes(32_769), "bad_length"),
    ],
)
def test_malformed_release_kinds(data: bytes, reason: str) -> None:
    with pytest.raises(session.SessionMessageError) as info:
        session.decode(data)
    assert info.value.reason == reason
