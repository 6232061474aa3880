"""Structured logging: one event name per line, then key=value fields. Never a key.

Every event also goes to ``RECENT``, a bounded ring of the latest ones, which the control
API serves (``events``) and streams to subscribers (``subscribe``): the dashboard shows
what the daemon just did without reading its journal. The ring keeps its own ids, counting
from 1 for the life of the process, so a client that reconnects asks for what came after
the last id it saw.

Events come from the event loop and from the kernel thread alike: the ring takes a lock,
and a subscriber is woken on its own loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("meshd")

RING_SIZE = 2000  # a few minutes of a busy node; the dashboard keeps fewer
SUBSCRIBER_QUEUE = 512  # a client this far behind loses the oldest and is told how many
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    # aioquic logs each connection error as a WARNING of its own (logger "quic", which has
    # no handler: Python's last resort prints it bare, e.g. "No common ALPN protocols");
    # the session reports the same close already, as SessionClosed with a reason code.
    logging.getLogger("quic").setLevel(logging.ERROR)


def _fmt(value: Any) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def event(name: str, /, level: int = logging.INFO, **fields: Any) -> None:
    # Debug events (send failures that repeat every few ms on a dead link) enter the ring
    # only when the operator asked for them: they would push out everything else.
    if level >= logging.INFO or logger.isEnabledFor(level):
        RECENT.record(name, level, fields)
    logger.log(level, " ".join([name, *(f"{k}={_fmt(v)}" for k, v in fields.items())]))


def level_name(level: int) -> str:
    return logging.getLevelName(level).lower()


def _json_value(value: Any) -> Any:
    """Fields as JSON: numbers, strings, booleans and null as they are, anything else
    (an address tuple, an enum, a path) as the text the log line shows."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(frozen=True)
class Event:
    id: int
    time: float  # Unix time
    level: int
    name: str  # dotted: session.up, route.removed_stale
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "event",
            "id": self.id,
            "time": self.time,
            "level": level_name(self.level),
            "name": self.name,
            "fields": self.fields,
        }


@dataclass(frozen=True)
class Dropped:
    """Stands where a slow subscriber lost ``count`` events (the oldest it had queued)."""

    count: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": "dropped", "count": self.count}


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants: names starting with ``name``, at ``level`` or above."""

    name: str = ""
    level: int = logging.DEBUG

    def matches(self, ev: Event) -> bool:
        return ev.level >= self.level and ev.name.startswith(self.name)


class EventLog:
    """The last ``capacity`` events, and the subscribers that get each new one."""

    def __init__(self, capacity: int = RING_SIZE) -> None:
        self._lock = threading.Lock()
        self._ring: deque[Event] = deque(maxlen=capacity)
        self._last_id = 0
        self._subscribers: set[Subscriber] = set()

    @property
    def last_id(self) -> int:
        """The id of the newest event recorded (0: none yet)."""
        return self._last_id

    def record(self, name: str, level: int, fields: dict[str, Any]) -> Event:
        values = {k: _json_value(v) for k, v in fields.items()}
        with self._lock:
            self._last_id += 1
            ev = Event(self._last_id, time.time(), level, name, values)
            self._ring.append(ev)
            for sub in self._subscribers:
                sub.offer(ev)
        return ev

    def after(self, after: int, limit: int, wanted: EventFilter) -> tuple[list[Event], bool]:
        """Up to ``limit`` events newer than id ``after`` that ``wanted`` matches, oldest
        first, and whether more such events follow them."""
        with self._lock:
            found = [ev for ev in self._ring if ev.id > after and wanted.matches(ev)]
        return found[:limit], len(found) > limit

    def subscribe(
        self, wanted: EventFilter, after: int | None = None, capacity: int = SUBSCRIBER_QUEUE
    ) -> Subscriber:
        """A subscriber on the running loop: the held events after id ``after`` first
        (none when ``after`` is None), then every new one ``wanted`` matches."""
        sub = Subscriber(self, wanted, capacity, asyncio.get_running_loop())
        with self._lock:
            if after is not None:
                for ev in self._ring:
                    if ev.id > after and wanted.matches(ev):
                        sub.offer(ev)
            self._subscribers.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)


class Subscriber:
    """A bounded queue of new events for one reader on one event loop. When the reader
    falls ``capacity`` events behind, the oldest go and the reader gets a ``Dropped``
    with their number before the rest: it learns that it missed some, and how many."""

    def __init__(
        self, log: EventLog, wanted: EventFilter, capacity: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._log, self._wanted, self._loop = log, wanted, loop
        self._queue: deque[Event] = deque()
        self._capacity = capacity
        self._dropped = 0
        self._wake = asyncio.Event()
        self._loop_thread = threading.get_ident()

    def offer(self, ev: Event) -> None:
        """Called with the log's lock held, from any thread."""
        if not self._wanted.matches(ev):
            return
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(ev)
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            # RuntimeError: its loop is closed, nobody will read this queue again.
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    def _take(self) -> Event | Dropped | None:
        with self._log._lock:
            if self._dropped:
                count, self._dropped = self._dropped, 0
                return Dropped(count)
            return self._queue.popleft() if self._queue else None

    async def next(self, timeout: float) -> Event | Dropped | None:
        """The next event (or the count of those lost), None after ``timeout`` seconds."""
        deadline = self._loop.time() + timeout
        while True:
            self._wake.clear()
            item = self._take()
            if item is not None:
                return item
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return None

    def close(self) -> None:
        self._log._unsubscribe(self)


RECENT = EventLog()
