from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshd.proto import session


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
