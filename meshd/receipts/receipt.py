"""The receipt: a consumer's signature on the cumulative bytes a neighbour relayed for it.

The provider P relays traffic for the consumer C and counts it; C checks the count against
its own and signs a Receipt. Totals are cumulative within an epoch (chosen by P for the
pair, kept across restarts), so the latest receipt supersedes the earlier ones and a lost
one loses nothing. ``seq`` orders the receipts of one epoch.

Canonical bytes (meshd.membership.canonical, type tag RECEIPT, version 1), 224 bytes::

    field  name               kind        bytes
      1    mesh_id            fixed(16)   the MeshDefinition's mesh id
      2    provider           fixed(32)   P's Ed25519 key (node id)
      3    consumer           fixed(32)   C's Ed25519 key (node id), the signer
      4    epoch              u64
      5    seq                u64
      6    relayed_for_bytes  u64         cumulative, in the epoch
      7    relayed_to_bytes   u64         cumulative, in the epoch
      8    not_before         u64         Unix seconds: C signed it within
      9    not_after          u64         [not_before, not_after]
     10    signature          fixed(64)   C's Ed25519 over DOMAIN + fields 1..9 as encoded

In Python and JSON the keys are node ids, mesh_id and signature lower-case hex, the rest
integers: the same spellings as the membership records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Self

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from meshd.identity import node_id_from_public, public_from_node_id
from meshd.membership import MembershipError
from meshd.membership._json import JsonFields
from meshd.membership.canonical import DecodeError, MessageType, Reader, Writer
from meshd.membership.messages import KEY_LENGTH, MESH_ID, NODE_ID, SIGNATURE, U64, Codec
from meshd.receipts.errors import ReceiptError, ReceiptReason

# Its own signing domain, so that no certificate or advert signature verifies as a receipt.
DOMAIN = b"meshd-receipt-v1\0"
SIGNATURE_LENGTH = 64
NO_SIGNATURE = bytes(SIGNATURE_LENGTH)
RECEIPT_LENGTH = 224


@lru_cache(maxsize=4096)
def _public_key(node_id: str) -> bytes:
    """A node id's key bytes. Cached: an export names a few nodes on very many lines, and
    verifying one is meant to cost little more than its signature check."""
    return public_from_node_id(node_id)


@lru_cache(maxsize=4096)
def _verify_key(node_id: str) -> VerifyKey:
    return VerifyKey(_public_key(node_id))


def _check_node_id(what: str, value: Any) -> str:
    try:
        _public_key(value)
    except (ValueError, TypeError) as exc:  # TypeError: not a string (or not hashable)
        raise ValueError(f"{what}: {exc}") from None
    return value  # a str: only a str decodes as a node id


# membership's NODE_ID, with the key bytes cached; the same bytes and spellings.
NODE_KEY = Codec(
    _check_node_id,
    lambda writer, value: writer.fixed(_public_key(value), KEY_LENGTH),
    NODE_ID.read,
    NODE_ID.to_json,
    JsonFields.string,  # checked as the dataclass is built
)

# (name, kind) in canonical order; the signature is last and not signed over.
FIELDS: tuple[tuple[str, Codec[Any]], ...] = (
    ("mesh_id", MESH_ID),
    ("provider", NODE_KEY),
    ("consumer", NODE_KEY),
    ("epoch", U64),
    ("seq", U64),
    ("relayed_for_bytes", U64),
    ("relayed_to_bytes", U64),
    ("not_before", U64),
    ("not_after", U64),
    ("signature", SIGNATURE),
)
JSON_KEYS = tuple(name for name, _ in FIELDS)
_SIGNED_FIELDS = FIELDS[:-1]


@dataclass(frozen=True)
class Receipt:
    """One receipt. Building one with impossible fields is our own misuse: ValueError.
    ``not_before <= not_after`` is left to the verifiers (a reason code of its own) and to
    ``sign``, which refuses to sign such a window."""

    mesh_id: bytes
    provider: str
    consumer: str
    epoch: int
    seq: int
    relayed_for_bytes: int
    relayed_to_bytes: int
    not_before: int
    not_after: int
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        for name, codec in FIELDS:
            codec.check(name, getattr(self, name))
        if self.provider == self.consumer:
            raise ValueError("provider and consumer are the same node")

    @property
    def chain_key(self) -> tuple[bytes, str, str, int]:
        """The receipts one sequence orders: one mesh, one pair, one epoch."""
        return (self.mesh_id, self.provider, self.consumer, self.epoch)

    def _canonical(self, fields: tuple[tuple[str, Codec[Any]], ...]) -> bytes:
        writer = Writer(MessageType.RECEIPT)
        for name, codec in fields:
            codec.write(writer, getattr(self, name))
        return writer.getvalue()

    def signed_bytes(self) -> bytes:
        """What the signature is over: the domain, then the encoding up to the signature."""
        return DOMAIN + self._canonical(_SIGNED_FIELDS)

    def encode(self) -> bytes:
        return self._canonical(FIELDS)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse canonical bytes; ReceiptError(malformed) for anything else. The signature
        is not checked here (``verify_signature``)."""
        try:
            reader = Reader(data, MessageType.RECEIPT)
            receipt = cls(**{name: codec.read(reader, name) for name, codec in FIELDS})
            reader.end()
        except (DecodeError, ValueError) as exc:  # ValueError: well framed, impossible
            raise ReceiptError(ReceiptReason.MALFORMED, f"receipt: {exc}") from None
        return receipt

    def sign(self, signing_key: SigningKey) -> Self:
        """The same receipt signed by ``signing_key``, which must be the consumer's."""
        signer = node_id_from_public(bytes(signing_key.verify_key))
        if signer != self.consumer:
            raise ValueError(f"signing key {signer} is not the consumer {self.consumer}")
        if self.not_before > self.not_after:
            raise ValueError(f"not_before {self.not_before} is after not_after {self.not_after}")
        signature = bytes(signing_key.sign(self.signed_bytes()).signature)
        return replace(self, signature=signature)

    def verify_signature(self) -> None:
        """ReceiptError(bad_signature) unless the consumer named inside signed exactly
        these fields. Whether the consumer is a member is the verifiers' business."""
        try:
            _verify_key(self.consumer).verify(self.signed_bytes(), self.signature)
        except (CryptoError, ValueError):
            raise ReceiptError(
                ReceiptReason.BAD_SIGNATURE, f"not signed by the consumer {self.consumer}"
            ) from None

    def to_json(self) -> dict[str, object]:
        """Exactly the export fields (DESIGN.md, receipts export contract)."""
        return {name: codec.to_json(getattr(self, name)) for name, codec in FIELDS}

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Self:
        """Strict: exactly the export fields, each in its one spelling (as membership
        JSON), so that one JSON object maps to one byte string."""
        try:
            fields = JsonFields(obj, "receipt", JSON_KEYS)
            return cls(**{name: codec.from_json(fields, name) for name, codec in FIELDS})
        except MembershipError as exc:
            raise ReceiptError(ReceiptReason.MALFORMED, exc.message) from None
        except ValueError as exc:
            raise ReceiptError(ReceiptReason.MALFORMED, f"receipt: {exc}") from None
