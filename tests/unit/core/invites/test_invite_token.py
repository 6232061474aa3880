"""Invite tokens and join requests: parsing, checks and their reasons, tampering."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.core.invites import (
    BootstrapEndpoint,
    Invite,
    InviteError,
    InviteReason,
    decode_join_request,
    join_request,
    parse_token,
    verify_invite,
)
from meshd.core.invites.invite import DELEGATION_LENGTH
from meshd.core.membership import DEFAULT_SKEW_S, MembershipError, Scope, issue_delegation
from meshd.core.membership.messages import NO_SIGNATURE
from tests.golden.invites import make_vectors as GEN

ADMIN_TOKEN, DELEGATED_TOKEN = GEN.tokens()
ADMINS = (GEN.node_id(GEN.ADMIN),)
MESH, DELEGATION = GEN.mesh_and_delegation()
TEXT = ADMIN_TOKEN.text()
RAW = ADMIN_TOKEN.invite.encode() + ADMIN_TOKEN.secret
URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _reason(fn: object, *args: object, **kwargs: object) -> InviteReason:
    assert callable(fn)
    with pytest.raises(InviteError) as excinfo:
        fn(*args, **kwargs)
    return excinfo.value.reason


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _resigned(invite: Invite, key: SigningKey, **changes: object) -> Invite:
    return replace(invite, **changes, signature=NO_SIGNATURE).sign(key)  # type: ignore[arg-type]


def test_a_token_is_one_line_of_urlsafe_characters_and_parses_back() -> None:
    assert set(TEXT) <= set(URLSAFE)
    token = parse_token(f"  {TEXT}\n")
    assert token.invite == ADMIN_TOKEN.invite and token.secret == ADMIN_TOKEN.secret
    assert "secret" not in repr(token) and ADMIN_TOKEN.secret.hex() not in repr(token)
    assert len(DELEGATION.encode()) == DELEGATION_LENGTH


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", InviteReason.MALFORMED),
        ("not a token", InviteReason.MALFORMED),
        (TEXT + "=", InviteReason.MALFORMED),
        (TEXT[:40], InviteReason.MALFORMED),
        (TEXT[:-1], InviteReason.MALFORMED),
        (_text(RAW[:-32] + bytes(32)), InviteReason.BAD_SECRET),
        (_text(RAW[:-33] + bytes((RAW[-33] ^ 1,)) + RAW[-32:]), InviteReason.BAD_SIGNATURE),
        (_text(bytes((0x02,)) + RAW[1:]), InviteReason.MALFORMED),
    ],
    ids=["empty", "words", "padding", "truncated", "short", "secret", "signature", "type"],
)
def test_parse_refuses_with_a_reason(text: str, reason: InviteReason) -> None:
    assert _reason(parse_token, text) is reason


def test_the_spare_bits_of_the_last_character_cannot_be_changed() -> None:
    raw = RAW + bytes(1)  # 4 spare bits in the last character
    text = _text(raw)
    spare = text[:-1] + URLSAFE[URLSAFE.index(text[-1]) ^ 1]  # another spelling, same bytes
    assert base64.urlsafe_b64decode(spare + "==") == raw
    with pytest.raises(InviteError, match="altered characters"):
        parse_token(spare)
    with pytest.raises(InviteError, match="trailing bytes"):
        parse_token(text)


@given(st.data())
def test_any_changed_byte_of_a_token_is_refused(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(RAW) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != RAW[index]))
    altered = RAW[:index] + bytes((value,)) + RAW[index + 1 :]
    with pytest.raises(InviteError):
        parse_token(_text(altered))


@given(st.data())
def test_any_changed_character_of_a_token_is_refused(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(TEXT) - 1))
    char = data.draw(st.sampled_from(URLSAFE).filter(lambda c: c != TEXT[index]))
    with pytest.raises(InviteError):
        parse_token(TEXT[:index] + char + TEXT[index + 1 :])


@given(st.integers(0, len(RAW) - 1))
def test_any_truncated_token_is_refused(length: int) -> None:
    with pytest.raises(InviteError):
        parse_token(_text(RAW[:length]))


def test_verify_against_admin_keys_mesh_and_time() -> None:
    invite = ADMIN_TOKEN.invite
    verify_invite(invite, GEN.T0, admins=ADMINS, mesh_id=MESH.mesh_id)
    last = invite.expires_at + DEFAULT_SKEW_S - 1
    assert verify_invite(invite, last, admins=ADMINS) is invite
    assert _reason(verify_invite, invite, last + 1, admins=ADMINS) is InviteReason.EXPIRED
    early = invite.issued_at - DEFAULT_SKEW_S - 1
    assert _reason(verify_invite, invite, early, admins=ADMINS) is InviteReason.NOT_YET_VALID
    assert _reason(verify_invite, invite, GEN.T0, admins=ADMINS, mesh_id=bytes(16)) is (
        InviteReason.WRONG_MESH
    )
    stranger = (GEN.node_id(GEN.NODE),)
    assert _reason(verify_invite, invite, GEN.T0, admins=stranger) is (
        InviteReason.UNTRUSTED_ISSUER
    )
    with pytest.raises(ValueError):
        verify_invite(invite, GEN.T0, admins=ADMINS, skew_s=-1)


def test_a_delegates_invite_needs_a_fit_delegation_from_an_admin() -> None:
    invite = DELEGATED_TOKEN.invite
    now = invite.issued_at
    assert verify_invite(invite, now, admins=ADMINS) is invite
    assert invite.delegation is not None
    late = invite.delegation.expires_at + DEFAULT_SKEW_S
    assert _reason(verify_invite, invite, late, admins=ADMINS) is InviteReason.UNTRUSTED_ISSUER
    without = _resigned(invite, GEN.DELEGATE, delegation=None)
    assert _reason(verify_invite, without, now, admins=ADMINS) is InviteReason.UNTRUSTED_ISSUER
    membership_only = issue_delegation(
        GEN.ADMIN,
        mesh=MESH,
        delegate=GEN.node_id(GEN.DELEGATE),
        scope=Scope.MEMBERSHIP,
        ipv4_pool=GEN.membership.DELEGATE_POOL,
        not_before=GEN.T0,
        expires_at=GEN.T0 + 86400 * 30,
        serial=9,
    )
    no_scope = _resigned(invite, GEN.DELEGATE, delegation=membership_only)
    assert _reason(verify_invite, no_scope, now, admins=ADMINS) is InviteReason.UNTRUSTED_ISSUER
    outside = _resigned(invite, GEN.DELEGATE, mesh_ipv4=ipaddress.IPv4Address("10.77.0.9"))
    assert _reason(verify_invite, outside, now, admins=ADMINS) is InviteReason.UNTRUSTED_ISSUER
    forged = replace(invite.delegation, signature=bytes(64))
    bad = _resigned(invite, GEN.DELEGATE, delegation=forged)
    assert _reason(verify_invite, bad, now, admins=ADMINS) is InviteReason.BAD_SIGNATURE
    with_delegation = _resigned(
        ADMIN_TOKEN.invite, GEN.ADMIN, delegation=replace(DELEGATION, delegate=ADMINS[0])
    )
    assert _reason(verify_invite, with_delegation, GEN.T0, admins=ADMINS) is (
        InviteReason.UNTRUSTED_ISSUER
    )


def test_endpoints_have_one_spelling() -> None:
    node = GEN.node_id(GEN.NODE)
    v4 = BootstrapEndpoint.from_address(node, "192.0.2.1:6697")
    assert BootstrapEndpoint.decode(v4.encode()) == v4 and v4.address == "192.0.2.1:6697"
    v6 = BootstrapEndpoint.from_address(node, "[2001:db8::1]:6697")
    assert BootstrapEndpoint.decode(v6.encode()) == v6 and v6.address == "[2001:db8::1]:6697"
    for bad in ("[::ffff:192.0.2.1]:6697", "192.0.2.1:0", "192.0.2.1", "host:6697"):
        with pytest.raises(ValueError):
            BootstrapEndpoint.from_address(node, bad)
    spelled = ADMIN_TOKEN.invite.to_json()
    bootstrap = spelled["bootstrap"]
    assert isinstance(bootstrap, list) and bootstrap[0]["address"] == "[2001:db8::5]:6697"
    bootstrap[0]["address"] = "[2001:DB8::5]:6697"
    with pytest.raises(MembershipError, match=r"malformed: .*expected \[2001:db8::5\]:6697"):
        Invite.from_json(spelled)


def test_a_join_request_proves_the_secret_for_its_keys_and_invite() -> None:
    key = SigningKey(GEN.seed("another joiner"))
    request = join_request(ADMIN_TOKEN, key, GEN.JOINER_WG)
    assert decode_join_request(request.encode()).check(ADMIN_TOKEN.invite) == request
    assert _reason(request.check, DELEGATED_TOKEN.invite) is InviteReason.BAD_PROOF
    stolen = replace(request, wireguard_public=bytes(32))  # the proof covers the keys
    assert _reason(stolen.check, ADMIN_TOKEN.invite) is InviteReason.BAD_PROOF
    guessed = DELEGATED_TOKEN.signing_key.sign(request.proof_bytes()).signature
    guess = replace(request, invite_proof=guessed, signature=NO_SIGNATURE).sign(key)
    assert _reason(guess.check, ADMIN_TOKEN.invite) is InviteReason.BAD_PROOF
    unsigned = replace(request, signature=bytes(64))
    assert _reason(unsigned.check, ADMIN_TOKEN.invite) is InviteReason.BAD_SIGNATURE
    assert _reason(decode_join_request, request.encode()[:-1]) is InviteReason.MALFORMED


@given(st.data())
def test_any_changed_byte_of_a_join_request_is_refused(data: st.DataObject) -> None:
    raw = join_request(ADMIN_TOKEN, GEN.JOINER, GEN.JOINER_WG).encode()
    index = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[index]))
    with pytest.raises(InviteError):
        decode_join_request(raw[:index] + bytes((value,)) + raw[index + 1 :]).check(
            ADMIN_TOKEN.invite
        )
