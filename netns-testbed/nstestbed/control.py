"""Talking to the nodes' daemons over their control sockets (meshd's control client)."""

from __future__ import annotations

import contextlib
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from meshd.api.client import ControlClient, ControlError
from meshd.core.addressing import mesh_ipv6
from nstestbed.plan import MESH_IPV6_PREFIX, Plan
from nstestbed.state import State


def status_call(socket: Path, timeout: float = 2.0) -> dict[str, Any]:
    """One ``status`` call on a node's control socket; raises OSError or ValueError."""
    try:
        result = ControlClient(socket, timeout=timeout).call("status")
    except ControlError as exc:
        raise OSError(str(exc)) from None
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
    prefix = ipaddress.IPv6Network(MESH_IPV6_PREFIX)
    for name, keys in st.keys.items():
        with contextlib.suppress(ValueError, KeyError):
            out[name] = str(mesh_ipv6(prefix, keys["node_id"]))
    for name, status in statuses.items():
        if isinstance(status, dict) and isinstance(status.get("mesh_ipv6"), str):
            out[name] = status["mesh_ipv6"]
    return out


def mesh_ipv4_of(plan: Plan, statuses: dict[str, dict[str, Any] | str]) -> dict[str, str]:
    """Each node's mesh IPv4: as it reports it (an invited node's is its invite's), else
    the plan's."""
    out = {node.name: str(node.mesh_ipv4) for node in plan.nodes}
    for name, status in statuses.items():
        if isinstance(status, dict) and isinstance(status.get("mesh_ipv4"), str):
            out[name] = status["mesh_ipv4"]
    return out
