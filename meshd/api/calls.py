"""The control API's calls (docs/control-api.md), one table: what each call reads or changes.

Each call is marked in the table as reading or changing the node. The calls that change it
(``add_revocations``, ``mesh_definition``, ``block``) answer root (or the daemon's own user)
only: anyone else, a member of the ``meshd`` group that may connect for ``meshd status`` and
the dashboard, gets ``not_permitted``, logged (``api.refused``) and counted by reason.
``mesh_definition`` adopts what it is given, so it is refused even with nothing to adopt;
``status`` says the definition's serial and admins to everyone.

The read calls answer from what they are given: the node's ``status`` coroutine (whole,
or a slice of it per call), readers of its ledger's pages (without a reader, ``receipts``
and ``disputes`` answer an empty last page: there are none to show, which is true, not an
error), the event ring (``events``, and ``subscribe``, which streams events and status
updates). The calls that change the node (``add_revocations``, ``mesh_definition``,
``block``), ``revocations`` and ``map`` go to ``node`` (a ``Changes``:
meshd.daemon.node.Node); bad arguments and refused input answer ``bad_args`` or the
refusal's reason.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypedDict

from meshd import __version__, log
from meshd.api import API_VERSION
from meshd.api.server import Caller, CallError, Stream
from meshd.core.errors import BadInput
from meshd.core.keys import public_from_node_id


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


class Changes(Protocol):
    """What the calls that change the node need of it."""

    def revocations(self) -> list[dict[str, Any]]: ...

    def add_revocations(self, records: list[bytes]) -> dict[str, int]: ...

    def adopt_definitions(self, records: list[bytes]) -> dict[str, Any]: ...

    def proposals(self) -> list[dict[str, Any]]: ...

    def propose(self, records: list[bytes]) -> list[dict[str, Any]]: ...

    def block(self, node_id: str, blocked: bool) -> None: ...

    def map_documents(self) -> dict[str, Any]: ...

    def publish_release(self, manifest: bytes) -> dict[str, Any]: ...

    async def add_device(
        self, name: str, endpoint: str | None, everything: bool
    ) -> dict[str, Any]: ...

    async def remove_device(self, name: str) -> dict[str, Any]: ...

    async def device_list(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Sources:
    status: StatusReader
    receipts: PageReader | None
    disputes: PageReader | None
    events: log.EventLog
    node: Changes | None


async def handle(
    call: str,
    args: dict[str, Any],
    caller: Caller,
    status: StatusReader,
    receipts: PageReader | None = None,
    disputes: PageReader | None = None,
    events: log.EventLog = log.RECENT,
    node: Changes | None = None,
    refused: Counter[str] | None = None,
) -> Any:
    """Answer ``call`` from ``caller``; ``CallError`` (``bad_args``, ``unknown_call``,
    ``not_permitted``, a refusal's reason) otherwise. ``refused`` counts the callers
    turned away, by reason."""
    entry = CALLS.get(call)
    if entry is None:
        raise CallError("unknown_call", f"no call named {call!r}")
    if entry.changes and not caller.may_change:
        _refuse(call, caller, "not_root", Counter() if refused is None else refused)
    try:
        return await entry.answer(Sources(status, receipts, disputes, events, node), args)
    except BadInput as exc:  # a record handed in that does not verify
        raise CallError(exc.reason, exc.message) from None


def _refuse(call: str, caller: Caller, reason: str, refused: Counter[str]) -> NoReturn:
    refused[reason] += 1
    log.event(
        "api.refused",
        logging.WARNING,
        call=call,
        reason=reason,
        uid=caller.uid,
        pid=caller.pid,
        count=refused[reason],
    )
    raise CallError(
        "not_permitted",
        f"{call} changes the node: only root may call it (the caller is uid {caller.uid}); "
        "run it with sudo",
    )


def _slice(key: str) -> Answer:
    async def answer(sources: Sources, args: dict[str, Any]) -> Any:
        return (await sources.status()).get(key)

    return answer


async def _status(sources: Sources, args: dict[str, Any]) -> Any:
    return await sources.status()


async def _version(sources: Sources, args: dict[str, Any]) -> Any:
    return {"meshd": __version__, "api": API_VERSION, "python": platform.python_version()}


async def _receipts(sources: Sources, args: dict[str, Any]) -> Page:
    return await _page(sources.receipts, args)


async def _disputes(sources: Sources, args: dict[str, Any]) -> Page:
    return await _page(sources.disputes, args)


async def _events_call(sources: Sources, args: dict[str, Any]) -> Any:
    return _events(sources.events, args)


async def _subscribe_call(sources: Sources, args: dict[str, Any]) -> Any:
    return _subscribe(sources.events, sources.status, args)


def _node(sources: Sources) -> Changes:
    if sources.node is None:
        raise CallError("unknown_call", "this daemon does not take that call")
    return sources.node


async def _revocations(sources: Sources, args: dict[str, Any]) -> Any:
    return _node(sources).revocations()


async def _add_revocations(sources: Sources, args: dict[str, Any]) -> Any:
    return _node(sources).add_revocations(_hex_list(args.get("records")))


async def _mesh_definition(sources: Sources, args: dict[str, Any]) -> Any:
    return _node(sources).adopt_definitions(_hex_list(args.get("records")))


async def _proposals(sources: Sources, args: dict[str, Any]) -> Any:
    return _node(sources).proposals()


async def _propose(sources: Sources, args: dict[str, Any]) -> Any:
    return _node(sources).propose(_hex_list(args.get("records")))


async def _block(sources: Sources, args: dict[str, Any]) -> Any:
    node_id, blocked = args.get("node_id"), args.get("blocked", True)
    if not isinstance(node_id, str) or not isinstance(blocked, bool):
        raise CallError("bad_args", "expected node_id (a string) and blocked (bool)")
    try:
        public_from_node_id(node_id)
        _node(sources).block(node_id, blocked)  # ValueError: the config blocks it
    except ValueError as exc:
        raise CallError("bad_args", str(exc)) from None
    return {"node_id": node_id, "blocked": blocked}


async def _map(sources: Sources, args: dict[str, Any]) -> Any:
    return _node(sources).map_documents()


async def _publish_release(sources: Sources, args: dict[str, Any]) -> Any:
    manifest = args.get("manifest")
    try:
        data = bytes.fromhex(manifest) if isinstance(manifest, str) else None
    except ValueError:
        data = None
    if not data:
        raise CallError("bad_args", "expected manifest (hex)")
    return _node(sources).publish_release(data)


async def _devices(sources: Sources, args: dict[str, Any]) -> Any:
    return await _node(sources).device_list()


async def _device_add(sources: Sources, args: dict[str, Any]) -> Any:
    name, endpoint, everything = args.get("name"), args.get("endpoint"), args.get("all", False)
    if (
        not isinstance(name, str)
        or not (endpoint is None or isinstance(endpoint, str))
        or not isinstance(everything, bool)
    ):
        raise CallError("bad_args", "expected name (a string), endpoint (a string or null), all")
    return await _node(sources).add_device(name, endpoint, everything)


async def _device_remove(sources: Sources, args: dict[str, Any]) -> Any:
    name = args.get("name")
    if not isinstance(name, str):
        raise CallError("bad_args", "expected name (a string)")
    return await _node(sources).remove_device(name)


Answer = Callable[[Sources, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Call:
    answer: Answer
    changes: bool = False  # changes the node: root (or the daemon's user) only


CALLS: dict[str, Call] = {
    "status": Call(_status),
    "version": Call(_version),
    # The status document's parts, each served by a call of its own.
    "neighbours": Call(_slice("neighbours")),
    "routes": Call(_slice("routes")),
    "gateways": Call(_slice("gateway")),
    "usage": Call(_slice("usage")),
    "receipts": Call(_receipts),
    "disputes": Call(_disputes),
    "events": Call(_events_call),
    "subscribe": Call(_subscribe_call),
    "revocations": Call(_revocations),
    "map": Call(_map),
    "releases": Call(_slice("releases")),
    "add_revocations": Call(_add_revocations, changes=True),
    "mesh_definition": Call(_mesh_definition, changes=True),
    "proposals": Call(_proposals),
    "propose": Call(_propose, changes=True),
    "block": Call(_block, changes=True),
    "publish_release": Call(_publish_release, changes=True),
    "devices": Call(_devices),
    # A new device's answer holds its private key: root only, like every change.
    "device_add": Call(_device_add, changes=True),
    "device_remove": Call(_device_remove, changes=True),
}


def _hex_list(value: Any) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CallError("bad_args", "records: expected a list of hex strings")
    try:
        return [bytes.fromhex(v) for v in value]
    except ValueError as exc:
        raise CallError("bad_args", f"records: {exc}") from None


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
