"""What a household gave and took, day by day (the dashboard's usage history): from the
ledger's ``receipt_days`` (each chain's signed totals at the end of each UTC day, a chain
being a provider, a consumer and the epoch its counting began in), the bytes signed for
on each day, per neighbour and both ways. Pure."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

Chain = tuple[str, str, int]  # provider, consumer, epoch


def last_days(today: str, n: int) -> list[str]:
    """The ``n`` UTC days ending with ``today`` (``YYYY-MM-DD``), oldest first."""
    end = datetime.date.fromisoformat(today)
    return [(end - datetime.timedelta(days=n - 1 - i)).isoformat() for i in range(n)]


def daily(
    rows: Iterable[Mapping[str, Any]], own_id: str, days: list[str]
) -> dict[str, dict[str, list[int]]]:
    """``{"gave": {neighbour: [bytes per day]}, "took": {...}}`` over ``days``: what we
    relayed for each neighbour, and it for us, as receipts signed for it. ``rows``: every
    receipt_days row from before the first day (the last of each chain is the base) to
    the last, in day order."""
    index = {day: i for i, day in enumerate(days)}
    out: dict[str, dict[str, list[int]]] = {"gave": {}, "took": {}}
    last: dict[Chain, int] = {}
    for row in rows:
        chain = (row["provider"], row["consumer"], int(row["epoch"]))
        total = int(row["relayed_for_bytes"]) + int(row["relayed_to_bytes"])
        grown = total - last.get(chain, 0)
        last[chain] = total
        i = index.get(row["day"])
        if i is None or grown <= 0:
            continue  # a base before the window (or nothing new)
        provider, consumer, _ = chain
        if provider == own_id:
            way, neighbour = "gave", consumer
        elif consumer == own_id:
            way, neighbour = "took", provider
        else:
            continue
        out[way].setdefault(neighbour, [0] * len(days))[i] += grown
    return out
