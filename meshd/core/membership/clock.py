"""The mesh's time (pure): a node's clock corrected by what its neighbours say.

A Pi has no real-time clock: it may boot months in the past or the future, and then every
certificate looks not yet valid or expired by its own clock, so it could never verify a
neighbour and learn the time from the mesh. Each session therefore starts with the peer's
wall clock (session message CLOCK), and every neighbour whose certificate verifies, at
our time or (a node with a stale clock) at the time it reported, gives its offset: its
clock minus our own uncorrected one, measured when its CLOCK arrived. A stranger's word
moves nothing. A member may lie (an old certificate and an old CLOCK: the time at which
a revocation was not yet in force), so:

- The correction is the median of every verified neighbour's offset and of our own
  clock's (0), the middle value nearer our own clock when two share the middle: one
  liar among honest neighbours moves nothing, nor does a lone neighbour. Our own clock
  votes only while our own certificate is valid by it (``own_validity``): a Pi that
  boots before its certificate's start (no real-time clock) follows its neighbours,
  a lone one too (the threat model says so); one whose clock its certificate does not
  contradict is moved by two neighbours or more, never by one.
- It moves only with a quorum: reports from at least ``QUORUM`` peers, or from as many
  as we have sessions with when fewer.
- Ordinary drift within ``tolerance_s`` is left alone.
- After its first change, the correction changes at most once per ``HOLD_S``: whoever
  sways the median for a moment gets one change, not a clock that follows it.
- A peer's offset counts while its session is up, and for ``MAX_AGE_S`` after (a
  neighbour refused at once, with a stale clock, still helps a stale node reach its
  quorum); then it ages out. At most ``MAX_REPORTS`` are kept.
- The floor: the clock never reads earlier than the newest time the node knows has
  passed (a revocation's ``revoked_at`` once in force, a mesh definition's ``issued_at``,
  its own certificate's ``not_before``), kept in the state directory. Whatever the
  neighbours say, a revocation in force stays in force.

Times: ``at`` arguments are the monotonic clock, offsets and the floor Unix seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshd.core.journal import Journal, unheard

MAX_REPORTS = 64  # the most recent peers' offsets: bounded, whatever a flood of sessions
QUORUM = 3  # peers whose offsets move the clock (or all we have sessions with, when fewer)
HOLD_S = 30.0  # between two changes of the correction
MAX_AGE_S = 600.0  # a peer's offset, once its session went


def middle(offsets: list[float]) -> float:
    """The median; of two middle values, the one nearer 0 (our own clock)."""
    ordered = sorted(offsets)
    half = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[half]
    return min(ordered[half - 1], ordered[half], key=abs)


@dataclass
class Report:
    offset_s: float
    live: bool = True  # its session is up
    gone_at: float = 0.0  # when its session went (monotonic)


@dataclass
class ClockConsensus:
    tolerance_s: float
    reports: dict[str, Report] = field(default_factory=dict)  # by peer node id, oldest first
    correction_s: float = 0.0  # what is added to our own clock now
    changed_at: float | None = None  # monotonic; None: never changed

    def __post_init__(self) -> None:
        if self.tolerance_s < 0:
            raise ValueError(f"tolerance_s must not be negative, got {self.tolerance_s}")

    def report(self, peer: str, offset_s: float) -> None:
        """A verified peer's offset (its session is up)."""
        self.reports.pop(peer, None)
        self.reports[peer] = Report(offset_s)
        while len(self.reports) > MAX_REPORTS:
            del self.reports[next(iter(self.reports))]

    def gone(self, peer: str, at: float) -> None:
        """``peer``'s session went: its offset ages out from now."""
        report = self.reports.get(peer)
        if report is not None and report.live:
            report.live, report.gone_at = False, at

    def target(self, at: float, sessions: int, own_vote: bool) -> float | None:
        """Where the quorum puts the correction, or None without a quorum. Aged offsets go
        first. ``sessions``: the peers we have a session with now; ``own_vote``: our own
        clock counts (offset 0)."""
        aged = [p for p, r in self.reports.items() if not r.live and at - r.gone_at > MAX_AGE_S]
        for peer in aged:
            del self.reports[peer]
        if not self.reports or len(self.reports) < min(QUORUM, max(1, sessions)):
            return None
        median = middle([r.offset_s for r in self.reports.values()] + [0.0] * own_vote)
        return median if abs(median) > self.tolerance_s else 0.0

    def update(self, at: float, sessions: int, own_vote: bool) -> bool:
        """Move the correction to the quorum's target if it may move now; True if it did."""
        target = self.target(at, sessions, own_vote)
        if target is None or target == self.correction_s:
            return False
        if self.changed_at is not None and at - self.changed_at < HOLD_S:
            return False
        self.correction_s, self.changed_at = target, at
        return True

    def median(self) -> float:
        """The median offset of the peers heard (0 with none)."""
        return middle([r.offset_s for r in self.reports.values()]) if self.reports else 0.0


class MeshClock:
    """The node's one wall clock, Unix seconds: the system's (``system``, which the shell
    passes: ``time.time``; plus ``test_offset_s``, which only tests set, to play a Pi with
    a stale clock), corrected by the neighbours' consensus, and never below the floor."""

    def __init__(
        self,
        system: Callable[[], float],
        tolerance_s: float,
        test_offset_s: float = 0.0,
        journal: Journal = unheard,
        floor: float = 0.0,
    ) -> None:
        self.system, self.journal = system, journal
        self.consensus = ClockConsensus(tolerance_s)
        self.test_offset_s = test_offset_s
        self.floor = floor
        # Our own certificate's [not_before, expires_at): while our own clock is in it, it
        # votes (set by the control plane's trust; None: it never votes).
        self.own_validity: tuple[float, float] | None = None

    def local(self) -> float:
        """The system clock as this node reads it, uncorrected."""
        return self.system() + self.test_offset_s

    def now(self) -> float:
        return max(self.local() + self.consensus.correction_s, self.floor)

    def unix_ms(self) -> int:
        """What a session's CLOCK tells the peer first: our corrected time, so that a node
        that learned the time passes it on (and one with a stale clock does not spread its
        own)."""
        return max(0, int(self.now() * 1000))

    def raise_floor(self, passed: float) -> bool:
        """``passed`` is a time the node knows has come (a revocation in force, a mesh
        definition, its own certificate's start); True when the floor rose (save it)."""
        if passed <= self.floor:
            return False
        self.floor = passed
        return True

    def report(self, peer: str, offset_s: float, at: float, sessions: int) -> None:
        self.consensus.report(peer, offset_s)
        self.update(at, sessions)

    def gone(self, peer: str, at: float, sessions: int) -> None:
        self.consensus.gone(peer, at)
        self.update(at, sessions)

    def update(self, at: float, sessions: int) -> None:
        """Apply the quorum's correction if it may move now (also called now and then: a
        change held back by ``HOLD_S`` or an aged offset takes effect)."""
        window, local = self.own_validity, self.local()
        own_vote = window is not None and window[0] <= local < window[1]
        if self.consensus.update(at, sessions, own_vote):
            correction = self.consensus.correction_s
            self.journal(
                "clock.off" if correction else "clock.agrees",
                logging.WARNING if correction else logging.INFO,
                message=f"clock is off by {round(-correction)} s" if correction else "",
                correction_s=round(correction, 1),
                peers=len(self.consensus.reports),
            )

    def status(self) -> dict[str, Any]:
        return {
            "now": round(self.now(), 3),
            "correction_s": round(self.consensus.correction_s, 3),
            "median_offset_s": round(self.consensus.median(), 3),
            "peers": len(self.consensus.reports),
            "tolerance_s": self.consensus.tolerance_s,
            "floor": self.floor,
        }
