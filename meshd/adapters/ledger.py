"""The node's ledger: one SQLite file (WAL) in the state directory, the only adapter that
imports sqlite. It holds each neighbour's link byte totals with the kernel reading they
were taken from (meshd.core.receipts.counting); each neighbour's exit bytes per calendar month,
which a gateway's monthly quotas are checked against; and the receipts exchange
(meshd.core.receipts.exchange): both sides' chains, the receipts signed by us or for us, the
disputes, and the signers' certificates that an export carries.

Receipts are compacted as they are stored: the latest of an epoch supersedes the earlier
ones (docs/receipts.md), so a chain (provider, consumer, epoch) keeps only its latest, which
is all that export, verification and the treasurer's summary count; a day's last totals of
each chain are kept in ``receipt_days`` for the history. Disputes likewise: one row per
neighbour and epoch, the latest, with how many of the epoch's claims were disputed. So the
ledger grows with epochs and days, not with claims.

The schema's version is SQLite's ``user_version`` (meshd.adapters.sqlite_schema): a newer
one is refused; an older one is brought up to date in one transaction (``_upgrade``) when
meshd.adapters.state_dir upgrades the state directory, and refused otherwise.

Counter snapshots are written with ``synchronous=NORMAL`` (a power cut may lose the last
ones; the kernel's counters and the rebase make up for it). Receipts and chains are written
with ``synchronous=FULL`` in one transaction, before the receipt is sent or acknowledged:
nothing acknowledged is lost.

Used from one thread (the kernel thread): SQLite connections stay on the thread that made
them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from meshd.adapters import sqlite_schema
from meshd.adapters.sqlite_schema import SchemaError
from meshd.core.receipts.counting import Counts, Snapshot
from meshd.core.receipts.exchange import ConsumerChain, ProviderChain
from meshd.core.receipts.receipt import Receipt

LEDGER_FILE = "ledger.sqlite"
EXIT_USAGE = "exit_usage"
LINK_COUNTERS = "link_counters"
PROVIDER_CHAINS = "provider_chains"
CONSUMER_CHAINS = "consumer_chains"
RECEIPTS = "receipts"
DISPUTES = "disputes"
SIGNERS = "signers"
RECEIPT_DAYS = "receipt_days"
SCHEMA_VERSION = 1  # 1: receipts and disputes compacted, receipt_days, carried tolerance
_COUNTS = ("relayed_for", "relayed_to", "sent", "received")
_PROVIDER = (
    "epoch",
    "claimed_seq",
    "receipt_seq",
    "signed_for",
    "signed_to",
    "answered_for",
    "answered_to",
)
_CONSUMER = (
    "epoch",
    "base_sent",
    "base_received",
    "seq",
    "signed_for",
    "signed_to",
    "own_sent",
    "own_received",
    "before_for",
    "before_to",
)
_RECEIPT = (
    "provider",
    "consumer",
    "epoch",
    "seq",
    "mesh_id",
    "relayed_for_bytes",
    "relayed_to_bytes",
    "not_before",
    "not_after",
    "signature",
)


@dataclass(frozen=True)
class Dispute:
    """A claim that was not signed as it was: the consumer signed its own figure."""

    at: float  # Unix time
    role: str  # ours: provider or consumer
    neighbour: str
    epoch: int
    seq: int
    reason: str
    claimed: tuple[int, int]
    signed: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "role": self.role,
            "neighbour": self.neighbour,
            "epoch": self.epoch,
            "seq": self.seq,
            "reason": self.reason,
            "claimed_for_bytes": self.claimed[0],
            "claimed_to_bytes": self.claimed[1],
            "signed_for_bytes": self.signed[0],
            "signed_to_bytes": self.signed[1],
        }


def day_of(wall: float) -> str:
    """The calendar day (UTC) of the receipts' daily totals, such as ``2026-11-05``."""
    return time.strftime("%Y-%m-%d", time.gmtime(wall))


def month_of(wall: float) -> str:
    """The calendar month (UTC) that quotas count in, such as ``2026-11``."""
    return time.strftime("%Y-%m", time.gmtime(wall))


class Ledger:
    def __init__(self, path: Path, upgrade: bool = False) -> None:
        """``upgrade``: bring a ledger of an older schema up to date (meshd.adapters.
        state_dir, after copying it); otherwise one is refused (sqlite_schema)."""
        self.db = sqlite_utils.Database(path)
        try:
            older = sqlite_schema.pending(self.db, path, SCHEMA_VERSION, upgrade)
        except (SchemaError, sqlite3.Error):
            self.db.close()
            raise
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
        self.db.table(PROVIDER_CHAINS).create(
            {"consumer": str, **dict.fromkeys(_PROVIDER, int)}, pk="consumer", if_not_exists=True
        )
        self.db.table(CONSUMER_CHAINS).create(
            {"provider": str, **dict.fromkeys(_CONSUMER, int), "since": float},
            pk="provider",
            if_not_exists=True,
        )
        receipt: dict[str, type] = {name: int for name in _RECEIPT}
        receipt.update(provider=str, consumer=str, mesh_id=str, signature=str)
        self.db.table(RECEIPTS).create(
            {"id": int, **receipt, "dispute": str, "stored_at": float, "acked": int},
            pk="id",
            if_not_exists=True,
        )
        self.db.table(RECEIPTS).create_index(
            ["provider", "consumer", "epoch", "seq"], unique=True, if_not_exists=True
        )
        self.db.table(DISPUTES).create(
            {
                "id": int,
                "at": float,
                "role": str,
                "neighbour": str,
                "epoch": int,
                "seq": int,
                "reason": str,
                "claimed_for": int,
                "claimed_to": int,
                "signed_for": int,
                "signed_to": int,
                "claims": int,
            },
            pk="id",
            if_not_exists=True,
        )
        self.db.table(SIGNERS).create(
            {"node_id": str, "certificate": bytes, "delegation": bytes},
            pk="node_id",
            if_not_exists=True,
        )
        self.db.table(RECEIPT_DAYS).create(
            {
                "day": str,
                "provider": str,
                "consumer": str,
                "epoch": int,
                "seq": int,
                "relayed_for_bytes": int,
                "relayed_to_bytes": int,
            },
            pk=("day", "provider", "consumer", "epoch"),
            if_not_exists=True,
        )
        if older is not None:
            self._upgrade()

    def _upgrade(self) -> None:
        """A ledger of schema 0 (the first release's) brought to SCHEMA_VERSION, in one
        transaction: the columns it lacks added, each chain's earlier epochs summed into
        its consumer chain, the daily totals taken from its receipts, then its receipts and
        disputes compacted."""
        added: dict[str, dict[str, type]] = {
            CONSUMER_CHAINS: {"before_for": int, "before_to": int, "since": float},
            DISPUTES: {"claims": int},
        }
        try:
            with self.db.conn:
                for name, columns in added.items():
                    table = self.db.table(name)
                    for column, kind in columns.items():
                        if column not in table.columns_dict:
                            table.add_column(column, kind, not_null_default=0)
                self.db.execute(f"UPDATE {DISPUTES} SET claims = 1 WHERE claims = 0")
                # Before compacting: each epoch's latest receipt is its figure.
                latest = (
                    f"SELECT provider, consumer, epoch, max(seq) AS seq FROM {RECEIPTS} "
                    "GROUP BY provider, consumer, epoch"
                )
                for way in ("for", "to"):
                    self.db.execute(
                        f"UPDATE {CONSUMER_CHAINS} SET before_{way} = (SELECT "
                        f"coalesce(sum(r.relayed_{way}_bytes), 0) FROM {RECEIPTS} r JOIN "
                        f"({latest}) l USING (provider, consumer, epoch, seq) WHERE r.provider "
                        f"= {CONSUMER_CHAINS}.provider AND r.epoch < {CONSUMER_CHAINS}.epoch)"
                    )
                self.db.execute(
                    f"INSERT OR REPLACE INTO {RECEIPT_DAYS} SELECT date(stored_at, 'unixepoch') "
                    "AS day, provider, consumer, epoch, seq, relayed_for_bytes, relayed_to_bytes "
                    f"FROM {RECEIPTS} ORDER BY seq"
                )
                self.db.execute(
                    f"DELETE FROM {RECEIPTS} WHERE (provider, consumer, epoch, seq) NOT IN "
                    f"(SELECT provider, consumer, epoch, seq FROM ({latest}))"
                )
                self.db.execute(
                    f"UPDATE {DISPUTES} SET claims = (SELECT count(*) FROM {DISPUTES} d WHERE "
                    f"d.role = {DISPUTES}.role AND d.neighbour = {DISPUTES}.neighbour AND "
                    f"d.epoch = {DISPUTES}.epoch)"
                )
                self.db.execute(
                    f"DELETE FROM {DISPUTES} WHERE id NOT IN (SELECT max(id) FROM {DISPUTES} "
                    "GROUP BY role, neighbour, epoch)"
                )
                sqlite_schema.stamp(self.db, SCHEMA_VERSION)
        except sqlite3.Error as exc:
            raise OSError(f"ledger {LEDGER_FILE}: upgrading it: {exc}") from exc

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
    def open(cls, state_dir: Path, upgrade: bool = False) -> Ledger:
        return cls(state_dir / LEDGER_FILE, upgrade)

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

    # ---- the receipts exchange ------------------------------------------------------

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """One transaction that is on disk when it returns (synchronous=FULL)."""
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            with self.db.conn:
                yield
        except sqlite3.Error as exc:
            raise OSError(f"ledger {LEDGER_FILE}: {exc}") from exc
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")

    def provider_chains(self) -> dict[str, ProviderChain]:
        return {
            row["consumer"]: ProviderChain(
                row["epoch"],
                row["claimed_seq"],
                row["receipt_seq"],
                (row["signed_for"], row["signed_to"]),
                (row["answered_for"], row["answered_to"]),
            )
            for row in self.db.table(PROVIDER_CHAINS).rows
        }

    def consumer_chains(self) -> dict[str, ConsumerChain]:
        return {
            row["provider"]: ConsumerChain(
                row["epoch"],
                (row["base_sent"], row["base_received"]),
                row["seq"],
                (row["signed_for"], row["signed_to"]),
                (row["own_sent"], row["own_received"]),
                (row["before_for"], row["before_to"]),
                row["since"],
            )
            for row in self.db.table(CONSUMER_CHAINS).rows
        }

    def save_provider_chain(self, consumer: str, chain: ProviderChain) -> None:
        """Durably: a claim's seq is stored before the claim is sent."""
        with self._durable():
            self._provider_row(consumer, chain)

    def _provider_row(self, consumer: str, chain: ProviderChain) -> None:
        values = (
            chain.epoch,
            chain.claimed_seq,
            chain.receipt_seq,
            *chain.signed,
            *chain.answered,
        )
        self.db.table(PROVIDER_CHAINS).upsert(
            {"consumer": consumer, **dict(zip(_PROVIDER, values, strict=True))}, pk="consumer"
        )

    def store_receipt(
        self,
        receipt: Receipt,
        chain: ProviderChain | ConsumerChain,
        dispute: Dispute | None,
        signer: tuple[bytes, bytes] | None = None,
    ) -> None:
        """A receipt with the chain it moves forward (ours as its provider or consumer),
        its dispute, and the signer's certificate and delegation: one durable
        transaction, done before the receipt is sent or acknowledged."""
        row: dict[str, Any] = receipt.to_json()
        now = time.time()
        row.update(dispute=dispute.reason if dispute else "", stored_at=now, acked=0)
        chain_key = [receipt.provider, receipt.consumer, receipt.epoch]
        with self._durable():
            self.db.table(RECEIPTS).insert(row, alter=False)
            # The latest of an epoch supersedes the earlier ones.
            self.db.execute(
                f"DELETE FROM {RECEIPTS} WHERE provider = ? AND consumer = ? AND epoch = ? "
                "AND seq < ?",
                [*chain_key, receipt.seq],
            )
            self.db.table(RECEIPT_DAYS).upsert(
                {
                    "day": day_of(now),
                    "provider": receipt.provider,
                    "consumer": receipt.consumer,
                    "epoch": receipt.epoch,
                    "seq": receipt.seq,
                    "relayed_for_bytes": receipt.relayed_for_bytes,
                    "relayed_to_bytes": receipt.relayed_to_bytes,
                },
                pk=("day", "provider", "consumer", "epoch"),
            )
            if isinstance(chain, ProviderChain):
                self._provider_row(receipt.consumer, chain)
            else:
                values = (
                    chain.epoch, *chain.base, chain.seq, *chain.signed, *chain.own,
                    *chain.before,
                )  # fmt: skip
                self.db.table(CONSUMER_CHAINS).upsert(
                    {
                        "provider": receipt.provider,
                        **dict(zip(_CONSUMER, values, strict=True)),
                        "since": chain.since,
                    },
                    pk="provider",
                )
            if dispute is not None:
                self._dispute_row(dispute)
            if signer is not None:
                certificate, delegation = signer
                self.db.table(SIGNERS).upsert(
                    {
                        "node_id": receipt.consumer,
                        "certificate": certificate,
                        "delegation": delegation,
                    },
                    pk="node_id",
                )

    def _dispute_row(self, dispute: Dispute) -> None:
        """The epoch's latest dispute with the neighbour replaces the one before (a new
        row, so that paging by id sees it), counting the claims disputed."""
        where = "role = ? AND neighbour = ? AND epoch = ?"
        key = [dispute.role, dispute.neighbour, dispute.epoch]
        found = self.db.execute(f"SELECT sum(claims) FROM {DISPUTES} WHERE {where}", key)
        claims = int(found.fetchone()[0] or 0) + 1
        self.db.execute(f"DELETE FROM {DISPUTES} WHERE {where}", key)
        self.db.table(DISPUTES).insert(
            {
                "at": dispute.at,
                "role": dispute.role,
                "neighbour": dispute.neighbour,
                "epoch": dispute.epoch,
                "seq": dispute.seq,
                "reason": dispute.reason,
                "claimed_for": dispute.claimed[0],
                "claimed_to": dispute.claimed[1],
                "signed_for": dispute.signed[0],
                "signed_to": dispute.signed[1],
                "claims": claims,
            }
        )

    def mark_acked(self, provider: str, consumer: str, epoch: int, seq: int) -> bool:
        """The provider acknowledged our receipt; False when we hold no such receipt."""
        with self.db.conn:
            cursor = self.db.execute(
                f"UPDATE {RECEIPTS} SET acked = 1 "
                "WHERE provider = ? AND consumer = ? AND epoch = ? AND seq = ?",
                [provider, consumer, epoch, seq],
            )
        return bool(cursor.rowcount)

    def latest_receipt(self, provider: str, consumer: str) -> Receipt | None:
        rows = self.db.execute(
            f"SELECT {', '.join(_RECEIPT)} FROM {RECEIPTS} WHERE provider = ? AND consumer = ? "
            "ORDER BY epoch DESC, seq DESC LIMIT 1",
            [provider, consumer],
        ).fetchall()
        return _receipt(rows[0]) if rows else None

    def receipts(
        self, after: int = 0, limit: int | None = None, since: float = 0.0
    ) -> list[tuple[int, Receipt, str]]:
        """(id, receipt, dispute reason) in the order stored, which keeps every chain in
        increasing seq: ids after ``after``, stored at or after ``since`` (Unix time)."""
        sql = (
            f"SELECT id, {', '.join(_RECEIPT)}, dispute FROM {RECEIPTS} "
            "WHERE id > ? AND stored_at >= ? ORDER BY id"
        )
        params: list[Any] = [after, since]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [(row[0], _receipt(row[1:-1]), row[-1]) for row in self.db.execute(sql, params)]

    def disputes(self, after: int = 0, limit: int | None = None) -> list[tuple[int, Dispute]]:
        sql = (
            f"SELECT id, at, role, neighbour, epoch, seq, reason, claimed_for, claimed_to, "
            f"signed_for, signed_to FROM {DISPUTES} WHERE id > ? ORDER BY id"
        )
        params: list[Any] = [after]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [
            (r[0], Dispute(r[1], r[2], r[3], r[4], r[5], r[6], (r[7], r[8]), (r[9], r[10])))
            for r in self.db.execute(sql, params)
        ]

    def dispute_counts(self) -> dict[tuple[str, str], int]:
        """(role, neighbour) -> disputes recorded."""
        rows = self.db.execute(f"SELECT role, neighbour, sum(claims) FROM {DISPUTES} GROUP BY 1, 2")
        return {(role, neighbour): int(n) for role, neighbour, n in rows}

    def receipt_days(self, since: str = "") -> list[dict[str, Any]]:
        """Each day's last totals of each chain (day, provider, consumer, epoch, seq,
        relayed_for_bytes, relayed_to_bytes) from ``since`` (``YYYY-MM-DD``, UTC) on, in
        order: a pair's bytes on a day are its totals then minus those the day before."""
        return _dicts(
            self.db.execute(
                f"SELECT * FROM {RECEIPT_DAYS} WHERE day >= ? "
                "ORDER BY day, provider, consumer, epoch",
                [since],
            )
        )

    def receipt_history(self, first_day: str) -> list[dict[str, Any]]:
        """``receipt_days`` from ``first_day`` on, after each chain's last row before it
        (the base its first day in the window grew from), in day order
        (meshd.core.receipts.days)."""
        # SQLite: with max(), the bare columns come from the row holding the maximum.
        bases = _dicts(
            self.db.execute(
                f"SELECT max(day) AS day, provider, consumer, epoch, seq, relayed_for_bytes, "
                f"relayed_to_bytes FROM {RECEIPT_DAYS} WHERE day < ? "
                "GROUP BY provider, consumer, epoch",
                [first_day],
            )
        )
        return sorted(bases, key=lambda r: r["day"]) + self.receipt_days(first_day)

    def rows(self) -> dict[str, int]:
        """Rows per table of the receipts exchange (what the ledger holds; for tests and
        the operator)."""
        tables = (RECEIPTS, DISPUTES, RECEIPT_DAYS, CONSUMER_CHAINS, PROVIDER_CHAINS, SIGNERS)
        return {t: int(self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}

    def signers(self) -> dict[str, tuple[bytes, bytes]]:
        """node id -> (membership certificate, delegation or b""), as last seen."""
        return {
            row["node_id"]: (row["certificate"], row["delegation"])
            for row in self.db.table(SIGNERS).rows
        }

    def close(self) -> None:
        self.db.close()


def _dicts(rows: Any) -> list[dict[str, Any]]:
    """A query's rows as dicts by column name."""
    names = [d[0] for d in rows.description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def _receipt(row: Any) -> Receipt:
    return Receipt.from_json(dict(zip(_RECEIPT, row, strict=True)))


def _counts(row: dict[str, object], suffix: str) -> Counts:
    a, b, c, d = (int(str(row[f"{name}_{suffix}"])) for name in _COUNTS)
    return (a, b, c, d)
