"""Where the dashboard's data comes from: a subscription to the daemon, or, from a daemon
older than the ``subscribe`` call, its status read every interval (no events then)."""

from __future__ import annotations

import threading
from typing import Protocol

from meshd.api.schema import Status, StatusUpdate, StreamItem


class Feed(Protocol):
    """What the dashboard reads (``meshd.api.client.Subscription``): ``receive`` blocks for
    the next item, None once closed, ``ControlError`` when the daemon is lost."""

    last_id: int  # the daemon's newest event id when the feed began

    def receive(self) -> StreamItem | None: ...

    def close(self) -> None: ...


class Source(Protocol):
    """What the dashboard needs of ``meshd.api.client.ControlClient`` (tests pass a fake
    replaying recorded snapshots); fails with ``ControlError`` only."""

    def subscribe(self, interval: float = 1.0, after: int | None = None) -> Feed: ...

    def status(self) -> Status: ...


class Polling:
    """A daemon's status every ``interval`` seconds, as a feed without events."""

    last_id = 0

    def __init__(self, source: Source, interval: float) -> None:
        self.source, self.interval = source, interval
        self._closed = threading.Event()
        self._first = True

    def receive(self) -> StreamItem | None:
        if not self._first and self._closed.wait(self.interval):
            return None
        self._first = False
        if self._closed.is_set():
            return None
        return StatusUpdate(self.source.status())

    def close(self) -> None:
        self._closed.set()
