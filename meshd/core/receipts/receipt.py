"""The receipt: a consumer's signature on the cumulative bytes a neighbour relayed for it.

The provider P relays traffic for the consumer C and counts it; C checks the count against
its own and signs a Receipt. Totals are cumulative within an epoch (chosen by P for the
pair, kept across restarts), so the latest receipt supersedes the earlier ones and a lost
one loses nothing. ``seq`` orders the receipts of one epoch.

Canonical bytes (meshd.core.membership.canonical, type tag RECEIPT, version 1), 224 bytes::

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

import contextlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Self

from nacl._sodium import ffi, lib  # libsodium as PyNaCl binds it (nacl.bindings' own)
from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public, public_from_node_id
from meshd.core.membership import MembershipError
from meshd.core.membership._json import JsonFields
from meshd.core.membership.canonical import (
    ENCODING_VERSION,
    U64_MAX,
    DecodeError,
    MessageType,
    Reader,
)
from meshd.core.membership.messages import KEY_LENGTH, MESH_ID, NODE_ID, SIGNATURE, U64, Codec
from meshd.core.receipts.errors import ReceiptError, ReceiptReason

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
# The encoding up to the signature, in two parts: the start (through field 3) is the
# same for every receipt of a pair, the totals (fields 4 to 9) are each receipt's own.
_HEAD_LAYOUT = struct.Struct("!BB" + "BH16s" + "BH32s" * 2)
_TOTALS_LAYOUT = struct.Struct("!" + "BHQ" * 6)
_SIGNATURE_LAYOUT = struct.Struct("!BH64s")
_SIGNED_MESSAGE_LENGTH = SIGNATURE_LENGTH + len(DOMAIN) + _HEAD_LAYOUT.size + _TOTALS_LAYOUT.size


@lru_cache(maxsize=4096)
def _signed_head(mesh_id: bytes, provider: str, consumer: str) -> bytes:
    """The domain and the encoding through the consumer's key: cached, since an export
    names a few pairs on very many lines."""
    return DOMAIN + _HEAD_LAYOUT.pack(
        MessageType.RECEIPT, ENCODING_VERSION,
        1, 16, mesh_id,
        2, KEY_LENGTH, _public_key(provider),
        3, KEY_LENGTH, _public_key(consumer),
    )  # fmt: skip


_INTEGERS = ("epoch", "seq", "relayed_for_bytes", "relayed_to_bytes", "not_before", "not_after")
_LOWER_HEX = re.compile(r"[0-9a-f]*")


def _from_json_fast(obj: Mapping[str, object]) -> tuple[Any, ...] | None:
    """The fields of a well-formed receipt object in FIELDS order, or None for anything
    else (the strict path then says what is wrong). An export is mostly receipts: this
    keeps reading one cheap beside checking its signature."""
    if type(obj) is not dict or len(obj) != len(JSON_KEYS):
        return None
    try:
        mesh_id, signature = obj["mesh_id"], obj["signature"]
        integers = [obj[key] for key in _INTEGERS]
        provider, consumer = obj["provider"], obj["consumer"]
    except KeyError:
        return None
    if not (type(mesh_id) is str and len(mesh_id) == 32 and _LOWER_HEX.fullmatch(mesh_id)):
        return None
    if not (type(signature) is str and len(signature) == 128 and _LOWER_HEX.fullmatch(signature)):
        return None
    if set(map(type, integers)) != {int}:
        return None  # a bool, float or string: the strict path names it
    return (bytes.fromhex(mesh_id), provider, consumer, *integers, bytes.fromhex(signature))


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
        if not self._plainly_valid():
            for name, codec in FIELDS:  # says which field is wrong
                codec.check(name, getattr(self, name))
        if self.provider == self.consumer:
            raise ValueError("provider and consumer are the same node")

    def _plainly_valid(self) -> bool:
        """The checks of FIELDS, inline: building receipts is most of reading an export."""
        integers = (self.epoch, self.seq, self.relayed_for_bytes, self.relayed_to_bytes,
                    self.not_before, self.not_after)  # fmt: skip
        try:
            _public_key(self.provider), _public_key(self.consumer)
        except (ValueError, TypeError):
            return False
        return (
            type(self.mesh_id) is bytes
            and len(self.mesh_id) == 16
            and type(self.signature) is bytes
            and len(self.signature) == SIGNATURE_LENGTH
            and set(map(type, integers)) == {int}  # not bool, a subclass
            and min(integers) >= 0
            and max(integers) <= U64_MAX
        )

    @classmethod
    def from_spelled_fields(cls, fields: tuple[str, ...]) -> Self:
        """A receipt from its ten fields as text, each already in its one spelling and in
        range (lower hex of the right length, 43 node id characters, at most 19 decimal
        digits, so below 2**64): the export reader's fast path. Checks what the spelling
        does not (canonical node ids, two different nodes): ValueError for those."""
        provider, consumer = fields[1], fields[2]
        _public_key(provider), _public_key(consumer)  # ValueError: not a canonical id
        if provider == consumer:
            raise ValueError("provider and consumer are the same node")
        receipt = object.__new__(cls)
        # Frozen: fill the fields as dataclasses' own __init__ would, without its checks
        # (done above, or by the spelling): building receipts is most of reading an export.
        epoch, seq, for_bytes, to_bytes, start, end = map(int, fields[3:9])
        receipt.__dict__.update(
            mesh_id=bytes.fromhex(fields[0]), provider=provider, consumer=consumer,
            epoch=epoch, seq=seq, relayed_for_bytes=for_bytes, relayed_to_bytes=to_bytes,
            not_before=start, not_after=end, signature=bytes.fromhex(fields[9]),
        )  # fmt: skip
        return receipt

    @property
    def chain_key(self) -> tuple[bytes, str, str, int]:
        """The receipts one sequence orders: one mesh, one pair, one epoch."""
        return (self.mesh_id, self.provider, self.consumer, self.epoch)

    def signed_bytes(self) -> bytes:
        """What the signature is over: the domain, then the encoding up to the signature.
        Every field has a fixed size: two structs, the bytes Writer would give (checked
        against it by the golden vectors), at a fraction of the cost per receipt."""
        return _signed_head(self.mesh_id, self.provider, self.consumer) + _TOTALS_LAYOUT.pack(
            4, 8, self.epoch,
            5, 8, self.seq,
            6, 8, self.relayed_for_bytes,
            7, 8, self.relayed_to_bytes,
            8, 8, self.not_before,
            9, 8, self.not_after,
        )  # fmt: skip

    def encode(self) -> bytes:
        return self.signed_bytes()[len(DOMAIN) :] + _SIGNATURE_LAYOUT.pack(
            10, SIGNATURE_LENGTH, self.signature
        )

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

    def signature_holds(self) -> bool:
        """Whether the consumer named inside signed exactly these fields. Several threads
        may check receipts at once: libsodium runs without the GIL."""
        # libsodium's crypto_sign_open, as nacl.bindings.crypto_sign_open calls it (and
        # VerifyKey.verify through it), without reading back the opened copy (NULL length:
        # libsodium's own option), and with the key's 32 bytes cached.
        signed = self.signature + self.signed_bytes()
        opened = ffi.new("unsigned char[]", _SIGNED_MESSAGE_LENGTH)
        consumer = _public_key(self.consumer)
        return lib.crypto_sign_open(opened, ffi.NULL, signed, len(signed), consumer) == 0

    def verify_signature(self) -> None:
        """ReceiptError(bad_signature) unless the consumer named inside signed exactly
        these fields. Whether the consumer is a member is the verifiers' business."""
        if not self.signature_holds():
            raise ReceiptError(
                ReceiptReason.BAD_SIGNATURE, f"not signed by the consumer {self.consumer}"
            )

    def to_json(self) -> dict[str, object]:
        """Exactly the export fields (DESIGN.md, receipts export contract)."""
        return {name: codec.to_json(getattr(self, name)) for name, codec in FIELDS}

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Self:
        """Strict: exactly the export fields, each in its one spelling (as membership
        JSON), so that one JSON object maps to one byte string."""
        fast = _from_json_fast(obj)
        if fast is not None:
            with contextlib.suppress(ValueError):  # the strict path below says what is wrong
                return cls(*fast)
        try:
            fields = JsonFields(obj, "receipt", JSON_KEYS)
            return cls(**{name: codec.from_json(fields, name) for name, codec in FIELDS})
        except MembershipError as exc:
            raise ReceiptError(ReceiptReason.MALFORMED, exc.message) from None
        except ValueError as exc:
            raise ReceiptError(ReceiptReason.MALFORMED, f"receipt: {exc}") from None
