"""The community map's records a node keeps and the one it publishes (pure): the control
plane's keeping of map records (meshd.core.proto.map_record), flooded like gateway adverts.

Each member's newest record is kept and passed on once; a newly verified neighbour gets
all of them. What a member may put on everyone's map is bounded, whatever it sends:

- a record is taken only from a member whose certificate this node holds (the directory:
  every member's), signed by that member, for this mesh, issued no later than the clock's
  tolerance ahead of the mesh's time; one whose member's certificate is not here yet is
  held (``MAX_WAITING``, the oldest goes) and taken once it arrives;
- one record a member per ``MIN_INTERVAL_S`` of this node's clock: a newer one that comes
  sooner waits (only the newest) and is taken and passed on when the interval is over, so
  a member that publishes without pause costs each link one record every 30 s, not more;
- at most ``MAX_NODES`` members (the directory's bound), a record at most 64 links;
- a member whose certificate goes (revoked, expired) leaves the map at the next prune; an
  offline member stays on it, shown offline, for ``KEEP_S`` after its record expired;
- links and gateway roles are not taken on a member's word: the map draws a link only when
  both ends list it, and calls a node a gateway only while it has a signed advert
  (meshd.core.map_export).

What is refused is counted in the sending neighbour's refusals (``map_<reason>``) and not
passed on; a relayed record may be no fault of its sender, so its session stays.

Our own record (``publish``) holds what the operator agreed to show (``Publishing``, from
``[map]``) and our Babel links with their quality; it goes out every ``refresh_s`` and,
no sooner than MIN_INTERVAL_S after the last, when the set of links changed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from meshd.core.journal import Journal
from meshd.core.membership import MembershipError, VerifiedMember
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.proto.map_record import (
    MAX_LIFETIME_S,
    MIN_LIFETIME_S,
    Location,
    MapRecord,
    sorted_links,
)

MAX_NODES = 10_000  # as the directory's MAX_ENTRIES: one record a member
MAX_WAITING = 256  # records of members whose certificate has not arrived yet
MIN_INTERVAL_S = 30.0  # one record a member per this long, passed on
KEEP_S = 7 * 86_400  # an offline member stays on the map this long (yanic's prune_after)
PRUNE_EVERY_S = 10.0
LIFETIMES = 3  # a record lives this many refresh intervals: two may be lost


@dataclass(frozen=True)
class Publishing:
    """What the operator agreed to show (``[map]``); by default the id and the links."""

    publish: bool = True
    name: str = ""
    contact: str = ""
    location: Location | None = None
    refresh_s: float = 300.0

    @property
    def lifetime_s(self) -> int:
        return max(MIN_LIFETIME_S, min(MAX_LIFETIME_S, round(LIFETIMES * self.refresh_s)))


@dataclass
class MapEntry:
    record: MapRecord
    encoded: bytes
    first_seen: int  # mesh time (Unix s) this node first heard of the member
    taken_at: float = float("-inf")  # monotonic: when this record was taken


@dataclass
class _Own:
    links: frozenset[str] = frozenset()
    published_at: float = float("-inf")  # monotonic
    seqno: int = 0


@dataclass
class CommunityMap:
    node_id: str
    mesh_id: bytes
    journal: Journal
    member: Callable[[str], VerifiedMember | None]
    tolerance_s: float = 300.0
    publishing: Publishing = field(default_factory=Publishing)
    signing_key: SigningKey | None = None
    entries: dict[str, MapEntry] = field(default_factory=dict)  # by member, ours included
    waiting: dict[str, MapEntry] = field(default_factory=dict)  # oldest first
    deferred: int = 0  # records that came sooner than MIN_INTERVAL_S after their last
    _own: _Own = field(default_factory=_Own)
    _next_prune: float = float("-inf")

    def heard(self, data: bytes, wall: float, now: float) -> tuple[bytes | None, str | None]:
        """A flooded record: (its bytes to pass on to the other neighbours, if taken; why it
        was refused, or None)."""
        try:
            record = MapRecord.decode(data)
            record.verify_signature()
        except MembershipError as exc:
            return None, str(exc.reason)
        if record.mesh_id != self.mesh_id:
            return None, "wrong_mesh"
        if record.issuer == self.node_id:
            return None, None  # our own, back from the flood
        if record.issued_at > wall + self.tolerance_s:
            return None, "from_the_future"
        held = self.entries.get(record.issuer)
        if held is not None and record.seqno <= held.record.seqno:
            return None, None  # known, or older
        if held is None and len(self.entries) >= MAX_NODES:
            return None, "too_many_nodes"
        waiting = self.waiting.get(record.issuer)
        if waiting is not None and record.seqno <= waiting.record.seqno:
            return None, None
        entry = MapEntry(record, data, held.first_seen if held else int(wall))
        certified = self.member(record.issuer) is not None
        too_soon = held is not None and now - held.taken_at < MIN_INTERVAL_S
        if not certified or too_soon:
            self.deferred += certified
            self.waiting.pop(record.issuer, None)
            self.waiting[record.issuer] = entry
            while len(self.waiting) > MAX_WAITING:
                del self.waiting[next(iter(self.waiting))]
            return None, None
        return self._take(entry, now), None

    def _take(self, entry: MapEntry, now: float) -> bytes:
        entry.taken_at = now
        new = entry.record.issuer not in self.entries
        self.entries[entry.record.issuer] = entry
        if new:
            self.journal("map.learned", node=entry.record.issuer[:8], links=len(entry.record.links))
        return entry.encoded

    def due(self, wall: float, now: float) -> list[bytes]:
        """Waiting records taken now (their member's certificate came, or their interval is
        over), to be passed on; and, every PRUNE_EVERY_S, the map pruned."""
        taken = []
        for issuer, entry in list(self.waiting.items()):
            if entry.record.expires_at <= wall:
                del self.waiting[issuer]
                continue
            held = self.entries.get(issuer)
            if self.member(issuer) is None:
                continue
            if held is not None and now - held.taken_at < MIN_INTERVAL_S:
                continue
            del self.waiting[issuer]
            if held is None or entry.record.seqno > held.record.seqno:
                taken.append(self._take(entry, now))
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            self.prune(wall)
        return taken

    def prune(self, wall: float) -> list[str]:
        """Members gone from the map: their certificate went (revoked or expired), or they
        were offline for KEEP_S."""
        gone = [
            issuer
            for issuer, entry in self.entries.items()
            if issuer != self.node_id
            and (self.member(issuer) is None or entry.record.expires_at + KEEP_S <= wall)
        ]
        for issuer in gone:
            del self.entries[issuer]
            self.journal("map.forgot", node=issuer[:8])
        return gone

    def publish(self, links: dict[str, int], wall: float, now: float) -> bytes | None:
        """Our record, when one is due: every refresh_s, or when the set of our links
        (node id -> tq) changed and MIN_INTERVAL_S passed; None when none is."""
        own = self._own
        if not self.publishing.publish or self.signing_key is None:
            return None
        changed = frozenset(links) != own.links
        since = now - own.published_at
        if since < self.publishing.refresh_s and not (changed and since >= MIN_INTERVAL_S):
            return None
        own.seqno = max(own.seqno + 1, int(wall * 1000))
        p = self.publishing
        record = MapRecord(
            mesh_id=self.mesh_id,
            issuer=self.node_id,
            seqno=own.seqno,
            issued_at=int(wall),
            lifetime_s=p.lifetime_s,
            name=p.name,
            contact=p.contact,
            location=p.location,
            links=sorted_links({n: tq for n, tq in links.items() if n != self.node_id}),
            signature=NO_SIGNATURE,
        ).sign(self.signing_key)
        own.links, own.published_at = frozenset(links), now
        held = self.entries.get(self.node_id)
        encoded = record.encode()
        self._take(MapEntry(record, encoded, held.first_seen if held else int(wall)), now)
        return encoded

    def known(self) -> list[bytes]:
        """Every record we hold, ours included: what a newly verified neighbour learns."""
        return [entry.encoded for entry in self.entries.values()]

    def status(self) -> dict[str, Any]:
        return {
            "publish": self.publishing.publish,
            "nodes": len(self.entries),
            "waiting": len(self.waiting),
            "deferred": self.deferred,
        }

    # ---- the state file: what was heard survives a restart ---------------------------

    def encode(self) -> bytes:
        lines = [
            json.dumps({"record": e.encoded.hex(), "first_seen": e.first_seen})
            for e in self.entries.values()
        ]
        return ("\n".join(lines) + "\n").encode() if lines else b""

    def load(self, data: bytes) -> int:
        """Records from the state file (checked as if heard; those that do not verify, or
        are not this mesh's, are dropped with a warning); how many were taken. A record of
        ours keeps our seqno growing past it."""
        taken = 0
        for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            try:
                obj = json.loads(line)
                encoded = bytes.fromhex(obj["record"])
                record = MapRecord.decode(encoded)
                record.verify_signature()
                first_seen = int(obj["first_seen"])
            except (ValueError, KeyError, TypeError, MembershipError) as exc:
                self.journal("map.bad_state", logging.WARNING, line=number, error=str(exc))
                continue
            if record.mesh_id != self.mesh_id or len(self.entries) >= MAX_NODES:
                continue
            self.entries[record.issuer] = MapEntry(record, encoded, first_seen)
            if record.issuer == self.node_id:
                self._own.seqno = max(self._own.seqno, record.seqno)
            taken += 1
        return taken
