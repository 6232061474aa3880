"""Local control API: versioned JSON over a Unix socket (schema: docs/control-api.md).

One request per line, one answer per line:

    -> {"v": 1, "call": "status", "args": {}}
    <- {"v": 1, "ok": true, "result": {...}}
    <- {"v": 1, "ok": false, "error": {"code": "unknown_call", "message": "..."}}

Calls are added, never changed; a client sends the version it speaks and the server answers
``unsupported_version`` for a version it does not know. A call may answer with a ``Stream``
(``subscribe``): its result line, then one JSON line per item until the client hangs up.

Each connection's caller is who the kernel says it is (``SO_PEERCRED``), handed to the
handler with every call: the ``meshd`` group may connect to read, and the call table
(meshd.api.calls) refuses the calls that change the node to anyone but root.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

API_VERSION = 1
MAX_REQUEST = 64 * 1024
SOCKET_GROUP = "meshd"  # its members may use the control socket; root always can


@dataclass(frozen=True)
class Caller:
    """The process at the other end of a connection, as the kernel told it (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int

    @property
    def may_change(self) -> bool:
        """Root, or the daemon's own user (who owns its files and may signal it anyway):
        the only callers of the calls that change the node. The ``meshd`` group reads."""
        return self.uid in (0, os.geteuid())


Handler = Callable[[str, dict[str, Any], Caller], Awaitable[Any]]


class CallError(Exception):
    """Raised by a handler to answer with an error code instead of a result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _error(code: str, message: str) -> dict[str, Any]:
    return {"v": API_VERSION, "ok": False, "error": {"code": code, "message": message}}


async def answer(line: bytes, handler: Handler, caller: Caller) -> dict[str, Any]:
    """Turn one request line from ``caller`` into one answer; bad requests become error
    answers."""
    try:
        request = json.loads(line)
    except ValueError:
        return _error("bad_request", "request is not JSON")
    if not isinstance(request, dict):
        return _error("bad_request", "request is not a JSON object")
    if request.get("v") != API_VERSION:
        return _error("unsupported_version", f"this daemon speaks version {API_VERSION}")
    call, args = request.get("call"), request.get("args", {})
    if not isinstance(call, str) or not isinstance(args, dict):
        return _error("bad_request", "expected 'call' (string) and 'args' (object)")
    try:
        result = await handler(call, args, caller)
    except CallError as exc:
        return _error(exc.code, str(exc))
    return {"v": API_VERSION, "ok": True, "result": result}


@dataclass(frozen=True)
class Stream:
    """The answer of a call that goes on (``subscribe``): ``head`` is its result, then one
    JSON line for each object ``items`` yields, until the client hangs up or the daemon
    stops; ``items`` is closed either way (its ``finally`` lets go of what it holds)."""

    head: Any
    items: AsyncGenerator[dict[str, Any], None]


async def _dispatch(
    line: bytes, handler: Handler, caller: Caller
) -> tuple[dict[str, Any], Stream | None]:
    reply = await answer(line, handler, caller)
    result = reply.get("result")
    if isinstance(result, Stream):
        return {**reply, "result": result.head}, result
    return reply, None


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


class ControlServer:
    """The listening socket and the streams it serves; ``close`` ends both (a subscriber
    would otherwise keep its connection past the daemon's stop)."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.streams: set[asyncio.Task[Any]] = set()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.streams:
            task.cancel()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.gather(*self.streams, return_exceptions=True)


async def serve(path: Path, handler: Handler, group: str = SOCKET_GROUP) -> ControlServer:
    """Listen on ``path`` (replacing a stale socket file): mode 0660 with group ``group``
    when that group exists (its members may run ``meshd status`` and the dashboard without
    root), else 0600."""
    control = ControlServer()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            caller = peer(writer.get_extra_info("socket"))
            while line := await reader.readline():
                reply, stream = await _dispatch(line, handler, caller)
                writer.write(_line(reply))
                await writer.drain()
                if stream is not None:
                    task = asyncio.current_task()
                    assert task is not None
                    control.streams.add(task)
                    try:
                        await _pump(stream, reader, writer)
                    finally:
                        control.streams.discard(task)
                    return
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that hung up or sent an over-long line: drop it
        finally:
            writer.close()

    sock = _bind(path, _group_id(group))
    control.server = await asyncio.start_unix_server(on_client, sock=sock, limit=MAX_REQUEST)
    return control


def peer(sock: socket.socket) -> Caller:
    """Who is connected on the Unix socket ``sock``: the process that connected, as the
    kernel recorded it then (nothing the client sends can change it)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Caller(pid, uid, gid)


async def _pump(stream: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the stream's lines until it ends or the client hangs up (what it sends after
    its request is read and ignored, so that its hanging up is seen at once)."""

    async def send() -> None:
        async for item in stream.items:
            writer.write(_line(item))
            await writer.drain()

    async def hangup() -> None:
        while await reader.read(4096):
            pass

    sender, watcher = asyncio.ensure_future(send()), asyncio.ensure_future(hangup())
    try:
        await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sender.cancel()
        watcher.cancel()
        await asyncio.gather(sender, watcher, return_exceptions=True)
        await stream.items.aclose()
    exc = None if sender.cancelled() else sender.exception()
    if exc is not None and not isinstance(exc, ConnectionError):
        raise exc  # our own bug: asyncio logs it, the daemon goes on


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _bind(path: Path, gid: int | None) -> socket.socket:
    """A socket bound at ``path`` that nobody outside root (and ``gid``) could reach at any
    moment: bound in a private directory, given its owner and mode there, then renamed into
    place (which also replaces a stale socket of a crashed daemon)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".meshd-sock-", dir=path.parent))  # mode 0700
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bound = private / "s"
        sock.bind(str(bound))
        if gid is None:
            os.chmod(bound, 0o600)
        else:
            os.chown(bound, -1, gid)
            os.chmod(bound, 0o660)
        os.replace(bound, path)
    except OSError:
        sock.close()
        raise
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return sock
