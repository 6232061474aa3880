"""The signed membership records, their canonical bytes and their JSON form (pure).

- MeshDefinition: what a mesh is. An explicit random 16-byte mesh id, the IPv4 and IPv6
  prefixes, the admin keys, how many of them must sign the next definition; signed by one
  of those admins (others' signatures: meshd.core.membership.cosigned).
- MembershipCertificate: one node's membership, signed by an admin or by a delegate.
- DelegationCertificate: an admin lets another node issue invites and/or certificates.
- Revocation: an admin withdraws a node, a membership certificate or a delegation.

Each record is declared as data: every dataclass field is annotated with the Codec of its
kind (``serial: Annotated[int, U64]``), and SignedMessage does the rest from that table:
checking the fields, the canonical encoding (meshd.core.membership.canonical, one field after
another in dataclass order, the signature last), the JSON form, signing and verifying.
The signature is over ``DOMAIN + encoding without the signature field``.
In Python and JSON, Ed25519 keys are node ids (the contract spelling), the WireGuard key is
standard base64 (as ``wg`` prints it), other byte strings are lower-case hex.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    Self,
    TypeVar,
    cast,
    get_origin,
    get_type_hints,
)

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from meshd.core.keys import encode_key, node_id_from_public, public_from_node_id
from meshd.core.membership._json import JSON_VERSION, JsonFields
from meshd.core.membership.canonical import (
    ENCODING_VERSION,
    U64_MAX,
    DecodeError,
    MessageType,
    Reader,
    Writer,
    check_text,
)
from meshd.core.membership.errors import MembershipError, Reason

MESH_ID_LENGTH = 16
KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
NAME_MAX_BYTES = 64
MAX_ADMINS = 16
IPV4_PREFIX_MAX_LENGTH = 30  # room for a network and a broadcast address plus hosts
IPV6_PREFIX_MAX_LENGTH = 64  # as config.py: at least 64 bits of the node id in the address
NO_SIGNATURE = bytes(SIGNATURE_LENGTH)

T = TypeVar("T")

# --- field checks: the value (normalised) or a ValueError naming the field ------------


def _check_u64(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise ValueError(f"{what} must be an integer in 0..2**64-1, got {value!r}")
    return value


def _check_u8(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise ValueError(f"{what} must be an integer in 0..255")
    return value


def _bool(raw: int) -> bool:
    if raw > 1:
        raise DecodeError(f"a flag is 0 or 1, got {raw}")
    return bool(raw)


def _check_bytes(what: str, value: object, length: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{what} must be {length} bytes")
    return value


def _check_node_id(what: str, value: Any) -> str:
    try:
        public_from_node_id(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: {exc}") from None
    return cast(str, value)


def _check_type(what: str, value: object, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise ValueError(f"{what} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _check_window(not_before: int, expires_at: int) -> None:
    if expires_at <= not_before:
        raise ValueError(f"expires_at {expires_at} must be after not_before {not_before}")


def _key(node_id: str) -> bytes:
    return public_from_node_id(node_id)


def _node(raw: bytes) -> str:
    return node_id_from_public(raw)


def admin_order(node_ids: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Admins sorted as the encoding needs them: by key bytes, not by node-id text."""
    return tuple(sorted(set(node_ids), key=_key))


def _check_admins(what: str, value: object) -> tuple[str, ...]:
    admins = _check_type(what, value, tuple)
    if not 1 <= len(admins) <= MAX_ADMINS:
        raise ValueError(f"a mesh has 1 to {MAX_ADMINS} admins, got {len(admins)}")
    for admin in admins:
        _check_node_id(what, admin)
    if admin_order(admins) != admins:
        raise ValueError(f"{what} must be sorted by key bytes, without duplicates")
    return admins


# --- field kinds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec(Generic[T]):
    """One kind of field: its check, its canonical writer and reader, its JSON spelling."""

    check: Callable[[str, Any], T]  # (field name, value) -> the value, or ValueError
    write: Callable[[Writer, T], None]
    read: Callable[[Reader, str], T]  # (reader, field name) -> the value
    to_json: Callable[[T], object]
    from_json: Callable[[JsonFields, str], T]  # (fields, key) -> the value


def _same(value: T) -> T:
    return value


def _fixed(
    length: int, to_json: Callable[[bytes], str], from_json: Callable[[JsonFields, str], bytes]
) -> Codec[bytes]:
    return Codec(
        lambda what, value: _check_bytes(what, value, length),
        lambda writer, value: writer.fixed(value, length),
        lambda reader, name: reader.fixed(name, length),
        to_json,
        from_json,
    )


def hex_bytes(length: int) -> Codec[bytes]:
    """Exactly ``length`` bytes, hex in JSON (a mesh id, a signature, a digest)."""
    return _fixed(length, bytes.hex, lambda fields, key: fields.hex(key, length))


def _ip(
    kind: type[T],
    write: Callable[[Writer, T], None],
    read: Callable[[Reader, str], T],
    from_json: Callable[[JsonFields, str], T],
) -> Codec[T]:
    return Codec(lambda what, value: _check_type(what, value, kind), write, read, str, from_json)


def text(min_bytes: int, max_bytes: int) -> Codec[str]:
    """UTF-8 text of ``min_bytes``..``max_bytes`` octets (check_text's rules)."""

    def check(what: str, value: Any) -> str:
        try:
            check_text(value, min_bytes, max_bytes)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        return str(value)

    return Codec(
        check,
        lambda writer, value: writer.text(value, min_bytes, max_bytes),
        lambda reader, name: reader.text(name, min_bytes, max_bytes),
        _same,
        JsonFields.string,
    )


U64 = Codec(_check_u64, Writer.u64, Reader.u64, _same, JsonFields.integer)
U8 = Codec(_check_u8, Writer.u8, Reader.u8, _same, JsonFields.integer)
BOOL = Codec(
    lambda what, value: _check_type(what, value, bool),
    lambda writer, value: writer.u8(int(value)),
    lambda reader, name: _bool(reader.u8(name)),
    _same,
    JsonFields.boolean,
)
MESH_ID = hex_bytes(MESH_ID_LENGTH)
SIGNATURE = hex_bytes(SIGNATURE_LENGTH)
WIREGUARD_KEY = _fixed(KEY_LENGTH, encode_key, JsonFields.wireguard_key)
NODE_ID = Codec(
    _check_node_id,
    lambda writer, value: writer.fixed(_key(value), KEY_LENGTH),
    lambda reader, name: _node(reader.fixed(name, KEY_LENGTH)),
    _same,
    JsonFields.node_id,
)
NAME = text(1, NAME_MAX_BYTES)
ADMINS = Codec(
    _check_admins,
    lambda writer, value: writer.fixed_list([_key(admin) for admin in value], KEY_LENGTH),
    lambda reader, name: tuple(
        _node(k) for k in reader.fixed_list(name, KEY_LENGTH, 1, MAX_ADMINS)
    ),
    list,
    JsonFields.node_ids,
)
IPV4 = _ip(ipaddress.IPv4Address, Writer.ipv4, Reader.ipv4, JsonFields.ipv4)
IPV6 = _ip(ipaddress.IPv6Address, Writer.ipv6, Reader.ipv6, JsonFields.ipv6)
IPV4_NET = _ip(ipaddress.IPv4Network, Writer.ipv4net, Reader.ipv4net, JsonFields.ipv4net)
IPV6_NET = _ip(ipaddress.IPv6Network, Writer.ipv6net, Reader.ipv6net, JsonFields.ipv6net)

Field = tuple[str, Codec[Any]]


@functools.lru_cache(maxsize=4096)
def signature_good(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``message`` is ``public``'s (Ed25519). Remembered for the
    last 4,096 asked: a record held is judged again and again (a proposal as it grows and
    on every status, a definition as each neighbour sends it), the same bytes each time."""
    try:
        VerifyKey(public).verify(message, signature)
    except CryptoError:
        return False
    return True


def _since(cls: type[SignedMessage], name: str) -> int:
    return cls.SINCE[name][0] if name in cls.SINCE else ENCODING_VERSION


class SignedMessage:
    """Checking, encoding, decoding, JSON, signing and signature checking for every record,
    driven by FIELDS: (name, Codec) from the subclass's annotations, the signature last."""

    TYPE: ClassVar[MessageType]
    DOMAIN: ClassVar[bytes]
    JSON_TYPE: ClassVar[str]
    FIELDS: ClassVar[tuple[Field, ...]]
    JSON_KEYS: ClassVar[tuple[str, ...]]  # in field order, without type, version, signature
    # Fields added after the first encoding: name -> (the encoding version that brought it,
    # its default). A record takes the latest version whose fields it uses (a value not the
    # default) and is written with that version's fields, so records that use none keep
    # their bytes (and older nodes still read them); JSON has the same fields.
    SINCE: ClassVar[Mapping[str, tuple[int, object]]] = {}
    VERSIONS: ClassVar[tuple[int, ...]]
    issuer: str
    signature: bytes

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = get_type_hints(cls, include_extras=True)
        cls.FIELDS = tuple(
            (name, hints[name].__metadata__[0])
            for name in cls.__dict__.get("__annotations__", {})
            if get_origin(hints[name]) is Annotated
        )
        if [name for name, _ in cls.FIELDS][-1:] != ["signature"]:
            raise TypeError(f"{cls.__name__}: the last field must be the signature")
        if {"type", "version"} & {name for name, _ in cls.FIELDS}:
            raise TypeError(f"{cls.__name__}: type and version name the record's in JSON")
        cls.JSON_KEYS = tuple(name for name, _ in cls.FIELDS[:-1])
        cls.VERSIONS = tuple(
            range(ENCODING_VERSION, max(_since(cls, n) for n in cls.JSON_KEYS) + 1)
        )

    def __post_init__(self) -> None:
        for name, codec in self.FIELDS:
            object.__setattr__(self, name, codec.check(name, getattr(self, name)))
        self._check()

    def _check(self) -> None:
        """Rules across fields, after each field's own check; for subclasses to extend."""

    @property
    def encoding_version(self) -> int:
        """The encoding version: the latest that brought a field this record uses."""
        return max(
            (
                since
                for name, (since, default) in self.SINCE.items()
                if getattr(self, name) != default
            ),
            default=ENCODING_VERSION,
        )

    @classmethod
    def _fields(cls, version: int) -> tuple[Field, ...]:
        return tuple(f for f in cls.FIELDS if _since(cls, f[0]) <= version)

    def _canonical(self, fields: tuple[Field, ...]) -> bytes:
        writer = Writer(self.TYPE, self.encoding_version)
        for name, codec in fields:
            codec.write(writer, getattr(self, name))
        return writer.getvalue()

    def body_bytes(self) -> bytes:
        return self._canonical(self._fields(self.encoding_version)[:-1])

    def signed_bytes(self) -> bytes:
        """What the signature is over: the domain, then the encoding up to the signature."""
        return self.DOMAIN + self.body_bytes()

    def encode(self) -> bytes:
        return self._canonical(self._fields(self.encoding_version))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse canonical bytes; MembershipError(malformed) for anything else. The
        signature is not checked here (verify_signature, or the verify functions)."""
        try:
            reader = Reader(data, cls.TYPE, cls.VERSIONS)
            fields = cls._fields(reader.version)
            message = cls(**{name: codec.read(reader, name) for name, codec in fields})
            reader.end()
            if message.encoding_version != reader.version:  # a later version spelling only defaults
                raise DecodeError(
                    f"version {reader.version} for a version {message.encoding_version} record"
                )
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
        public = public_from_node_id(self.issuer)
        if not signature_good(public, self.signed_bytes(), self.signature):
            raise MembershipError(
                Reason.BAD_SIGNATURE, f"{self.JSON_TYPE}: signature does not verify"
            )

    def to_json(self) -> dict[str, object]:
        return {
            "type": self.JSON_TYPE,
            "version": JSON_VERSION,
            **{
                name: codec.to_json(getattr(self, name))
                for name, codec in self._fields(self.encoding_version)
            },
        }

    @classmethod
    def from_json(cls, obj: object) -> Self:
        later = [name for name in cls.SINCE if isinstance(obj, Mapping) and name in obj]
        present = tuple(n for n in cls.JSON_KEYS if n not in cls.SINCE or n in later)
        fields = JsonFields(obj, cls.JSON_TYPE, ("type", "version", *present, "signature"))
        fields.constant("type", cls.JSON_TYPE)
        fields.constant("version", JSON_VERSION)
        try:
            message = cls(
                **{
                    name: codec.from_json(fields, name)
                    for name, codec in cls.FIELDS
                    if name in present or name == "signature"
                }
            )
            wanted = [n for n, _ in cls._fields(message.encoding_version) if n in cls.SINCE]
            if sorted(later) != sorted(wanted):  # one JSON form per record, as in bytes
                raise ValueError(
                    f"encoding version {message.encoding_version} has {wanted or 'none'} of "
                    f"{sorted(cls.SINCE)}, not {later}"
                )
            return message
        except ValueError as exc:
            raise MembershipError(Reason.MALFORMED, f"{cls.JSON_TYPE}: {exc}") from None


@dataclass(frozen=True)
class MeshDefinition(SignedMessage):
    """What a mesh is; signed by one of its own admins (the verifier pins that key).

    ``threshold`` (encoding version 2; absent, version 1, when 1) is how many of its admins
    must sign the definition that follows it (meshd.core.membership.rotation) and each
    revocation (meshd.core.membership.revocations): the issuer and others' ``Cosigned``
    signatures. A mesh whose definition says 1 is governed as before: any one admin
    changes it. ``emergency_threshold`` (version 2; 0, absent: none) is how many suffice
    for an emergency revocation of a node (``Revocation.emergency``), shown as such."""

    TYPE: ClassVar[MessageType] = MessageType.MESH_DEFINITION
    DOMAIN: ClassVar[bytes] = b"meshd-mesh-v1\0"
    JSON_TYPE: ClassVar[str] = "mesh_definition"
    SINCE: ClassVar[Mapping[str, tuple[int, object]]] = {
        "threshold": (2, 1),
        "emergency_threshold": (2, 0),
    }

    mesh_id: Annotated[bytes, MESH_ID]
    name: Annotated[str, NAME]
    ipv4_prefix: Annotated[ipaddress.IPv4Network, IPV4_NET]
    ipv6_prefix: Annotated[ipaddress.IPv6Network, IPV6_NET]
    admins: Annotated[tuple[str, ...], ADMINS]  # node ids, sorted by key bytes, no duplicates
    serial: Annotated[int, U64]  # a newer definition of the same mesh has a higher serial
    issued_at: Annotated[int, U64]
    threshold: Annotated[int, U8] = field(default=1, kw_only=True)
    emergency_threshold: Annotated[int, U8] = field(default=0, kw_only=True)
    issuer: Annotated[str, NODE_ID]
    signature: Annotated[bytes, SIGNATURE]

    def _check(self) -> None:
        if self.ipv4_prefix.prefixlen > IPV4_PREFIX_MAX_LENGTH:
            raise ValueError(f"ipv4_prefix must be /{IPV4_PREFIX_MAX_LENGTH} or shorter")
        if self.ipv6_prefix.prefixlen > IPV6_PREFIX_MAX_LENGTH:
            raise ValueError(f"ipv6_prefix must be /{IPV6_PREFIX_MAX_LENGTH} or shorter")
        if self.issuer not in self.admins:
            raise ValueError("a mesh definition is signed by one of its admins")
        if not 1 <= self.threshold <= len(self.admins):
            raise ValueError(f"threshold {self.threshold} is not 1 to {len(self.admins)} admins")
        if self.emergency_threshold > self.threshold:
            raise ValueError("the emergency threshold is above the threshold")


@dataclass(frozen=True)
class MembershipCertificate(SignedMessage):
    """A node's membership: valid over [not_before, expires_at), Unix seconds."""

    TYPE: ClassVar[MessageType] = MessageType.MEMBERSHIP_CERTIFICATE
    DOMAIN: ClassVar[bytes] = b"meshd-cert-v1\0"
    JSON_TYPE: ClassVar[str] = "membership_certificate"

    mesh_id: Annotated[bytes, MESH_ID]
    node_id: Annotated[str, NODE_ID]
    name: Annotated[str, NAME]
    wireguard_public: Annotated[bytes, WIREGUARD_KEY]
    mesh_ipv4: Annotated[ipaddress.IPv4Address, IPV4]
    mesh_ipv6: Annotated[ipaddress.IPv6Address, IPV6]
    not_before: Annotated[int, U64]
    expires_at: Annotated[int, U64]
    issuer: Annotated[str, NODE_ID]  # an admin, or a delegate with a membership delegation
    serial: Annotated[int, U64]  # unique per issuer; (issuer, serial) names it in revocations
    signature: Annotated[bytes, SIGNATURE]

    def _check(self) -> None:
        _check_window(self.not_before, self.expires_at)


class Scope(enum.IntFlag):
    """What a delegation allows. Bits; any other bit is refused."""

    INVITE = 0x01  # sign invites (one-time join tokens)
    MEMBERSHIP = 0x02  # sign membership certificates, chained: cert <- delegation <- admin


SCOPE_ALL = Scope.INVITE | Scope.MEMBERSHIP
_SCOPE_NAMES: tuple[tuple[Scope, str], ...] = (
    (Scope.INVITE, "invite"),
    (Scope.MEMBERSHIP, "membership"),
)


def _check_scope(what: str, value: object) -> Scope:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value == 0
        or value & ~int(SCOPE_ALL)
    ):
        raise ValueError(f"{what} must be a non-empty combination of {list(Scope)}")
    return Scope(value)


def _scope_from_json(fields: JsonFields, key: str) -> Scope:
    names = fields.strings(key)
    known = [name for _, name in _SCOPE_NAMES]
    if list(names) != [name for name in known if name in names]:
        raise ValueError(f"{key} must list names from {known}, in that order, once each")
    scope = Scope(0)
    for flag, name in _SCOPE_NAMES:
        if name in names:
            scope |= flag
    return scope


SCOPE = Codec(
    _check_scope,
    lambda writer, value: writer.u8(int(value)),
    lambda reader, name: Scope(reader.u8(name)),
    lambda scope: [name for flag, name in _SCOPE_NAMES if flag in scope],
    _scope_from_json,
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

    mesh_id: Annotated[bytes, MESH_ID]
    delegate: Annotated[str, NODE_ID]
    scope: Annotated[Scope, SCOPE]
    ipv4_pool: Annotated[ipaddress.IPv4Network, IPV4_NET]
    not_before: Annotated[int, U64]
    expires_at: Annotated[int, U64]
    issuer: Annotated[str, NODE_ID]  # an admin
    serial: Annotated[int, U64]
    signature: Annotated[bytes, SIGNATURE]

    def _check(self) -> None:
        _check_window(self.not_before, self.expires_at)


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
        if not isinstance(kind_name, str) or kind_name not in kinds:  # a list is unhashable
            raise ValueError(f"target.kind must be one of {sorted(kinds)}")
        kind = kinds[kind_name]
        if kind is RevocationKind.NODE:
            node = outer.nested("target", "target", ("kind", "node_id"))
            return cls(kind, node.node_id("node_id"))
        cert = outer.nested("target", "target", ("kind", "issuer", "serial"))
        return cls(kind, cert.node_id("issuer"), cert.integer("serial"))


def _write_target(writer: Writer, target: RevocationTarget) -> None:
    """Three canonical fields: kind (u8), key, serial."""
    writer.u8(int(target.kind))
    NODE_ID.write(writer, target.key)
    writer.u64(target.serial)


def _read_target(reader: Reader, name: str) -> RevocationTarget:
    kind = reader.u8(f"{name}_kind")
    key = NODE_ID.read(reader, f"{name}_key")
    serial = reader.u64(f"{name}_serial")
    return RevocationTarget(kind, key, serial)  # type: ignore[arg-type]  # checked there


TARGET = Codec(
    lambda what, value: _check_type(what, value, RevocationTarget),
    _write_target,
    _read_target,
    RevocationTarget.to_json,
    lambda fields, key: RevocationTarget.from_json_fields(fields),  # key is always "target"
)


@dataclass(frozen=True)
class Revocation(SignedMessage):
    """An admin withdraws ``target`` from ``revoked_at`` on (Unix seconds, no skew: a
    revocation is never applied late). Only admins may revoke (see revocations.py).
    ``emergency`` (encoding version 2, present only when true): a node's revocation that
    takes the definition's ``emergency_threshold`` of signatures, not its ``threshold``."""

    TYPE: ClassVar[MessageType] = MessageType.REVOCATION
    DOMAIN: ClassVar[bytes] = b"meshd-revocation-v1\0"
    JSON_TYPE: ClassVar[str] = "revocation"
    SINCE: ClassVar[Mapping[str, tuple[int, object]]] = {"emergency": (2, False)}

    mesh_id: Annotated[bytes, MESH_ID]
    target: Annotated[RevocationTarget, TARGET]
    revoked_at: Annotated[int, U64]
    emergency: Annotated[bool, BOOL] = field(default=False, kw_only=True)
    issuer: Annotated[str, NODE_ID]
    signature: Annotated[bytes, SIGNATURE]

    def _check(self) -> None:
        if self.emergency and self.target.kind is not RevocationKind.NODE:
            raise ValueError("only a node's revocation may be an emergency")


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
