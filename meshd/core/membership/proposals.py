"""Proposals (pure): a change the mesh's admins sign together, held and spread by every
node until it carries the quorum, lapses or is withdrawn.

A proposal is a next mesh definition or a revocation (what ``meshd admin-key rotate`` and
``meshd revoke`` sign) with the signatures of the admins who support it so far
(meshd.core.membership.cosigned) and the withdrawals of those who took theirs back. Every
node checks it as it would check the record itself, but for the quorum: a proposal is
refused unless one admin in force signed it, and a copy with a forged signature (or
withdrawal) of an admin is refused without touching what the node holds of it. Once its
signatures (but the withdrawn ones) reach the quorum it is *carried*: the node takes the
record as if handed in (adopted, or added to its revocations) and forgets the proposal.
A proposal lapses ``TTL_S`` after it was signed; one whose issuer withdrew is kept
(counting nothing) until then, so that copies still travelling do not bring it back.

A withdrawal is an admin's signature over ``WITHDRAW_DOMAIN`` then the record's signed
bytes: it can never pass for a signature of the record. It is final: that admin's
signature on this proposal counts for nothing from then on.

Canonical bytes (type tag PROPOSAL, version 1)::

    1  signed     blob             the record, bare or co-signed (COSIGNED)
    2  withdrawn  fixed list of 96-byte items, 0..MAX_ADMINS, strictly ascending: an
                  admin's key (32 bytes), then its withdrawal signature (64)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from nacl.signing import SigningKey

from meshd.core.errors import BadInput
from meshd.core.keys import node_id_from_public
from meshd.core.membership.canonical import DecodeError, MessageType, Reader, Writer
from meshd.core.membership.cosigned import (
    ITEM_LENGTH,
    Cosigned,
    by_key,
    check_items,
    decode_proposal,
    item_bytes,
    read_items,
    verify_items,
)
from meshd.core.membership.errors import MembershipError, Reason
from meshd.core.membership.messages import MeshDefinition, Revocation
from meshd.core.membership.rotation import check_successor
from meshd.core.membership.verify import DEFAULT_SKEW_S, MeshTrust

TTL_S = 14 * 86400  # a proposal not carried within two weeks lapses
MAX_PROPOSALS = 32  # held at once, of every admin
MAX_PER_ISSUER = 8  # held at once, proposed by one admin
WITHDRAW_DOMAIN = b"meshd proposal withdrawn\x00"
JSON_TYPE = "proposal"

Signed = Cosigned[Any]  # of a MeshDefinition or a Revocation (decode_proposal)
Outcome = Literal["new", "grew", "same", "carried"]


@dataclass(frozen=True)
class Proposal:
    """A record, the signatures on it, and the admins who withdrew theirs."""

    signed: Signed
    withdrawn: tuple[tuple[str, bytes], ...] = ()  # (admin node id, withdrawal signature)

    def __post_init__(self) -> None:
        check_items(self.withdrawn, "withdrawals")

    @property
    def record(self) -> MeshDefinition | Revocation:
        return self.signed.record

    @property
    def id(self) -> str:
        """What admins call it by: the first 6 bytes of the record's SHA-256, in hex."""
        return hashlib.sha256(self.record.encode()).hexdigest()[:12]

    @property
    def issued_at(self) -> int:
        record = self.record
        return record.issued_at if isinstance(record, MeshDefinition) else record.revoked_at

    @property
    def withdrawn_by(self) -> frozenset[str]:
        return frozenset(admin for admin, _ in self.withdrawn)

    @property
    def dropped(self) -> bool:
        """Its issuer withdrew it: it counts for nothing."""
        return self.record.issuer in self.withdrawn_by

    def encode(self) -> bytes:
        writer = Writer(MessageType.PROPOSAL)
        writer.blob(self.signed.encode())
        writer.fixed_list(item_bytes(self.withdrawn), ITEM_LENGTH)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Proposal:
        """MembershipError(malformed) for anything but a proposal's canonical bytes; no
        signature is checked here (``Proposals.heard``)."""
        try:
            reader = Reader(data, MessageType.PROPOSAL)
            signed = decode_proposal(reader.blob("signed", 1, 0xFFFF))
            withdrawn = read_items(reader, "withdrawn", 0)
            reader.end()
            return cls(signed, withdrawn)
        except (DecodeError, ValueError) as exc:
            raise MembershipError(Reason.MALFORMED, f"{JSON_TYPE}: {exc}") from None

    def withdraw(self, signing_key: SigningKey) -> Proposal:
        """The same with ``signing_key``'s withdrawal added (its signature dropped)."""
        admin = node_id_from_public(bytes(signing_key.verify_key))
        signature = bytes(signing_key.sign(WITHDRAW_DOMAIN + self.record.signed_bytes()).signature)
        return self.merged(Proposal(self.signed, ((admin, signature),)))

    def cosign(self, signing_key: SigningKey) -> Proposal:
        return replace(self, signed=self.signed.cosign(signing_key))

    def merged(self, other: Proposal) -> Proposal:
        """Both one's signatures and withdrawals; a withdrawn admin's signature dropped."""
        signed = self.signed.merged(other.signed)
        withdrawn = dict(self.withdrawn) | dict(other.withdrawn)
        keep = tuple(i for i in signed.signatures if i[0] not in withdrawn)
        return Proposal(Cosigned(signed.record, keep), by_key(withdrawn))

    def to_json(self) -> dict[str, object]:
        return {
            "type": JSON_TYPE,
            "id": self.id,
            "signed": self.signed.to_json(),
            "withdrawn": [{"admin": a, "signature": s.hex()} for a, s in self.withdrawn],
        }

    @classmethod
    def from_json(cls, obj: object) -> Proposal:
        """``to_json``'s form back (its ``id`` is checked); MembershipError(malformed)."""
        try:
            if not isinstance(obj, dict) or obj.get("type") != JSON_TYPE:
                raise ValueError("not a proposal")
            if set(obj) != {"type", "id", "signed", "withdrawn"}:
                raise ValueError(f"keys {sorted(obj)}")
            signed_json = obj["signed"]
            inner = signed_json.get("record", signed_json) if isinstance(signed_json, dict) else {}
            kind = MeshDefinition if inner.get("type") == "mesh_definition" else Revocation
            signed: Signed = Cosigned.from_json(signed_json, kind)
            withdrawn = tuple(
                (str(w["admin"]), bytes.fromhex(w["signature"])) for w in obj["withdrawn"]
            )
            proposal = cls(signed, withdrawn)
            if proposal.id != obj["id"]:
                raise ValueError(f"id {obj['id']!r} is not the record's")
            return proposal
        except (TypeError, ValueError, KeyError) as exc:
            raise MembershipError(Reason.MALFORMED, f"{JSON_TYPE}: {exc}") from None


@dataclass(frozen=True)
class Heard:
    """What a proposal heard did: ``new`` or ``grew`` (held, and worth passing on),
    ``same`` (nothing new), ``carried`` (the quorum is there: ``signed`` is the record with
    the signatures that count, to take as if handed in)."""

    outcome: Outcome
    proposal: Proposal
    signed: Signed | None = None


class Refused(BadInput):
    """A proposal not held, for a reason of its own (a record it carries that does not
    verify is a MembershipError): ``stale`` (in force already, or overtaken), ``expired``,
    ``from_the_future``, ``withdrawn``, ``proposals_full``, ``issuer_proposals_full``."""


class Proposals:
    """The proposals a node holds, by id."""

    def __init__(self) -> None:
        self._held: dict[str, Proposal] = {}

    def __iter__(self) -> Iterator[Proposal]:
        return iter(sorted(self._held.values(), key=lambda p: (p.issued_at, p.id)))

    def __len__(self) -> int:
        return len(self._held)

    def get(self, proposal_id: str) -> Proposal | None:
        return self._held.get(proposal_id)

    def heard(self, proposal: Proposal, trust: MeshTrust, now: float) -> Heard:
        """Check ``proposal`` (from a neighbour, a file or the control API) by ``trust``
        at ``now`` (Unix seconds) and hold it, merged with what we hold of it. Refused
        (Refused, or MembershipError for what it carries) when it may not be held."""
        record = proposal.record
        if record.mesh_id != trust.mesh_id:
            raise MembershipError(Reason.WRONG_MESH, f"a proposal for mesh {record.mesh_id.hex()}")
        if proposal.issued_at < now - TTL_S:
            raise Refused("expired", f"proposal {proposal.id} was signed over {TTL_S} s ago")
        if proposal.issued_at > now + DEFAULT_SKEW_S:
            raise Refused("from_the_future", f"proposal {proposal.id} is signed for later")
        # What this copy carries is checked alone first: a forged signature or withdrawal
        # refuses the copy, never what we hold of the proposal.
        proposal = _admins_withdrawals(proposal, trust.definition.admins)
        proposal.signed.signers(trust.definition.admins)
        held = self._held.get(proposal.id)
        merged = held.merged(proposal) if held is not None else proposal.merged(proposal)
        if held is not None and held.dropped:
            if merged == held:  # a copy still on its way: nothing new
                return Heard("same", held)
            raise Refused("withdrawn", f"proposal {proposal.id} was withdrawn by its issuer")
        if merged.dropped:
            # Held, counting nothing, so that copies still on their way do not bring it back.
            if held is None:
                self._room_for(merged)
            self._held[proposal.id] = merged
            return Heard("grew", merged)
        signed = merged.signed
        try:
            carried = _judge(signed, trust)
        except MembershipError as exc:
            if exc.reason is not Reason.SHORT_OF_QUORUM:
                raise  # what we hold of it goes when the trust prunes it
            carried = None
        # Only admins' good signatures are held and passed on.
        merged = replace(merged, signed=signed.counted(signed.signers(trust.definition.admins)))
        if carried is not None:
            self._held.pop(proposal.id, None)
            return Heard("carried", merged, carried)
        if held is None:
            self._room_for(merged)
        self._held[proposal.id] = merged
        if held is None:
            return Heard("new", merged)
        return Heard("same" if merged == held else "grew", merged)

    def _room_for(self, proposal: Proposal) -> None:
        if len(self._held) >= MAX_PROPOSALS:
            raise Refused("proposals_full", f"{len(self._held)} proposals are held already")
        issuer = proposal.record.issuer
        if sum(p.record.issuer == issuer for p in self._held.values()) >= MAX_PER_ISSUER:
            raise Refused(
                "issuer_proposals_full", f"{MAX_PER_ISSUER} proposals of {issuer} are held"
            )

    def prune(self, trust: MeshTrust, now: float) -> list[Proposal]:
        """Drop what lapsed, and what the definition in force overtook or made void (it
        is judged again: a new definition may have removed the admins who signed it)."""
        gone = []
        for proposal in list(self._held.values()):
            if proposal.issued_at < now - TTL_S:
                gone.append(proposal)
            else:
                try:
                    _judge(proposal.signed, trust)
                except BadInput as exc:  # Refused (stale), or a MembershipError
                    if exc.reason is not Reason.SHORT_OF_QUORUM:
                        gone.append(proposal)
        for proposal in gone:
            del self._held[proposal.id]
        return gone

    def needed(self, proposal: Proposal, trust: MeshTrust) -> int:
        """How many admins' signatures ``proposal`` needs under ``trust``."""
        definition = trust.definition
        if getattr(proposal.record, "emergency", False):
            return definition.emergency_threshold
        return definition.threshold


def _judge(signed: Signed, trust: MeshTrust) -> Signed:
    """``signed`` with the signatures that count, when it carries the quorum;
    MembershipError otherwise (SHORT_OF_QUORUM: all is well but the quorum; ``stale``:
    overtaken or in force already)."""
    record = signed.record
    if isinstance(record, MeshDefinition):
        if record.serial <= trust.definition.serial:
            raise Refused("stale", f"serial {record.serial}: the mesh is at it or past it")
        check_successor(trust.definition, signed)
        return signed
    held = trust.revocations.get(record.target)
    if held is not None and held.revoked_at <= record.revoked_at:
        raise Refused("stale", f"{record.target.describe()} is revoked already")
    return trust.revocations.check(signed)


def _admins_withdrawals(proposal: Proposal, admins: tuple[str, ...]) -> Proposal:
    """``proposal`` with only its admins' withdrawals (the others count for nothing, as
    their signatures do); MembershipError(bad_signature) for one that does not verify."""
    signed = WITHDRAW_DOMAIN + proposal.record.signed_bytes()
    what = f"{JSON_TYPE}: {{}}'s withdrawal"
    return replace(proposal, withdrawn=verify_items(proposal.withdrawn, signed, admins, what))
