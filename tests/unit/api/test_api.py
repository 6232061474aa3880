from __future__ import annotations

import asyncio
import grp
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from meshd import api
from meshd.api.client import ControlClient, ControlError
from tests.unit.control_fakes import serving

ROOT = api.Caller(pid=1, uid=0, gid=0)


async def handler(call: str, args: dict[str, Any], caller: api.Caller) -> Any:
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
    reply = asyncio.run(api.answer(line, handler, ROOT))
    assert reply["ok"] is False and reply["error"]["code"] == code


def test_client_against_server(tmp_path: Path) -> None:
    with serving(tmp_path / "s.sock", handler, group="no-such-group") as path:
        client = ControlClient(path)
        assert client.call("echo", x=1) == {"x": 1}
        with pytest.raises(ControlError) as info:
            client.call("nope")
        assert info.value.code == "unknown_call"
        # A garbage line does not kill the server.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b"\xff\xfe garbage\n")
            assert json.loads(s.recv(4096))["error"]["code"] == "bad_request"
        assert client.call("echo") == {}


def test_without_the_group_only_root_may_connect(tmp_path: Path) -> None:
    with serving(tmp_path / "s.sock", handler, group="no-such-group") as path:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert path.stat().st_uid == os.geteuid()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sock"]  # nothing else left


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another group needs root")
def test_the_groups_members_may_connect(tmp_path: Path) -> None:
    other = next(g for g in grp.getgrall() if g.gr_gid != os.getegid())
    with serving(tmp_path / "s.sock", handler, group=other.gr_name) as path:
        mode = path.stat()
        assert (oct(mode.st_mode & 0o777), mode.st_uid, mode.st_gid) == ("0o660", 0, other.gr_gid)


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # what a killed daemon leaves
    with serving(path, handler):
        assert ControlClient(path).call("echo", x=2) == {"x": 2}


def test_client_without_daemon(tmp_path: Path) -> None:
    with pytest.raises(ControlError) as info:
        ControlClient(tmp_path / "none.sock").call("status")
    assert info.value.code == "no_daemon"
