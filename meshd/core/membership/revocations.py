"""The set of revocations a node knows, mergeable for gossip (pure).

Only verified revocations get in: ``add`` checks the mesh, and that as many admins as the
definition's threshold signed it (the issuer, and others' co-signatures: a threshold of 1
is the issuer alone, an admin), each signature good; the co-signatures of the same
revocation heard again are merged in. For each target the set keeps one revocation, the
one with the earliest ``revoked_at`` (ties: the smallest encoding). Keeping "the least"
per target (and the union of its co-signatures) makes merging commutative, associative
and idempotent, so nodes that have seen the same revocations in any order hold the same
set and the same ``digest`` (anti-entropy compares digests, then exchanges the lists).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from meshd.core.membership.cosigned import Cosigned
from meshd.core.membership.errors import MembershipError, Reason
from meshd.core.membership.messages import (
    MESH_ID_LENGTH,
    MeshDefinition,
    Revocation,
    RevocationTarget,
)

DIGEST_DOMAIN = b"meshd-revocation-set-v1\0"


def _precedes(a: Revocation, b: Revocation) -> bool:
    return (a.revoked_at, a.encode()) < (b.revoked_at, b.encode())


class RevocationSet:
    def __init__(
        self, mesh_id: bytes, admins: Iterable[str], threshold: int = 1, emergency: int = 0
    ) -> None:
        if len(mesh_id) != MESH_ID_LENGTH:
            raise ValueError(f"mesh_id must be {MESH_ID_LENGTH} bytes")
        self.mesh_id = mesh_id
        self.admins = frozenset(admins)
        if not self.admins:
            raise ValueError("a revocation set needs at least one admin")
        self.threshold, self.emergency = threshold, emergency
        # Each target's revocation, with the co-signatures of admins that verified.
        self._by_target: dict[RevocationTarget, Cosigned[Revocation]] = {}

    @classmethod
    def of(cls, definition: MeshDefinition) -> RevocationSet:
        """An empty set judged by ``definition``: its admins, its threshold."""
        return cls(
            definition.mesh_id,
            definition.admins,
            definition.threshold,
            definition.emergency_threshold,
        )

    def check(self, revocation: Revocation | Cosigned[Revocation]) -> Cosigned[Revocation]:
        """``revocation`` with the co-signatures that count (admins', verified);
        MembershipError unless it is a valid revocation for this mesh: signed by as many
        admins as the threshold says (the issuer counts when it is one)."""
        signed = revocation if isinstance(revocation, Cosigned) else Cosigned(revocation)
        record = signed.record
        if record.mesh_id != self.mesh_id:
            raise MembershipError(Reason.WRONG_MESH, f"revocation for mesh {record.mesh_id.hex()}")
        # Admins only: a revocation is gossiped everywhere and never expires, so it must
        # come from the same keys that define the mesh (delegates ask an admin).
        signers = signed.signers(self.admins)
        if not signers:
            raise MembershipError(
                Reason.UNKNOWN_ISSUER, f"revocation signed by {record.issuer}, not an admin"
            )
        if record.emergency and not self.emergency:
            raise MembershipError(Reason.SHORT_OF_QUORUM, "the mesh has no emergency revocations")
        required = self.emergency if record.emergency else self.threshold
        if len(signers) < required:
            raise MembershipError(
                Reason.SHORT_OF_QUORUM,
                f"revocation signed by {len(signers)} of the {required} admins required",
            )
        return signed.counted(signers)

    def add(self, revocation: Revocation | Cosigned[Revocation]) -> bool:
        """Verify and add; True when the set changed (a new target, an earlier time, or
        more admins' signatures on the revocation held)."""
        signed = revocation if isinstance(revocation, Cosigned) else Cosigned(revocation)
        current = self._by_target.get(signed.record.target)
        if current is not None and current.record == signed.record:
            if set(signed.signatures) <= set(current.signatures):
                return False  # already verified and held: gossip repeats a lot
            merged = self.check(current.merged(signed))  # theirs may count only with ours
            self._by_target[signed.record.target] = merged
            return merged != current
        checked = self.check(signed)
        if current is not None and not _precedes(checked.record, current.record):
            return False
        self._by_target[checked.record.target] = checked
        return True

    def merge(self, other: RevocationSet) -> int:
        """Add everything ``other`` holds; the number of targets that changed here."""
        if other.mesh_id != self.mesh_id:
            raise ValueError("cannot merge revocation sets of different meshes")
        return sum(self.add(signed) for signed in other.all_signed())

    def get(self, target: RevocationTarget) -> Revocation | None:
        signed = self._by_target.get(target)
        return signed.record if signed is not None else None

    def signed(self, target: RevocationTarget) -> Cosigned[Revocation]:
        """The revocation of ``target`` held, with its co-signatures (KeyError: none)."""
        return self._by_target[target]

    def in_force(self, target: RevocationTarget, now: float) -> Revocation | None:
        """The revocation of ``target`` if it has taken effect at ``now``."""
        revocation = self.get(target)
        if revocation is not None and now >= revocation.revoked_at:
            return revocation
        return None

    def __iter__(self) -> Iterator[Revocation]:
        """In a fixed order (by target), the order the digest uses."""
        for signed in self.all_signed():
            yield signed.record

    def all_signed(self) -> Iterator[Cosigned[Revocation]]:
        """Every revocation held, with its co-signatures, by target: what is stored and
        passed on (the co-signatures are not in the digest: who holds which of them does
        not change what is revoked)."""
        for target in sorted(self._by_target, key=RevocationTarget.sort_key):
            yield self._by_target[target]

    def __len__(self) -> int:
        return len(self._by_target)

    def __contains__(self, revocation: object) -> bool:
        return isinstance(revocation, Revocation) and self.get(revocation.target) == revocation

    def digest(self) -> bytes:
        """SHA-256 over the held revocations in target order: equal sets, equal digests."""
        h = hashlib.sha256(DIGEST_DOMAIN + self.mesh_id)
        for revocation in self:
            encoded = revocation.encode()
            h.update(len(encoded).to_bytes(4, "big") + encoded)
        return h.digest()
