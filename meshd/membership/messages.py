"""The signed membership records, their canonical bytes and their JSON form (pure).

- MeshDefinition: what a mesh is. An explicit random 16-byte mesh id, the IPv4 and IPv6
  prefixes, the admin keys; signed by one of those admins.
- MembershipCertificate: one node's membership, signed by an admin or by a delegate.
- DelegationCertificate: an admin lets another node issue invites and/or certificates.
- Revocation: an admin withdraws a node, a membership certificate or a delegation.

Each encodes with meshd.membership.canonical; field order is the order of the dataclass
fields, and the signature is over ``DOMAIN + encoding without the signature field``.
In Python and JSON, Ed25519 keys are node ids (the contract spelling), the WireGuard key is
standard base64 (as ``wg`` prints it), other byte strings are lower-case hex.
"""

from __future__ import annotations

import abc
import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar, Self

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from meshd.identity import encode_key, node_id_from_public, public_from_node_id
from meshd.membership._json import JSON_VERSION, JsonFields
from meshd.membership.canonical import (
    U64_MAX,
    DecodeError,
    MessageType,
    Reader,
    Writer,
    check_text,
)
from meshd.membership.errors import MembershipError, Reason

MESH_ID_LENGTH = 16
KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
NAME_MAX_BYTES = 64
MAX_ADMINS = 16
IPV4_PREFIX_MAX_LENGTH = 30  # room for a network and a broadcast address plus hosts
IPV6_PREFIX_MAX_LENGTH = 64  # as config.py: at least 64 bits of the node id in the address
NO_SIGNATURE = bytes(SIGNATURE_LENGTH)


def _check_u64(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise ValueError(f"{what} must be an integer in 0..2**64-1, got {value!r}")


def _check_bytes(what: str, value: bytes, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{what} must be {length} bytes")


def _check_node_id(what: str, value: str) -> None:
    try:
        public_from_node_id(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def _check_name(what: str, value: str) -> None:
    try:
        check_text(value, 1, NAME_MAX_BYTES)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _check_window(not_before: int, expires_at: int) -> None:
    _check_u64("not_before", not_before)
    _check_u64("expires_at", expires_at)
    if expires_at <= not_before:
        raise ValueError(f"expires_at {expires_at} must be after not_before {not_before}")


def _check_type(what: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise ValueError(f"{what} must be {kind.__name__}, got {type(value).__name__}")


class SignedMessage(abc.ABC):
    """Encoding, decoding, signing and signature checking shared by every record."""

    TYPE: ClassVar[MessageType]
    DOMAIN: ClassVar[bytes]
    JSON_TYPE: ClassVar[str]
    JSON_KEYS: ClassVar[tuple[str, ...]]  # in field order, without type, version, signature
    issuer: str
    signature: bytes

    @abc.abstractmethod
    def _write_body(self, writer: Writer) -> None: ...

    @classmethod
    @abc.abstractmethod
    def _read(cls, reader: Reader) -> Self:
        """Read the body fields and the signature; construct (may raise ValueError)."""

    @abc.abstractmethod
    def _json_body(self) -> dict[str, object]: ...

    @classmethod
    @abc.abstractmethod
    def _from_json_fields(cls, fields: JsonFields) -> Self: ...

    def body_bytes(self) -> bytes:
        writer = Writer(self.TYPE)
        self._write_body(writer)
        return writer.getvalue()

    def signed_bytes(self) -> bytes:
        """What the signature is over: the domain, then the encoding up to the signature."""
        return self.DOMAIN + self.body_bytes()

    def encode(self) -> bytes:
        writer = Writer(self.TYPE)
        self._write_body(writer)
        writer.fixed(self.signature, SIGNATURE_LENGTH)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse canonical bytes; MembershipError(malformed) for anything else. The
        signature is not checked here (verify_signature, or the verify functions)."""
        try:
            reader = Reader(data, cls.TYPE)
            message = cls._read(reader)
            reader.end()
        except (DecodeError, ValueError) as exc:  # ValueError: well framed, impossible record
            raise MembershipError(Reason.MALFORMED, f"{cls.JSON_TYPE}: {exc}") from None
        return message

    def sign(self, signing_key: SigningKey) -> Self:
        """The same record signed by ``signing_key``, which must be the issuer's key."""
        signer = node_id_from_public(bytes(signing_key.verify_key))
        if signer != self.issuer:
            raise ValueError(f"signing key {signer} is not the issuer {self.issuer}")
        signature = bytes(signing_key.sign(self.signed_bytes()).signature)
        return replace(self, signature=signature)  # type: ignore[type-var]

    def verify_signature(self) -> None:
        """Check the signature against the issuer named inside; MembershipError if bad.
        Whether that issuer is trusted is the verify functions' business."""
        key = VerifyKey(public_from_node_id(self.issuer))
        try:
            key.verify(self.signed_bytes(), self.signature)
        except CryptoError:
            raise MembershipError(
                Reason.BAD_SIGNATURE, f"{self.JSON_TYPE}: signature does not verify"
            ) from None

    def to_json(self) -> dict[str, object]:
        return {
            "type": self.JSON_TYPE,
            "version": JSON_VERSION,
            **self._json_body(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, obj: object) -> Self:
        fields = JsonFields(obj, cls.JSON_TYPE, ("type", "version", *cls.JSON_KEYS, "signature"))
        fields.constant("type", cls.JSON_TYPE)
        fields.constant("version", JSON_VERSION)
        try:
            return cls._from_json_fields(fields)
        except ValueError as exc:
            raise MembershipError(Reason.MALFORMED, f"{cls.JSON_TYPE}: {exc}") from None


def _key(node_id: str) -> bytes:
    return public_from_node_id(node_id)


def _node(raw: bytes) -> str:
    return node_id_from_public(raw)


def admin_order(node_ids: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Admins sorted as the encoding needs them: by key bytes, not by node-id text."""
    return tuple(sorted(set(node_ids), key=_key))


@dataclass(frozen=True)
class MeshDefinition(SignedMessage):
    """What a mesh is; signed by one of its own admins (the verifier pins that key)."""

    TYPE: ClassVar[MessageType] = MessageType.MESH_DEFINITION
    DOMAIN: ClassVar[bytes] = b"meshd-mesh-v1\0"
    JSON_TYPE: ClassVar[str] = "mesh_definition"
    JSON_KEYS: ClassVar[tuple[str, ...]] = (
        "mesh_id",
        "name",
        "ipv4_prefix",
        "ipv6_prefix",
        "admins",
        "serial",
        "issued_at",
        "issuer",
    )

    mesh_id: bytes
    name: str
    ipv4_prefix: ipaddress.IPv4Network
    ipv6_prefix: ipaddress.IPv6Network
    admins: tuple[str, ...]  # node ids, sorted by key bytes, no duplicates
    serial: int  # a newer definition of the same mesh has a higher serial
    issued_at: int
    issuer: str
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("mesh_id", self.mesh_id, MESH_ID_LENGTH)
        _check_name("name", self.name)
        _check_type("ipv4_prefix", self.ipv4_prefix, ipaddress.IPv4Network)
        _check_type("ipv6_prefix", self.ipv6_prefix, ipaddress.IPv6Network)
        if self.ipv4_prefix.prefixlen > IPV4_PREFIX_MAX_LENGTH:
            raise ValueError(f"ipv4_prefix must be /{IPV4_PREFIX_MAX_LENGTH} or shorter")
        if self.ipv6_prefix.prefixlen > IPV6_PREFIX_MAX_LENGTH:
            raise ValueError(f"ipv6_prefix must be /{IPV6_PREFIX_MAX_LENGTH} or shorter")
        _check_type("admins", self.admins, tuple)
        if not 1 <= len(self.admins) <= MAX_ADMINS:
            raise ValueError(f"a mesh has 1 to {MAX_ADMINS} admins, got {len(self.admins)}")
        for admin in self.admins:
            _check_node_id("admins", admin)
        if admin_order(self.admins) != self.admins:
            raise ValueError("admins must be sorted by key bytes, without duplicates")
        _check_u64("serial", self.serial)
        _check_u64("issued_at", self.issued_at)
        _check_node_id("issuer", self.issuer)
        if self.issuer not in self.admins:
            raise ValueError("a mesh definition is signed by one of its admins")
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    def _write_body(self, writer: Writer) -> None:
        writer.fixed(self.mesh_id, MESH_ID_LENGTH)
        writer.text(self.name, 1, NAME_MAX_BYTES)
        writer.ipv4net(self.ipv4_prefix)
        writer.ipv6net(self.ipv6_prefix)
        writer.fixed_list([_key(admin) for admin in self.admins], KEY_LENGTH)
        writer.u64(self.serial)
        writer.u64(self.issued_at)
        writer.fixed(_key(self.issuer), KEY_LENGTH)

    @classmethod
    def _read(cls, reader: Reader) -> Self:
        return cls(
            mesh_id=reader.fixed("mesh_id", MESH_ID_LENGTH),
            name=reader.text("name", 1, NAME_MAX_BYTES),
            ipv4_prefix=reader.ipv4net("ipv4_prefix"),
            ipv6_prefix=reader.ipv6net("ipv6_prefix"),
            admins=tuple(_node(k) for k in reader.fixed_list("admins", KEY_LENGTH, 1, MAX_ADMINS)),
            serial=reader.u64("serial"),
            issued_at=reader.u64("issued_at"),
            issuer=_node(reader.fixed("issuer", KEY_LENGTH)),
            signature=reader.fixed("signature", SIGNATURE_LENGTH),
        )

    def _json_body(self) -> dict[str, object]:
        return {
            "mesh_id": self.mesh_id.hex(),
            "name": self.name,
            "ipv4_prefix": str(self.ipv4_prefix),
            "ipv6_prefix": str(self.ipv6_prefix),
            "admins": list(self.admins),
            "serial": self.serial,
            "issued_at": self.issued_at,
            "issuer": self.issuer,
        }

    @classmethod
    def _from_json_fields(cls, fields: JsonFields) -> Self:
        return cls(
            mesh_id=fields.hex("mesh_id", MESH_ID_LENGTH),
            name=fields.string("name"),
            ipv4_prefix=fields.ipv4net("ipv4_prefix"),
            ipv6_prefix=fields.ipv6net("ipv6_prefix"),
            admins=fields.node_ids("admins"),
            serial=fields.integer("serial"),
            issued_at=fields.integer("issued_at"),
            issuer=fields.node_id("issuer"),
            signature=fields.hex("signature", SIGNATURE_LENGTH),
        )


@dataclass(frozen=True)
class MembershipCertificate(SignedMessage):
    """A node's membership: valid over [not_before, expires_at), Unix seconds."""

    TYPE: ClassVar[MessageType] = MessageType.MEMBERSHIP_CERTIFICATE
    DOMAIN: ClassVar[bytes] = b"meshd-cert-v1\0"
    JSON_TYPE: ClassVar[str] = "membership_certificate"
    JSON_KEYS: ClassVar[tuple[str, ...]] = (
        "mesh_id",
        "node_id",
        "name",
        "wireguard_public",
        "mesh_ipv4",
        "mesh_ipv6",
        "not_before",
        "expires_at",
        "issuer",
        "serial",
    )

    mesh_id: bytes
    node_id: str
    name: str
    wireguard_public: bytes
    mesh_ipv4: ipaddress.IPv4Address
    mesh_ipv6: ipaddress.IPv6Address
    not_before: int
    expires_at: int
    issuer: str  # an admin, or a delegate holding a membership-scope delegation
    serial: int  # unique per issuer; (issuer, serial) names the certificate in revocations
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("mesh_id", self.mesh_id, MESH_ID_LENGTH)
        _check_node_id("node_id", self.node_id)
        _check_name("name", self.name)
        _check_bytes("wireguard_public", self.wireguard_public, KEY_LENGTH)
        _check_type("mesh_ipv4", self.mesh_ipv4, ipaddress.IPv4Address)
        _check_type("mesh_ipv6", self.mesh_ipv6, ipaddress.IPv6Address)
        _check_window(self.not_before, self.expires_at)
        _check_node_id("issuer", self.issuer)
        _check_u64("serial", self.serial)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    def _write_body(self, writer: Writer) -> None:
        writer.fixed(self.mesh_id, MESH_ID_LENGTH)
        writer.fixed(_key(self.node_id), KEY_LENGTH)
        writer.text(self.name, 1, NAME_MAX_BYTES)
        writer.fixed(self.wireguard_public, KEY_LENGTH)
        writer.ipv4(self.mesh_ipv4)
        writer.ipv6(self.mesh_ipv6)
        writer.u64(self.not_before)
        writer.u64(self.expires_at)
        writer.fixed(_key(self.issuer), KEY_LENGTH)
        writer.u64(self.serial)

    @classmethod
    def _read(cls, reader: Reader) -> Self:
        return cls(
            mesh_id=reader.fixed("mesh_id", MESH_ID_LENGTH),
            node_id=_node(reader.fixed("node_id", KEY_LENGTH)),
            name=reader.text("name", 1, NAME_MAX_BYTES),
            wireguard_public=reader.fixed("wireguard_public", KEY_LENGTH),
            mesh_ipv4=reader.ipv4("mesh_ipv4"),
            mesh_ipv6=reader.ipv6("mesh_ipv6"),
            not_before=reader.u64("not_before"),
            expires_at=reader.u64("expires_at"),
            issuer=_node(reader.fixed("issuer", KEY_LENGTH)),
            serial=reader.u64("serial"),
            signature=reader.fixed("signature", SIGNATURE_LENGTH),
        )

    def _json_body(self) -> dict[str, object]:
        return {
            "mesh_id": self.mesh_id.hex(),
            "node_id": self.node_id,
            "name": self.name,
            "wireguard_public": encode_key(self.wireguard_public),
            "mesh_ipv4": str(self.mesh_ipv4),
            "mesh_ipv6": str(self.mesh_ipv6),
            "not_before": self.not_before,
            "expires_at": self.expires_at,
            "issuer": self.issuer,
            "serial": self.serial,
        }

    @classmethod
    def _from_json_fields(cls, fields: JsonFields) -> Self:
        return cls(
            mesh_id=fields.hex("mesh_id", MESH_ID_LENGTH),
            node_id=fields.node_id("node_id"),
            name=fields.string("name"),
            wireguard_public=fields.wireguard_key("wireguard_public"),
            mesh_ipv4=fields.ipv4("mesh_ipv4"),
            mesh_ipv6=fields.ipv6("mesh_ipv6"),
            not_before=fields.integer("not_before"),
            expires_at=fields.integer("expires_at"),
            issuer=fields.node_id("issuer"),
            serial=fields.integer("serial"),
            signature=fields.hex("signature", SIGNATURE_LENGTH),
        )


class Scope(enum.IntFlag):
    """What a delegation allows. Bits; any other bit is refused."""

    INVITE = 0x01  # sign invites (one-time join tokens)
    MEMBERSHIP = 0x02  # sign membership certificates, chained: cert <- delegation <- admin


SCOPE_ALL = Scope.INVITE | Scope.MEMBERSHIP
_SCOPE_NAMES: tuple[tuple[Scope, str], ...] = (
    (Scope.INVITE, "invite"),
    (Scope.MEMBERSHIP, "membership"),
)


@dataclass(frozen=True)
class DelegationCertificate(SignedMessage):
    """An admin lets ``delegate`` issue invites and/or membership certificates.

    ``ipv4_pool`` is the part of the mesh's IPv4 prefix from which the delegate may hand
    out addresses; admins give delegates disjoint pools, so two delegates issuing at once
    cannot give two nodes the same address.
    """

    TYPE: ClassVar[MessageType] = MessageType.DELEGATION_CERTIFICATE
    DOMAIN: ClassVar[bytes] = b"meshd-delegation-v1\0"
    JSON_TYPE: ClassVar[str] = "delegation_certificate"
    JSON_KEYS: ClassVar[tuple[str, ...]] = (
        "mesh_id",
        "delegate",
        "scope",
        "ipv4_pool",
        "not_before",
        "expires_at",
        "issuer",
        "serial",
    )

    mesh_id: bytes
    delegate: str
    scope: Scope
    ipv4_pool: ipaddress.IPv4Network
    not_before: int
    expires_at: int
    issuer: str  # an admin
    serial: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("mesh_id", self.mesh_id, MESH_ID_LENGTH)
        _check_node_id("delegate", self.delegate)
        if (
            not isinstance(self.scope, int)
            or isinstance(self.scope, bool)
            or int(self.scope) == 0
            or int(self.scope) & ~int(SCOPE_ALL)
        ):
            raise ValueError(f"scope must be a non-empty combination of {list(Scope)}")
        _check_type("ipv4_pool", self.ipv4_pool, ipaddress.IPv4Network)
        _check_window(self.not_before, self.expires_at)
        _check_node_id("issuer", self.issuer)
        _check_u64("serial", self.serial)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)
        if not isinstance(self.scope, Scope):
            object.__setattr__(self, "scope", Scope(self.scope))

    def _write_body(self, writer: Writer) -> None:
        writer.fixed(self.mesh_id, MESH_ID_LENGTH)
        writer.fixed(_key(self.delegate), KEY_LENGTH)
        writer.u8(int(self.scope))
        writer.ipv4net(self.ipv4_pool)
        writer.u64(self.not_before)
        writer.u64(self.expires_at)
        writer.fixed(_key(self.issuer), KEY_LENGTH)
        writer.u64(self.serial)

    @classmethod
    def _read(cls, reader: Reader) -> Self:
        return cls(
            mesh_id=reader.fixed("mesh_id", MESH_ID_LENGTH),
            delegate=_node(reader.fixed("delegate", KEY_LENGTH)),
            scope=Scope(reader.u8("scope")),
            ipv4_pool=reader.ipv4net("ipv4_pool"),
            not_before=reader.u64("not_before"),
            expires_at=reader.u64("expires_at"),
            issuer=_node(reader.fixed("issuer", KEY_LENGTH)),
            serial=reader.u64("serial"),
            signature=reader.fixed("signature", SIGNATURE_LENGTH),
        )

    def _json_body(self) -> dict[str, object]:
        return {
            "mesh_id": self.mesh_id.hex(),
            "delegate": self.delegate,
            "scope": [name for flag, name in _SCOPE_NAMES if flag in self.scope],
            "ipv4_pool": str(self.ipv4_pool),
            "not_before": self.not_before,
            "expires_at": self.expires_at,
            "issuer": self.issuer,
            "serial": self.serial,
        }

    @classmethod
    def _from_json_fields(cls, fields: JsonFields) -> Self:
        names = fields.strings("scope")
        known = [name for _, name in _SCOPE_NAMES]
        if list(names) != [name for name in known if name in names]:
            raise ValueError(f"scope must list names from {known}, in that order, once each")
        scope = Scope(0)
        for flag, name in _SCOPE_NAMES:
            if name in names:
                scope |= flag
        return cls(
            mesh_id=fields.hex("mesh_id", MESH_ID_LENGTH),
            delegate=fields.node_id("delegate"),
            scope=scope,
            ipv4_pool=fields.ipv4net("ipv4_pool"),
            not_before=fields.integer("not_before"),
            expires_at=fields.integer("expires_at"),
            issuer=fields.node_id("issuer"),
            serial=fields.integer("serial"),
            signature=fields.hex("signature", SIGNATURE_LENGTH),
        )


class RevocationKind(enum.IntEnum):
    NODE = 1  # every certificate and delegation naming this node id
    MEMBERSHIP = 2  # one membership certificate, named by (issuer, serial)
    DELEGATION = 3  # one delegation certificate, named by (issuer, serial)


_KIND_NAMES = {
    RevocationKind.NODE: "node",
    RevocationKind.MEMBERSHIP: "membership",
    RevocationKind.DELEGATION: "delegation",
}


@dataclass(frozen=True)
class RevocationTarget:
    """What a revocation withdraws. ``key`` is the node id of the revoked node (NODE) or of
    the issuer of the revoked certificate; ``serial`` is 0 for NODE."""

    kind: RevocationKind
    key: str
    serial: int = 0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.kind, int)
            or isinstance(self.kind, bool)
            or self.kind not in set(RevocationKind)
        ):
            raise ValueError(f"unknown revocation kind {self.kind!r}")
        object.__setattr__(self, "kind", RevocationKind(self.kind))
        _check_node_id("target key", self.key)
        _check_u64("target serial", self.serial)
        if self.kind is RevocationKind.NODE and self.serial != 0:
            raise ValueError("a node revocation has serial 0")

    @classmethod
    def node(cls, node_id: str) -> RevocationTarget:
        return cls(RevocationKind.NODE, node_id)

    @classmethod
    def certificate(cls, cert: MembershipCertificate | DelegationCertificate) -> RevocationTarget:
        if isinstance(cert, MembershipCertificate):
            return cls(RevocationKind.MEMBERSHIP, cert.issuer, cert.serial)
        return cls(RevocationKind.DELEGATION, cert.issuer, cert.serial)

    def describe(self) -> str:
        if self.kind is RevocationKind.NODE:
            return f"node {self.key}"
        return f"{_KIND_NAMES[self.kind]} certificate {self.key}#{self.serial}"

    def sort_key(self) -> tuple[int, bytes, int]:
        return (int(self.kind), _key(self.key), self.serial)

    def to_json(self) -> dict[str, object]:
        if self.kind is RevocationKind.NODE:
            return {"kind": "node", "node_id": self.key}
        return {"kind": _KIND_NAMES[self.kind], "issuer": self.key, "serial": self.serial}

    @classmethod
    def from_json_fields(cls, outer: JsonFields) -> RevocationTarget:
        # The keys depend on the kind, so look at the kind first, then read strictly.
        raw = outer.raw("target")
        kind_name = raw.get("kind") if isinstance(raw, Mapping) else None
        kinds = {name: kind for kind, name in _KIND_NAMES.items()}
        if kind_name not in kinds:
            raise ValueError(f"target.kind must be one of {sorted(kinds)}")
        kind = kinds[kind_name]
        if kind is RevocationKind.NODE:
            node = outer.nested("target", "target", ("kind", "node_id"))
            return cls(kind, node.node_id("node_id"))
        cert = outer.nested("target", "target", ("kind", "issuer", "serial"))
        return cls(kind, cert.node_id("issuer"), cert.integer("serial"))


@dataclass(frozen=True)
class Revocation(SignedMessage):
    """An admin withdraws ``target`` from ``revoked_at`` on (Unix seconds, no skew: a
    revocation is never applied late). Only admins may revoke (see verify.py)."""

    TYPE: ClassVar[MessageType] = MessageType.REVOCATION
    DOMAIN: ClassVar[bytes] = b"meshd-revocation-v1\0"
    JSON_TYPE: ClassVar[str] = "revocation"
    JSON_KEYS: ClassVar[tuple[str, ...]] = ("mesh_id", "target", "revoked_at", "issuer")

    mesh_id: bytes
    target: RevocationTarget
    revoked_at: int
    issuer: str
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("mesh_id", self.mesh_id, MESH_ID_LENGTH)
        _check_type("target", self.target, RevocationTarget)
        _check_u64("revoked_at", self.revoked_at)
        _check_node_id("issuer", self.issuer)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    def _write_body(self, writer: Writer) -> None:
        writer.fixed(self.mesh_id, MESH_ID_LENGTH)
        writer.u8(int(self.target.kind))
        writer.fixed(_key(self.target.key), KEY_LENGTH)
        writer.u64(self.target.serial)
        writer.u64(self.revoked_at)
        writer.fixed(_key(self.issuer), KEY_LENGTH)

    @classmethod
    def _read(cls, reader: Reader) -> Self:
        mesh_id = reader.fixed("mesh_id", MESH_ID_LENGTH)
        kind = reader.u8("target_kind")
        key = _node(reader.fixed("target_key", KEY_LENGTH))
        serial = reader.u64("target_serial")
        return cls(
            mesh_id=mesh_id,
            target=RevocationTarget(kind, key, serial),  # type: ignore[arg-type]
            revoked_at=reader.u64("revoked_at"),
            issuer=_node(reader.fixed("issuer", KEY_LENGTH)),
            signature=reader.fixed("signature", SIGNATURE_LENGTH),
        )

    def _json_body(self) -> dict[str, object]:
        return {
            "mesh_id": self.mesh_id.hex(),
            "target": self.target.to_json(),
            "revoked_at": self.revoked_at,
            "issuer": self.issuer,
        }

    @classmethod
    def _from_json_fields(cls, fields: JsonFields) -> Self:
        return cls(
            mesh_id=fields.hex("mesh_id", MESH_ID_LENGTH),
            target=RevocationTarget.from_json_fields(fields),
            revoked_at=fields.integer("revoked_at"),
            issuer=fields.node_id("issuer"),
            signature=fields.hex("signature", SIGNATURE_LENGTH),
        )


Message = MeshDefinition | MembershipCertificate | DelegationCertificate | Revocation
MESSAGE_CLASSES: tuple[type[Message], ...] = (
    MeshDefinition,
    MembershipCertificate,
    DelegationCertificate,
    Revocation,
)
_BY_TYPE = {cls.TYPE: cls for cls in MESSAGE_CLASSES}
_BY_JSON_TYPE = {cls.JSON_TYPE: cls for cls in MESSAGE_CLASSES}


def decode_message(data: bytes) -> Message:
    """Decode any membership record by its type tag (for ``meshd decode``)."""
    if not isinstance(data, bytes) or len(data) < 1 or data[0] not in _BY_TYPE:
        tag = f"0x{data[0]:02x}" if isinstance(data, bytes) and data else "none"
        raise MembershipError(Reason.MALFORMED, f"unknown message type tag {tag}")
    return _BY_TYPE[MessageType(data[0])].decode(data)


def message_from_json(obj: object) -> Message:
    json_type = obj.get("type") if isinstance(obj, dict) else None
    if not isinstance(json_type, str) or json_type not in _BY_JSON_TYPE:
        raise MembershipError(Reason.MALFORMED, f"unknown message type {json_type!r}")
    return _BY_JSON_TYPE[json_type].from_json(obj)
