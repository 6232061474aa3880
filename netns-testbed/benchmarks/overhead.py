"""overhead.control_bytes_per_link_s: what a quiet mesh costs on the underlay. On a 10-node
mesh with no user traffic, the bytes every node sends on its underlay links (WireGuard
keepalives, QUIC keep-alives and acknowledgements, Babel updates), summed over both ends
and divided by links and seconds. Target: at most 200 B/s per link."""

from __future__ import annotations

import json
import time

from benchmarks.results import Result, at_most
from benchmarks.testbed import HERE, Testbed

TARGET_B_S = 200.0
SETTLE_S = 10.0


def _underlay_tx(tb: Testbed, nodes: list[str]) -> int:
    total = 0
    for node in nodes:
        links = json.loads(tb.exec(node, "ip", "-j", "-s", "link", "show"))
        total += sum(
            link["stats64"]["tx"]["bytes"] for link in links if link["ifname"].startswith("u-")
        )
    return total


def control_bytes(quick: bool) -> list[Result]:
    window = 10.0 if quick else 60.0
    tb = Testbed("mbo")
    with tb.up(HERE / "topologies" / "mesh10.toml"):
        nodes = sorted(tb.status()["nodes"])
        links = sum(1 for n in nodes for nb in tb.meshd_status(n)["neighbours"]) // 2
        time.sleep(SETTLE_S)  # past the start-up burst of full updates
        before, t0 = _underlay_tx(tb, nodes), time.monotonic()
        time.sleep(window)
        after, t1 = _underlay_tx(tb, nodes), time.monotonic()
    per_link = (after - before) / links / (t1 - t0)
    return [at_most("overhead.control_bytes_per_link_s", round(per_link, 1), "B/s", TARGET_B_S)]
