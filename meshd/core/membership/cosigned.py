"""A record and more admins' signatures over it (pure): how a quorum of admins signs.

Where the mesh definition sets a threshold above 1, the record's own signature (its
issuer's) is not enough: other admins add theirs, each over the very bytes the issuer
signed (``record.signed_bytes()``, which begin with the record's own domain, so a signature
made for one kind of record never counts for another). Canonical bytes (type tag COSIGNED,
version 1)::

    1  record      blob            the canonical bytes of the signed record
    2  signatures  fixed list of 96-byte items, 1..MAX_ADMINS, strictly ascending: an
                   admin's key (32 bytes), then its signature (64)

A record nobody else signed is written as it is, unwrapped (``encode``), so a mesh whose
threshold is 1 keeps the bytes it always had. Whose signatures count is the verifier's
business (``signers``): only the admins it names, each once, the issuer's included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public, public_from_node_id
from meshd.core.membership.canonical import DecodeError, MessageType, Reader, Writer
from meshd.core.membership.errors import MembershipError, Reason
from meshd.core.membership.messages import (
    KEY_LENGTH,
    MAX_ADMINS,
    SIGNATURE_LENGTH,
    MeshDefinition,
    Revocation,
    SignedMessage,
    signature_good,
)

R = TypeVar("R", bound=SignedMessage)
ITEM_LENGTH = KEY_LENGTH + SIGNATURE_LENGTH
JSON_TYPE = "cosigned"


@dataclass(frozen=True)
class Cosigned(Generic[R]):
    """``record`` and the signatures of admins other than its issuer, ascending by key."""

    record: R
    signatures: tuple[tuple[str, bytes], ...] = ()  # (node id, signature)

    def __post_init__(self) -> None:
        check_items(self.signatures, "co-signatures")
        if any(signer == self.record.issuer for signer, _ in self.signatures):
            raise ValueError("the issuer's signature is the record's own")

    @property
    def signed_by(self) -> tuple[str, ...]:
        """Who signed, the issuer first (whether they count is ``signers``' to say)."""
        return (self.record.issuer, *(signer for signer, _ in self.signatures))

    def encode(self) -> bytes:
        if not self.signatures:
            return self.record.encode()
        writer = Writer(MessageType.COSIGNED)
        writer.blob(self.record.encode())
        writer.fixed_list(item_bytes(self.signatures), ITEM_LENGTH)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes, kind: type[R]) -> Cosigned[R]:
        """A ``kind`` record, bare or with co-signatures; MembershipError(malformed) for
        anything else. No signature is checked here (``signers``)."""
        if data[:1] != bytes((MessageType.COSIGNED,)):
            return cls(kind.decode(data))
        try:
            reader = Reader(data, MessageType.COSIGNED)
            record = kind.decode(reader.blob("record", 1, 0xFFFF))
            signatures = read_items(reader, "signatures", 1)
            reader.end()
            return cls(record, signatures)
        except (DecodeError, ValueError) as exc:
            raise MembershipError(Reason.MALFORMED, f"{JSON_TYPE}: {exc}") from None

    def cosign(self, signing_key: SigningKey) -> Cosigned[R]:
        """The same with ``signing_key``'s signature added (or made again)."""
        signer = node_id_from_public(bytes(signing_key.verify_key))
        if signer == self.record.issuer:
            return self
        signature = bytes(signing_key.sign(self.record.signed_bytes()).signature)
        return self.merged(Cosigned(self.record, ((signer, signature),)))

    def signers(self, admins: Iterable[str]) -> frozenset[str]:
        """The admins among ``admins`` whose signature is here and good. A bad signature of
        one of them is MembershipError(bad_signature): nothing honest passes on a forged
        one. The signatures of others (a removed admin's, say) count for nothing."""
        admins = frozenset(admins)
        counted = set()
        if self.record.issuer in admins:
            self.record.verify_signature()
            counted.add(self.record.issuer)
        signed = self.record.signed_bytes()
        kept = verify_items(self.signatures, signed, admins, f"{JSON_TYPE}: {{}}'s signature")
        return frozenset(counted | {signer for signer, _ in kept})

    def counted(self, signers: Iterable[str]) -> Cosigned[R]:
        """The same with only the co-signatures of ``signers`` (those that counted)."""
        keep = frozenset(signers)
        return Cosigned(self.record, tuple(i for i in self.signatures if i[0] in keep))

    def merged(self, other: Cosigned[R]) -> Cosigned[R]:
        """The same record with the co-signatures of both (each signer once; ``other``'s
        where both have one)."""
        if other.record != self.record:
            raise ValueError("co-signatures of another record")
        return Cosigned(self.record, by_key(dict(self.signatures) | dict(other.signatures)))

    def to_json(self) -> dict[str, object]:
        """A record nobody else signed is its own JSON; otherwise ``cosigned``."""
        if not self.signatures:
            return self.record.to_json()
        return {
            "type": JSON_TYPE,
            "record": self.record.to_json(),
            "signatures": [{"signer": s, "signature": sig.hex()} for s, sig in self.signatures],
        }

    @classmethod
    def from_json(cls, obj: object, kind: type[R]) -> Cosigned[R]:
        """``to_json``'s form back; MembershipError(malformed) for anything else."""
        if not isinstance(obj, dict) or obj.get("type") != JSON_TYPE:
            return cls(kind.from_json(obj))
        try:
            if set(obj) != {"type", "record", "signatures"}:
                raise ValueError(f"keys {sorted(obj)}")
            items = obj["signatures"]
            if not isinstance(items, list) or not items:
                raise ValueError("signatures: a non-empty list")
            signatures = []
            for item in items:
                if not isinstance(item, dict) or set(item) != {"signer", "signature"}:
                    raise ValueError("a signature is {signer, signature}")
                signature = bytes.fromhex(item["signature"])
                if item["signature"] != signature.hex():
                    raise ValueError("a signature is lower-case hex")
                signatures.append((item["signer"], signature))
            return cls(kind.from_json(obj["record"]), tuple(signatures))
        except (TypeError, ValueError) as exc:
            raise MembershipError(Reason.MALFORMED, f"{JSON_TYPE}: {exc}") from None


def check_items(items: tuple[tuple[str, bytes], ...], what: str) -> None:
    """ValueError unless ``items`` (admin node id, signature) are as the wire has them:
    strictly ascending by key (one per admin), at most MAX_ADMINS, signatures of 64 bytes."""
    keys = [public_from_node_id(admin) for admin, _ in items]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
        raise ValueError(f"{what} must be ascending by key, one per admin")
    if len(keys) > MAX_ADMINS:
        raise ValueError(f"more than {MAX_ADMINS} {what}")
    if any(len(signature) != SIGNATURE_LENGTH for _, signature in items):
        raise ValueError(f"a signature is {SIGNATURE_LENGTH} bytes")


def verify_items(
    items: tuple[tuple[str, bytes], ...], message: bytes, admins: Iterable[str], what: str
) -> tuple[tuple[str, bytes], ...]:
    """The (admin node id, signature over ``message``) items of ``admins``: the others'
    count for nothing. MembershipError(bad_signature) for one of theirs that does not
    verify, ``what`` (with ``{}`` for the admin) saying whose."""
    admins = frozenset(admins)
    kept = tuple(item for item in items if item[0] in admins)
    for admin, signature in kept:
        if not signature_good(public_from_node_id(admin), message, signature):
            raise MembershipError(Reason.BAD_SIGNATURE, f"{what.format(admin)} does not verify")
    return kept


def item_bytes(items: tuple[tuple[str, bytes], ...]) -> list[bytes]:
    """(admin node id, signature) items as the wire has them: the key, then the signature."""
    return [public_from_node_id(admin) + signature for admin, signature in items]


def read_items(reader: Reader, name: str, min_items: int) -> tuple[tuple[str, bytes], ...]:
    """``item_bytes``' field back, as (admin node id, signature) items."""
    items = reader.fixed_list(name, ITEM_LENGTH, min_items, MAX_ADMINS)
    return tuple((node_id_from_public(i[:KEY_LENGTH]), i[KEY_LENGTH:]) for i in items)


def by_key(items: dict[str, bytes]) -> tuple[tuple[str, bytes], ...]:
    """(admin node id, signature) items in the wire's order: ascending by key."""
    return tuple(sorted(items.items(), key=lambda i: public_from_node_id(i[0])))


def decode_proposal(data: bytes) -> Cosigned[MeshDefinition] | Cosigned[Revocation]:
    """A mesh definition or a revocation, bare or co-signed: what admins sign together;
    MembershipError(malformed) for anything else."""
    try:
        return Cosigned.decode(data, MeshDefinition)
    except MembershipError:
        return Cosigned.decode(data, Revocation)
