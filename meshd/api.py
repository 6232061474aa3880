"""Local control API: versioned JSON over a Unix socket (schema: docs/control-api.md).

One request per line, one answer per line:

    -> {"v": 1, "call": "status", "args": {}}
    <- {"v": 1, "ok": true, "result": {...}}
    <- {"v": 1, "ok": false, "error": {"code": "unknown_call", "message": "..."}}

Calls are added, never changed; a client sends the version it speaks and the server answers
``unsupported_version`` for a version it does not know.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

API_VERSION = 1
MAX_REQUEST = 64 * 1024

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class CallError(Exception):
    """Raised by a handler to answer with an error code instead of a result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _error(code: str, message: str) -> dict[str, Any]:
    return {"v": API_VERSION, "ok": False, "error": {"code": code, "message": message}}


async def answer(line: bytes, handler: Handler) -> dict[str, Any]:
    """Turn one request line into one answer; bad requests become error answers."""
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
        result = await handler(call, args)
    except CallError as exc:
        return _error(exc.code, str(exc))
    return {"v": API_VERSION, "ok": True, "result": result}


async def serve(path: Path, handler: Handler) -> asyncio.AbstractServer:
    """Listen on ``path`` (replacing a stale socket file), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await answer(line, handler)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that hung up or sent an over-long line: drop it
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_client, path=str(path), limit=MAX_REQUEST)
    path.chmod(0o600)
    return server
