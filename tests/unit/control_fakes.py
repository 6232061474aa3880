"""Daemons for control-client tests: the real server (``meshd.api.serve``) on a Unix socket
in a temp dir with a fake handler, and a raw one that answers any request with fixed bytes."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meshd import api

NODE_A, NODE_B = "A" * 43, "B" * 43

# Every field docs/control-api.md names, as a gateway sharing its uplink reports them.
STATUS: dict[str, Any] = {
    "node_id": NODE_A,
    "name": "a",
    "mesh_ipv4": "10.77.0.1",
    "mesh_ipv6": "fd6d::1",
    "backend": "kernel",
    "routing": "babel",
    "uptime_s": 12.5,
    "neighbours": [
        {
            "node_id": NODE_B,
            "name": "b",
            "interface": "mwabcdef123456",
            "state": "up",
            "rtt_ms": 1.25,
            "loss": 0,
            "cost": 96,
            "endpoint": "100.64.0.2:51820",
            "liveness": "up",
            "listen_port": 51820,
            "silent_s": 0.5,
            "last_handshake": 1700000000.25,
            "rx_bytes": 2048,
            "tx_bytes": 10,
            "refusals": {"wrong_origin": 2, "rate_link": 3},
            "control": {
                "session": "up",
                "address": "100.64.0.2:6697",
                "verified": True,
                "routing": True,
                "refusal": None,
                "found_by": ["bootstrap", "session"],
                "protocol": "meshd/2",
                "features": ["capabilities"],
            },
        },
        {  # no link yet: none of the link fields
            "node_id": "C" * 43,
            "name": "c",
            "interface": "mw0123456789ab",
            "state": "connecting",
            "rtt_ms": None,
            "loss": None,
            "cost": None,
            "endpoint": None,
            "control": {
                "session": "down",
                "address": None,
                "verified": False,
                "routing": False,
                "refusal": "idle_timeout",
                "found_by": ["beacon"],
                "protocol": None,
                "features": [],
            },
        },
    ],
    "routes": [
        {"prefix": "10.77.0.2/32", "via": NODE_B, "interface": "mwabcdef123456", "metric": 96},
        {"prefix": "10.77.9.0/24", "via": None, "interface": "eth0", "metric": 1024},
    ],
    "gateway": {
        "selected": None,
        "candidates": [
            {
                "node_id": NODE_B,
                "metric": 96,
                "usable": False,
                "reason": "withdrawn: its uplink is down",
                "mesh_ipv4": "10.77.0.2",
                "available": False,
                "accepts_new": True,
                "rate_cap_kbit": None,
            }
        ],
        "uplink": {"interface": "eth1", "state": "up", "reason": "checks succeed", "since_s": 3.0},
        "using": "own_uplink",
        "exit_gateway": None,
        "exit_check": {
            "target": "203.0.113.1:80",
            "gateway": None,
            "checks": 0,
            "failed": 0,
            "failed_in_a_row": 0,
            "last": None,
            "no_internet": {NODE_B: 1},
        },
        "sharing": {
            "announced": True,
            "rate_cap_kbit": 20000,
            "accepts_new": True,
            "users": ["b"],
            "blocked": [],
            "monthly_quota_mb": None,
            "month": "2024-05",
            "exit_bytes": {NODE_B: 4096},
        },
    },
    "usage": [{"node_id": NODE_B, "relayed_for_bytes": 1, "relayed_to_bytes": 2}],
}


class FakeDaemon:
    """The calls a test expects, answered from ``results`` (a CallError is raised);
    every call is kept in ``calls``."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def handle(self, call: str, args: dict[str, Any], caller: api.Caller) -> Any:
        self.calls.append((call, args))
        if call not in self.results:
            raise api.CallError("unknown_call", f"no call named {call!r}")
        result = self.results[call]
        if isinstance(result, api.CallError):
            raise result
        return result


@contextmanager
def serving(path: Path, handler: api.Handler, group: str = api.SOCKET_GROUP) -> Iterator[Path]:
    """``meshd.api.serve`` on ``path`` in a thread of its own, stopped on the way out."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server = await api.serve(path, handler, group)
        ready.set()
        await stop.wait()
        server.close()
        await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(5), "the control server did not start"
        yield path
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


@contextmanager
def answering(path: Path, answer: bytes | None) -> Iterator[Path]:
    """A socket that reads one request and sends ``answer`` as it is, then hangs up;
    ``None``: reads it and never answers."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.makefile("rb").readline()
            if answer is not None:
                conn.sendall(answer)
            else:
                done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join(5)
        listener.close()
