"""What the node relays, counted by the kernel and signed for by its neighbours.

The links' byte counters (meshd.adapters.net.link_meter: nftables counters per link, split into
relayed and own traffic) are read into per-neighbour totals (meshd.core.receipts.counting) on
the kernel thread and saved in the ledger every SAVE_COUNTS_S; a crash loses nothing, the
kernel's table is adopted at the next start. Every METER_S the claims due go to the
verified neighbours, and what they send (claims, receipts, acknowledgements) is answered
by meshd.daemon.claims, each answer stored durably on the kernel thread before it leaves.

Judging a claim costs the kernel thread (which also reads the links' liveness) a reading of
the counters, a signature and a synchronous write, so a neighbour's claims pass a gate
first, in the event loop (meshd.core.receipts.exchange.ClaimGate): at most one every 2.5 s
(a burst of 4), one at a time, the newest waiting; what it drops, and a new epoch refused
as too soon, is counted in the neighbour's ``refusals`` (``claim_rate``, ``claim_pending``,
``claim_epoch_too_soon``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from meshd.adapters.ledger import Ledger, day_of
from meshd.adapters.net.link_meter import LinkMeter
from meshd.adapters.net.throttle import Throttle
from meshd.core.control.effects import MeteringMessage
from meshd.core.membership.clock import MeshClock
from meshd.core.proto.session import Claim, ReceiptMessage
from meshd.core.receipts.counting import Snapshot, advance
from meshd.core.receipts.days import daily, last_days
from meshd.core.receipts.exchange import CLAIM_PENDING, ZERO, ClaimGate, ClaimRefused
from meshd.daemon.claims import ClaimService, Signer
from meshd.daemon.control import ControlService
from meshd.daemon.links import KernelLinks
from meshd.daemon.tasks import Kernel, Tasks
from meshd.log import event

SAVE_COUNTS_S = 60.0  # how often the totals are saved (SD cards: few writes)
HISTORY_DAYS = 14  # the status's usage_days: what receipts were signed for, day by day
HISTORY_EVERY_S = 60.0  # ... read from the ledger this often


class Metering:
    def __init__(
        self,
        meter: LinkMeter,
        links: KernelLinks,
        throttle: Throttle,
        clock: MeshClock,
        kernel: Kernel,
    ) -> None:
        self.link_meter, self.links, self.throttle = meter, links, throttle
        self.clock, self.kernel = clock, kernel
        self.ledger: Ledger | None = None  # the kernel thread's, once open
        self.link_counts: dict[str, Snapshot] = {}  # by neighbour node id; replaced whole
        self._counts_saved = 0.0
        # The status's ``usage_days`` (meshd.core.receipts.days), replaced whole.
        self.days: dict[str, Any] | None = None
        self._days_read = -HISTORY_EVERY_S
        self.claims: ClaimService | None = None  # once running (kernel thread, with the ledger)
        self.control: ControlService | None = None  # where claims and answers go
        self.tasks = Tasks("metering")
        self.gate = ClaimGate()  # which claims are judged (event loop)
        self.waiting: dict[str, Claim] = {}  # provider -> its newest claim, while one is judged

    # ---- on the kernel thread --------------------------------------------------------

    def open(self, ledger: Ledger) -> None:
        """Start from the ledger's totals and the kernel's counters (adopted when a crashed
        meshd left them: their counts go on)."""
        self.ledger = ledger
        self.link_counts = ledger.link_counters()
        self.link_meter.open()
        self.throttle.remove()  # decided again from the ledger at the first reading

    def close(self) -> None:
        """The totals saved (the next start goes on from here), the counters removed."""
        self.throttle.remove()
        try:
            self.meter(time.monotonic(), save=True)
            self.link_meter.remove()
        except OSError as exc:
            event("meter.failed", logging.WARNING, error=str(exc))

    def meter(self, now: float, save: bool = False) -> None:
        """Read the links' counters into the totals; save them every SAVE_COUNTS_S."""
        reading = self.link_meter.read()
        counts = dict(self.link_counts)
        for link in self.links.by_ifname.values():
            found = reading.counts.get(link.ifname)
            if found is not None:
                counts[link.node_id] = advance(counts.get(link.node_id), reading.table, found)
        self.link_counts = counts
        if self.ledger is not None and (save or now - self._counts_saved >= SAVE_COUNTS_S):
            self.ledger.save_link_counters(counts)
            self._counts_saved = now

    def meter_round(self, now: float, reachable: set[str]) -> list[tuple[str, Claim]]:
        """Read the counters, then the claims due to ``reachable`` neighbours."""
        self.meter(now)
        if self.claims is None:
            return []
        if now - self._days_read >= HISTORY_EVERY_S:
            self._days_read = now
            self.read_history()
        ifnames = {link.node_id: link.ifname for link in self.links.by_ifname.values()}
        return self.claims.round(self.link_counts, ifnames, reachable, now, self.clock.now())

    def read_history(self) -> None:
        """The last HISTORY_DAYS of receipts signed, per neighbour and way, from the
        ledger's daily totals."""
        assert self.ledger is not None and self.claims is not None
        days = last_days(day_of(time.time()), HISTORY_DAYS)  # the ledger's days: stored_at
        found = daily(self.ledger.receipt_history(days[0]), self.claims.node_id, days)
        self.days = {"days": days, **found}

    def judge_claim(self, node_id: str, claim: Claim) -> ReceiptMessage | None:
        """A neighbour's claim against our own count, read now (after it read its own)."""
        assert self.claims is not None
        self.meter(time.monotonic())
        snap = self.link_counts.get(node_id)
        own = (snap.totals[2], snap.totals[3]) if snap else ZERO
        return self.claims.on_claim(node_id, claim, own, self.clock.now())

    # ---- in the event loop -----------------------------------------------------------

    async def round(self, now: float) -> None:
        """The counters read and the claims due sent to the verified neighbours."""
        control = self.control
        reachable = set()
        if control is not None:
            reachable = {p.node_id for p in control.core.peers.values() if p.member is not None}
        try:
            claims = await self.kernel(self.meter_round, now, reachable)
        except OSError as exc:
            event("kernel.failed", logging.WARNING, call="meter_round", error=str(exc))
            return
        for node_id, claim in claims:
            assert control is not None
            control.send_to_member(node_id, claim)

    def on_message(self, node_id: str, msg: MeteringMessage) -> None:
        """A neighbour's claim, receipt or acknowledgement (the control plane's
        ``Metering`` effect): answered in a task of its own; a claim only through the
        gate."""
        if not isinstance(msg, Claim):
            self.tasks.spawn(self._answer(node_id, msg))
            return
        dropped = self.gate.admit(node_id, time.monotonic())
        if dropped:
            self._refused(node_id, dropped)
        elif self.gate.start(node_id):
            self.tasks.spawn(self._claims(node_id, msg))
        else:
            if node_id in self.waiting:
                self._refused(node_id, CLAIM_PENDING)
            self.waiting[node_id] = msg

    async def _claims(self, node_id: str, claim: Claim) -> None:
        """Judge this claim, then the newest that came meanwhile, one at a time."""
        try:
            next_claim: Claim | None = claim
            while next_claim is not None:
                await self._answer(node_id, next_claim)
                next_claim = self.waiting.pop(node_id, None)
        finally:
            self.gate.done(node_id)

    def _refused(self, node_id: str, reason: str) -> None:
        """A claim not judged, counted in the neighbour's refusals; logged at the first of
        each reason and every 100th after it."""
        if self.control is not None:
            self.control.count_refusal(node_id, reason, "receipts.claim_refused",
                                       provider=node_id)  # fmt: skip

    async def _answer(self, node_id: str, msg: MeteringMessage) -> None:
        """Answer a claim with a receipt, a receipt with an acknowledgement; each one
        stored durably on the kernel thread before the answer leaves."""
        claims, control = self.claims, self.control
        if claims is None or control is None:
            return
        reply: MeteringMessage | None = None
        try:
            if isinstance(msg, Claim):
                reply = await self.kernel(self.judge_claim, node_id, msg)
            elif isinstance(msg, ReceiptMessage):
                peer = control.core.peers.get(node_id)
                member = peer.member if peer else None
                signer = None
                if member is not None:
                    delegation = member.delegation.encode() if member.delegation else b""
                    signer = Signer(member.certificate.encode(), delegation)
                reply = await self.kernel(claims.on_receipt, node_id, msg, signer, self.clock.now())
            else:
                await self.kernel(claims.on_ack, node_id, msg)
        except ClaimRefused as exc:
            self._refused(node_id, f"claim_{exc.reason}")
            return
        except OSError as exc:
            event("receipts.failed", logging.WARNING, peer=node_id, error=str(exc))
            return
        if reply is not None:
            control.send_to_member(node_id, reply)

    async def stop(self) -> None:
        """Wait for the answers under way (their stores finish on the kernel thread)."""
        await self.tasks.wait()
