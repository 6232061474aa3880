"""Talking to the nodes' daemons over their control sockets (meshd.api framing)."""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nstestbed.plan import Plan
from nstestbed.state import State


def status_call(socket: Path, timeout: float = 2.0) -> dict[str, Any]:
    """One ``status`` call on a node's control socket; raises OSError or ValueError."""
    try:
        from meshd.api import ApiError, Client
    except ImportError:  # before meshd.api exists: speak the framing directly
        return _raw_status(socket, timeout)
    try:
        result = Client(socket, timeout=timeout).call("status")
    except ApiError as exc:
        raise OSError(str(exc)) from None
    if not isinstance(result, dict):
        raise ValueError("status result is not an object")
    return result


def _raw_status(socket_path: Path, timeout: float) -> dict[str, Any]:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(b'{"v": 1, "call": "status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ValueError(f"status failed: {reply.get('error')}")
    result = reply["result"]
    if not isinstance(result, dict):
        raise ValueError("status result is not an object")
    return result


def poll_statuses(plan: Plan, names: list[str]) -> dict[str, dict[str, Any] | str]:
    def one(name: str) -> dict[str, Any] | str:
        try:
            return status_call(plan.node(name).socket)
        except (OSError, ValueError) as exc:
            return str(exc) or type(exc).__name__

    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def mesh_ipv6_of(
    plan: Plan, st: State, statuses: dict[str, dict[str, Any] | str]
) -> dict[str, str]:
    """Each node's mesh IPv6: as it reports it, else derived from its node id."""
    out: dict[str, str] = {}
    try:
        from meshd.addressing import mesh_ipv6
        from meshd.config import MeshSettings

        prefix = MeshSettings().ipv6_prefix
        for name, keys in st.keys.items():
            with contextlib.suppress(ValueError, KeyError):
                out[name] = str(mesh_ipv6(prefix, keys["node_id"]))
    except ImportError:
        pass
    for name, status in statuses.items():
        if isinstance(status, dict) and isinstance(status.get("mesh_ipv6"), str):
            out[name] = status["mesh_ipv6"]
    return out
