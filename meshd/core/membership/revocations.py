"""The set of revocations a node knows, mergeable for gossip (pure).

Only verified revocations get in: ``add`` checks the mesh, that the signer is an admin and
the signature. For each target the set keeps one revocation, the one with the earliest
``revoked_at`` (ties: the smallest encoding). Keeping "the least" per target makes merging
commutative, associative and idempotent, so nodes that have seen the same revocations in
any order hold the same set and the same ``digest`` (anti-entropy compares digests, then
exchanges the lists).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from meshd.core.membership.errors import MembershipError, Reason
from meshd.core.membership.messages import MESH_ID_LENGTH, Revocation, RevocationTarget

DIGEST_DOMAIN = b"meshd-revocation-set-v1\0"


def _precedes(a: Revocation, b: Revocation) -> bool:
    return (a.revoked_at, a.encode()) < (b.revoked_at, b.encode())


class RevocationSet:
    def __init__(self, mesh_id: bytes, admins: Iterable[str]) -> None:
        if len(mesh_id) != MESH_ID_LENGTH:
            raise ValueError(f"mesh_id must be {MESH_ID_LENGTH} bytes")
        self.mesh_id = mesh_id
        self.admins = frozenset(admins)
        if not self.admins:
            raise ValueError("a revocation set needs at least one admin")
        self._by_target: dict[RevocationTarget, Revocation] = {}

    def check(self, revocation: Revocation) -> None:
        """MembershipError unless ``revocation`` is a valid revocation for this mesh."""
        if revocation.mesh_id != self.mesh_id:
            raise MembershipError(
                Reason.WRONG_MESH, f"revocation for mesh {revocation.mesh_id.hex()}"
            )
        # Admins only: a revocation is gossiped everywhere and never expires, so it must
        # come from the same keys that define the mesh (delegates ask an admin).
        if revocation.issuer not in self.admins:
            raise MembershipError(
                Reason.UNKNOWN_ISSUER, f"revocation signed by {revocation.issuer}, not an admin"
            )
        revocation.verify_signature()

    def add(self, revocation: Revocation) -> bool:
        """Verify and add; True when the set changed (a new target or an earlier time)."""
        current = self._by_target.get(revocation.target)
        if current == revocation:  # already verified and held: gossip repeats a lot
            return False
        self.check(revocation)
        if current is not None and not _precedes(revocation, current):
            return False
        self._by_target[revocation.target] = revocation
        return True

    def merge(self, other: RevocationSet) -> int:
        """Add everything ``other`` holds; the number of targets that changed here."""
        if other.mesh_id != self.mesh_id:
            raise ValueError("cannot merge revocation sets of different meshes")
        return sum(self.add(revocation) for revocation in other)

    def get(self, target: RevocationTarget) -> Revocation | None:
        return self._by_target.get(target)

    def in_force(self, target: RevocationTarget, now: float) -> Revocation | None:
        """The revocation of ``target`` if it has taken effect at ``now``."""
        revocation = self._by_target.get(target)
        if revocation is not None and now >= revocation.revoked_at:
            return revocation
        return None

    def __iter__(self) -> Iterator[Revocation]:
        """In a fixed order (by target), the order the digest uses."""
        for target in sorted(self._by_target, key=RevocationTarget.sort_key):
            yield self._by_target[target]

    def __len__(self) -> int:
        return len(self._by_target)

    def __contains__(self, revocation: object) -> bool:
        return (
            isinstance(revocation, Revocation)
            and self._by_target.get(revocation.target) == revocation
        )

    def digest(self) -> bytes:
        """SHA-256 over the held revocations in target order: equal sets, equal digests."""
        h = hashlib.sha256(DIGEST_DOMAIN + self.mesh_id)
        for revocation in self:
            encoded = revocation.encode()
            h.update(len(encoded).to_bytes(4, "big") + encoded)
        return h.digest()
