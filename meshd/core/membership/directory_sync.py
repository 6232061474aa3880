"""Reconciling the certificate directory with each neighbour (pure: messages and ``now``
in, messages out).

    sync = DirectorySync(directory)
    out = sync.peer_up(node_id, now)             # our digest, to a neighbour that has the
                                                 # "directory" feature
    out = sync.on_digest(node_id, msg, now)      # theirs differs: our fingerprints
    out = sync.on_fingerprints(node_id, msg)     # all of theirs: the entries they lack
    learned, refused = sync.on_entries(node_id, msg, wall_now)
    out = sync.changed()                         # after learning: our new digest to everyone
    out = sync.tick(now)                         # answers put off, and digests sent again

Each round costs a constant-size digest while two neighbours agree; when they differ, each
sends the fingerprints of what it holds (8 octets an entry) and then only the entries the
other lacks, so a newcomer gets the whole directory once and a settled mesh exchanges
digests only. A new entry changes the digest, which every neighbour is told, and so it
spreads hop by hop. Fingerprints a neighbour sends are bounded by the directory's size;
answering a digest is limited to one round per neighbour per ``min_round_s`` (one asked for
sooner is answered at the next ``tick`` after that), and every ``resend_s`` each neighbour
is told our digest again, so that a lost message delays agreement but never prevents it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshd.core.membership.directory import Added, Directory, DirectoryError, Entry
from meshd.core.membership.verify import VerifiedMember
from meshd.core.proto.session import (
    MAX_DIRECTORY_ENTRIES,
    MAX_FINGERPRINTS,
    DirectoryDigest,
    DirectoryEntries,
    DirectoryFingerprints,
)

DirectoryMessage = DirectoryDigest | DirectoryFingerprints | DirectoryEntries
Outgoing = list[tuple[str, DirectoryMessage]]
# A round a neighbour at most every half second: the origin check holds a far member's
# routes until its certificate arrives, so the directory must keep pace with Babel (at 2 s
# a round, a 25-node cold start took 72 % longer).
MIN_ROUND_S = 0.5
RESEND_S = 60.0
ENTRIES_OCTETS = 48 * 1024  # per DIRECTORY_ENTRIES message (frames hold 64 KiB)


@dataclass
class _Neighbour:
    last_answer: float = float("-inf")  # when we last sent it our fingerprints
    told: bytes = b""  # the digest we last sent it
    put_off: bytes = b""  # a digest of its that differed, answered once the round allows
    theirs: list[bytes] = field(default_factory=list)  # fingerprints arriving in parts
    expected: int = 0


class DirectorySync:
    def __init__(
        self, directory: Directory, min_round_s: float = MIN_ROUND_S, resend_s: float = RESEND_S
    ) -> None:
        self.directory = directory
        self.min_round_s, self.resend_s = min_round_s, resend_s
        self._neighbours: dict[str, _Neighbour] = {}
        self._next_resend = float("-inf")

    def tick(self, now: float) -> Outgoing:
        out: Outgoing = []
        if now >= self._next_resend:
            self._next_resend = now + self.resend_s
            for neighbour in self._neighbours.values():
                neighbour.told = b""
            out += self.changed()
        for node_id, neighbour in self._neighbours.items():
            if neighbour.put_off and now - neighbour.last_answer >= self.min_round_s:
                digest, neighbour.put_off = neighbour.put_off, b""
                out += self.on_digest(node_id, DirectoryDigest(0, digest), now)
        return out

    def peer_up(self, node_id: str) -> Outgoing:
        self._neighbours[node_id] = _Neighbour()
        return self._digest_to(node_id)

    def peer_down(self, node_id: str) -> None:
        self._neighbours.pop(node_id, None)

    def changed(self) -> Outgoing:
        """Our digest to every neighbour that has not been told it yet."""
        out: Outgoing = []
        for node_id in self._neighbours:
            out += self._digest_to(node_id)
        return out

    def _digest_to(self, node_id: str) -> Outgoing:
        digest = self.directory.digest()
        neighbour = self._neighbours[node_id]
        if neighbour.told == digest:
            return []
        neighbour.told = digest
        return [(node_id, DirectoryDigest(len(self.directory), digest))]

    def on_digest(self, node_id: str, msg: DirectoryDigest, now: float) -> Outgoing:
        """Theirs differs from ours: our fingerprints, so it can send what we lack (and we
        hear its fingerprints the same way, from its side)."""
        neighbour = self._neighbours.get(node_id)
        if neighbour is None or msg.digest == self.directory.digest():
            return []
        if now - neighbour.last_answer < self.min_round_s:
            neighbour.put_off = msg.digest  # a round is under way, or it asks too often
            return []
        neighbour.last_answer = now
        prints = self.directory.fingerprints()
        total = len(prints)
        if not prints:
            return [(node_id, DirectoryFingerprints(0, ()))]
        return [
            (node_id, DirectoryFingerprints(total, tuple(prints[i : i + MAX_FINGERPRINTS])))
            for i in range(0, total, MAX_FINGERPRINTS)
        ]

    def on_fingerprints(self, node_id: str, msg: DirectoryFingerprints) -> Outgoing:
        """A part of a neighbour's fingerprints; once all arrived, the entries it lacks.
        A total beyond what a directory can hold is refused (DirectoryError)."""
        neighbour = self._neighbours.get(node_id)
        if neighbour is None:
            return []
        if msg.total > self.directory.max_entries:
            raise DirectoryError("too_many", f"{msg.total} fingerprints announced")
        if msg.total != neighbour.expected or not neighbour.theirs:
            neighbour.theirs, neighbour.expected = [], msg.total  # a new round starts
        neighbour.theirs += msg.fingerprints
        if len(neighbour.theirs) < neighbour.expected:
            return []
        missing = self.directory.missing_from(neighbour.theirs)
        neighbour.theirs, neighbour.expected = [], 0
        return [(node_id, part) for part in _entries_messages(missing)]

    def on_entries(
        self, node_id: str, msg: DirectoryEntries, wall_now: float
    ) -> tuple[list[VerifiedMember], list[DirectoryError]]:
        """Take what verifies: the members new or renewed, and why the rest was refused.
        One bad entry does not spoil the others."""
        learned: list[VerifiedMember] = []
        refused: list[DirectoryError] = []
        for record in msg.entries:
            if self.directory.holds(record):
                continue
            try:
                added, member = self.directory.add(Entry.decode(record), wall_now)
            except DirectoryError as exc:
                refused.append(exc)
                continue
            if added is not Added.KNOWN and member is not None:
                learned.append(member)
        return learned, refused


def _entries_messages(entries: list[Entry]) -> list[DirectoryEntries]:
    out: list[DirectoryEntries] = []
    part: list[bytes] = []
    size = 0
    for entry in entries:
        if part and (
            size + len(entry.encoded) > ENTRIES_OCTETS or len(part) >= MAX_DIRECTORY_ENTRIES
        ):
            out.append(DirectoryEntries(tuple(part)))
            part, size = [], 0
        part.append(entry.encoded)
        size += len(entry.encoded)
    if part:
        out.append(DirectoryEntries(tuple(part)))
    return out
