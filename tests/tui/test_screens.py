"""Each screen of the dashboard at 80x24, as text, against tests/tui/screens/NAME.txt.

Time (events in UTC, the banner's clock), hostname (never shown: the node's name is) and
blinking (no cursor blink, no animation) are frozen, so a screen changes only when the
dashboard does. After a deliberate change, look at the new screens and commit them:

    MESHD_TUI_SCREENS=update .venv/bin/pytest tests/tui/test_screens.py
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Input

from meshd.api.client import DaemonUnreachable
from tests.tui.fakes import (
    Connection,
    FakeClient,
    dashboard,
    events,
    screen_text,
    series,
    until,
    updates,
)

SCREENS = Path(__file__).parent / "screens"
UPDATE = os.environ.get("MESHD_TUI_SCREENS") == "update"
LOST = DaemonUnreachable("no_daemon", "no meshd socket at /run/meshd/meshd.sock")

# name: (what the fake daemon streams, the keys pressed, how many status updates to await)
CASES: dict[str, tuple[list[Connection], str, int]] = {
    "overview": ([updates("demo-b-1", "demo-b-2", "demo-b-3")], "", 3),
    "overview-trouble": ([updates("trouble-b-1", "trouble-b-2")], "", 2),
    "overview-link-down": ([updates("cut-a-1", "cut-a-2")], "", 2),
    "neighbours": ([updates("demo-a-1", "demo-a-2", "demo-a-3")], "2", 3),
    "neighbours-refused": ([updates("trouble-b-1", "trouble-b-2")], "2jjj", 2),
    "routes-withdrawn": ([updates("lose-e-a-before-1", "lose-e-a-1")], "3", 2),
    "gateways-exit": ([updates("demo-e-1")], "4", 1),
    "gateways-sharing": ([updates("demo-a-3")], "4", 1),
    "usage-no-receipts": ([updates("demo-a-3")], "5", 1),
    "usage-receipts": ([updates("receipts-b-1", "receipts-b-2")], "5", 2),
    "usage-trouble": ([updates("trouble-b-1", "trouble-b-2")], "5", 2),
    "events": ([[*events("events-b"), *updates("demo-b-1")]], "6", 1),
    "daemon-lost": ([[*updates("demo-b-1"), LOST], LOST], "", 1),
    "traffic": ([series("traffic-gw")], "7", 41),
    "usage-days": ([updates("days-b-1", "days-b-2")], "5", 2),
}


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    was = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if was is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = was
    time.tzset()


@pytest.mark.parametrize("name", sorted(CASES))
def test_screen(name: str) -> None:
    connections, keys, count = CASES[name]

    async def main() -> str:
        app = dashboard(FakeClient(*connections))
        app.animation_level = "none"
        async with app.run_test(size=(80, 24)) as pilot:
            app.query_one(Input).cursor_blink = False
            await until(pilot, lambda: app.live.updates == count)
            if name == "daemon-lost":
                await until(pilot, lambda: app.query_one("#banner").has_class("lost"))
            # j: a row down (keys as Pilot names them)
            await pilot.press(*("down" if k == "j" else k for k in keys))
            await pilot.pause()
            return screen_text(app)

    shown = asyncio.run(main())
    path = SCREENS / f"{name}.txt"
    if UPDATE:
        path.write_text(shown + "\n")
    assert shown + "\n" == path.read_text(), f"{name} changed: see the module's docstring"
