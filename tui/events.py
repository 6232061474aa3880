"""Events: the daemon's log as it happens, newest last, filtered by text and level."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, RichLog, Static

from meshd.api.schema import LoggedEvent

KEEP = 500  # events held for filtering again; the daemon holds more, its journal all
LEVELS = ("debug", "info", "warning", "error")  # the lowest shown, stepped by ``l``
_RANK = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}
_STYLES = {"warning": "yellow", "error": "red", "critical": "bold red"}


class Events(Vertical):
    """``add`` an event or a note; ``/`` filters by text (in the name or any field), ``l``
    steps the lowest level shown."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.held: deque[LoggedEvent | str] = deque(maxlen=KEEP)
        self.level = "info"
        self.shown = 0

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: text in the name or fields (press / here)", id="filter")
        yield Static("", id="events-level")
        yield RichLog(id="events-log", wrap=True, max_lines=KEEP)

    def on_mount(self) -> None:
        self._rewrite()

    def add(self, item: LoggedEvent | str) -> None:
        self.held.append(item)
        if self._wanted(item):
            self.shown += 1
            self.query_one(RichLog).write(line(item))
        self._count()

    def next_level(self) -> None:
        self.level = LEVELS[(LEVELS.index(self.level) + 1) % len(LEVELS)]
        self._rewrite()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._rewrite()

    def _wanted(self, item: LoggedEvent | str) -> bool:
        if isinstance(item, str):
            return True  # notes (events lost, daemon restarted) always show
        if _RANK.get(item.level, _RANK["error"]) < _RANK[self.level]:
            return False  # a level this dashboard does not know shows as an error
        needle = self.query_one(Input).value.strip().lower()
        return not needle or needle in line(item).plain.lower()

    def _rewrite(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        shown = [item for item in self.held if self._wanted(item)]
        for item in shown:
            log.write(line(item))
        self.shown = len(shown)
        self._count()

    def _count(self) -> None:
        # ``shown`` may count events the log has since let go of: it holds as many as this.
        self.query_one("#events-level", Static).update(
            f"level {self.level} and above (l: change) · "
            + (
                f"{min(self.shown, KEEP)} of {len(self.held)} shown"
                if self.held
                else "no events yet"
            )
        )


def line(item: LoggedEvent | str) -> Text:
    if isinstance(item, str):
        return Text(f"— {item}", style="dim")
    clock = time.strftime("%H:%M:%S", time.localtime(item.time))
    fields = " ".join(f"{k}={v}" for k, v in item.fields.items())
    text = Text(f"{clock} ")
    text.append(f"{item.level[:4]:<4} ", style=_STYLES.get(item.level, ""))
    text.append(item.name, style="bold")
    if fields:
        text.append(f" {fields}")
    return text
