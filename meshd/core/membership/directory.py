"""The certificate directory: every member's certificate, mesh-wide (pure).

Route origin validation (meshd.core.routing.origin) needs the certificate of every member whose
addresses a node routes to, not only its neighbours'. Each node keeps every certificate it
has seen verify, with the delegation that issued it where a delegate did, and neighbours
reconcile their sets: a constant-size digest first (``digest``), the fingerprints of what
each holds only when the digests differ (``fingerprints``), then only the entries the other
lacks (``missing_from``). A certificate goes in only when it verifies against the mesh's
admin keys and revocations at the mesh's time (``add``); it goes out when it expires or
is revoked (``prune``), and a renewed certificate of a node replaces the older one.

Size: an entry is its canonical certificate and chain, about 230 octets for an admin's
certificate and 420 with a delegation; ``max_entries`` bounds the whole (10,000 by
default: about 2.3-4.2 MB). ``encode`` and ``decode`` are its file in the state directory,
so a restart does not start blind.

Privacy: the directory tells every member the name each member was certified with; by
default that is only a commitment to the household's name (meshd.core.membership.names), which
the node shows its neighbours alone; docs/threat-model.md says so.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from meshd.core.errors import BadInput
from meshd.core.membership.errors import MembershipError
from meshd.core.membership.messages import DelegationCertificate, MembershipCertificate
from meshd.core.membership.revocations import RevocationTarget
from meshd.core.membership.verify import (
    DEFAULT_SKEW_S,
    MeshTrust,
    VerifiedMember,
    check_not_revoked,
    verify_membership,
)
from meshd.core.proto.session import FINGERPRINT_LENGTH

MAX_ENTRIES = 10_000
FILE_MAGIC = b"meshd-directory-v1\n"
_LENGTH = struct.Struct("!H")


class Added(StrEnum):
    NEW = "new"  # a node the directory did not know
    RENEWED = "renewed"  # a newer certificate of a node it knew
    KNOWN = "known"  # this very entry, or an older one than it holds


class DirectoryError(BadInput):
    """An entry refused: ``reason`` is a reason code (a MembershipError's, or
    ``directory_full``, ``malformed``)."""


@dataclass(frozen=True)
class Entry:
    """One member's certificate and the chain that issued it (empty: an admin did)."""

    certificate: MembershipCertificate
    chain: tuple[DelegationCertificate, ...] = ()
    encoded: bytes = field(init=False, repr=False, compare=False)
    fingerprint: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.chain) > 1:
            raise ValueError("a chain holds at most one delegation")
        cert = self.certificate.encode()
        delegation = self.chain[0].encode() if self.chain else b""
        encoded = _LENGTH.pack(len(cert)) + cert + _LENGTH.pack(len(delegation)) + delegation
        object.__setattr__(self, "encoded", encoded)
        object.__setattr__(
            self, "fingerprint", hashlib.sha256(encoded).digest()[:FINGERPRINT_LENGTH]
        )

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """As ``encoded``; DirectoryError(malformed) for anything else."""
        entry, rest = cls.read(data)
        if rest:
            raise DirectoryError("malformed", f"{len(rest)} octets after the entry")
        return entry

    @classmethod
    def read(cls, data: bytes) -> tuple[Entry, bytes]:
        """The entry at the start of ``data``, and what follows it."""
        try:
            cert, data = _take(data)
            delegation, data = _take(data)
            chain = (DelegationCertificate.decode(delegation),) if delegation else ()
            return cls(MembershipCertificate.decode(cert), chain), data
        except MembershipError as exc:
            raise DirectoryError("malformed", str(exc)) from None

    @property
    def node_id(self) -> str:
        return self.certificate.node_id

    def newer_than(self, other: Entry) -> bool:
        """Renewals: the later window wins, then the higher serial."""
        mine, theirs = self.certificate, other.certificate
        return (mine.not_before, mine.expires_at, mine.serial) > (
            theirs.not_before,
            theirs.expires_at,
            theirs.serial,
        )


def _take(data: bytes) -> tuple[bytes, bytes]:
    if len(data) < _LENGTH.size:
        raise DirectoryError("malformed", "truncated length")
    (length,) = _LENGTH.unpack_from(data)
    end = _LENGTH.size + length
    if len(data) < end:
        raise DirectoryError("malformed", f"truncated: {length} octets announced")
    return data[_LENGTH.size : end], data[end:]


class Directory:
    def __init__(
        self, trust: MeshTrust, max_entries: int = MAX_ENTRIES, skew_s: int = DEFAULT_SKEW_S
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.trust, self.max_entries, self.skew_s = trust, max_entries, skew_s
        self._entries: dict[str, Entry] = {}
        self._members: dict[str, VerifiedMember] = {}
        self._digest: bytes | None = None  # cached until the set changes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def add(self, entry: Entry, now: float) -> tuple[Added, VerifiedMember | None]:
        """Take ``entry`` if it verifies at ``now`` (the mesh's time) and is new or newer
        than what the directory holds for that node; DirectoryError says why not."""
        held = self._entries.get(entry.node_id)
        if held is not None and (held.fingerprint == entry.fingerprint or held.newer_than(entry)):
            return Added.KNOWN, None
        if held is None and len(self._entries) >= self.max_entries:
            raise DirectoryError("directory_full", f"{self.max_entries} members already")
        try:
            member = verify_membership(entry.certificate, entry.chain, self.trust, now, self.skew_s)
        except MembershipError as exc:
            raise DirectoryError(str(exc.reason), str(exc)) from None
        self._entries[entry.node_id] = entry
        self._members[entry.node_id] = member
        self._digest = None
        return (Added.NEW if held is None else Added.RENEWED), member

    def prune(self, now: float) -> list[str]:
        """Drop the entries that expired or were revoked (the node, its certificate, or the
        delegation behind it): their node ids. Signatures were checked when each entry went
        in, so this costs no signature check (it runs every few seconds over every member);
        a changed admin set is judged at the next start, when ``load`` verifies it all."""
        gone = [n for n, member in self._members.items() if not self._in_force(member, now)]
        for node_id in gone:
            del self._entries[node_id], self._members[node_id]
        if gone:
            self._digest = None
        return gone

    def _in_force(self, member: VerifiedMember, now: float) -> bool:
        if now >= member.valid_until + self.skew_s:
            return False
        targets = [
            RevocationTarget.node(member.node_id),
            RevocationTarget.certificate(member.certificate),
        ]
        if member.delegation is not None:
            targets += [
                RevocationTarget.node(member.delegation.delegate),
                RevocationTarget.certificate(member.delegation),
            ]
        try:
            check_not_revoked("certificate", targets, self.trust, now)
        except MembershipError:
            return False
        return True

    def members(self) -> Iterator[VerifiedMember]:
        return iter(self._members.values())

    def member(self, node_id: str) -> VerifiedMember | None:
        """The member ``node_id`` as its certificate here says, or None."""
        return self._members.get(node_id)

    # ---- reconciliation ------------------------------------------------------------

    def digest(self) -> bytes:
        """The same 32 octets on two nodes exactly when they hold the same entries."""
        if self._digest is None:
            self._digest = hashlib.sha256(b"".join(self.fingerprints())).digest()
        return self._digest

    def fingerprints(self) -> list[bytes]:
        return sorted(entry.fingerprint for entry in self._entries.values())

    def missing_from(self, theirs: Iterable[bytes]) -> list[Entry]:
        """The entries a node holding the fingerprints ``theirs`` lacks."""
        have = set(theirs)
        return [e for e in self._entries.values() if e.fingerprint not in have]

    # ---- the state directory's file ------------------------------------------------

    def encode(self) -> bytes:
        return FILE_MAGIC + b"".join(e.encoded for e in self._entries.values())

    def load(self, data: bytes, now: float) -> list[DirectoryError]:
        """Take the entries of a file ``encode`` wrote; those that no longer verify (or do
        not parse) are left out, each with why. A file of another kind: DirectoryError."""
        if not data.startswith(FILE_MAGIC):
            raise DirectoryError("malformed", "not a meshd directory file")
        data = data[len(FILE_MAGIC) :]
        refused: list[DirectoryError] = []
        while data:
            try:
                entry, data = Entry.read(data)
            except DirectoryError as exc:
                refused.append(exc)
                break  # the rest cannot be framed
            try:
                self.add(entry, now)
            except DirectoryError as exc:
                refused.append(exc)
        return refused


def entries_of(records: Sequence[bytes]) -> list[Entry]:
    """Entries from their encodings (a DIRECTORY_ENTRIES message); DirectoryError on the
    first that does not parse."""
    return [Entry.decode(record) for record in records]
