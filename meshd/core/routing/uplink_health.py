"""Is this household's own uplink working? (pure: check results and ``now`` in, a verdict
out).

A check is one TCP connection to a target beyond the uplink, made through the uplink only
(meshd.adapters.net.uplink_probe), so that it never succeeds through the mesh. The uplink is
working from its first successful check until no check has succeeded for
``dead_after_s``; once down, it needs ``recover_after`` successes in a row to count as
working again, so that a line that flaps does not move the mesh's users back and forth.
Until the first check answers the verdict is unknown, which counts as not working for
sharing (nothing is announced) and as working for the household's own traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Health(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass
class UplinkHealth:
    interval_s: float
    dead_after_s: float
    recover_after: int = 2
    state: Health = Health.UNKNOWN
    next_check_at: float = 0.0
    last_ok_at: float | None = None
    since: float = 0.0  # when the state last changed
    streak: int = 0  # successes in a row
    reason: str = "not checked yet"

    def __post_init__(self) -> None:
        if not 0 < self.interval_s < self.dead_after_s:
            raise ValueError("expected 0 < interval_s < dead_after_s")
        self._started: float | None = None

    def due(self, now: float) -> bool:
        """Time for the next check (the caller starts it and reports its result)."""
        if self._started is None:
            self._started = now
        if now < self.next_check_at:
            return False
        self.next_check_at = now + self.interval_s
        return True

    def result(self, ok: bool, now: float, detail: str = "") -> bool:
        """A check finished; True when the verdict changed."""
        if not ok:
            self.streak = 0
            self.reason = detail or "the check failed"
            return self.expire(now)
        self.last_ok_at, self.streak = now, self.streak + 1
        if self.state is Health.UP:
            return False
        if self.state is Health.UNKNOWN or self.streak >= self.recover_after:
            return self._set(Health.UP, now, "checks succeed")
        return False

    def expire(self, now: float) -> bool:
        """No success for too long: down (also called between checks); True on change."""
        if self.state is Health.DOWN:
            return False
        last = self.last_ok_at if self.last_ok_at is not None else self._started
        if last is None or now - last < self.dead_after_s:
            return False
        why = self.reason if self.reason != "checks succeed" else "the check failed"
        return self._set(Health.DOWN, now, f"no check succeeded for {now - last:.1f} s: {why}")

    def _set(self, state: Health, now: float, reason: str) -> bool:
        self.state, self.since, self.reason = state, now, reason
        return True

    @property
    def working(self) -> bool:
        return self.state is Health.UP
