"""Receipts signed for, day by day (meshd.core.receipts.days): a chain's daily totals
become each day's growth, per neighbour and way, across epochs and the window's edge."""

from __future__ import annotations

from typing import Any

from meshd.core.receipts.days import daily, last_days

US, A, B = "us" * 20, "a" * 40, "b" * 40


def row(day: str, provider: str, consumer: str, epoch: int, f: int, t: int) -> dict[str, Any]:
    return {
        "day": day,
        "provider": provider,
        "consumer": consumer,
        "epoch": epoch,
        "seq": 1,
        "relayed_for_bytes": f,
        "relayed_to_bytes": t,
    }


def test_the_last_days_end_today_oldest_first_across_a_month() -> None:
    assert last_days("2026-12-02", 3) == ["2026-11-30", "2026-12-01", "2026-12-02"]


def test_each_day_shows_what_it_added_to_its_chain_both_ways() -> None:
    days = last_days("2026-12-04", 3)
    rows = [
        row("2026-11-20", US, A, 1, 1000, 500),  # the base: before the window
        row("2026-12-02", US, A, 1, 1500, 600),
        row("2026-12-04", US, A, 1, 1500, 900),
        row("2026-12-03", A, US, 7, 40, 60),  # a relays for us: its first day
        row("2026-12-04", A, B, 7, 999, 999),  # between two others: not ours
    ]
    rows.sort(key=lambda r: r["day"])
    found = daily(rows, US, days)
    assert found["gave"] == {A: [600, 0, 300]}
    assert found["took"] == {A: [0, 100, 0]}


def test_a_new_epoch_counts_from_zero_beside_the_old_one() -> None:
    days = last_days("2026-12-04", 2)
    rows = [
        row("2026-12-03", US, B, 1, 700, 0),
        row("2026-12-04", US, B, 1, 800, 0),  # the old epoch's last claim
        row("2026-12-04", US, B, 2, 50, 0),  # the provider restarted its counting
    ]
    assert daily(rows, US, days)["gave"] == {B: [700, 150]}
