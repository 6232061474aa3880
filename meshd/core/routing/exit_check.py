"""Does the internet answer through our exit tunnel? (pure: traffic readings, check
results and ``now`` in, a verdict out).

A gateway's advert says that its own uplink works (its check: uplink_health) and its grant
that it takes us; neither says that it forwards what we send. So while a household leaves
by a gateway it checks, with the same kind of check as a gateway's: one TCP connection to
``[exit] check_target`` made through the exit tunnel only (a socket bound to the tunnel's
interface: meshd.adapters.net.uplink_probe), a refused one counting as an answer.

Checks run only while there is a reason to doubt the gateway, so that an idle exit costs
no traffic beyond the tunnel's keepalives: once after a grant (the new gateway proven; the
first ``interval_s`` after the tunnel points at it: the kernel applied it, and the
handshake had time), and whenever the tunnel sends and hears nothing back for
``SILENT_S`` (its packet counters, read every tick of 0.25 s: a working gateway answers,
so a flow's first unanswered packets show at once). While in doubt, a check starts every
``interval_s``, each given ``timeout_s``, so they overlap, until one passes; the gateway
fails us at ``failures`` failed in a row, about ``SILENT_S + timeout_s + (failures - 1) *
interval_s`` after everything stops passing (plus up to a tick): 1.45 to 1.7 s, inside the
failover target (3 s, netns-testbed/benchmarks/failover.py) with a new gateway's session
and handshake on top. A lost SYN is one failed check (TCP would send it again after 1 s,
its first RTO: RFC 6298 2.1, past the timeout; an answer takes a few round trips of the
mesh and the uplink, well inside it), so a gateway whose uplink works is not left for one
lost packet, nor for a blip shorter than ``interval_s`` (it can cost only one check; one
of 0.4 s is over before two readings in a row hear nothing), nor for a flow that gets no
answer from its own far end (the check passes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EXIT_CHECK_INTERVAL_S = 0.5
EXIT_CHECK_TIMEOUT_S = 0.75
EXIT_CHECK_FAILURES = 2
SILENT_S = 0.2  # sent through the tunnel and heard nothing back this long: in doubt
MAX_OUT = 4  # checks running at once: a slow shell does not pile them up


# What ``meshd status`` shows before the first grant: no gateway checked yet.
NO_CHECKS = {"gateway": None, "checks": 0, "failed": 0, "failed_in_a_row": 0, "last": None}


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
    doubt: bool = True  # checks run: from the grant, and while traffic goes unanswered
    sent: int | None = None  # the tunnel's packet counters at the last reading
    heard: int | None = None
    unanswered_since: float | None = None  # sent since the last packet heard, from then
    started: int = 0  # checks started: the number of the last one
    passed: int = 0  # the number of the last started of those that passed

    @classmethod
    def granted(cls, gateway: str, now: float) -> ExitCheck:
        """Checks of an exit the tunnel points at already."""
        return cls(gateway, now + EXIT_CHECK_INTERVAL_S)

    @classmethod
    def pending(cls, gateway: str) -> ExitCheck:
        """Checks of an exit the tunnel does not point at yet: none until ``applied``
        (one before would go through the previous gateway, and count against this one)."""
        return cls(gateway, math.inf)

    def status(self) -> dict[str, object]:
        """What ``meshd status`` shows of these checks."""
        return {
            "gateway": self.gateway,
            "checks": self.checks,
            "failed": self.failed,
            "failed_in_a_row": self.failed_in_a_row,
            "last": self.last,
        }

    def applied(self, now: float) -> None:
        """The tunnel points at the gateway now."""
        self.next_at = min(self.next_at, now + self.interval_s)

    def traffic(self, sent: int, heard: int, now: float) -> None:
        """The tunnel's packet counters (out, in), read at ``now``: what we send going
        unanswered for ``SILENT_S`` puts the gateway in doubt, checked at once."""
        if self.sent is not None and self.heard is not None:
            if heard != self.heard:
                self.unanswered_since = None
            elif sent != self.sent and self.unanswered_since is None:
                self.unanswered_since = now
        self.sent, self.heard = sent, heard
        since = self.unanswered_since
        if not self.doubt and since is not None and now - since >= SILENT_S:
            self.doubt = True
            self.next_at = min(self.next_at, now)

    def due(self, now: float) -> bool:
        """Time to start a check (the caller starts it and reports it to ``result``)."""
        if not self.doubt or now < self.next_at or self.out >= MAX_OUT:
            return False
        self.next_at = now + self.interval_s
        self.out += 1
        self.started += 1
        return True

    def lost(self) -> None:
        """A check ended without a verdict (cancelled, or it could not run)."""
        self.out = max(0, self.out - 1)

    def result(self, ok: bool, detail: str, number: int | None = None) -> bool:
        """Check ``number`` (default: the last started) answered; True when the gateway
        fails us (``failures`` in a row). A check that fails after a later one passed
        (they overlap) is counted, not in a row: the gateway answered since."""
        number = self.started if number is None else number
        self.out = max(0, self.out - 1)
        self.checks += 1
        self.last = detail
        if ok:
            self.passed = max(self.passed, number)
            self.failed_in_a_row = 0
            self.doubt, self.unanswered_since = False, None
            return False
        self.failed += 1
        if number < self.passed:
            return False
        self.failed_in_a_row += 1
        return self.failed_in_a_row >= self.failures
