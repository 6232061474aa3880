"""Does the internet answer through our exit tunnel? (pure: check results and ``now`` in, a
verdict out).

A gateway's advert says that its own uplink works (its check: uplink_health) and its grant
that it takes us; neither says that it forwards what we send. So while a household leaves
by a gateway it makes its own check, the same kind as a gateway's: one TCP connection to
``[exit] check_target`` made through the exit tunnel only (a socket bound to the tunnel's
interface: meshd.adapters.net.uplink_probe), a refused one counting as an answer.

A check starts every ``interval_s`` (the first one ``interval_s`` after the tunnel points
at the gateway: the kernel applied it, and the handshake had time), each given
``timeout_s``, so they overlap; the gateway
fails us at ``failures`` failed in a row, about ``timeout_s + (failures - 1) *
interval_s`` after everything stops passing: 1.5 s, well inside the failover target (3 s,
netns-testbed/benchmarks/failover.py) with a new gateway's session and handshake on top.
A lost SYN is one failed check (TCP would send it again after 1 s, its first RTO: RFC 6298
2.1, past the timeout), so a gateway whose uplink works is not left for one lost packet,
nor for a blip shorter than ``interval_s`` (it can cost only one check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EXIT_CHECK_INTERVAL_S = 0.5
EXIT_CHECK_TIMEOUT_S = 1.0
EXIT_CHECK_FAILURES = 2
MAX_OUT = 4  # checks running at once: a slow shell does not pile them up


@dataclass
class ExitCheck:
    """The checks through one gateway's exit (a new one for each grant)."""

    gateway: str  # node id of the gateway the checks go through
    next_at: float  # when the next check starts
    interval_s: float = EXIT_CHECK_INTERVAL_S
    failures: int = EXIT_CHECK_FAILURES
    out: int = 0  # checks started and not answered yet
    failed_in_a_row: int = 0
    checks: int = 0  # answered, since the grant
    failed: int = 0  # of them, failed
    last: str = "not checked yet"  # what the last answered check saw

    @classmethod
    def granted(cls, gateway: str, now: float) -> ExitCheck:
        """Checks of an exit the tunnel points at already."""
        return cls(gateway, now + EXIT_CHECK_INTERVAL_S)

    @classmethod
    def pending(cls, gateway: str) -> ExitCheck:
        """Checks of an exit the tunnel does not point at yet: none until ``applied``
        (one before would go through the previous gateway, and count against this one)."""
        return cls(gateway, math.inf)

    def applied(self, now: float) -> None:
        """The tunnel points at the gateway now."""
        self.next_at = min(self.next_at, now + self.interval_s)

    def due(self, now: float) -> bool:
        """Time to start a check (the caller starts it and reports it to ``result``)."""
        if now < self.next_at or self.out >= MAX_OUT:
            return False
        self.next_at = now + self.interval_s
        self.out += 1
        return True

    def lost(self) -> None:
        """A check ended without a verdict (cancelled, or it could not run)."""
        self.out = max(0, self.out - 1)

    def result(self, ok: bool, detail: str) -> bool:
        """A check answered; True when the gateway fails us (``failures`` in a row)."""
        self.out = max(0, self.out - 1)
        self.checks += 1
        self.last = detail
        if ok:
            self.failed_in_a_row = 0
            return False
        self.failed += 1
        self.failed_in_a_row += 1
        return self.failed_in_a_row >= self.failures
