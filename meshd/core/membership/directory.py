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

Addresses and pools (issue 28): the directory knows who holds what, so it is where a mesh
address has one holder and a delegation's pool one delegate. Two certificates in force
for different nodes with a mesh address (IPv4 or IPv6) in common conflict, and so do two
delegations of different delegates whose IPv4 pools overlap; which one stays is decided
from the records alone, so that every node that holds both decides alike (``_first``):

- certificates: one an admin signed before one a delegate signed (a delegate answers for
  its pool only), then the earlier ``not_before``, then the lower key;
- delegations: the earlier ``not_before``, then the lower (issuer key, serial).

The other one is refused (``address_in_use``, ``pool_overlap``: every certificate that
delegation issued), and if the directory held it, it goes (``prune`` returns it). The
node's own certificate (``pinned``) never goes: a certificate that would take its address
is refused here whatever the order says (the rest of the mesh refuses ours then).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from meshd.core.errors import BadInput
from meshd.core.keys import public_from_node_id
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
ADDRESS_IN_USE = "address_in_use"
POOL_OVERLAP = "pool_overlap"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DelegationName = tuple[str, int]  # (issuer, serial): what names it in revocations too


class Added(StrEnum):
    NEW = "new"  # a node the directory did not know
    RENEWED = "renewed"  # a newer certificate of a node it knew
    KNOWN = "known"  # this very entry, or an older one than it holds


class DirectoryError(BadInput):
    """An entry refused: ``reason`` is a reason code (a MembershipError's, or
    ``directory_full``, ``malformed``, ``address_in_use``, ``pool_overlap``)."""


def _certificate_order(cert: MembershipCertificate, admins: Sequence[str]) -> tuple[object, ...]:
    """Which of two certificates for one address keeps it: the lower (module docstring)."""
    return (cert.issuer not in admins, cert.not_before, public_from_node_id(cert.node_id))


def _delegation_order(delegation: DelegationCertificate) -> tuple[object, ...]:
    """Which of two overlapping delegations keeps its pool: the lower."""
    return (
        delegation.not_before,
        public_from_node_id(delegation.issuer),
        delegation.serial,
        public_from_node_id(delegation.delegate),
    )


def addresses_of(cert: MembershipCertificate) -> tuple[Address, Address]:
    return cert.mesh_ipv4, cert.mesh_ipv6


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
        self._fingerprints: set[bytes] = set()  # of the entries held
        self._members: dict[str, VerifiedMember] = {}
        self._digest: bytes | None = None  # cached until the set changes
        # Who holds what: each address's holder, and each delegation behind an entry with
        # the node ids it certified (a handful of delegations, checked one by one).
        self._holders: dict[Address, str] = {}
        self._pools: dict[DelegationName, tuple[DelegationCertificate, set[str]]] = {}
        self.pinned: str | None = None  # our own node id: its entry never goes
        self._displaced: list[str] = []  # taken out by an entry that came first

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
        for loser in self.contest(entry.certificate, entry.chain, now):
            self._remove(loser)
            self._displaced.append(loser)
        if held is not None:
            self._remove(entry.node_id)
        self._entries[entry.node_id] = entry
        self._fingerprints.add(entry.fingerprint)
        self._members[entry.node_id] = member
        for address in addresses_of(entry.certificate):
            self._holders[address] = entry.node_id
        for delegation in entry.chain:
            name = (delegation.issuer, delegation.serial)
            self._pools.setdefault(name, (delegation, set()))[1].add(entry.node_id)
        self._digest = None
        return (Added.NEW if held is None else Added.RENEWED), member

    def contest(
        self,
        cert: MembershipCertificate,
        chain: Sequence[DelegationCertificate],
        now: float,
    ) -> list[str]:
        """The members (in force at ``now``) that ``cert`` would take an address or a pool
        from: it comes first (module docstring). DirectoryError ``address_in_use`` or
        ``pool_overlap`` when one of them comes first, or is our own (``pinned``)."""
        admins = self.trust.admins
        losers: list[str] = []
        for address in addresses_of(cert):
            holder = self._holders.get(address)
            if holder is None or holder == cert.node_id or holder in losers:
                continue
            member = self._members[holder]
            if not self._in_force(member, now):
                continue  # expired or revoked, not pruned yet
            mine = _certificate_order(cert, admins)
            theirs = _certificate_order(member.certificate, admins)
            if cert.node_id != self.pinned and (holder == self.pinned or theirs < mine):
                raise DirectoryError(
                    ADDRESS_IN_USE, f"{address} is held by {holder} (certified first)"
                )
            losers.append(holder)
        for delegation in chain:
            for other, users in list(self._pools.values()):
                if other.delegate == delegation.delegate or not other.ipv4_pool.overlaps(
                    delegation.ipv4_pool
                ):
                    continue
                held = [
                    u for u in users if u != cert.node_id and self._in_force(self._members[u], now)
                ]
                if not held:
                    continue
                first = _delegation_order(other) < _delegation_order(delegation)
                if cert.node_id != self.pinned and (self.pinned in held or first):
                    raise DirectoryError(
                        POOL_OVERLAP,
                        f"the pool {delegation.ipv4_pool} of {delegation.delegate} overlaps "
                        f"{other.ipv4_pool}, delegated first to {other.delegate}",
                    )
                losers += [u for u in held if u not in losers]
        return losers

    def _remove(self, node_id: str) -> None:
        entry = self._entries.pop(node_id)
        self._fingerprints.discard(entry.fingerprint)
        del self._members[node_id]
        for address in addresses_of(entry.certificate):
            if self._holders.get(address) == node_id:
                del self._holders[address]
        for delegation in entry.chain:
            name = (delegation.issuer, delegation.serial)
            _, users = self._pools[name]
            users.discard(node_id)
            if not users:
                del self._pools[name]
        self._digest = None

    def prune(self, now: float) -> list[str]:
        """Drop the entries that expired or were revoked (the node, its certificate, or the
        delegation behind it): their node ids. Signatures were checked when each entry went
        in, so this costs no signature check (it runs every few seconds over every member);
        a changed admin set is judged at the next start, when ``load`` verifies it all."""
        gone = [n for n, member in self._members.items() if not self._in_force(member, now)]
        for node_id in gone:
            self._remove(node_id)
        gone += self._displaced  # since the last prune: another entry came first
        self._displaced = []
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

    def holds(self, encoded: bytes) -> bool:
        """Whether ``encoded`` is an entry held as it is (``Entry.encoded``): a sync that
        sends it again costs a hash, not a decoding."""
        return hashlib.sha256(encoded).digest()[:FINGERPRINT_LENGTH] in self._fingerprints

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


def held_in(data: bytes) -> tuple[set[ipaddress.IPv4Address], set[ipaddress.IPv4Network]]:
    """What a directory file (``encode``) says is held: its members' IPv4 addresses and
    the pools of the delegations behind them. Read, not verified: an issuer that avoids
    them gives out no address the mesh would refuse as ``address_in_use``, and an admin
    none inside a delegate's pool. What does not parse ends the reading."""
    addresses: set[ipaddress.IPv4Address] = set()
    pools: set[ipaddress.IPv4Network] = set()
    if not data.startswith(FILE_MAGIC):
        return addresses, pools
    data = data[len(FILE_MAGIC) :]
    while data:
        try:
            entry, data = Entry.read(data)
        except DirectoryError:
            break
        addresses.add(entry.certificate.mesh_ipv4)
        pools.update(d.ipv4_pool for d in entry.chain)
    return addresses, pools


def entries_of(records: Sequence[bytes]) -> list[Entry]:
    """Entries from their encodings (a DIRECTORY_ENTRIES message); DirectoryError on the
    first that does not parse."""
    return [Entry.decode(record) for record in records]
