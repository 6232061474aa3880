"""Golden vectors (tests/golden/invites): hex <-> JSON both ways, signatures, the token."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from meshd.core.invites import Invite, JoinRequest, parse_token, verify_invite
from tests.golden import vectors
from tests.golden.invites import make_vectors as GEN

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "invites"
FILES = sorted(p.name for p in GOLDEN.glob("*.json"))
_vector = vectors.reader(GOLDEN)
MESSAGES: dict[str, type[Invite] | type[JoinRequest]] = {
    "invite_admin.json": Invite,
    "invite_delegated.json": Invite,
    "join_request.json": JoinRequest,
}


def test_checked_in_files_are_exactly_what_the_generator_makes() -> None:
    rendered = GEN.rendered()
    assert sorted(rendered) == FILES
    for name, text in rendered.items():
        assert (GOLDEN / name).read_text(encoding="utf-8") == text, f"regenerate {name}"


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_vector_both_directions_and_signature(name: str) -> None:
    cls = MESSAGES[name]
    vector = _vector(name)
    data = bytes.fromhex(vector["hex"])
    decoded = cls.decode(data)
    assert decoded.to_json() == vector["json"]
    assert cls.from_json(vector["json"]).encode() == data
    decoded.verify_signature()


def test_layout_of_the_admin_invite_by_hand() -> None:
    data = bytes.fromhex(_vector("invite_admin.json")["hex"])
    assert data[:2] == bytes((0x05, 0x01))  # type: invite, version 1
    assert data[2:5] == bytes((1, 0, 16)) and data[5:21] == GEN.membership.MESH_ID
    assert data[21:24] == bytes((2, 0, 5)) and data[24:29] == bytes((10, 77, 0, 0, 16))
    assert data[-67:-64] == bytes((14, 0, 64))  # the signature is the last field
    invite_key = bytes.fromhex(_vector("invite_admin.json")["json"]["invite_key"])
    assert data[-137:-134] == bytes((12, 0, 32)) and data[-134:-102] == invite_key
    assert data[-102:-99] == bytes((13, 0, 32))  # then the issuer's key


def test_token_vector_is_the_invite_then_the_secret_in_urlsafe_base64() -> None:
    vector = _vector("token_admin.json")
    raw = bytes.fromhex(vector["hex"])
    text = vector["json"]["text"]
    assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text
    token = parse_token(text)
    assert token.invite.encode().hex() == _vector("invite_admin.json")["hex"]
    assert token.secret.hex() == vector["json"]["secret"] == raw[-32:].hex()
    assert token.text() == text


def test_vectors_verify_against_the_admin_key_and_the_request_proves_the_secret() -> None:
    admin = Invite.from_json(_vector("invite_admin.json")["json"])
    delegated = Invite.from_json(_vector("invite_delegated.json")["json"])
    admins = (GEN.node_id(GEN.ADMIN),)
    verify_invite(admin, GEN.T0, admins=admins, mesh_id=GEN.membership.MESH_ID)
    verify_invite(delegated, GEN.T0 + 3600, admins=admins, mesh_id=GEN.membership.MESH_ID)
    request = JoinRequest.from_json(_vector("join_request.json")["json"])
    assert request.check(admin).node_id == GEN.node_id(GEN.JOINER)


def test_a_private_name_token_is_the_invite_the_secret_then_the_name_and_its_length() -> None:
    vector = _vector("token_private.json")
    raw, fields = bytes.fromhex(vector["hex"]), vector["json"]
    token = parse_token(fields["text"])
    assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == fields["text"]
    assert raw[-1] == len(b"Haus am See") and raw[-12:-1] == b"Haus am See"
    assert token.secret.hex() == fields["secret"] == raw[-44:-12].hex()
    assert token.invite.encode() == raw[:-44]
    assert token.invite.name == fields["certified_name"] != fields["name"] == token.node_name
    assert token.opening is not None and token.opening.opens(token.invite.name)
    assert token.text() == fields["text"]
