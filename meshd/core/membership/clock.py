"""The mesh's time (pure): a node's clock corrected by what its neighbours say.

A Pi has no real-time clock: it may boot months in the past or the future, and then every
certificate looks not yet valid or expired by its own clock, so it could never verify a
neighbour and learn the time from the mesh. Each session therefore starts with the peer's
wall clock (session message CLOCK). A peer counts only once its certificate verifies at
the time it reported (signature, chain, addresses are timeless): a stranger's word moves
nothing. The correction is the median of those peers' offsets, so one wrong or lying
member cannot move it alone, and it applies only beyond ``tolerance_s``: ordinary drift
between NTP-synchronised nodes is left alone. Offsets are seconds, the peer's clock minus
our own uncorrected one, measured when its CLOCK arrived.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshd.core.journal import Journal, unheard

MAX_REPORTS = 64  # the most recent peers' offsets: bounded, whatever a flood of sessions


@dataclass
class ClockConsensus:
    tolerance_s: float
    offsets: dict[str, float] = field(default_factory=dict)  # by peer node id, oldest first

    def __post_init__(self) -> None:
        if self.tolerance_s < 0:
            raise ValueError(f"tolerance_s must not be negative, got {self.tolerance_s}")

    def report(self, peer: str, offset_s: float) -> bool:
        """A verified peer's offset; True when the correction changed."""
        before = self.correction()
        self.offsets.pop(peer, None)
        self.offsets[peer] = offset_s
        while len(self.offsets) > MAX_REPORTS:
            del self.offsets[next(iter(self.offsets))]
        return self.correction() != before

    def median(self) -> float:
        """The median offset of the peers heard (0 with none)."""
        return statistics.median(self.offsets.values()) if self.offsets else 0.0

    def correction(self) -> float:
        """What to add to our own clock: the median, once it is beyond the tolerance."""
        median = self.median()
        return median if abs(median) > self.tolerance_s else 0.0


class MeshClock:
    """The node's one wall clock, Unix seconds: the system's (``system``, which the shell
    passes: ``time.time``; plus ``test_offset_s``, which only tests set, to play a Pi with
    a stale clock), corrected by the neighbours' median once that is off by more than the
    tolerance."""

    def __init__(
        self,
        system: Callable[[], float],
        tolerance_s: float,
        test_offset_s: float = 0.0,
        journal: Journal = unheard,
    ) -> None:
        self.system, self.journal = system, journal
        self.consensus = ClockConsensus(tolerance_s)
        self.test_offset_s = test_offset_s

    def local(self) -> float:
        """The system clock as this node reads it, uncorrected."""
        return self.system() + self.test_offset_s

    def now(self) -> float:
        return self.local() + self.consensus.correction()

    def unix_ms(self) -> int:
        """What a session's CLOCK tells the peer first: our corrected time, so that a node
        that learned the time passes it on (and one with a stale clock does not spread its
        own)."""
        return max(0, int(self.now() * 1000))

    def report(self, peer: str, offset_s: float) -> None:
        if self.consensus.report(peer, offset_s):
            correction = self.consensus.correction()
            self.journal(
                "clock.off" if correction else "clock.agrees",
                logging.WARNING if correction else logging.INFO,
                message=f"clock is off by {round(-correction)} s" if correction else "",
                correction_s=round(correction, 1),
                peers=len(self.consensus.offsets),
            )

    def status(self) -> dict[str, Any]:
        return {
            "now": round(self.now(), 3),
            "correction_s": round(self.consensus.correction(), 3),
            "median_offset_s": round(self.consensus.median(), 3),
            "peers": len(self.consensus.offsets),
            "tolerance_s": self.consensus.tolerance_s,
        }
