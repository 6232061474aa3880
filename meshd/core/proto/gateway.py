"""The gateway advert: a sharing node's signed "you may leave the mesh through me, on these
terms", flooded over the neighbour sessions (pure: no sockets, no clocks).

Wire layout (version 1, 128 bytes, integers big-endian):

    offset size  field
         0    1  version         1
         1    1  flags           bit 0: AVAILABLE (uplink healthy; clear: withdrawn),
                                 bit 1: ACCEPTS_NEW (takes users it does not serve yet)
         2   16  mesh_id         MeshDefinition.mesh_id
        18   32  node key        the gateway's Ed25519 public key (its node id)
        50    4  mesh_ipv4       where the exit is reached across the mesh (Babel routes it)
        54    2  exit_port       the WireGuard port of its exit interface
        56    4  rate_cap_kbit   the most the mesh gets of its uplink (0: no cap)
        60    4  seqno           grows with every advert of this gateway; the newest wins
        64    8  issued_at       Unix seconds
        72    2  lifetime_s      forget it this long after issued_at unless refreshed
        74   54  (reserved, zero)
       128   64  signature       Ed25519 over DOMAIN + bytes 0..127

The advert is signed by the gateway's identity key, so a relaying neighbour cannot change
the terms; membership is checked separately (the gateway's certificate reaches the user
when it connects to the exit). A withdrawal is an advert with AVAILABLE clear and a newer
seqno. The whole record is 192 bytes and travels as one session message (kind GATEWAY).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass, replace
from typing import Any, Self

from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from meshd.core.errors import BadInput
from meshd.core.keys import node_id_from_public, public_from_node_id

VERSION = 1
DOMAIN = b"meshd-gateway-v1\0"  # a signing domain of its own (see meshd.core.proto.beacon)
MESH_ID_LENGTH = 16
SIGNATURE_LENGTH = 64
FLAG_AVAILABLE = 0x01
FLAG_ACCEPTS_NEW = 0x02
KNOWN_FLAGS = FLAG_AVAILABLE | FLAG_ACCEPTS_NEW
_BODY = struct.Struct(f">BB{MESH_ID_LENGTH}s32s4sHIIQH54s")
BODY_SIZE = _BODY.size  # 128
ADVERT_SIZE = BODY_SIZE + SIGNATURE_LENGTH  # 192
NO_SIGNATURE = bytes(SIGNATURE_LENGTH)


class GatewayReason(enum.StrEnum):
    BAD_LENGTH = "bad_length"
    BAD_VERSION = "bad_version"
    BAD_FLAGS = "bad_flags"
    BAD_PORT = "bad_port"
    BAD_NODE_ID = "bad_node_id"
    BAD_RESERVED = "bad_reserved"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"  # the JSON form


class GatewayError(BadInput):
    """An advert from a peer (or its JSON form) was refused; ``reason`` says why."""

    reason: GatewayReason


@dataclass(frozen=True)
class GatewayAdvert:
    """One advert. Building one with impossible fields is our own misuse: ValueError."""

    mesh_id: bytes
    node_id: str
    mesh_ipv4: ipaddress.IPv4Address
    exit_port: int
    seqno: int
    issued_at: int
    lifetime_s: int
    available: bool = True
    accepts_new: bool = True
    rate_cap_kbit: int = 0
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        if len(self.mesh_id) != MESH_ID_LENGTH:
            raise ValueError(f"mesh_id must be {MESH_ID_LENGTH} bytes")
        public_from_node_id(self.node_id)  # ValueError if not a node id
        if not isinstance(self.mesh_ipv4, ipaddress.IPv4Address):
            raise ValueError("mesh_ipv4 must be an IPv4Address")
        if not 1 <= self.exit_port <= 0xFFFF:
            raise ValueError("exit_port must be in 1..65535")
        for name, value, bits in (
            ("seqno", self.seqno, 32),
            ("issued_at", self.issued_at, 64),
            ("lifetime_s", self.lifetime_s, 16),
            ("rate_cap_kbit", self.rate_cap_kbit, 32),
        ):
            if not 0 <= value < 1 << bits:
                raise ValueError(f"{name} must fit in {bits} bits")
        if len(self.signature) != SIGNATURE_LENGTH:
            raise ValueError(f"signature must be {SIGNATURE_LENGTH} bytes")

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.lifetime_s

    def body(self) -> bytes:
        flags = (FLAG_AVAILABLE if self.available else 0) | (
            FLAG_ACCEPTS_NEW if self.accepts_new else 0
        )
        return _BODY.pack(
            VERSION,
            flags,
            self.mesh_id,
            public_from_node_id(self.node_id),
            self.mesh_ipv4.packed,
            self.exit_port,
            self.rate_cap_kbit,
            self.seqno,
            self.issued_at,
            self.lifetime_s,
            bytes(54),
        )

    def encode(self) -> bytes:
        return self.body() + self.signature

    def sign(self, key: SigningKey) -> Self:
        if node_id_from_public(bytes(key.verify_key)) != self.node_id:
            raise ValueError("an advert is signed by the gateway it names")
        return replace(self, signature=key.sign(DOMAIN + self.body()).signature)

    def verify_signature(self) -> None:
        try:
            VerifyKey(public_from_node_id(self.node_id)).verify(
                DOMAIN + self.body(), self.signature
            )
        except (CryptoError, ValueError):
            raise GatewayError(GatewayReason.BAD_SIGNATURE, "signature does not verify") from None

    def to_json(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "mesh_id": self.mesh_id.hex(),
            "node_id": self.node_id,
            "mesh_ipv4": str(self.mesh_ipv4),
            "exit_port": self.exit_port,
            "available": self.available,
            "accepts_new": self.accepts_new,
            "rate_cap_kbit": self.rate_cap_kbit,
            "seqno": self.seqno,
            "issued_at": self.issued_at,
            "lifetime_s": self.lifetime_s,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> GatewayAdvert:
        fields = {
            "version",
            "mesh_id",
            "node_id",
            "mesh_ipv4",
            "exit_port",
            "available",
            "accepts_new",
            "rate_cap_kbit",
            "seqno",
            "issued_at",
            "lifetime_s",
            "signature",
        }
        if not isinstance(obj, dict) or set(obj) != fields or obj["version"] != VERSION:
            raise GatewayError(GatewayReason.MALFORMED, f"expected exactly {sorted(fields)}")
        try:
            return cls(
                mesh_id=bytes.fromhex(obj["mesh_id"]),
                node_id=obj["node_id"],
                mesh_ipv4=ipaddress.IPv4Address(obj["mesh_ipv4"]),
                exit_port=_int(obj["exit_port"]),
                seqno=_int(obj["seqno"]),
                issued_at=_int(obj["issued_at"]),
                lifetime_s=_int(obj["lifetime_s"]),
                available=_bool(obj["available"]),
                accepts_new=_bool(obj["accepts_new"]),
                rate_cap_kbit=_int(obj["rate_cap_kbit"]),
                signature=bytes.fromhex(obj["signature"]),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise GatewayError(GatewayReason.MALFORMED, str(exc)) from None


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def make_advert(key: SigningKey, **fields: Any) -> GatewayAdvert:
    """A signed advert for the gateway holding ``key``."""
    node_id = node_id_from_public(bytes(key.verify_key))
    return GatewayAdvert(node_id=node_id, **fields).sign(key)


def decode_advert(data: bytes) -> GatewayAdvert:
    """Parse and check the signature; GatewayError with the reason for anything else."""
    if len(data) != ADVERT_SIZE:
        raise GatewayError(GatewayReason.BAD_LENGTH, f"{len(data)} bytes, expected {ADVERT_SIZE}")
    (
        version,
        flags,
        mesh_id,
        key,
        ipv4,
        exit_port,
        rate_cap,
        seqno,
        issued_at,
        lifetime,
        reserved,
    ) = _BODY.unpack(data[:BODY_SIZE])
    if version != VERSION:
        raise GatewayError(GatewayReason.BAD_VERSION, f"version {version}")
    if flags & ~KNOWN_FLAGS:
        raise GatewayError(GatewayReason.BAD_FLAGS, f"flags {flags:#x}")
    if exit_port == 0:
        raise GatewayError(GatewayReason.BAD_PORT, "exit port 0")
    if any(reserved):
        raise GatewayError(GatewayReason.BAD_RESERVED, "reserved bytes are not zero")
    if not crypto_core_ed25519_is_valid_point(key):
        raise GatewayError(GatewayReason.BAD_NODE_ID, "not an Ed25519 key")
    node_id = node_id_from_public(key)
    advert = GatewayAdvert(
        mesh_id=mesh_id,
        node_id=node_id,
        mesh_ipv4=ipaddress.IPv4Address(ipv4),
        exit_port=exit_port,
        seqno=seqno,
        issued_at=issued_at,
        lifetime_s=lifetime,
        available=bool(flags & FLAG_AVAILABLE),
        accepts_new=bool(flags & FLAG_ACCEPTS_NEW),
        rate_cap_kbit=rate_cap,
        signature=data[BODY_SIZE:],
    )
    advert.verify_signature()
    return advert
