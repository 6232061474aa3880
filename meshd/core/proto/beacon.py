"""The discovery beacon: one signed UDP broadcast that says "meshd node X of mesh M listens
for QUIC on port P" on a shared LAN segment (pure: no sockets, no clocks).

Wire layout (version 1, 128 bytes, integers big-endian):

    offset size  field
         0    4  magic         b"MSHB"
         4    1  version       1
         5    1  flags         bit 0: SOLICIT (the sender is starting, please answer soon);
                               the other bits are zero
         6   16  mesh_id       MeshDefinition.mesh_id
        22   32  node key      Ed25519 public key (the node id, decoded)
        54    2  quic_port     1..65535
        56    8  timestamp_ms  sender's wall clock, ms since the Unix epoch
        64   64  signature     Ed25519 over DOMAIN + bytes 0..63

The signature is by the key the beacon names: it proves the sender holds that node id, not
that the node is a member of the mesh (the QUIC handshake checks that). The source address
is not inside: the receiver takes it from the datagram.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, replace
from typing import Any, Self

from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from meshd.core.errors import BadInput
from meshd.core.keys import node_id_from_public, public_from_node_id

MAGIC = b"MSHB"
VERSION = 1
# Signed with the identity key that also signs certificates and receipts: a domain of its
# own (as meshd.core.membership's DOMAINs) keeps a beacon from ever being another signed record.
DOMAIN = b"meshd-beacon-v1\0"
MESH_ID_LENGTH = 16  # meshd.core.membership.messages.MESH_ID_LENGTH
KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
FLAG_SOLICIT = 0x01
KNOWN_FLAGS = FLAG_SOLICIT
U64_MAX = 2**64 - 1
NO_SIGNATURE = bytes(SIGNATURE_LENGTH)

_BODY = struct.Struct(f">4sBB{MESH_ID_LENGTH}s{KEY_LENGTH}sHQ")
BODY_SIZE = _BODY.size  # 64
BEACON_SIZE = BODY_SIZE + SIGNATURE_LENGTH  # 128
JSON_TYPE = "beacon"


class BeaconReason(enum.StrEnum):
    TRUNCATED = "truncated"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    TRAILING_BYTES = "trailing_bytes"
    BAD_FLAGS = "bad_flags"  # a flag bit this version does not define
    BAD_PORT = "bad_port"  # QUIC port 0
    BAD_NODE_ID = "bad_node_id"  # the key is not a usable Ed25519 point
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"  # the JSON form: missing, extra or mistyped fields


class BeaconError(BadInput):
    """A beacon from the network (or its JSON form) was refused; ``reason`` says why."""

    reason: BeaconReason


@dataclass(frozen=True)
class Beacon:
    """One beacon. Building one with impossible fields is our own misuse: ValueError."""

    mesh_id: bytes
    node_id: str
    quic_port: int
    timestamp_ms: int
    solicit: bool = False
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        if not isinstance(self.mesh_id, bytes) or len(self.mesh_id) != MESH_ID_LENGTH:
            raise ValueError(f"mesh_id must be {MESH_ID_LENGTH} bytes")
        public_from_node_id(self.node_id)  # ValueError naming the problem
        if not _is_int(self.quic_port) or not 1 <= self.quic_port <= 0xFFFF:
            raise ValueError(f"quic_port must be in 1..65535, got {self.quic_port!r}")
        if not _is_int(self.timestamp_ms) or not 0 <= self.timestamp_ms <= U64_MAX:
            raise ValueError(f"timestamp_ms must be in 0..2**64-1, got {self.timestamp_ms!r}")
        if not isinstance(self.solicit, bool):
            raise ValueError("solicit must be a bool")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_LENGTH:
            raise ValueError(f"signature must be {SIGNATURE_LENGTH} bytes")

    @property
    def flags(self) -> int:
        return FLAG_SOLICIT if self.solicit else 0

    def body_bytes(self) -> bytes:
        """The encoding up to (not including) the signature."""
        return _BODY.pack(
            MAGIC,
            VERSION,
            self.flags,
            self.mesh_id,
            public_from_node_id(self.node_id),
            self.quic_port,
            self.timestamp_ms,
        )

    def signed_bytes(self) -> bytes:
        return DOMAIN + self.body_bytes()

    def encode(self) -> bytes:
        return self.body_bytes() + self.signature

    def sign(self, signing_key: SigningKey) -> Self:
        """The same beacon signed by ``signing_key``, which must be the node's own key."""
        signer = node_id_from_public(bytes(signing_key.verify_key))
        if signer != self.node_id:
            raise ValueError(f"signing key {signer} is not the beacon's node {self.node_id}")
        signature = bytes(signing_key.sign(self.signed_bytes()).signature)
        return replace(self, signature=signature)

    def verify_signature(self) -> None:
        """BeaconError(bad_signature) unless the named node signed exactly these fields."""
        try:
            VerifyKey(public_from_node_id(self.node_id)).verify(self.signed_bytes(), self.signature)
        except CryptoError:
            raise BeaconError(
                BeaconReason.BAD_SIGNATURE, "signature does not verify for the node id"
            ) from None

    def to_json(self) -> dict[str, object]:
        return {
            "type": JSON_TYPE,
            "version": VERSION,
            "mesh_id": self.mesh_id.hex(),
            "node_id": self.node_id,
            "quic_port": self.quic_port,
            "timestamp_ms": self.timestamp_ms,
            "solicit": self.solicit,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Beacon:
        """The beacon from its JSON form; BeaconError(malformed) if a field is wrong. The
        signature is not checked here (verify_signature)."""
        expected = {
            "type",
            "version",
            "mesh_id",
            "node_id",
            "quic_port",
            "timestamp_ms",
            "solicit",
            "signature",
        }
        if not isinstance(obj, dict) or set(obj) != expected:
            raise BeaconError(BeaconReason.MALFORMED, f"expected exactly the keys {expected}")
        if obj["type"] != JSON_TYPE or obj["version"] != VERSION:
            raise BeaconError(BeaconReason.MALFORMED, f"not a {JSON_TYPE} version {VERSION}")
        try:
            return cls(
                mesh_id=_hex(obj["mesh_id"]),
                node_id=obj["node_id"],
                quic_port=obj["quic_port"],
                timestamp_ms=obj["timestamp_ms"],
                solicit=obj["solicit"],
                signature=_hex(obj["signature"]),
            )
        except (ValueError, TypeError) as exc:
            raise BeaconError(BeaconReason.MALFORMED, str(exc)) from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hex(value: object) -> bytes:
    if not isinstance(value, str) or value != value.lower():
        raise ValueError("byte strings are lower-case hex")
    return bytes.fromhex(value)


def make_beacon(
    signing_key: SigningKey,
    *,
    mesh_id: bytes,
    quic_port: int,
    timestamp_ms: int,
    solicit: bool = False,
) -> Beacon:
    """A beacon for the node whose identity key is ``signing_key``, signed."""
    node_id = node_id_from_public(bytes(signing_key.verify_key))
    return Beacon(mesh_id, node_id, quic_port, timestamp_ms, solicit).sign(signing_key)


def parse_beacon(data: bytes | bytearray | memoryview) -> Beacon:
    """The beacon in ``data``, checked for form but NOT for its signature: for a receiver
    that drops cheap rejects (another mesh, its own beacons) before paying for a verify.
    Anything else than canonical bytes is BeaconError."""
    data = bytes(data)  # a bytearray or memoryview from a socket: slice to bytes below
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise BeaconError(BeaconReason.TRUNCATED, f"{len(data)} bytes, shorter than the magic")
        raise BeaconError(BeaconReason.BAD_MAGIC, f"starts with {data[:4].hex()}, not a beacon")
    if len(data) <= len(MAGIC):
        raise BeaconError(BeaconReason.TRUNCATED, "no version byte")
    # The version before the length: another version may well have another size.
    if data[len(MAGIC)] != VERSION:
        raise BeaconError(BeaconReason.BAD_VERSION, f"version {data[len(MAGIC)]}, want {VERSION}")
    if len(data) < BEACON_SIZE:
        raise BeaconError(BeaconReason.TRUNCATED, f"{len(data)} bytes, want {BEACON_SIZE}")
    if len(data) > BEACON_SIZE:
        raise BeaconError(
            BeaconReason.TRAILING_BYTES, f"{len(data) - BEACON_SIZE} bytes after the beacon"
        )
    _, _, flags, mesh_id, key, quic_port, timestamp_ms = _BODY.unpack_from(data)
    if flags & ~KNOWN_FLAGS:
        raise BeaconError(BeaconReason.BAD_FLAGS, f"unknown flag bits {flags & ~KNOWN_FLAGS:#04x}")
    if quic_port == 0:
        raise BeaconError(BeaconReason.BAD_PORT, "QUIC port 0")
    # libsodium refuses to verify with such keys anyway; saying so is clearer than
    # "bad_signature" (an all-zero, small-order or off-curve key).
    if not crypto_core_ed25519_is_valid_point(key):
        raise BeaconError(BeaconReason.BAD_NODE_ID, "the node key is not a valid Ed25519 point")
    return Beacon(
        mesh_id=mesh_id,
        node_id=node_id_from_public(key),
        quic_port=quic_port,
        timestamp_ms=timestamp_ms,
        solicit=bool(flags & FLAG_SOLICIT),
        signature=data[BODY_SIZE:],
    )


def decode_beacon(data: bytes | bytearray | memoryview) -> Beacon:
    """The beacon in ``data`` with its signature verified; BeaconError for anything else."""
    beacon = parse_beacon(data)
    beacon.verify_signature()
    return beacon
