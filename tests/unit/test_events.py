"""meshd.log's ring of recent events and its subscribers."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from meshd import log
from meshd.log import Dropped, Event, EventFilter, EventLog

EVERYTHING = EventFilter()


def test_ids_count_on_while_the_ring_keeps_the_newest() -> None:
    ring = EventLog(capacity=3)
    for i in range(5):
        ring.record("link.found", logging.INFO, {"n": i})
    held, more = ring.after(0, 10, EVERYTHING)
    assert [ev.id for ev in held] == [3, 4, 5] and not more
    assert [ev.fields["n"] for ev in held] == [2, 3, 4]
    assert ring.last_id == 5


def test_pages_by_id_with_name_prefix_and_level() -> None:
    ring = EventLog()
    ring.record("session.up", logging.INFO, {})
    ring.record("session.refused", logging.WARNING, {})
    ring.record("link.lost", logging.WARNING, {})
    ring.record("sessions.other", logging.ERROR, {})
    ring.record("session.down", logging.INFO, {})

    def names(after: int, limit: int, wanted: EventFilter) -> tuple[list[str], bool]:
        found, more = ring.after(after, limit, wanted)
        return [ev.name for ev in found], more

    assert names(0, 2, EventFilter("session.")) == (["session.up", "session.refused"], True)
    assert names(2, 2, EventFilter("session.")) == (["session.down"], False)
    assert names(0, 9, EventFilter(level=logging.WARNING)) == (
        ["session.refused", "link.lost", "sessions.other"],
        False,
    )
    assert names(5, 9, EVERYTHING) == ([], False)


def test_fields_become_json_values() -> None:
    ring = EventLog()
    ev = ring.record(
        "x", logging.INFO, {"a": 1, "b": 1.5, "c": None, "d": True, "e": ("h", 1), "f": Path("/p")}
    )
    assert ev.fields == {"a": 1, "b": 1.5, "c": None, "d": True, "e": "('h', 1)", "f": "/p"}
    assert ev.to_json() == {
        "kind": "event",
        "id": 1,
        "time": ev.time,
        "level": "info",
        "name": "x",
        "fields": ev.fields,
    }


def test_event_feeds_the_ring_and_keeps_debug_out_unless_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ring = EventLog()
    monkeypatch.setattr(log, "RECENT", ring)
    was = log.logger.level
    try:
        log.logger.setLevel(logging.INFO)
        log.event("session.up", peer="b")
        log.event("echo.send_failed", logging.DEBUG, interface="mw1")
        log.logger.setLevel(logging.DEBUG)  # --log-level debug
        log.event("hello.dropped", logging.DEBUG, reason="truncated")
    finally:
        log.logger.setLevel(was)
    held, _ = ring.after(0, 10, EVERYTHING)
    assert [(ev.name, log.level_name(ev.level), ev.fields) for ev in held] == [
        ("session.up", "info", {"peer": "b"}),
        ("hello.dropped", "debug", {"reason": "truncated"}),
    ]


def test_a_subscriber_gets_what_matches_and_replays_from_an_id() -> None:
    async def scenario() -> None:
        ring = EventLog()
        ring.record("session.up", logging.INFO, {})
        ring.record("link.lost", logging.WARNING, {})
        sub = ring.subscribe(EventFilter("link."), after=0)
        ring.record("session.down", logging.INFO, {})
        ring.record("link.found", logging.INFO, {})
        got = [await sub.next(1), await sub.next(1)]
        assert [ev.name for ev in got if isinstance(ev, Event)] == ["link.lost", "link.found"]
        assert await sub.next(0.01) is None  # nothing more: a timeout, not an error
        sub.close()
        ring.record("link.lost", logging.WARNING, {})
        assert await sub.next(0.01) is None  # closed: no longer fed

    asyncio.run(scenario())


def test_a_slow_subscriber_loses_the_oldest_and_is_told_how_many() -> None:
    async def scenario() -> None:
        ring = EventLog()
        sub = ring.subscribe(EVERYTHING, capacity=3)
        for i in range(10):
            ring.record("x", logging.INFO, {"n": i})
        assert await sub.next(1) == Dropped(7)
        rest = [await sub.next(1) for _ in range(3)]
        assert [ev.fields["n"] for ev in rest if isinstance(ev, Event)] == [7, 8, 9]
        assert await sub.next(0.01) is None

    asyncio.run(scenario())


def test_events_from_another_thread_wake_the_subscriber() -> None:
    async def scenario() -> None:
        ring = EventLog()
        sub = ring.subscribe(EVERYTHING)
        thread = threading.Thread(target=ring.record, args=("kernel.failed", logging.WARNING, {}))
        waiting = asyncio.ensure_future(sub.next(5))
        await asyncio.sleep(0.01)
        thread.start()
        got = await asyncio.wait_for(waiting, 2)
        thread.join()
        assert isinstance(got, Event) and got.name == "kernel.failed"

    asyncio.run(scenario())
