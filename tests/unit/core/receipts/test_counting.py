"""Totals from restarting kernel counters: never backwards, nothing twice (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshd.core.receipts.counting import Snapshot, advance


def test_the_same_table_adds_what_grew_and_a_new_one_everything() -> None:
    s = advance(None, 7, (10, 20, 30, 40))
    assert s.totals == (10, 20, 30, 40)
    s = advance(s, 7, (15, 20, 31, 40))
    assert s.totals == (15, 20, 31, 40)
    s = advance(s, 7, (15, 20, 31, 40))  # read twice: nothing twice
    assert s.totals == (15, 20, 31, 40)
    s = advance(s, 9, (1, 2, 3, 4))  # a new table after a reboot
    assert s.totals == (16, 22, 34, 44) and s.reading == (1, 2, 3, 4)
    s = advance(s, 9, (0, 5, 3, 4))  # one element made again: counted from zero
    assert s.totals == (16, 25, 34, 44)


def test_a_crash_between_saves_loses_nothing_when_the_table_is_adopted() -> None:
    saved = advance(advance(None, 3, (100, 0, 0, 0)), 3, (150, 0, 0, 0))
    live = advance(saved, 3, (180, 0, 0, 0))  # read, not saved, then kill -9
    del live
    after_restart = advance(saved, 3, (200, 0, 0, 0))  # the kernel kept counting
    assert after_restart.totals == (200, 0, 0, 0)


readings = st.lists(
    st.tuples(st.integers(0, 3), st.tuples(*[st.integers(0, 10**12)] * 4)), max_size=30
)


@given(readings)
def test_totals_never_go_backwards(steps: list[tuple[int, tuple[int, int, int, int]]]) -> None:
    snap: Snapshot | None = None
    for table, reading in steps:
        nxt = advance(snap, table, reading)
        if snap is not None:
            assert all(a <= b for a, b in zip(snap.totals, nxt.totals, strict=True))
        snap = nxt
