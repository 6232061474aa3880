"""The claim/receipt exchange's pure core: what a consumer signs, what a provider accepts,
when it claims and when it throttles."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshd.core.receipts.exchange import (
    CLAIM_DECREASED,
    CLAIM_RATE,
    EPOCH_TOO_SOON,
    OVER_TOLERANCE,
    ZERO,
    ClaimGate,
    ClaimRefused,
    ConsumerChain,
    Credit,
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

TOL = Tolerance(percent=2.0, bytes=1000)


def test_a_claim_within_tolerance_is_signed_as_it_is() -> None:
    verdict = judge(None, 7, 1, (10_000, 20_000), (10_000, 19_800), TOL)
    assert verdict is not None
    assert verdict.signed == (10_000, 20_000) and verdict.dispute == ""
    assert verdict.chain == ConsumerChain(7, ZERO, 1, (10_000, 20_000), (10_000, 19_800))


def test_beyond_tolerance_the_consumer_signs_its_own_count_and_says_why() -> None:
    # 5 % lost on the way to us: the provider counted 100,000, we saw 95,000.
    verdict = judge(None, 7, 1, (50_000, 100_000), (50_000, 95_000), TOL)
    assert verdict is not None
    assert verdict.signed == (50_000, 95_000) and verdict.dispute == OVER_TOLERANCE


def test_the_comparison_is_over_the_epoch_so_the_allowance_is_not_granted_again() -> None:
    chain = judge(None, 7, 1, (0, 900), (0, 0), TOL)
    assert chain is not None and chain.dispute == ""  # 900 <= 0 + 1000
    later = judge(chain.chain, 7, 2, (0, 1_800), (0, 0), TOL)
    assert later is not None and later.dispute == OVER_TOLERANCE
    assert later.signed == (0, 900)  # never less than signed before


def test_a_claim_below_what_was_signed_is_disputed_and_totals_do_not_go_back() -> None:
    first = judge(None, 7, 1, (5_000, 5_000), (5_000, 5_000), TOL)
    assert first is not None
    again = judge(first.chain, 7, 2, (4_000, 6_000), (9_000, 9_000), TOL)
    assert again is not None
    assert again.signed == (5_000, 6_000) and again.dispute == CLAIM_DECREASED


def test_an_old_seq_or_epoch_is_answered_with_the_latest_receipt_not_signed_again() -> None:
    first = judge(None, 7, 3, (1, 1), (1, 1), TOL)
    assert first is not None
    assert judge(first.chain, 7, 3, (2, 2), (2, 2), TOL) is None
    assert judge(first.chain, 7, 2, (2, 2), (2, 2), TOL) is None
    assert judge(first.chain, 6, 9, (2, 2), (2, 2), TOL) is None


def test_a_new_epoch_counts_our_own_bytes_from_the_last_claim_of_the_one_before() -> None:
    old = ConsumerChain(7, ZERO, 4, (100_000, 100_000), (100_000, 100_000))
    verdict = judge(old, 8, 1, (50_000, 50_000), (150_000, 150_000), TOL)
    assert verdict is not None and verdict.dispute == ""
    assert verdict.chain.base == (100_000, 100_000)
    # A provider that lost its ledger cannot claim our history again.
    replay = judge(old, 8, 1, (150_000, 150_000), (150_000, 150_000), TOL)
    assert replay is not None and replay.dispute == OVER_TOLERANCE
    assert replay.signed == (50_000, 50_000)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**9),
            st.integers(0, 10**9),
            st.integers(0, 10**7),
            st.integers(0, 10**7),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_signed_totals_never_decrease_and_never_exceed_a_claim(
    steps: list[tuple[int, int, int, int]],
) -> None:
    chain: ConsumerChain | None = None
    own = ZERO
    for seq, (claim_for, claim_to, grow_for, grow_to) in enumerate(steps, start=1):
        own = (own[0] + grow_for, own[1] + grow_to)
        before = chain.signed if chain else ZERO
        verdict = judge(chain, 1, seq, (claim_for, claim_to), own, TOL)
        assert verdict is not None
        for signed, prior, claimed in zip(
            verdict.signed, before, (claim_for, claim_to), strict=True
        ):
            assert signed >= prior
            assert signed <= max(claimed, prior)
        chain = verdict.chain


def test_epoch_ids_are_unix_times_that_never_repeat() -> None:
    assert next_epoch_id(1_000, None) == 1_000
    assert next_epoch_id(1_000, 1_000) == 1_001
    assert next_epoch_id(900, 1_000) == 1_001  # the clock stepped back


def test_claims_are_due_on_a_period_on_volume_and_again_when_unanswered() -> None:
    chain = new_epoch(1)
    assert not claim_due(chain, ZERO, None, 0, 10, 1 << 20)  # nothing relayed yet
    assert claim_due(chain, (1, 0), None, 0, 10, 1 << 20)  # the first one of this run
    assert not claim_due(chain, (5, 0), (1, 0), 5, 10, 1 << 20)
    assert claim_due(chain, (5, 0), (1, 0), 10, 10, 1 << 20)
    assert claim_due(chain, ((1 << 20) + 1, 0), (1, 0), 1, 10, 1 << 20)  # volume, at once
    answered = ProviderChain(1, 1, 1, (5, 0), (5, 0))
    assert not claim_due(answered, (5, 0), (5, 0), 60, 10, 1 << 20)  # nothing new
    unanswered = ProviderChain(1, 2, 1, (5, 0), (5, 0))
    assert claim_due(unanswered, (6, 0), (6, 0), 10, 10, 1 << 20)


def test_a_provider_accepts_a_receipt_for_a_claim_and_its_credit_is_cleared() -> None:
    chain = ProviderChain(1, 3, 1, (10, 10), (10, 10))
    assert on_credit(chain, (500, 700)) == 1180
    after = accept(chain, 3, (400, 600), (500, 700))
    assert after == ProviderChain(1, 3, 3, (400, 600), (500, 700))
    assert on_credit(after, (500, 700)) == 0  # signed less: a dispute, not a debt


@pytest.mark.parametrize(
    ("seq", "totals", "claimed", "reason"),
    [
        (1, (20, 20), (20, 20), "seq_not_increasing"),
        (4, (20, 20), None, "unclaimed_seq"),
        (2, (5, 20), (20, 20), "totals_decreased"),
        (2, (30, 20), (20, 20), "above_claim"),
    ],
)
def test_a_provider_refuses_receipts_that_do_not_move_its_chain_forward(
    seq: int, totals: tuple[int, int], claimed: tuple[int, int] | None, reason: str
) -> None:
    chain = ProviderChain(1, 3, 1, (10, 10), (10, 10))
    with pytest.raises(ReceiptRefused) as info:
        accept(chain, seq, totals, claimed)
    assert info.value.reason == reason


def test_credit_starts_small_and_grows_with_what_was_signed() -> None:
    credit = Credit(base_bytes=8 << 20, share=0.1, max_bytes=1 << 30)
    assert credit.allowance(0) == 8 << 20
    assert credit.allowance(100 << 20) == 18 << 20
    assert credit.allowance(1 << 40) == 1 << 30


# ---- a provider that starts a new epoch with every claim (issue 28, item 2) ---------------


def test_a_thousand_new_epochs_give_no_more_than_one_tolerance_over_our_own_count() -> None:
    """Every claim in a new epoch, far above what we counted: before, each epoch had a
    fresh allowance (the treasurer adds epochs up); now the pair's history carries it."""
    chain: ConsumerChain | None = None
    own = ZERO
    figures: dict[int, tuple[int, int]] = {}  # epoch -> its latest signed totals
    for k in range(1000):
        own = (own[0] + 10_000, own[1] + 20_000)  # we relay a little between claims
        epoch = 1_000 + k
        verdict = judge(chain, epoch, 1, (10**12, 10**12), own, TOL, now=float(k))
        assert verdict is not None
        figures[epoch] = verdict.signed
        chain = verdict.chain
    signed = (sum(f[0] for f in figures.values()), sum(f[1] for f in figures.values()))
    assert signed[0] <= TOL.most(own[0]) and signed[1] <= TOL.most(own[1]), (signed, own)
    # ... and no less than our own count: an honest figure is still signed in full.
    assert signed[0] >= own[0] - 10_000 and signed[1] >= own[1] - 20_000


def test_a_new_epoch_gets_what_is_left_of_the_tolerance_not_a_fresh_one() -> None:
    first = judge(None, 7, 1, (0, 1_000), (0, 0), TOL, now=0.0)  # the whole allowance
    assert first is not None and first.signed == (0, 1_000) and first.dispute == ""
    again = judge(first.chain, 8, 1, (0, 1_000), (0, 0), TOL, now=10.0)
    assert again is not None and again.signed == (0, 0) and again.dispute == OVER_TOLERANCE
    assert again.chain.before == (0, 1_000) and again.chain.base == ZERO
    # Our own count in the new epoch is always signed, and its share of the tolerance.
    later = judge(again.chain, 8, 2, (0, 51_000), (0, 50_000), TOL, now=20.0)
    assert later is not None and later.signed == (0, 51_000) and later.dispute == ""


def test_a_new_epoch_too_soon_after_the_last_is_refused() -> None:
    first = judge(None, 7, 1, (100, 100), (100, 100), TOL, now=1_000.0, min_epoch_s=3600)
    assert first is not None and first.chain.since == 1_000.0
    with pytest.raises(ClaimRefused) as refused:
        judge(first.chain, 8, 1, (200, 200), (200, 200), TOL, now=4_000.0, min_epoch_s=3600)
    assert refused.value.reason == EPOCH_TOO_SOON
    # The epoch's own claims go on; a new one is taken once the interval has passed.
    same = judge(first.chain, 7, 2, (200, 200), (200, 200), TOL, now=4_000.0, min_epoch_s=3600)
    assert same is not None and same.chain.since == 1_000.0
    new = judge(same.chain, 8, 1, (50, 50), (250, 250), TOL, now=4_600.0, min_epoch_s=3600)
    assert new is not None and new.chain.since == 4_600.0 and new.chain.before == (200, 200)


@given(
    st.lists(
        st.tuples(
            st.booleans(),  # a new epoch
            st.integers(0, 10**9),
            st.integers(0, 10**9),
            st.integers(0, 10**7),
            st.integers(0, 10**7),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_over_all_epochs_we_sign_at_most_our_own_count_plus_one_tolerance(
    steps: list[tuple[bool, int, int, int, int]],
) -> None:
    chain: ConsumerChain | None = None
    own = ZERO
    epoch, seq = 1, 0
    figures: dict[int, tuple[int, int]] = {}
    for new_epoch_now, claim_for, claim_to, grow_for, grow_to in steps:
        own = (own[0] + grow_for, own[1] + grow_to)
        if new_epoch_now:
            epoch, seq = epoch + 1, 0
        seq += 1
        verdict = judge(chain, epoch, seq, (claim_for, claim_to), own, TOL)
        assert verdict is not None
        figures[epoch] = verdict.signed
        chain = verdict.chain
    for way in (0, 1):
        assert sum(f[way] for f in figures.values()) <= TOL.most(own[way])


def test_the_gate_takes_a_claim_every_few_seconds_and_one_at_a_time() -> None:
    gate = ClaimGate(every_s=2.5, burst=4)
    taken = [gate.admit("p", 0.0) for _ in range(1000)]
    assert taken.count("") == 4 and taken.count(CLAIM_RATE) == 996
    assert gate.admit("q", 0.0) == ""  # each provider its own bucket
    assert gate.admit("p", 2.4) == CLAIM_RATE and gate.admit("p", 5.0) == ""
    # An honest provider (a claim per 5 s reading, give or take) is never dropped.
    honest = ClaimGate(every_s=2.5, burst=4)
    assert all(honest.admit("p", 5.0 * k + (2.0 if k % 2 else 0.0)) == "" for k in range(100))
    assert gate.start("p") and not gate.start("p") and gate.start("q")
    gate.done("p")
    assert gate.start("p")
