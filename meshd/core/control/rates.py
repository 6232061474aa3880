"""Token buckets (pure): one per session and costly kind (the budgets:
meshd.core.proto.session.budget), and one per QUIC session for what it receives at all
(meshd.adapters.quic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshd.core.proto.session.budget import BUDGETS, Budget


@dataclass
class TokenBucket:
    """Full at first; ``per_s`` tokens back a second, up to ``burst``."""

    burst: float
    per_s: float
    tokens: float = -1.0  # full, at the first take
    at: float | None = None

    def take(self, tokens: float, now: float) -> bool:
        """Whether ``tokens`` are left at ``now`` (then they are taken)."""
        if self.at is None:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        if tokens > self.tokens:
            return False
        self.tokens -= tokens
        return True


@dataclass
class Rates:
    """A session's buckets, one a kind, each full when the session comes up."""

    budgets: dict[str, Budget] = field(default_factory=lambda: BUDGETS)
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def take(self, kind: str, tokens: int, now: float) -> bool:
        bucket = self._buckets.get(kind)
        if bucket is None:
            budget = self.budgets[kind]
            bucket = self._buckets[kind] = TokenBucket(budget.burst, budget.per_s)
        return bucket.take(tokens, now)
