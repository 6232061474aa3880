"""The claim and receipt exchange between the two ends of a link (pure: no I/O, no clock).

The provider P relays for its neighbour, the consumer C, and counts it in the kernel
(meshd.adapters.net.link_meter: ``relayed_for`` / ``relayed_to``); C counts the same
traffic from its side (``sent`` / ``received``). Both counts are cumulative totals that
never go backwards (meshd.core.receipts.counting).

- **Epoch.** P starts an epoch for C the first time it meters C, and again only if its
  ledger is lost (the totals are lost with it): the epoch id is a Unix time. A claim
  carries P's totals for C: cumulative in the epoch.
- **Claim.** P claims on a period and on volume (``claim_due``), numbering claims with a
  ``seq`` it stores before it sends, so that a restarted P never reuses one.
- **Judging.** C compares the claim with its own count in the epoch (its total minus the
  base it took when the epoch first reached it). The two ends read their counters at
  different moments and a lossy link drops what P counted before C saw it, so a claim
  within ``Tolerance`` (a share plus a fixed allowance) is signed as it is; beyond it C signs
  its own figure (never less than it signed before, never more than claimed) and both ends
  record a dispute with the reason. The comparison is over the whole epoch, so an allowance
  is not granted again with every claim, and over the pair's whole history too: what C
  signed in the earlier epochs is carried into the next (``ConsumerChain.before``), so a
  provider that starts a new epoch gets no fresh allowance either. C takes a new epoch
  only when its id is newer and ``min_epoch_s`` has passed since the last one reached it
  (a provider restarts its counting only when its ledger is lost): sooner is refused
  (``ClaimRefused``, ``epoch_too_soon``).
- **Credit.** What P claimed and C has not answered is on credit (bytes not claimed yet
  are not: C cannot sign what it was not asked to). ``Credit`` allows a small amount that
  grows with what C has signed for; beyond it P throttles C (never cuts it off) and says
  why in its claims until C signs again.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshd.core.errors import BadInput

Pair = tuple[int, int]  # (relayed_for, relayed_to), or the consumer's (sent, received)
ZERO: Pair = (0, 0)
# Dispute reasons (the RECEIPT message's reason; shown on both sides).
OVER_TOLERANCE = "over_tolerance"  # the claim is above our own count beyond the tolerance
CLAIM_DECREASED = "claim_decreased"  # below what we signed before in the epoch
SIGNED_LESS = "signed_less"  # the provider's word when the consumer gave no reason
NO_RECEIPTS = "no_receipts"  # why a provider throttles: unanswered claims beyond the credit
# Claims the consumer does not judge (counted in the provider's refusals).
EPOCH_TOO_SOON = "epoch_too_soon"  # a new epoch within min_epoch_s of the one before


@dataclass(frozen=True)
class Tolerance:
    percent: float = 2.0
    bytes: int = 256 * 1024

    def most(self, own: int) -> int:
        """The most we sign for ``own`` bytes of our own count."""
        return int(own * (1 + self.percent / 100)) + self.bytes


@dataclass(frozen=True)
class Credit:
    base_bytes: int = 8 * 1024 * 1024
    share: float = 0.1  # of the bytes the consumer has signed for
    max_bytes: int = 1024 * 1024 * 1024

    def allowance(self, signed: int) -> int:
        return min(self.max_bytes, self.base_bytes + int(signed * self.share))


def minus(a: Pair, b: Pair) -> Pair:
    return (max(0, a[0] - b[0]), max(0, a[1] - b[1]))


# ---- the consumer's side -----------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerChain:
    """What a consumer keeps per provider (in its ledger)."""

    epoch: int
    base: Pair  # our own (sent, received) totals when the epoch first reached us
    seq: int  # of the latest receipt we signed in the epoch; 0: none yet
    signed: Pair  # its totals
    own: Pair  # our own totals when we judged the latest claim (a next epoch starts here)
    before: Pair = ZERO  # what we signed in the pair's earlier epochs, summed
    since: float = 0.0  # when the epoch first reached us (Unix time; 0: unknown)


@dataclass(frozen=True)
class Verdict:
    """A judged claim: the totals to sign, the dispute reason (empty: the claim as it is),
    and the chain after signing."""

    signed: Pair
    dispute: str
    chain: ConsumerChain


class ClaimRefused(BadInput):
    """A claim the consumer does not judge; the reason is counted for the provider."""


def judge(
    chain: ConsumerChain | None,
    epoch: int,
    seq: int,
    claimed: Pair,
    own: Pair,
    tolerance: Tolerance,
    now: float = 0.0,
    min_epoch_s: float = 0.0,
) -> Verdict | None:
    """What to sign for a claim, given our own totals now (``own``: since the pair's first
    epoch) at ``now``; None for a claim that is not news (a seq or epoch we have already
    signed past): answer it with the latest receipt. ClaimRefused for a new epoch within
    ``min_epoch_s`` of the one before."""
    if chain is not None and (epoch < chain.epoch or (epoch == chain.epoch and seq <= chain.seq)):
        return None
    if chain is None:
        chain = ConsumerChain(epoch, ZERO, 0, ZERO, ZERO, ZERO, now)
    elif epoch != chain.epoch:
        if now < chain.since + min_epoch_s:
            raise ClaimRefused(
                EPOCH_TOO_SOON, f"epoch {epoch} {now - chain.since:.0f} s after {chain.epoch}"
            )
        before = (chain.before[0] + chain.signed[0], chain.before[1] + chain.signed[1])
        chain = ConsumerChain(epoch, chain.own, 0, ZERO, chain.own, before, now)
    in_epoch = minus(own, chain.base)
    signed = []
    dispute = ""
    # One way at a time: (for, sent) and (to, received). ``signed_i``: what we signed
    # before in this epoch; ``earlier_i``: in the epochs before it.
    for claimed_i, own_i, in_epoch_i, signed_i, earlier_i in zip(
        claimed, own, in_epoch, chain.signed, chain.before, strict=True
    ):
        if claimed_i < signed_i:
            signed.append(signed_i)
            dispute = dispute or CLAIM_DECREASED
        elif claimed_i <= limit(tolerance, in_epoch_i, own_i, earlier_i):
            signed.append(claimed_i)
        else:
            signed.append(max(signed_i, in_epoch_i))
            dispute = OVER_TOLERANCE
    totals = (signed[0], signed[1])
    after = ConsumerChain(epoch, chain.base, seq, totals, own, chain.before, chain.since)
    return Verdict(totals, dispute, after)


def limit(tolerance: Tolerance, in_epoch: int, own: int, earlier: int) -> int:
    """The most we sign in an epoch, one way: our own count in it, plus the tolerance on
    it, but no more than the tolerance left over the pair's history (``own``: our count
    since its first epoch; ``earlier``: what we signed in the epochs before this one), so
    that over all epochs we sign at most our own count plus one tolerance."""
    return max(in_epoch, min(tolerance.most(in_epoch), tolerance.most(own) - earlier))


# ---- the provider's side -----------------------------------------------------------------


@dataclass(frozen=True)
class ProviderChain:
    """What a provider keeps per consumer (in its ledger)."""

    epoch: int
    claimed_seq: int  # the highest seq claimed, stored before the claim was sent
    receipt_seq: int  # of the latest receipt stored; 0: none
    signed: Pair  # its totals
    answered: Pair  # the totals of the claim it answered: what is no longer on credit


def new_epoch(epoch: int) -> ProviderChain:
    return ProviderChain(epoch, 0, 0, ZERO, ZERO)


def next_epoch_id(now: int, previous: int | None) -> int:
    """Unix seconds, always above the previous epoch's id (clocks step back)."""
    return now if previous is None or now > previous else previous + 1


def on_credit(chain: ProviderChain, claimed: Pair) -> int:
    """Bytes (both ways) of our latest claim beyond the latest one the consumer answered."""
    return max(0, claimed[0] + claimed[1] - chain.answered[0] - chain.answered[1])


def claim_due(
    chain: ProviderChain,
    totals: Pair,
    last: Pair | None,
    since_last_s: float,
    interval_s: float,
    volume: int,
) -> bool:
    """Whether to claim now: after ``interval_s`` when there is something new to sign (or
    the last claim went unanswered), and at once when ``volume`` bytes came since the last
    claim (``last``: its totals, None before the first of this run)."""
    if totals == ZERO:
        return False
    if last is None:
        return True
    grown = totals[0] + totals[1] - last[0] - last[1]
    if grown >= volume:
        return True
    unanswered = chain.answered != last
    return since_last_s >= interval_s and (grown > 0 or unanswered)


class ReceiptRefused(BadInput):
    """A receipt the provider does not store; the reason code is for logs and status."""


def accept(chain: ProviderChain, seq: int, totals: Pair, claimed: Pair | None) -> ProviderChain:
    """The chain after storing a receipt for ``seq`` with ``totals``, the epoch's and
    signature already checked; ``claimed`` is what we claimed under that seq (None: a claim
    this run did not make, such as one from before a restart). ReceiptRefused otherwise."""
    if seq <= chain.receipt_seq:
        raise ReceiptRefused("seq_not_increasing", f"seq {seq}, latest {chain.receipt_seq}")
    if seq > chain.claimed_seq:
        raise ReceiptRefused("unclaimed_seq", f"seq {seq}, highest claimed {chain.claimed_seq}")
    if totals[0] < chain.signed[0] or totals[1] < chain.signed[1]:
        raise ReceiptRefused("totals_decreased", f"{totals} after {chain.signed}")
    if claimed is not None and (totals[0] > claimed[0] or totals[1] > claimed[1]):
        raise ReceiptRefused("above_claim", f"{totals} for a claim of {claimed}")
    answered = claimed if claimed is not None else totals
    answered = (max(answered[0], chain.answered[0]), max(answered[1], chain.answered[1]))
    return ProviderChain(chain.epoch, chain.claimed_seq, seq, totals, answered)


# ---- which claims the consumer judges ----------------------------------------------------

CLAIM_RATE = "claim_rate"  # beyond the gate's rate: dropped unjudged
CLAIM_PENDING = "claim_pending"  # replaced, unjudged, by a newer one while one was judged


class ClaimGate:
    """Which of a provider's claims a consumer judges. Judging costs a reading of the
    kernel's counters, a signature and a synchronous write; an honest provider claims at
    most once per reading of its counters (every 5 s), so a claim is taken at most every
    ``every_s`` (a token bucket of ``burst``), and while one is judged the newest one
    after it waits (the one it replaces is dropped: the next claim carries its totals
    too). The provider claims again what goes unanswered."""

    def __init__(self, every_s: float = 2.5, burst: float = 4.0) -> None:
        self.every_s, self.burst = every_s, burst
        self._tokens: dict[str, tuple[float, float]] = {}  # provider -> (tokens, at)
        self._busy: set[str] = set()

    def admit(self, provider: str, now: float) -> str:
        """Empty to take a claim from ``provider`` now, or the reason it is dropped."""
        have, at = self._tokens.get(provider, (self.burst, now))
        have = min(self.burst, have + max(0.0, now - at) / self.every_s)
        if have < 1:
            self._tokens[provider] = (have, now)
            return CLAIM_RATE
        self._tokens[provider] = (have - 1, now)
        return ""

    def start(self, provider: str) -> bool:
        """Whether a claim may be judged now (False: one is under way; wait for it)."""
        if provider in self._busy:
            return False
        self._busy.add(provider)
        return True

    def done(self, provider: str) -> None:
        self._busy.discard(provider)
