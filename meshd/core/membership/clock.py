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

import statistics
from dataclasses import dataclass, field

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
