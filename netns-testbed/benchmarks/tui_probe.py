"""The dashboard against a live daemon, headless at 80x24, for the tui benchmark:
``python -m benchmarks.tui_probe SOCKET SECONDS`` prints one JSON object: the CPU the
process used (all its threads) over the last SECONDS, as a fraction of one core, how
often the screen was redrawn from a new status (refreshes per second), and the longest
time between two redraws."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from meshd.api.client import ControlClient
from tui.app import Dashboard

WARMUP_S = 3.0  # connecting, the first status, the first render


async def probe(socket: str, seconds: float) -> dict[str, float]:
    app = Dashboard(ControlClient(socket), interval=1.0)
    renders: list[float] = []
    draw = app.render_views

    def counted() -> None:
        renders.append(time.monotonic())
        draw()

    app.render_views = counted  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(WARMUP_S)
        cpu0, start = sum(os.times()[:2]), time.monotonic()
        await pilot.pause(seconds)
        cpu1, end = sum(os.times()[:2]), time.monotonic()
        shown = [t for t in renders if start <= t <= end]
    gaps = [b - a for a, b in zip(shown, shown[1:], strict=False)] or [end - start]
    return {
        "cpu_core_fraction": (cpu1 - cpu0) / (end - start),
        "refresh_per_s": len(shown) / (end - start),
        "refresh_gap_max_s": max(gaps),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(sys.argv[1], float(sys.argv[2])))))
