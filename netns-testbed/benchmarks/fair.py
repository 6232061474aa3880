"""Fair gateways: the exit users of one gateway share its mesh cap alike, and one that
fills it does not make another wait (topologies/share3.toml: gateway a, a 20 Mbit/s mesh
cap on a 50 Mbit/s line; b, from its LAN host, and c leave by exit tunnels to a).

- fair.<dir>.min_share / .max_share: b and c each run iperf3 at once (upload: to the
  internet server; download: -R); over a window in which both run (past their slow
  start), each one's bytes through its exit tunnel (IP packets, from its tunnel
  interface's counters, as the gateway's classes count them) over the mesh cap, the
  lowest and highest over the repetitions. Target: every one within 0.45-0.55.
- fair.ping.<dir>_added_ms: c's median ping to the internet server (through its exit
  tunnel) while b alone fills the cap in that direction, minus its median ping with no
  load, measured just before. Target: at most 30 ms.
- fair.<dir>.total_over_cap: b + c over the cap, the median: what the sharing costs
  (about 1.0 when the cap is used whole)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
import tomllib

from benchmarks.owner_first import (
    GATEWAY,
    LOAD_PORTS,
    MBIT,
    NEIGHBOURS,
    TOPOLOGY,
    client,
    line_and_cap_mbit,
    result,
    stop,
    user_namespaces,
    wait_exits,
)
from benchmarks.results import Result, at_most, within
from benchmarks.testbed import Testbed

SHARE = (0.45, 0.55)
TARGET_ADDED_MS = 30.0
LEAD_S = 2.0  # the loads run this long before anything is measured (slow start)
TAIL_S = 1.0  # ... and go on at least this long after it
PINGS, PING_INTERVAL_S = 30, 0.1
RTT = re.compile(r"time=([0-9.]+) ms")


def median_rtt_ms(output: str, expected: int) -> float:
    """The median of ``ping``'s replies; RuntimeError when fewer than half came back."""
    rtts = [float(m) for m in RTT.findall(output)]
    if len(rtts) < expected / 2:
        raise RuntimeError(f"ping: {len(rtts)} of {expected} answered: {output[-300:]!r}")
    return statistics.median(rtts)


def _ping(ns: str, server: str) -> float:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-n", "-c", str(PINGS), "-i", str(PING_INTERVAL_S),
         "-W", "1", server],
        capture_output=True, text=True, timeout=PINGS * PING_INTERVAL_S + 30, check=False,
    ).stdout  # fmt: skip
    return median_rtt_ms(out, PINGS)


def _exit_tunnel(ns: str) -> tuple[str, str]:
    """(namespace, the user side of its exit tunnel): meshd.adapters.net.exit_tunnel."""
    links = json.loads(
        subprocess.run(["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True,
                       check=True).stdout
    )  # fmt: skip
    names = [link["ifname"] for link in links if link["ifname"].endswith("xu")]
    if len(names) != 1:
        raise RuntimeError(f"{ns}: no exit tunnel ({names})")
    return ns, names[0]


def _moved(tunnels: dict[str, tuple[str, str]], direction: str) -> dict[str, int]:
    """Bytes each user's exit tunnel has carried in ``direction`` (IP packets, as the
    gateway's classes count them), read from its interface, one user after the other."""
    stat = "tx_bytes" if direction == "upload" else "rx_bytes"
    return {
        n: int(
            subprocess.run(
                ["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ifname}/statistics/{stat}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )  # fmt: skip
        for n, (ns, ifname) in tunnels.items()
    }


def fair(quick: bool) -> list[Result]:
    reps = 2 if quick else 4
    window_s = 3.0 if quick else 6.0
    _, cap_mbit = line_and_cap_mbit(tomllib.loads(TOPOLOGY.read_text()), GATEWAY)
    tb = Testbed("mbf")
    results: list[Result] = []
    with tb.up(TOPOLOGY):
        status = tb.status()
        server = str(status["internet"]["address"])
        ns = user_namespaces(status)
        wait_exits(tb)
        tunnels = {n: _exit_tunnel(str(status["nodes"][n]["namespace"])) for n in NEIGHBOURS}
        for direction, reverse in (("upload", False), ("download", True)):
            shares: list[float] = []
            totals: list[float] = []
            load_s = LEAD_S + window_s + TAIL_S
            for _ in range(reps):
                started = [
                    client(ns[n], server, LOAD_PORTS[n], load_s, reverse) for n in NEIGHBOURS
                ]
                try:
                    time.sleep(LEAD_S)
                    before, t0 = _moved(tunnels, direction), time.monotonic()
                    time.sleep(window_s)
                    after, t1 = _moved(tunnels, direction), time.monotonic()
                    for n, p in zip(NEIGHBOURS, started, strict=True):
                        result(p, load_s, f"{direction}: {n}")  # it ran, and all along
                finally:
                    stop(started)
                got = [(after[n] - before[n]) * 8 / (t1 - t0) / MBIT / cap_mbit for n in NEIGHBOURS]
                shares += got
                totals.append(sum(got))
            prefix = f"fair.{direction}"
            results += [
                within(f"{prefix}.min_share", round(min(shares), 3), "of the cap", *SHARE),
                within(f"{prefix}.max_share", round(max(shares), 3), "of the cap", *SHARE),
                Result(f"{prefix}.total_over_cap", round(statistics.median(totals), 3), "ratio"),
            ]
        # c browses while b fills the cap; c's own node leaves by the exit tunnel too.
        pinger = str(status["nodes"]["c"]["namespace"])
        for direction, reverse in (("upload", False), ("download", True)):
            added: list[float] = []
            for _ in range(reps):
                idle = _ping(pinger, server)
                load_s = LEAD_S + PINGS * PING_INTERVAL_S + 2
                started = [client(ns["b"], server, LOAD_PORTS["b"], load_s, reverse)]
                try:
                    time.sleep(LEAD_S)
                    loaded = _ping(pinger, server)
                    result(started[0], load_s, f"{direction}: b's load")
                finally:
                    stop(started)
                added.append(loaded - idle)
            name = f"fair.ping.{direction}_added_ms"
            results.append(at_most(name, round(statistics.median(added), 2), "ms", TARGET_ADDED_MS))
    return results
