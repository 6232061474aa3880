"""Receipts' signatures checked on every core this process may use (the
``signatures`` of meshd.core.receipts.verify_export, for ``meshd receipts verify``).

libsodium checks a signature without holding the GIL, and the Python around each check is
a tenth of it: a long export's receipts are shared among threads in runs of consecutive
receipts, a few runs per thread so that none waits long for the slowest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from meshd.core.receipts import Receipt
from meshd.core.receipts.verify import SignatureCheck, one_by_one

SHARED_FROM = 256  # receipts: fewer are checked by the calling thread
RUNS_PER_THREAD = 4


def on_threads(threads: int | None = None) -> SignatureCheck:
    """A check on ``threads`` threads (None: one per core this process may use)."""
    count = threads or len(os.sched_getaffinity(0))

    def check(receipts: Sequence[Receipt]) -> list[bool]:
        if count <= 1 or len(receipts) < SHARED_FROM:
            return one_by_one(receipts)
        size = -(-len(receipts) // (count * RUNS_PER_THREAD))
        runs = [receipts[i : i + size] for i in range(0, len(receipts), size)]
        with ThreadPoolExecutor(count, thread_name_prefix="verify") as pool:
            return [ok for run in pool.map(one_by_one, runs) for ok in run]

    return check
