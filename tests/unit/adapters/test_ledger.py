"""The ledger's exit usage, in a real SQLite file: totals per month add up, survive a reopen,
and a new month starts from nothing."""

from __future__ import annotations

from pathlib import Path

from meshd.adapters.ledger import Ledger, month_of
from meshd.core.receipts.counting import ZERO, Snapshot


def test_exit_usage_adds_up_per_month_and_survives_a_reopen(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    assert ledger.add_exit_usage("2026-11", {"b": 5}) == {"b": 5}
    assert ledger.add_exit_usage("2026-11", {"b": 7, "c": 1}) == {"b": 12, "c": 1}
    ledger.close()
    again = Ledger.open(tmp_path)
    assert again.exit_usage("2026-11") == {"b": 12, "c": 1}
    assert again.exit_usage("2026-12") == {}
    assert again.add_exit_usage("2026-12", {"b": 3}) == {"b": 3}
    again.close()


def test_months_are_utc_calendar_months() -> None:
    assert month_of(1_796_083_199) == "2026-11"  # 2026-11-30 23:59:59 UTC
    assert month_of(1_796_083_200) == "2026-12"


def test_link_counters_are_saved_whole_and_read_back(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    assert ledger.link_counters() == {}
    first = {"b": Snapshot((1, 2, 3, 4), 7, (1, 2, 3, 4))}
    ledger.save_link_counters(first)
    later = {"b": Snapshot((5, 6, 7, 8), 9, (0, 1, 0, 1)), "c": Snapshot((1, 1, 1, 1), 9, ZERO)}
    ledger.save_link_counters(later)
    ledger.close()
    assert Ledger.open(tmp_path).link_counters() == later
