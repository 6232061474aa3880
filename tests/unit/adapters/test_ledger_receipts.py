"""The ledger's receipts, in a real SQLite file: a chain keeps only its epoch's latest
receipt, a day's last totals and one dispute per epoch (counting the claims disputed), so
a thousand claims do not grow it; a ledger of the schema before (version 0) is refused when
opened as it is and brought up to date by the state directory's upgrade (a copy kept), its
totals, disputes and export unchanged in what they count."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.adapters import state_dir
from meshd.adapters.ledger import LEDGER_FILE, SCHEMA_VERSION, Ledger, day_of
from meshd.adapters.net import command
from meshd.adapters.net.throttle import Throttle
from meshd.config import ReceiptsSettings
from meshd.core.proto.session import Claim
from meshd.core.receipts.chain import ChainChecker
from meshd.daemon.claims import ClaimService
from tests.unit.receipt_fixtures import CONSUMER, MESH, PROVIDER, nid

P, C = nid(PROVIDER), nid(CONSUMER)
WALL = 1_800_000_000.0
V0 = Path(__file__).with_name("ledger_v0_consumer.sql")  # made by meshd before the upgrade


@pytest.fixture(autouse=True)
def nft(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(command, "run", lambda *cmd, stdin=None: "")
    monkeypatch.setattr(command, "run_ok", lambda *cmd: True)
    yield


def consumer(state: Path, **settings: object) -> ClaimService:
    state.mkdir(exist_ok=True)
    receipts = ReceiptsSettings(tolerance_kb=4, **settings)  # type: ignore[arg-type]
    return ClaimService(C, CONSUMER, MESH.mesh_id, Ledger.open(state), receipts, Throttle(1))


def pages(ledger: Ledger) -> int:
    """The ledger file's pages, its write-ahead log checkpointed into it."""
    ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return int(ledger.db.execute("PRAGMA page_count").fetchone()[0])


def test_a_thousand_claims_leave_one_receipt_one_dispute_and_one_day_per_chain(
    tmp_path: Path,
) -> None:
    c = consumer(tmp_path / "c")
    for seq in range(1, 1001):
        own = (seq * 1000, seq * 1000)
        claim = Claim(7, seq, seq * 2000, seq * 1000)  # twice what we counted one way
        assert c.on_claim(P, claim, own, WALL + seq) is not None
        if seq == 10:
            size = pages(c.ledger)
    rows = c.ledger.rows()
    assert rows["receipts"] == 1 and rows["disputes"] == 1 and rows["receipt_days"] == 1, rows
    [(_, receipt, reason)] = c.ledger.receipts()
    assert (receipt.seq, receipt.relayed_for_bytes, reason) == (1000, 1_000_000, "over_tolerance")
    [(_, dispute)] = c.ledger.disputes()
    # The first four are within the tolerance (4 KiB), the other 996 are disputed.
    assert dispute.seq == 1000 and c.ledger.dispute_counts() == {("consumer", P): 996}
    assert c.status(P, None)["consumer"]["disputes"] == 996
    [day] = c.ledger.receipt_days()
    assert (day["seq"], day["relayed_to_bytes"]) == (1000, 1_000_000)
    assert pages(c.ledger) <= size + 1, (size, pages(c.ledger))  # freed pages are reused
    # What the provider is answered with when it asks again is still the latest.
    latest = c.ledger.latest_receipt(P, C)
    assert latest is not None and latest.seq == 1000


def test_each_epoch_keeps_its_latest_receipt_and_each_day_its_last_totals(
    tmp_path: Path,
) -> None:
    c = consumer(tmp_path / "c", epoch_interval_s=0)
    for epoch in (7, 8):
        for seq in (1, 2, 3):
            own = (epoch * 10_000 + seq, 0)
            c.on_claim(P, Claim(epoch, seq, own[0] - 70_000 * (epoch - 7), 0), own, WALL)
    assert [(r.epoch, r.seq) for _, r, _ in c.ledger.receipts()] == [(7, 3), (8, 3)]
    days = c.ledger.receipt_days(since=day_of(time.time()))  # the day stored
    assert [(d["epoch"], d["seq"]) for d in days] == [(7, 3), (8, 3)]
    assert c.ledger.receipt_days(since="2999-01-01") == []


def test_a_ledger_of_the_schema_before_is_upgraded_with_the_state_directory(
    tmp_path: Path,
) -> None:
    state = tmp_path / "c"
    state.mkdir()
    with sqlite3.connect(state / LEDGER_FILE) as db:
        db.executescript(V0.read_text())
        [(first,)] = db.execute("SELECT min(epoch) FROM receipts").fetchall()
        db.execute("UPDATE receipts SET stored_at = stored_at - 86400 WHERE epoch = ?", [first])
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        before = db.execute(
            "SELECT epoch, max(seq), relayed_for_bytes, relayed_to_bytes FROM receipts "
            "GROUP BY epoch ORDER BY epoch"
        ).fetchall()
    with pytest.raises(OSError, match="schema 0, older than this meshd's 1"):
        Ledger.open(state)
    upgraded = state_dir.upgrade(state, WALL)
    assert upgraded is not None and upgraded.stores == {LEDGER_FILE: 0}
    assert state_dir.store_schema(upgraded.copy / LEDGER_FILE) == 0  # the copy, as it was
    ledger = Ledger.open(state)
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    receipts = [r for _, r, _ in ledger.receipts()]
    assert [(r.epoch, r.seq, r.relayed_for_bytes, r.relayed_to_bytes) for r in receipts] == before
    checker = ChainChecker()
    for receipt in receipts:
        receipt.verify_signature()
        checker.add(receipt)
    # The consumer's chain carries what it signed in the epoch before.
    [(provider, chain)] = ledger.consumer_chains().items()
    assert chain.epoch == before[1][0] and chain.before == (before[0][2], before[0][3])
    assert chain.since == 0.0  # unknown: the provider's next epoch is not refused as too soon
    days = ledger.receipt_days()
    assert len(days) == 2 and days[0]["day"] < days[1]["day"]
    disputes = ledger.disputes()
    assert len(disputes) == 2 and ledger.dispute_counts() == {("consumer", provider): 2}
    ledger.close()
    assert Ledger.open(state).rows()["receipts"] == 2  # opened again: nothing more to do


def test_the_receipt_history_starts_from_each_chains_last_day_before_the_window(
    tmp_path: Path,
) -> None:
    from meshd.adapters.ledger import RECEIPT_DAYS, Ledger

    ledger = Ledger.open(tmp_path)
    try:
        rows = [
            ("2026-11-01", "p", "c", 1, 1, 10, 0),
            ("2026-11-20", "p", "c", 1, 2, 30, 0),  # the base of chain (p, c, 1)
            ("2026-12-02", "p", "c", 1, 3, 45, 5),
            ("2026-11-25", "q", "c", 4, 9, 7, 7),  # another chain's base
        ]
        ledger.db.conn.executemany(f"INSERT INTO {RECEIPT_DAYS} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        found = [(r["day"], r["provider"], r["seq"]) for r in ledger.receipt_history("2026-12-01")]
        assert found == [("2026-11-20", "p", 2), ("2026-11-25", "q", 9), ("2026-12-02", "p", 3)]
    finally:
        ledger.close()
