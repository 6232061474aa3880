"""The README's picture of the dashboard, from a live daemon:

    python -m tui.screenshot SOCKET FILE.svg [VIEW] [WAIT_S]

runs the dashboard headless at 80x24 against the daemon on SOCKET (in a testbed:
``$MESHD_TESTBED_DIR/nodes/NODE/meshd.sock``), waits for a few status updates (WAIT_S
seconds of them: the traffic view's plots fill over two minutes), switches to VIEW (1-7,
as its keys; default 1, the overview) and saves the screen as SVG."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from meshd.api.client import ControlClient
from tui.app import Dashboard


async def shoot(socket: str, path: Path, view: str, wait_s: float) -> None:
    app = Dashboard(ControlClient(socket))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(wait_s)
        await pilot.press(view)
        await pilot.pause(2.5)  # two updates: the rates need two snapshots
        app.save_screenshot(filename=path.name, path=str(path.parent))


if __name__ == "__main__":
    asyncio.run(
        shoot(
            sys.argv[1],
            Path(sys.argv[2]).resolve(),
            sys.argv[3] if len(sys.argv) > 3 else "1",
            float(sys.argv[4]) if len(sys.argv) > 4 else 3.0,
        )
    )
