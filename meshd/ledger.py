"""The node's ledger: one SQLite file (WAL) in the state directory, the only adapter that
imports sqlite. It holds each neighbour's link byte totals with the kernel reading they
were taken from (meshd.receipts.counting), and each neighbour's exit bytes per calendar
month, which a gateway's monthly quotas are checked against; receipts will join it.

Used from one thread (the kernel thread): SQLite connections stay on the thread that made
them.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlite_utils

from meshd.receipts.counting import Counts, Snapshot

LEDGER_FILE = "ledger.sqlite"
EXIT_USAGE = "exit_usage"
LINK_COUNTERS = "link_counters"
_COUNTS = ("relayed_for", "relayed_to", "sent", "received")


def month_of(wall: float) -> str:
    """The calendar month (UTC) that quotas count in, such as ``2026-11``."""
    return time.strftime("%Y-%m", time.gmtime(wall))


class Ledger:
    def __init__(self, path: Path) -> None:
        self.db = sqlite_utils.Database(path)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses at most the last
        self.db.table(EXIT_USAGE).create(
            {"month": str, "node_id": str, "bytes": int},
            pk=("month", "node_id"),
            if_not_exists=True,
        )
        columns: dict[str, type] = {"node_id": str, "kernel_table": int}
        for name in _COUNTS:
            columns[f"{name}_bytes"] = int
            columns[f"{name}_reading"] = int
        self.db.table(LINK_COUNTERS).create(columns, pk="node_id", if_not_exists=True)

    def link_counters(self) -> dict[str, Snapshot]:
        out = {}
        for row in self.db.table(LINK_COUNTERS).rows:
            totals = _counts(row, "bytes")
            out[row["node_id"]] = Snapshot(
                totals, int(row["kernel_table"]), _counts(row, "reading")
            )
        return out

    def save_link_counters(self, snapshots: dict[str, Snapshot]) -> None:
        """Every neighbour's totals and readings, in one transaction."""
        rows = []
        for node_id, snap in snapshots.items():
            row: dict[str, object] = {"node_id": node_id, "kernel_table": snap.table}
            for i, name in enumerate(_COUNTS):
                row[f"{name}_bytes"] = snap.totals[i]
                row[f"{name}_reading"] = snap.reading[i]
            rows.append(row)
        try:
            with self.db.conn:
                self.db.table(LINK_COUNTERS).upsert_all(rows, pk="node_id")
        except sqlite3.Error as exc:
            raise OSError(f"ledger {LEDGER_FILE}: {exc}") from exc

    @classmethod
    def open(cls, state_dir: Path) -> Ledger:
        return cls(state_dir / LEDGER_FILE)

    def exit_usage(self, month: str) -> dict[str, int]:
        rows = self.db.execute(
            f"SELECT node_id, bytes FROM {EXIT_USAGE} WHERE month = ?", [month]
        ).fetchall()
        return {node_id: int(count) for node_id, count in rows}

    def add_exit_usage(self, month: str, deltas: dict[str, int]) -> dict[str, int]:
        """Add bytes to this month's totals in one transaction; the new totals. OSError when
        the file cannot take it (full, read-only): the caller tries again later."""
        try:
            with self.db.conn:
                for node_id, count in deltas.items():
                    self.db.execute(
                        f"INSERT INTO {EXIT_USAGE} (month, node_id, bytes) VALUES (?, ?, ?) "
                        "ON CONFLICT (month, node_id) DO UPDATE SET bytes = bytes + excluded.bytes",
                        [month, node_id, count],
                    )
        except sqlite3.Error as exc:
            raise OSError(f"ledger {LEDGER_FILE}: {exc}") from exc
        return self.exit_usage(month)

    def close(self) -> None:
        self.db.close()


def _counts(row: dict[str, object], suffix: str) -> Counts:
    a, b, c, d = (int(str(row[f"{name}_{suffix}"])) for name in _COUNTS)
    return (a, b, c, d)
