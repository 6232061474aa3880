from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from meshd import api


async def handler(call: str, args: dict[str, Any]) -> Any:
    if call == "echo":
        return args
    raise api.CallError("unknown_call", f"no call named {call!r}")


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json\n", "bad_request"),
        (b"[1]\n", "bad_request"),
        (b'{"v": 99, "call": "echo"}\n', "unsupported_version"),
        (b'{"v": 1, "call": 5}\n', "bad_request"),
        (b'{"v": 1, "call": "nope"}\n', "unknown_call"),
    ],
)
def test_bad_requests_get_error_answers(line: bytes, code: str) -> None:
    reply = asyncio.run(api.answer(line, handler))
    assert reply["ok"] is False and reply["error"]["code"] == code


def test_client_against_server(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server = await api.serve(path, handler)
        ready.set()
        await stop.wait()
        server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    try:
        assert ready.wait(5)
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        client = api.Client(path)
        assert client.call("echo", x=1) == {"x": 1}
        with pytest.raises(api.ApiError) as info:
            client.call("nope")
        assert info.value.code == "unknown_call"
        # A garbage line does not kill the server.
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b"\xff\xfe garbage\n")
            assert json.loads(s.recv(4096))["error"]["code"] == "bad_request"
        assert client.call("echo") == {}
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)


def test_client_without_daemon(tmp_path: Path) -> None:
    with pytest.raises(api.ApiError) as info:
        api.Client(tmp_path / "none.sock").call("status")
    assert info.value.code == "no_daemon"
