"""A control client for the dashboard's tests: recorded status documents and events
(tests/tui/snapshots/) replayed as subscriptions, a lost daemon as the error the real
client raises; and how a test waits for the app and reads its screen."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.pilot import Pilot

from meshd.api.client import ControlError, parse_status
from meshd.api.schema import LoggedEvent, Status, StatusUpdate, StreamItem
from tui.app import Dashboard

SNAPSHOTS = Path(__file__).parent / "snapshots"


def status(name: str) -> Status:
    """A recorded document, checked as the real client checks what it receives."""
    return parse_status(json.loads((SNAPSHOTS / f"{name}.json").read_text()))


def updates(*names: str) -> list[StreamItem]:
    return [StatusUpdate(status(name)) for name in names]


def series(name: str) -> list[StreamItem]:
    """A recorded run of documents, one per line of NAME.jsonl (``record --series``)."""
    lines = (SNAPSHOTS / f"{name}.jsonl").read_text().splitlines()
    return [StatusUpdate(parse_status(json.loads(line))) for line in lines]


def events(name: str) -> list[LoggedEvent]:
    records: list[dict[str, Any]] = json.loads((SNAPSHOTS / f"{name}.json").read_text())
    return [LoggedEvent(r["id"], r["time"], r["level"], r["name"], r["fields"]) for r in records]


class FakeFeed:
    """Hands out its items, then waits like a quiet daemon until closed; a ControlError
    among the items is raised as the real subscription raises a lost connection."""

    def __init__(self, items: Sequence[StreamItem | ControlError], last_id: int) -> None:
        self.items = deque(items)
        self.last_id = last_id
        self.closed = threading.Event()

    def receive(self) -> StreamItem | None:
        if self.closed.is_set():
            return None
        if self.items:
            item = self.items.popleft()
            if isinstance(item, ControlError):
                raise item
            return item
        self.closed.wait()
        return None

    def close(self) -> None:
        self.closed.set()


Items = Sequence[StreamItem | ControlError]
Connection = Items | tuple[Items, int] | ControlError


class FakeClient:
    """Each ``subscribe`` is the next scripted connection (the last one again once they
    run out): the items it streams, or the ControlError connecting raises. The daemon's
    newest event id is the ``after`` asked for (it kept running), unless the script says
    otherwise as ``(items, last_id)`` (a restarted daemon). ``after`` of each subscription
    is kept in ``asked``."""

    def __init__(self, *connections: Connection) -> None:
        self.connections = list(connections)
        self.asked: list[int | None] = []

    def subscribe(self, interval: float = 1.0, after: int | None = None) -> FakeFeed:
        self.asked.append(after)
        script = self.connections.pop(0) if len(self.connections) > 1 else self.connections[0]
        if isinstance(script, ControlError):
            raise script
        if isinstance(script, tuple):
            return FakeFeed(script[0], script[1])
        return FakeFeed(script, after or 0)

    def status(self) -> Status:
        raise AssertionError("the dashboard polls only a daemon without subscribe")


def dashboard(client: Any) -> Dashboard:
    """The app with its clock frozen (how old the figures are on the banner) and a short
    retry, so a reconnect happens within a test."""
    return Dashboard(client, interval=1.0, retry_s=0.05, clock=lambda: 1000.0)


async def until(pilot: Pilot[None], condition: Any, within: float = 5.0) -> None:
    """Let the app run until ``condition()`` holds (its worker feeds it from a thread),
    then until it has painted."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the dashboard did not get there"
        await pilot.pause(0.01)
    await pilot.pause()


def screen_text(app: Dashboard) -> str:
    """The screen as plain text, as ``App.export_screenshot`` renders it (as SVG)."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), record=True, legacy_windows=False
    )
    console.print(app.screen._compositor.render_update(full=True))
    return "\n".join(line.rstrip() for line in console.export_text(styles=False).splitlines())
