"""The order rules of one chain: seq grows, totals never shrink, duplicates change nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshd.core.receipts import ChainChecker, Outcome, Receipt, ReceiptError, ReceiptReason
from tests.unit.receipt_fixtures import LATE, MESH, PROVIDER, nid


def r(seq: int, relayed_for: int = 0, relayed_to: int = 0, epoch: int = 1) -> Receipt:
    # Unsigned: the chain rules look at the fields only, signatures are checked before.
    return Receipt(
        MESH.mesh_id, nid(PROVIDER), nid(LATE), epoch, seq, relayed_for, relayed_to, 0, 0
    )


def _refused(checker: ChainChecker, receipt: Receipt) -> ReceiptReason:
    with pytest.raises(ReceiptError) as excinfo:
        checker.add(receipt)
    return excinfo.value.reason


def test_a_growing_chain_is_accepted_and_the_latest_counts() -> None:
    checker = ChainChecker()
    for seq, total in ((1, 0), (2, 10), (5, 10), (9, 400)):
        assert checker.add(r(seq, total, total)) is Outcome.ACCEPTED
    assert list(checker.latest.values()) == [r(9, 400, 400)]


def test_an_exact_repeat_of_the_latest_is_a_duplicate() -> None:
    checker = ChainChecker()
    checker.add(r(1, 5))
    assert checker.add(r(1, 5)) is Outcome.DUPLICATE
    assert checker.latest[r(1).chain_key] == r(1, 5)


def test_same_seq_different_content_is_a_conflict() -> None:
    checker = ChainChecker()
    checker.add(r(3, 5))
    assert _refused(checker, r(3, 6)) is ReceiptReason.CONFLICT


def test_an_older_receipt_after_a_newer_is_refused_even_if_seen_before() -> None:
    checker = ChainChecker()
    checker.add(r(1, 5))
    checker.add(r(2, 7))
    assert _refused(checker, r(1, 5)) is ReceiptReason.SEQ_NOT_INCREASING  # a replay
    assert _refused(checker, r(0, 0)) is ReceiptReason.SEQ_NOT_INCREASING


@pytest.mark.parametrize("relayed_for, relayed_to", [(9, 20), (10, 19)])
def test_totals_that_go_back_are_refused(relayed_for: int, relayed_to: int) -> None:
    checker = ChainChecker()
    checker.add(r(1, 10, 20))
    assert _refused(checker, r(2, relayed_for, relayed_to)) is ReceiptReason.TOTALS_DECREASED
    # The chain stays where it was: a good successor is still accepted.
    assert checker.add(r(3, 10, 20)) is Outcome.ACCEPTED


def test_epochs_are_separate_chains() -> None:
    checker = ChainChecker()
    checker.add(r(7, 100, 100, epoch=1))
    assert checker.add(r(1, 0, 0, epoch=2)) is Outcome.ACCEPTED
    assert len(checker.latest) == 2


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 1)), max_size=40))
def test_whatever_the_order_the_accepted_chain_only_moves_forward(
    steps: list[tuple[int, int, int]],
) -> None:
    checker = ChainChecker()
    accepted: dict[int, list[Receipt]] = {}
    for seq, total, epoch in steps:
        receipt = r(seq, total, total, epoch)
        try:
            outcome = checker.add(receipt)
        except ReceiptError:
            continue
        if outcome is Outcome.ACCEPTED:
            accepted.setdefault(epoch, []).append(receipt)
    for chain in accepted.values():
        assert all(a.seq < b.seq for a, b in zip(chain, chain[1:], strict=False))
        assert all(
            a.relayed_for_bytes <= b.relayed_for_bytes
            for a, b in zip(chain, chain[1:], strict=False)
        )
        assert checker.latest[chain[-1].chain_key] == chain[-1]
