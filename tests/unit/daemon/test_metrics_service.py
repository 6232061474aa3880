"""Where the daemon serves metrics and whom the firewall lets scrape them
(meshd.daemon.metrics): the pure halves, and a refusal before anything listens."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace
from typing import Any, cast

import pytest

from meshd.adapters import identity
from meshd.config import MetricsSettings
from meshd.core.membership.verify import VerifiedMember
from meshd.daemon import metrics

MEMBER = identity.node_id_from_public(bytes(range(32)))
STRANGER = identity.node_id_from_public(bytes(range(1, 33)))


def member(node_id: str) -> VerifiedMember | None:
    if node_id != MEMBER:
        return None  # no certificate held, or revoked
    found = SimpleNamespace(
        mesh_ipv4=ipaddress.ip_address("10.77.0.9"), mesh_ipv6=ipaddress.ip_address("fd6d::9")
    )
    return cast(VerifiedMember, found)


def test_a_node_id_stands_for_its_certificates_addresses_while_it_holds() -> None:
    allow = (MEMBER, STRANGER, "192.0.2.7")
    assert [str(a) for a in metrics.allowed(allow, member)] == [
        "10.77.0.9",
        "192.0.2.7",
        "fd6d::9",
    ]
    assert [str(a) for a in metrics.allowed(allow, lambda _: None)] == ["192.0.2.7"]


def test_an_address_of_the_uplink_is_refused_unless_the_operator_says_so() -> None:
    async def status() -> dict[str, Any]:
        return {}

    settings = MetricsSettings(listen=("127.0.0.1", 9478))
    uplink = {ipaddress.ip_address("127.0.0.1")}
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(metrics.MetricsRefused, match="uplink"):
            metrics.start(settings, uplink, loop, status)
        taken = MetricsSettings(listen=("127.0.0.1", 0), on_uplink=True)
        metrics.start(taken, uplink, loop, status).close()
    finally:
        loop.close()
