"""The signed invite: what a joining node needs to find the mesh and to be let in (pure).

Canonical bytes (meshd.core.membership.canonical, type tag INVITE, version 1); the signature is
the issuer's Ed25519 over ``DOMAIN + fields 1..13 as encoded``::

    field  name         kind                   bytes
      1    mesh_id      fixed(16)              the MeshDefinition's mesh id
      2    ipv4_prefix  ipv4net                the mesh's prefixes, for the joiner's config
      3    ipv6_prefix  ipv6net
      4    admins       list of fixed(32)      the admin keys the joiner pins (1..16, sorted)
      5    delegation   list of fixed(203)     none when an admin issued it, else the
                                               issuer's DelegationCertificate, encoded
      6    bootstrap    list of fixed(50)      1..8 endpoints, sorted: node key (32), IPv6
                                               address (16, IPv4 as ::ffff:a.b.c.d), port
      7    name         text 1..64             the invited household's node name
      8    mesh_ipv4    ipv4                   the address its certificate will carry
      9    issued_at    u64                    Unix seconds
     10    expires_at   u64                    Unix seconds; redeemable before this
     11    invite_id    fixed(16)              random; the issuer's store keys on it
     12    invite_key   fixed(32)              Ed25519 public key of the one-time secret
     13    issuer       fixed(32)              an admin, or a delegate with invite scope
     14    signature    fixed(64)

The secret itself (the 32-byte seed of ``invite_key``) is not in the signed bytes: it
travels beside them in the token (meshd.core.invites.token), so that the signed invite can be
shown, logged and forwarded without giving the right to join. In JSON, keys are node ids,
byte strings lower-case hex, the delegation its own JSON form (or null), each endpoint
``{"node_id", "address": "HOST:PORT"}`` (IPv6 hosts in brackets).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from meshd.core.endpoints import parse_endpoint
from meshd.core.keys import node_id_from_public, public_from_node_id
from meshd.core.membership import DelegationCertificate
from meshd.core.membership._json import JsonFields
from meshd.core.membership.canonical import MessageType, Reader, Writer
from meshd.core.membership.messages import (
    ADMINS,
    IPV4,
    IPV4_NET,
    IPV6_NET,
    KEY_LENGTH,
    MESH_ID,
    NAME,
    NODE_ID,
    SIGNATURE,
    U64,
    Codec,
    SignedMessage,
)

MAX_BOOTSTRAP = 8
ENDPOINT_LENGTH = KEY_LENGTH + 16 + 2
DELEGATION_LENGTH = 203  # a DelegationCertificate's encoding: every field has a fixed size
INVITE_ID_LENGTH = 16
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class BootstrapEndpoint:
    """Where a bootstrap node's QUIC control port answers on the underlay."""

    node_id: str
    host: IPAddress
    port: int

    def __post_init__(self) -> None:
        public_from_node_id(self.node_id)  # ValueError if not a node id
        if not isinstance(self.host, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise ValueError(f"host must be an IP address, got {type(self.host).__name__}")
        if isinstance(self.host, ipaddress.IPv6Address) and self.host in _IPV4_MAPPED:
            raise ValueError(f"{self.host}: give an IPv4-mapped address as IPv4")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"port must be an integer, got {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")

    @classmethod
    def from_address(cls, node_id: str, address: str) -> BootstrapEndpoint:
        """From ``HOST:PORT`` or ``[V6]:PORT`` as the config spells it; ValueError if not."""
        host, port = parse_endpoint(address)
        return cls(node_id, ipaddress.ip_address(host), port)

    @property
    def address(self) -> str:
        if isinstance(self.host, ipaddress.IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def encode(self) -> bytes:
        host = self.host
        if isinstance(host, ipaddress.IPv4Address):
            host = ipaddress.IPv6Address(_IPV4_MAPPED.network_address.packed[:12] + host.packed)
        return public_from_node_id(self.node_id) + host.packed + self.port.to_bytes(2, "big")

    @classmethod
    def decode(cls, raw: bytes) -> BootstrapEndpoint:
        host = ipaddress.IPv6Address(raw[KEY_LENGTH : KEY_LENGTH + 16])
        mapped = host.ipv4_mapped
        return cls(
            node_id_from_public(raw[:KEY_LENGTH]),
            host if mapped is None else mapped,
            int.from_bytes(raw[KEY_LENGTH + 16 :], "big"),
        )


def bootstrap_order(
    endpoints: list[BootstrapEndpoint] | tuple[BootstrapEndpoint, ...],
) -> tuple[BootstrapEndpoint, ...]:
    """Endpoints as the encoding needs them: by their bytes, without duplicates."""
    return tuple(sorted(set(endpoints), key=BootstrapEndpoint.encode))


def _check_bootstrap(what: str, value: object) -> tuple[BootstrapEndpoint, ...]:
    if not isinstance(value, tuple) or not all(isinstance(e, BootstrapEndpoint) for e in value):
        raise ValueError(f"{what} must be a tuple of BootstrapEndpoint")
    if not 1 <= len(value) <= MAX_BOOTSTRAP:
        raise ValueError(f"{what}: 1 to {MAX_BOOTSTRAP} endpoints, got {len(value)}")
    if bootstrap_order(value) != value:
        raise ValueError(f"{what} must be sorted by their bytes, without duplicates")
    return value


def _bootstrap_from_json(fields: JsonFields, key: str) -> tuple[BootstrapEndpoint, ...]:
    items = fields.raw(key)
    if not isinstance(items, list):
        raise ValueError(f"{key} must be a list")
    endpoints = []
    for index, item in enumerate(items):
        entry = JsonFields(item, f"{key}[{index}]", ("node_id", "address"))
        endpoint = BootstrapEndpoint.from_address(entry.node_id("node_id"), entry.string("address"))
        if endpoint.address != entry.string("address"):  # one spelling per value
            raise ValueError(f"{key}[{index}].address: expected {endpoint.address}")
        endpoints.append(endpoint)
    return tuple(endpoints)


BOOTSTRAP = Codec(
    _check_bootstrap,
    lambda writer, value: writer.fixed_list([e.encode() for e in value], ENDPOINT_LENGTH),
    lambda reader, name: tuple(
        BootstrapEndpoint.decode(raw)
        for raw in reader.fixed_list(name, ENDPOINT_LENGTH, 1, MAX_BOOTSTRAP)
    ),
    lambda value: [{"node_id": e.node_id, "address": e.address} for e in value],
    _bootstrap_from_json,
)


def _check_delegation(what: str, value: object) -> DelegationCertificate | None:
    if value is not None and not isinstance(value, DelegationCertificate):
        raise ValueError(f"{what} must be a DelegationCertificate or None")
    return value


def _write_delegation(writer: Writer, value: DelegationCertificate | None) -> None:
    writer.fixed_list([] if value is None else [value.encode()], DELEGATION_LENGTH)


def _read_delegation(reader: Reader, name: str) -> DelegationCertificate | None:
    items = reader.fixed_list(name, DELEGATION_LENGTH, 0, 1)
    return DelegationCertificate.decode(items[0]) if items else None


def _delegation_from_json(fields: JsonFields, key: str) -> DelegationCertificate | None:
    raw = fields.raw(key)
    return None if raw is None else DelegationCertificate.from_json(raw)


DELEGATION = Codec(
    _check_delegation,
    _write_delegation,
    _read_delegation,
    lambda value: None if value is None else value.to_json(),
    _delegation_from_json,
)


def hex_bytes(length: int) -> Codec[bytes]:
    """Fixed-length bytes, lower-case hex in JSON."""

    def check(what: str, value: Any) -> bytes:
        if not isinstance(value, bytes) or len(value) != length:
            raise ValueError(f"{what} must be {length} bytes")
        return value

    return Codec(
        check,
        lambda writer, value: writer.fixed(value, length),
        lambda reader, name: reader.fixed(name, length),
        bytes.hex,
        lambda fields, key: fields.hex(key, length),
    )


@dataclass(frozen=True)
class Invite(SignedMessage):
    """A one-time, expiring invitation, signed by its issuer (layout in the module doc)."""

    TYPE: ClassVar[MessageType] = MessageType.INVITE
    DOMAIN: ClassVar[bytes] = b"meshd-invite-v1\0"
    JSON_TYPE: ClassVar[str] = "invite"

    mesh_id: Annotated[bytes, MESH_ID]
    ipv4_prefix: Annotated[ipaddress.IPv4Network, IPV4_NET]
    ipv6_prefix: Annotated[ipaddress.IPv6Network, IPV6_NET]
    admins: Annotated[tuple[str, ...], ADMINS]
    delegation: Annotated[DelegationCertificate | None, DELEGATION]
    bootstrap: Annotated[tuple[BootstrapEndpoint, ...], BOOTSTRAP]
    name: Annotated[str, NAME]
    mesh_ipv4: Annotated[ipaddress.IPv4Address, IPV4]
    issued_at: Annotated[int, U64]
    expires_at: Annotated[int, U64]
    invite_id: Annotated[bytes, hex_bytes(INVITE_ID_LENGTH)]
    invite_key: Annotated[bytes, hex_bytes(KEY_LENGTH)]
    issuer: Annotated[str, NODE_ID]
    signature: Annotated[bytes, SIGNATURE]

    def _check(self) -> None:
        if self.expires_at <= self.issued_at:
            raise ValueError(f"expires_at {self.expires_at} must be after {self.issued_at}")
        prefix = self.ipv4_prefix
        if self.mesh_ipv4 not in prefix or self.mesh_ipv4 in (
            prefix.network_address,
            prefix.broadcast_address,
        ):
            raise ValueError(f"mesh_ipv4 {self.mesh_ipv4} is not a host address in {prefix}")
        delegation = self.delegation
        if delegation is not None and (
            delegation.delegate != self.issuer or delegation.mesh_id != self.mesh_id
        ):
            raise ValueError("the delegation is not the issuer's for this mesh")
