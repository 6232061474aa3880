"""Cumulative per-neighbour byte totals from kernel counters that may restart (pure).

The kernel's counters (meshd.adapters.net.link_meter) count from when their table was made; the
ledger keeps, per neighbour, the totals and the last reading they were taken from. A
reading of the same table adds what grew since; a reading of a new table (another
handle: a reboot, or a clean stop that removed it) adds everything it shows. So a
restarted meshd that adopts the kernel's table loses nothing and counts nothing twice,
and one that finds a new table starts again from its last saved totals.
"""

from __future__ import annotations

from dataclasses import dataclass

Counts = tuple[int, int, int, int]  # relayed_for, relayed_to, sent, received
ZERO: Counts = (0, 0, 0, 0)


@dataclass(frozen=True)
class Snapshot:
    totals: Counts  # cumulative, what receipts and usage report
    table: int  # the kernel table's handle at ``reading``
    reading: Counts  # the kernel's counters when ``totals`` was last advanced


def grown(now: int, last: int) -> int:
    """What a kernel counter added since it read ``last``: one below its last reading
    restarted from zero (its element or table was made again)."""
    return now - last if now >= last else now


def advance(previous: Snapshot | None, table: int, reading: Counts) -> Snapshot:
    if previous is None:
        return Snapshot(reading, table, reading)
    same_table = previous.table == table
    totals = []
    for total, now, last in zip(previous.totals, reading, previous.reading, strict=True):
        totals.append(total + (grown(now, last) if same_table else now))  # a new one: all
    return Snapshot((totals[0], totals[1], totals[2], totals[3]), table, reading)
