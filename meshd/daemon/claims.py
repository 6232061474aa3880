"""Claims and receipts with every neighbour: the adapter around meshd.core.receipts.exchange.

As provider, after each reading of the link counters (``round``): start an epoch for a
neighbour first metered, throttle one beyond its credit (meshd.adapters.net.throttle), and decide
which claims are due; each claim's seq is stored before the claim is sent. As consumer
(``on_claim``): judge a claim against our own count, sign, store the receipt durably, then
answer. As provider again (``on_receipt``): check the receipt, store it durably with the
signer's certificate (an export carries it), then acknowledge (``on_ack`` notes that on the
consumer's side). Disputes are stored and logged on both sides.

Everything here runs on the kernel thread, which owns the ledger; the node sends what these
methods return over the neighbour's session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from nacl.signing import SigningKey

from meshd.adapters.ledger import Dispute, Ledger
from meshd.adapters.net.throttle import Throttle
from meshd.config import ReceiptsSettings
from meshd.core.proto.session import Claim, ReceiptAck, ReceiptMessage
from meshd.core.receipts.counting import Snapshot
from meshd.core.receipts.errors import ReceiptError
from meshd.core.receipts.exchange import (
    NO_RECEIPTS,
    SIGNED_LESS,
    ZERO,
    Credit,
    Pair,
    ProviderChain,
    ReceiptRefused,
    Tolerance,
    accept,
    claim_due,
    judge,
    new_epoch,
    next_epoch_id,
    on_credit,
)
from meshd.core.receipts.receipt import Receipt
from meshd.log import event

KEEP_CLAIMS = 32  # claims remembered per consumer, to match the receipts that answer them
SIGNED_WINDOW_S = 30  # a receipt's not_before / not_after: signing time -/+ this (clock skew)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Signer:
    """The consumer's membership certificate and delegation (b"": none), canonical."""

    certificate: bytes
    delegation: bytes


class ClaimService:
    def __init__(
        self,
        node_id: str,
        signing_key: SigningKey,
        mesh_id: bytes,
        ledger: Ledger,
        settings: ReceiptsSettings,
        throttle: Throttle,
    ) -> None:
        self.node_id, self.signing_key, self.mesh_id = node_id, signing_key, mesh_id
        self.ledger, self.settings, self.throttle = ledger, settings, throttle
        self.tolerance = Tolerance(settings.tolerance_percent, settings.tolerance_kb * 1024)
        self.credit = Credit(base_bytes=settings.credit_mb * MIB)
        self.provider = ledger.provider_chains()  # by consumer
        self.consumer = ledger.consumer_chains()  # by provider
        self.claims: dict[str, dict[int, Pair]] = {}  # consumer -> seq -> claimed, this run
        self.last_claim: dict[str, tuple[Pair, float]] = {}  # consumer -> (claimed, when)
        self.throttled: dict[str, str] = {}  # consumer -> why
        self.told: dict[str, str] = {}  # consumer -> the reason our latest claim gave it
        self.throttled_by: dict[str, str] = {}  # provider -> why, from its latest claim
        self.acked: dict[str, int] = {}  # provider -> seq it acknowledged last, this run
        self.disputes = ledger.dispute_counts()

    # ---- as provider -------------------------------------------------------------------

    def round(
        self,
        counts: dict[str, Snapshot],
        ifnames: dict[str, str],
        reachable: set[str],
        now: float,
        wall: float,
    ) -> list[tuple[str, Claim]]:
        """After a reading: the claims to send now (to ``reachable`` neighbours, whose
        sessions verified); throttles whoever is beyond its credit."""
        out = []
        for node_id, snap in counts.items():
            totals = (snap.totals[0], snap.totals[1])
            chain = self.provider.get(node_id)
            if chain is None:
                chain = new_epoch(next_epoch_id(int(wall), None))
                self._save(node_id, chain)
                event("receipts.epoch", consumer=node_id, epoch=chain.epoch)
            last = self.last_claim.get(node_id)
            if node_id not in reachable:
                # No session to ask it through, but its link may still carry traffic: what
                # it used since its last receipt is on credit like an unanswered claim.
                self._enforce(node_id, chain, totals)
                continue
            self._enforce(node_id, chain, last[0] if last else chain.answered)
            since = now - last[1] if last else 0.0
            interval, volume = self.settings.claim_interval_s, self.settings.claim_mb * MIB
            news = self.told.get(node_id, "") != self.throttled.get(node_id, "")
            if news or claim_due(chain, totals, last[0] if last else None, since, interval, volume):
                chain = replace(chain, claimed_seq=chain.claimed_seq + 1)
                self._save(node_id, chain)  # durable first: a seq is never used twice
                claimed = totals
                sent = self.claims.setdefault(node_id, {})
                sent[chain.claimed_seq] = claimed
                for old in sorted(sent)[:-KEEP_CLAIMS]:
                    del sent[old]
                self.last_claim[node_id] = (claimed, now)
                reason = self.told[node_id] = self.throttled.get(node_id, "")
                out.append((node_id, Claim(chain.epoch, chain.claimed_seq, *claimed, reason)))
        self.throttle.set({ifnames[n] for n in self.throttled if n in ifnames})
        return out

    def _save(self, node_id: str, chain: ProviderChain) -> None:
        self.ledger.save_provider_chain(node_id, chain)
        self.provider[node_id] = chain

    def _enforce(self, node_id: str, chain: ProviderChain, claimed: Pair) -> None:
        """Throttle a consumer whose unanswered claims are beyond its credit; those claims
        went out a round ago or more (enforcement comes before this round's claims)."""
        used = on_credit(chain, claimed)
        allowed = self.credit.allowance(chain.signed[0] + chain.signed[1])
        was = node_id in self.throttled
        if used > allowed and not was:
            self.throttled[node_id] = NO_RECEIPTS
            event(
                "receipts.throttled",
                logging.WARNING,
                consumer=node_id,
                reason=NO_RECEIPTS,
                unreceipted=used,
                credit=allowed,
            )
        elif used <= allowed and was:
            del self.throttled[node_id]
            event("receipts.unthrottled", consumer=node_id, unreceipted=used, credit=allowed)

    def on_receipt(
        self, consumer: str, msg: ReceiptMessage, signer: Signer | None, wall: float
    ) -> ReceiptAck | None:
        """Store a consumer's receipt, then acknowledge it; None (logged) when refused."""
        try:
            receipt = Receipt.decode(msg.receipt)
            self._check(receipt, consumer)
            chain = self.provider.get(consumer)
            if chain is None or receipt.epoch != chain.epoch:
                raise ReceiptRefused("wrong_epoch", f"epoch {receipt.epoch}")
            totals = (receipt.relayed_for_bytes, receipt.relayed_to_bytes)
            if receipt.seq == chain.receipt_seq and totals == chain.signed:
                return ReceiptAck(receipt.epoch, receipt.seq)  # sent again: stored already
            claimed = self.claims.get(consumer, {}).get(receipt.seq)
            after = accept(chain, receipt.seq, totals, claimed)
        except (ReceiptError, ReceiptRefused) as exc:
            reason = exc.reason if isinstance(exc, ReceiptRefused) else str(exc.reason)
            event("receipts.refused", logging.WARNING, consumer=consumer, reason=reason, error=exc)
            return None
        dispute = None
        if claimed is not None and totals != claimed:
            dispute = Dispute(
                wall, "provider", consumer, receipt.epoch, receipt.seq,
                msg.dispute or SIGNED_LESS, claimed, totals,
            )  # fmt: skip
        held = (signer.certificate, signer.delegation) if signer else None
        self.ledger.store_receipt(receipt, after, dispute, held)
        self.provider[consumer] = after
        self._disputed(dispute)
        return ReceiptAck(receipt.epoch, receipt.seq)

    def _check(self, receipt: Receipt, consumer: str) -> None:
        if receipt.mesh_id != self.mesh_id:
            raise ReceiptRefused("wrong_mesh", receipt.mesh_id.hex())
        if receipt.provider != self.node_id or receipt.consumer != consumer:
            raise ReceiptRefused("wrong_pair", f"{receipt.provider} -> {receipt.consumer}")
        if receipt.not_before > receipt.not_after:
            raise ReceiptRefused("bad_time_bounds", "not_before is after not_after")
        receipt.verify_signature()

    # ---- as consumer -------------------------------------------------------------------

    def on_claim(
        self, provider: str, claim: Claim, own: Pair, wall: float
    ) -> ReceiptMessage | None:
        """Judge a claim against ``own`` (our sent and received totals for the provider,
        read just now), sign and store the receipt; what to answer (None: nothing).
        ClaimRefused for a claim not judged (a new epoch too soon after the last)."""
        if claim.throttled:
            if self.throttled_by.get(provider) != claim.throttled:
                event("receipts.throttled_by", logging.WARNING, provider=provider,
                      reason=claim.throttled)  # fmt: skip
            self.throttled_by[provider] = claim.throttled
        elif self.throttled_by.pop(provider, None) is not None:
            event("receipts.unthrottled_by", provider=provider)
        if not self.settings.sign:
            return None
        claimed = (claim.relayed_for_bytes, claim.relayed_to_bytes)
        # ClaimRefused (a new epoch too soon) goes to the caller, which counts it.
        verdict = judge(
            self.consumer.get(provider), claim.epoch, claim.seq, claimed, own, self.tolerance,
            wall, self.settings.epoch_interval_s,
        )  # fmt: skip
        if verdict is None:  # already signed past it: our latest answers
            latest = self.ledger.latest_receipt(provider, self.node_id)
            return ReceiptMessage(latest.encode()) if latest else None
        now = int(wall)
        receipt = Receipt(
            self.mesh_id, provider, self.node_id, claim.epoch, claim.seq, *verdict.signed,
            max(0, now - SIGNED_WINDOW_S), now + SIGNED_WINDOW_S,
        ).sign(self.signing_key)  # fmt: skip
        dispute = None
        if verdict.dispute:
            dispute = Dispute(
                wall, "consumer", provider, claim.epoch, claim.seq, verdict.dispute, claimed,
                verdict.signed,
            )  # fmt: skip
        self.ledger.store_receipt(receipt, verdict.chain, dispute)
        self.consumer[provider] = verdict.chain
        self._disputed(dispute)
        return ReceiptMessage(receipt.encode(), verdict.dispute)

    def on_ack(self, provider: str, ack: ReceiptAck) -> None:
        if self.ledger.mark_acked(provider, self.node_id, ack.epoch, ack.seq):
            self.acked[provider] = max(ack.seq, self.acked.get(provider, 0))

    def _disputed(self, dispute: Dispute | None) -> None:
        if dispute is None:
            return
        key = (dispute.role, dispute.neighbour)
        self.disputes[key] = self.disputes.get(key, 0) + 1
        event("receipts.dispute", logging.WARNING, **dispute.to_json())

    # ---- status ------------------------------------------------------------------------

    def status(self, node_id: str, snap: Snapshot | None) -> dict[str, Any]:
        """The ``provider`` and ``consumer`` parts of a neighbour's usage (either absent
        until there is a chain)."""
        out: dict[str, Any] = {}
        chain = self.provider.get(node_id)
        if chain is not None:
            last = self.last_claim.get(node_id)
            claimed = last[0] if last else chain.answered
            out["provider"] = {
                "epoch": chain.epoch,
                "seq": chain.receipt_seq or None,
                "claimed_for_bytes": claimed[0],
                "claimed_to_bytes": claimed[1],
                "receipted_for_bytes": chain.signed[0],
                "receipted_to_bytes": chain.signed[1],
                "unreceipted_bytes": on_credit(chain, claimed),
                "credit_bytes": self.credit.allowance(chain.signed[0] + chain.signed[1]),
                "state": "throttled" if node_id in self.throttled else "ok",
                "reason": self.throttled.get(node_id),
                "disputes": self.disputes.get(("provider", node_id), 0),
            }
        mine = self.consumer.get(node_id)
        if mine is not None or node_id in self.throttled_by:
            signed = mine.signed if mine else ZERO
            out["consumer"] = {
                "epoch": mine.epoch if mine else None,
                "seq": (mine.seq or None) if mine else None,
                "signed_for_bytes": signed[0],
                "signed_to_bytes": signed[1],
                "acked_seq": self.acked.get(node_id),
                "throttled": node_id in self.throttled_by,
                "reason": self.throttled_by.get(node_id),
                "disputes": self.disputes.get(("consumer", node_id), 0),
            }
        return out

    def summary(self) -> dict[str, Any]:
        """The top-level ``receipts`` part of the status."""
        return {
            "tolerance_percent": self.tolerance.percent,
            "tolerance_bytes": self.tolerance.bytes,
            "epoch_interval_s": self.settings.epoch_interval_s,
            "credit_bytes": self.credit.base_bytes,
            "signing": self.settings.sign,
        }
