"""The control API's calls that read (docs/control-api.md): slices of the status document,
the receipts and disputes (paged), the recent events, and the subscription that streams
events and status updates.

The node answers the calls that change it (``block``, ``add_revocations``) and passes the
rest here with what they read from: its ``status`` coroutine and, once the node keeps
receipts, readers of its ledger's pages. Without a reader, ``receipts`` and ``disputes``
answer an empty last page: there are none to show, which is true, not an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypedDict

from meshd import log
from meshd.api.server import CallError, Stream


class Page(TypedDict):
    items: list[dict[str, Any]]
    next: str | None  # the ``after`` of the next page; null: this one is the last


# (after, limit) -> a page of at most ``limit`` items following the opaque cursor ``after``
# (None: from the start), oldest first.
PageReader = Callable[[str | None, int], Awaitable[Page]]
StatusReader = Callable[[], Awaitable[dict[str, Any]]]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.1  # status updates cost the daemon a kernel read each
MAX_INTERVAL = 3600.0

# The status document's parts, each served by a call of its own.
_SLICES = {"neighbours": "neighbours", "routes": "routes", "gateways": "gateway", "usage": "usage"}


async def handle(
    call: str,
    args: dict[str, Any],
    status: StatusReader,
    receipts: PageReader | None = None,
    disputes: PageReader | None = None,
    events: log.EventLog = log.RECENT,
) -> Any:
    """Answer ``call``; ``CallError`` (``bad_args``, ``unknown_call``) otherwise."""
    if call in _SLICES:
        return (await status()).get(_SLICES[call])
    if call == "receipts":
        return await _page(receipts, args)
    if call == "disputes":
        return await _page(disputes, args)
    if call == "events":
        return _events(events, args)
    if call == "subscribe":
        return _subscribe(events, status, args)
    raise CallError("unknown_call", f"no call named {call!r}")


async def _page(reader: PageReader | None, args: dict[str, Any]) -> Page:
    after = args.get("after")
    if after is not None and not isinstance(after, str):
        raise CallError("bad_args", "after: expected a cursor (string) or null")
    limit = _integer(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    if reader is None:
        return {"items": [], "next": None}
    return await reader(after, limit)


def _events(events: log.EventLog, args: dict[str, Any]) -> dict[str, Any]:
    after = _integer(args, "after", 0, 0, None)
    limit = _integer(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    found, more = events.after(after, limit, _filter(args))
    return {
        "items": [ev.to_json() for ev in found],
        "next": found[-1].id if more else None,
        "last_id": events.last_id,
    }


def _subscribe(events: log.EventLog, status: StatusReader, args: dict[str, Any]) -> Stream:
    interval = _number(args, "interval", DEFAULT_INTERVAL, MIN_INTERVAL, MAX_INTERVAL)
    last_id = events.last_id
    # Without ``after``, from now on: the events after the head's ``last_id``, so that
    # none is lost between this answer and the stream's start.
    after = _integer(args, "after", last_id, 0, None) if args.get("after") is not None else last_id
    return Stream(
        {"interval": interval, "last_id": last_id},
        _stream(events, _filter(args), after, status, interval),
    )


async def _stream(
    events: log.EventLog,
    wanted: log.EventFilter,
    after: int,
    status: StatusReader,
    interval: float,
) -> AsyncGenerator[dict[str, Any], None]:
    """A status update at once and then every ``interval`` s, events as they come."""
    sub = events.subscribe(wanted, after)
    loop = asyncio.get_running_loop()
    try:
        due = loop.time()
        while True:
            wait = due - loop.time()
            if wait <= 0:
                yield {"kind": "status", "status": await status()}
                # Late updates are not caught up: the next comes a full interval on.
                due = max(due + interval, loop.time())
                continue
            item = await sub.next(wait)
            if item is not None:
                yield item.to_json()
    finally:
        sub.close()


def _filter(args: dict[str, Any]) -> log.EventFilter:
    name, level = args.get("name", ""), args.get("level", "debug")
    if not isinstance(name, str):
        raise CallError("bad_args", "name: expected an event name prefix (string)")
    if level not in log.LEVELS:
        raise CallError("bad_args", f"level: expected one of {', '.join(log.LEVELS)}")
    return log.EventFilter(name, log.LEVELS[level])


def _integer(args: dict[str, Any], key: str, default: int, low: int, high: int | None) -> int:
    value = args.get(key, default)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"{low}..{high}" if high is not None else f"{low} or more"
        raise CallError("bad_args", f"{key}: expected an integer, {bounds}")
    return value


def _number(args: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = args.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise CallError("bad_args", f"{key}: expected a number of seconds, {low}..{high}")
    return float(value)
