"""The node's Prometheus endpoint (``[metrics]``): started beside the control API, fed
the status document from the event loop, and kept to the scrapers ``allow`` names.

Where it listens is checked once more at start: never on an address of the uplink unless
``on_uplink`` says so (a config check already refuses the wildcard addresses). Who may
reach it over the mesh is the firewall's (meshd.adapters.net.firewall), told again as
members come and go: a node id in ``allow`` stands for the mesh addresses its
certificate holds, and only while this node holds that certificate unrevoked."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from meshd.adapters.net.firewall import IPAddress
from meshd.config import MetricsSettings
from meshd.core.membership.verify import VerifiedMember
from meshd.log import event

if TYPE_CHECKING:  # prometheus_client is imported only by a node that serves metrics
    from meshd.adapters.metrics import MetricsServer

SCRAPE_TIMEOUT_S = 5.0  # a scrape waits this long for the event loop's answer


class MetricsRefused(Exception):
    """Where ``[metrics] listen`` points may not serve metrics (or cannot)."""


def allowed(
    allow: Iterable[str], member: Callable[[str], VerifiedMember | None]
) -> tuple[IPAddress, ...]:
    """The addresses ``allow`` stands for now: addresses as written, and each node id's
    mesh addresses while ``member`` (not revoked, certificate held) knows it."""
    out: list[IPAddress] = []
    for entry in allow:
        try:
            out.append(ipaddress.ip_address(entry))
            continue
        except ValueError:
            pass
        if (m := member(entry)) is not None:
            out += [m.mesh_ipv4, m.mesh_ipv6]
    return tuple(sorted(set(out), key=lambda a: (a.version, a)))


def start(
    settings: MetricsSettings,
    uplink_addresses: set[IPAddress],
    loop: asyncio.AbstractEventLoop,
    status: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
) -> MetricsServer:
    """Serve the metrics where ``settings.listen`` says; MetricsRefused when that is
    the uplink's (unless allowed) or cannot be bound."""
    from meshd.adapters.metrics import MetricsServer  # here: most nodes serve none

    assert settings.listen is not None
    host, port = settings.listen
    if ipaddress.ip_address(host) in uplink_addresses and not settings.on_uplink:
        raise MetricsRefused(f"{host} is the uplink's: set [metrics] on_uplink = true to allow")

    def snapshot() -> dict[str, Any]:  # on the server's thread
        return asyncio.run_coroutine_threadsafe(status(), loop).result(SCRAPE_TIMEOUT_S)

    try:
        server = MetricsServer(host, port, snapshot)
    except OSError as exc:
        raise MetricsRefused(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    event("metrics.listening", address=f"{host}:{port}", allow=len(settings.allow))
    return server
