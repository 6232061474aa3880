"""Membership records: bytes and JSON round trips, tamper evidence, strict parsing."""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import unicodedata
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.core.membership import (
    SCOPE_ALL,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    Message,
    Reason,
    Revocation,
    RevocationKind,
    RevocationTarget,
    Scope,
    decode_message,
    message_from_json,
)
from meshd.core.membership.messages import MESSAGE_CLASSES, NO_SIGNATURE, admin_order

KEYS = [SigningKey(hashlib.sha256(f"meshd test key {i}".encode()).digest()) for i in range(4)]


KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # bytes(range(32))


def nid(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


# --- strategies -----------------------------------------------------------------------

keys = st.sampled_from(KEYS)
node_ids = st.binary(min_size=32, max_size=32).map(node_id_from_public)
mesh_ids = st.binary(min_size=16, max_size=16)
u64 = st.integers(0, 2**64 - 1)
names = (
    st.text(min_size=1, max_size=20)
    .map(lambda s: unicodedata.normalize("NFC", s))
    .filter(lambda s: s.isprintable() and 1 <= len(s.encode()) <= 64)
)
windows = st.integers(0, 2**64 - 2).flatmap(
    lambda start: st.tuples(st.just(start), st.integers(start + 1, 2**64 - 1))
)
ipv4_nets = st.tuples(st.ip_addresses(v=4), st.integers(0, 30)).map(
    lambda t: ipaddress.IPv4Network((t[0], t[1]), strict=False)
)
ipv6_nets = st.tuples(st.ip_addresses(v=6), st.integers(0, 64)).map(
    lambda t: ipaddress.IPv6Network((t[0], t[1]), strict=False)
)


@st.composite
def definitions(draw: st.DrawFn) -> MeshDefinition:
    signer = draw(keys)
    others = draw(st.lists(node_ids, max_size=3))
    return MeshDefinition(
        mesh_id=draw(mesh_ids),
        name=draw(names),
        ipv4_prefix=draw(ipv4_nets),
        ipv6_prefix=draw(ipv6_nets),
        admins=admin_order([nid(signer), *others]),
        serial=draw(u64),
        issued_at=draw(u64),
        issuer=nid(signer),
        signature=NO_SIGNATURE,
    ).sign(signer)


@st.composite
def certificates(draw: st.DrawFn) -> MembershipCertificate:
    signer = draw(keys)
    not_before, expires_at = draw(windows)
    return MembershipCertificate(
        mesh_id=draw(mesh_ids),
        node_id=draw(node_ids),
        name=draw(names),
        wireguard_public=draw(st.binary(min_size=32, max_size=32)),
        mesh_ipv4=ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1))),
        mesh_ipv6=ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))),
        not_before=not_before,
        expires_at=expires_at,
        issuer=nid(signer),
        serial=draw(u64),
        signature=NO_SIGNATURE,
    ).sign(signer)


@st.composite
def delegations(draw: st.DrawFn) -> DelegationCertificate:
    signer = draw(keys)
    not_before, expires_at = draw(windows)
    return DelegationCertificate(
        mesh_id=draw(mesh_ids),
        delegate=draw(node_ids),
        scope=Scope(draw(st.integers(1, int(SCOPE_ALL)))),
        ipv4_pool=draw(ipv4_nets),
        not_before=not_before,
        expires_at=expires_at,
        issuer=nid(signer),
        serial=draw(u64),
        signature=NO_SIGNATURE,
    ).sign(signer)


targets = st.one_of(
    node_ids.map(RevocationTarget.node),
    st.builds(
        RevocationTarget,
        st.sampled_from([RevocationKind.MEMBERSHIP, RevocationKind.DELEGATION]),
        node_ids,
        u64,
    ),
)


@st.composite
def revocations(draw: st.DrawFn) -> Revocation:
    signer = draw(keys)
    return Revocation(
        mesh_id=draw(mesh_ids),
        target=draw(targets),
        revoked_at=draw(u64),
        issuer=nid(signer),
        signature=NO_SIGNATURE,
    ).sign(signer)


messages = st.one_of(definitions(), certificates(), delegations(), revocations())


# --- round trips ----------------------------------------------------------------------


@given(messages)
def test_bytes_and_json_round_trip(message: Message) -> None:
    data = message.encode()
    assert decode_message(data) == message
    assert type(message).decode(data) == message
    assert decode_message(data).encode() == data
    as_json = message.to_json()
    assert message_from_json(as_json) == message
    assert type(message).from_json(copy.deepcopy(as_json)).encode() == data
    message.verify_signature()
    assert message.signed_bytes() == message.DOMAIN + data[: -(3 + 64)]


@settings(max_examples=300)
@given(messages, st.data())
def test_any_single_bit_flip_fails_to_decode_or_to_verify(
    message: Message, data: st.DataObject
) -> None:
    encoded = message.encode()
    bit = data.draw(st.integers(0, len(encoded) * 8 - 1), label="bit")
    flipped = bytearray(encoded)
    flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        decoded = decode_message(bytes(flipped))
    except MembershipError as exc:
        assert exc.reason is Reason.MALFORMED
        return
    with pytest.raises(MembershipError) as excinfo:
        decoded.verify_signature()
    assert excinfo.value.reason is Reason.BAD_SIGNATURE


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_membership_error(data: bytes) -> None:
    for decode in (decode_message, *(cls.decode for cls in MESSAGE_CLASSES)):
        with pytest.raises(MembershipError) as excinfo:
            decode(data)
        assert excinfo.value.reason is Reason.MALFORMED


@given(messages, st.data())
def test_a_field_replaced_by_random_bytes_raises_only_membership_error(
    message: Message, data: st.DataObject
) -> None:
    """Random bytes almost never get past the header; this reaches every field's checks."""
    encoded = message.encode()
    offsets, offset = [], 2
    while offset < len(encoded):
        offsets.append(offset)
        offset += 3 + int.from_bytes(encoded[offset + 1 : offset + 3], "big")
    offsets.append(len(encoded))
    index = data.draw(st.integers(0, len(offsets) - 2), label="field")
    value = data.draw(st.binary(max_size=40), label="value")
    start, end = offsets[index], offsets[index + 1]
    mutated = (
        encoded[:start] + encoded[start : start + 1] + len(value).to_bytes(2, "big") + value
    ) + encoded[end:]
    try:
        decoded = decode_message(mutated)
    except MembershipError as exc:
        assert exc.reason is Reason.MALFORMED
        return
    if decoded != message:
        with pytest.raises(MembershipError):
            decoded.verify_signature()


json_values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=50)
    | st.lists(st.text(max_size=45), max_size=3)
)


@given(messages, st.data())
def test_a_json_field_replaced_by_a_random_value_raises_only_membership_error(
    message: Message, data: st.DataObject
) -> None:
    obj = message.to_json()
    key = data.draw(st.sampled_from(sorted(obj)), label="key")
    obj[key] = data.draw(json_values, label="value")
    try:
        parsed = message_from_json(obj)
    except MembershipError:
        return
    if parsed != message:
        with pytest.raises(MembershipError):
            parsed.verify_signature()


@given(json_values | st.dictionaries(st.text(max_size=5), json_values, max_size=4))
def test_random_json_raises_only_membership_error(obj: object) -> None:
    with pytest.raises(MembershipError):
        message_from_json(obj)
    for cls in MESSAGE_CLASSES:
        with pytest.raises(MembershipError):
            cls.from_json(obj)


# --- signatures -----------------------------------------------------------------------


def _cert(signer: SigningKey = KEYS[0], **changes: Any) -> MembershipCertificate:
    cert = MembershipCertificate(
        mesh_id=bytes(16),
        node_id=nid(KEYS[1]),
        name="node",
        wireguard_public=bytes(range(32)),
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.5"),
        mesh_ipv6=ipaddress.IPv6Address("fd00::5"),
        not_before=1000,
        expires_at=2000,
        issuer=nid(signer),
        serial=1,
        signature=NO_SIGNATURE,
    )
    return replace(cert, **changes).sign(signer)


def _delegation(signer: SigningKey = KEYS[0]) -> DelegationCertificate:
    return DelegationCertificate(
        mesh_id=bytes(16),
        delegate=nid(KEYS[1]),
        scope=SCOPE_ALL,
        ipv4_pool=ipaddress.IPv4Network("10.77.0.0/16"),
        not_before=1000,
        expires_at=2000,
        issuer=nid(signer),
        serial=1,
        signature=NO_SIGNATURE,
    ).sign(signer)


def test_domains_are_distinct_and_prefix_free() -> None:
    domains = [cls.DOMAIN for cls in MESSAGE_CLASSES]
    assert len(set(domains)) == len(domains)
    for domain in domains:
        assert domain.endswith(b"\0") and domain.count(b"\0") == 1
    assert len({cls.TYPE for cls in MESSAGE_CLASSES}) == len(MESSAGE_CLASSES)


def test_a_signature_never_verifies_on_another_record_or_kind() -> None:
    cert, delegation = _cert(), _delegation()
    with pytest.raises(MembershipError, match="bad_signature"):
        replace(cert, signature=delegation.signature).verify_signature()
    # the same body signed under another domain does not verify as a certificate
    foreign = bytes(KEYS[0].sign(MeshDefinition.DOMAIN + cert.body_bytes()).signature)
    with pytest.raises(MembershipError, match="bad_signature"):
        replace(cert, signature=foreign).verify_signature()
    with pytest.raises(MembershipError, match="bad_signature"):
        replace(cert, serial=2).verify_signature()


def test_sign_refuses_a_key_that_is_not_the_issuer() -> None:
    with pytest.raises(ValueError, match="is not the issuer"):
        replace(_cert(), issuer=nid(KEYS[2])).sign(KEYS[0])


# --- construction misuse --------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"mesh_id": bytes(15)}, "mesh_id must be 16 bytes"),
        ({"node_id": "abc"}, "node_id"),
        ({"name": ""}, "name"),
        ({"name": "a\tb"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"wireguard_public": bytes(31)}, "wireguard_public"),
        ({"mesh_ipv4": "10.0.0.1"}, "mesh_ipv4 must be IPv4Address"),
        ({"mesh_ipv6": ipaddress.IPv4Address("10.0.0.1")}, "mesh_ipv6"),
        ({"expires_at": 1000}, "must be after not_before"),
        ({"not_before": -1}, "not_before"),
        ({"serial": 2**64}, "serial"),
        ({"serial": True}, "serial"),
        ({"signature": bytes(63)}, "signature"),
    ],
)
def test_certificate_refuses_bad_fields(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replace(_cert(), **changes)


def test_definition_refuses_bad_fields() -> None:
    d = MeshDefinition(
        mesh_id=bytes(16),
        name="m",
        ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
        ipv6_prefix=ipaddress.IPv6Network("fd00::/48"),
        admins=(nid(KEYS[0]),),
        serial=1,
        issued_at=0,
        issuer=nid(KEYS[0]),
        signature=NO_SIGNATURE,
    )
    unsorted = tuple(reversed(admin_order([nid(k) for k in KEYS])))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ipv4_prefix": ipaddress.IPv4Network("10.0.0.0/31")}, "/30 or shorter"),
        ({"ipv6_prefix": ipaddress.IPv6Network("fd00::/80")}, "/64 or shorter"),
        ({"admins": ()}, "1 to 16 admins"),
        ({"admins": [nid(KEYS[0])]}, "admins must be tuple"),
        ({"admins": unsorted}, "sorted"),
        ({"admins": (nid(KEYS[0]), nid(KEYS[0]))}, "sorted"),
        ({"issuer": nid(KEYS[1])}, "signed by one of its admins"),
    ]
    for changes, match in cases:
        with pytest.raises(ValueError, match=match):
            replace(d, **changes)


def test_admin_order_is_by_key_bytes_not_text() -> None:
    ids = [nid(k) for k in KEYS]
    from meshd.adapters.identity import public_from_node_id

    assert [public_from_node_id(i) for i in admin_order(ids)] == sorted(
        public_from_node_id(i) for i in ids
    )


def test_delegation_and_target_refuse_bad_fields() -> None:
    for scope in (0, 4, 0x83, True):
        with pytest.raises(ValueError, match="scope"):
            replace(_delegation(), scope=scope)  # type: ignore[arg-type]
    assert replace(_delegation(), scope=2).scope is Scope.MEMBERSHIP  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="serial 0"):
        RevocationTarget(RevocationKind.NODE, nid(KEYS[0]), 5)
    for kind in (0, 4, True, "node"):
        with pytest.raises(ValueError, match="unknown revocation kind"):
            RevocationTarget(kind, nid(KEYS[0]))  # type: ignore[arg-type]
    assert RevocationTarget.certificate(_cert()).kind is RevocationKind.MEMBERSHIP
    assert RevocationTarget.certificate(_delegation()).kind is RevocationKind.DELEGATION


def test_decoding_an_impossible_record_is_malformed() -> None:
    """Framing is fine but the record is not: expiry before start, node serial != 0."""
    cert = _cert()
    body = bytearray(cert.encode())
    # not_before is field 7: push it past expires_at by rewriting its 8 bytes
    encoded_nb = (1000).to_bytes(8, "big")
    at = bytes(body).index(b"\x07\x00\x08" + encoded_nb) + 3
    body[at : at + 8] = (5000).to_bytes(8, "big")
    with pytest.raises(MembershipError, match="malformed.*must be after not_before"):
        MembershipCertificate.decode(bytes(body))
    with pytest.raises(MembershipError, match="malformed.*unknown message type tag 0x09"):
        decode_message(b"\x09\x01")
    with pytest.raises(MembershipError, match="malformed.*type tag none"):
        decode_message(b"")


# --- JSON strictness ------------------------------------------------------------------


def _mutated(obj: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    target = result
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("type",), "revocation", "expected 'membership_certificate'"),
        (("version",), 2, "version: expected 1"),
        (("version",), True, "version: expected 1"),
        (("serial",), KeyError, "missing keys \\['serial'\\]"),
        (("extra",), 1, "unexpected keys \\['extra'\\]"),
        (("serial",), "1", "serial: expected int"),
        (("serial",), True, "serial: expected int"),
        (("serial",), -1, "serial"),
        (("mesh_id",), "00" * 15, "16 bytes as lower-case hex"),
        (("mesh_id",), "AA" * 16, "lower-case hex"),
        (("signature",), "zz" * 64, "lower-case hex"),
        (("mesh_ipv6",), "FD00::5", "canonical spelling fd00::5"),
        (("mesh_ipv6",), "fd00:0:0:0:0:0:0:5", "canonical spelling"),
        (("mesh_ipv6",), "10.0.0.1", "mesh_ipv6"),
        (("mesh_ipv4",), "10.77.0.05", "mesh_ipv4"),
        (("wireguard_public",), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "base64"),
        (("wireguard_public",), "AAEC", "32 bytes"),
        (("wireguard_public",), KEY_B64[:-2] + "9=", "canonical base64"),
        (("wireguard_public",), KEY_B64 + "\n", "canonical base64"),
        (("node_id",), "not-a-node-id", "node_id"),
        (("issuer",), 7, "issuer: expected str"),
        (("name",), "", "name"),
    ],
)
def test_certificate_json_is_strict(path: tuple[str, ...], value: Any, match: str) -> None:
    obj = _mutated(_cert().to_json(), path, value)
    with pytest.raises(MembershipError, match=match) as excinfo:
        MembershipCertificate.from_json(obj)
    assert excinfo.value.reason is Reason.MALFORMED


def test_other_json_forms_are_strict() -> None:
    mesh = MeshDefinition(
        mesh_id=bytes(16),
        name="m",
        ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
        ipv6_prefix=ipaddress.IPv6Network("fd00::/48"),
        admins=admin_order([nid(k) for k in KEYS[:2]]),
        serial=1,
        issued_at=0,
        issuer=nid(KEYS[0]),
        signature=NO_SIGNATURE,
    ).sign(KEYS[0])
    mesh_json = mesh.to_json()
    assert isinstance(mesh_json["admins"], list)
    revocation = Revocation(
        mesh_id=bytes(16),
        target=RevocationTarget.certificate(_cert()),
        revoked_at=5,
        issuer=nid(KEYS[0]),
        signature=NO_SIGNATURE,
    ).sign(KEYS[0])
    bad: list[tuple[type[Message], dict[str, Any], str]] = [
        (MeshDefinition, _mutated(mesh_json, ("admins",), mesh_json["admins"][::-1]), "sorted"),
        (MeshDefinition, _mutated(mesh_json, ("admins",), "x"), "admins: expected list"),
        (MeshDefinition, _mutated(mesh_json, ("admins",), [1]), r"admins\[0\]"),
        (MeshDefinition, _mutated(mesh_json, ("admins",), ["nope"]), r"admins\[0\]"),
        (MeshDefinition, _mutated(mesh_json, ("ipv4_prefix",), "10.77.0.1/16"), "host bits"),
        (MeshDefinition, _mutated(mesh_json, ("ipv4_prefix",), "10.77.0.0"), "10.77.0.0/32"),
        (MeshDefinition, _mutated(mesh_json, ("ipv6_prefix",), "fd00::/129"), "ipv6_prefix"),
        (DelegationCertificate, _mutated(_delegation().to_json(), ("scope",), []), "scope"),
        (
            DelegationCertificate,
            _mutated(_delegation().to_json(), ("scope",), ["membership", "invite"]),
            "in that order",
        ),
        (
            DelegationCertificate,
            _mutated(_delegation().to_json(), ("scope",), ["invite", "invite"]),
            "once each",
        ),
        (DelegationCertificate, _mutated(_delegation().to_json(), ("scope",), ["root"]), "scope"),
        (DelegationCertificate, _mutated(_delegation().to_json(), ("scope",), [1]), "strings"),
        (Revocation, _mutated(revocation.to_json(), ("target", "kind"), "admin"), "target.kind"),
        (Revocation, _mutated(revocation.to_json(), ("target",), []), "target.kind"),
        (
            Revocation,
            _mutated(revocation.to_json(), ("target", "node_id"), nid(KEYS[0])),
            "unexpected keys \\['node_id'\\]",
        ),
        (
            Revocation,
            {
                **revocation.to_json(),
                "target": {"kind": "node", "node_id": nid(KEYS[0]), "serial": 0},
            },
            "unexpected keys \\['serial'\\]",
        ),
        (Revocation, _mutated(revocation.to_json(), ("target", 1), "x"), "object keys"),
    ]
    for cls, obj, match in bad:
        with pytest.raises(MembershipError, match=match):
            cls.from_json(obj)
    with pytest.raises(MembershipError, match="expected a JSON object"):
        MembershipCertificate.from_json([])
    with pytest.raises(MembershipError, match="unknown message type 'receipt'"):
        message_from_json({"type": "receipt"})
