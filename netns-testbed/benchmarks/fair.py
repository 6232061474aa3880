"""Fair gateways: the exit users of one gateway share its mesh cap alike, and one that
fills it does not make another wait (topologies/share3.toml: gateway a, a 20 Mbit/s mesh
cap on a 50 Mbit/s line; b, from its LAN host, and c leave by exit tunnels to a).

- fair.<dir>.min_share / .max_share: b and c each run iperf3 at once (upload: to the
  internet server; download: -R), the same length; each one's throughput over the mesh
  cap, the lowest and highest over the repetitions. Target: every one within 0.45-0.55.
- fair.ping.<dir>_added_ms: c's median ping to the internet server (through its exit
  tunnel) while b alone fills the cap in that direction, minus its median ping with no
  load, measured just before. Target: at most 30 ms.
- fair.<dir>.total_over_cap: b + c over the cap, the median: what the sharing costs."""

from __future__ import annotations

import re
import statistics
import subprocess
import time
import tomllib

from benchmarks.owner_first import (
    GATEWAY,
    MBIT,
    NEIGHBOURS,
    TOPOLOGY,
    client,
    line_and_cap_mbit,
    result,
    wait_exits,
)
from benchmarks.results import Result, at_most, within
from benchmarks.testbed import Testbed

SHARE = (0.45, 0.55)
TARGET_ADDED_MS = 30.0
PORTS = {"b": 5202, "c": 5203}
LEAD_S = 2.0  # b's load runs this long before c's pings
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


def _stop(started: list[subprocess.Popen[str]]) -> None:
    for p in started:  # every run ends on its own (-t); what did not is killed
        if p.poll() is None:
            p.kill()
            p.wait()


def fair(quick: bool) -> list[Result]:
    reps = 2 if quick else 4
    seconds = 5 if quick else 8
    _, cap_mbit = line_and_cap_mbit(tomllib.loads(TOPOLOGY.read_text()), GATEWAY)
    tb = Testbed("mbf")
    results: list[Result] = []
    with tb.up(TOPOLOGY):
        status = tb.status()
        server = str(status["internet"]["address"])
        ns = {
            n: str(status["nodes"][n].get("lan_namespace") or status["nodes"][n]["namespace"])
            for n in NEIGHBOURS
        }
        wait_exits(tb)
        for direction, reverse in (("upload", False), ("download", True)):
            shares: list[float] = []
            totals: list[float] = []
            for _ in range(reps):
                started = [client(ns[n], server, PORTS[n], seconds, reverse) for n in NEIGHBOURS]
                try:
                    got = [
                        result(p, seconds, f"{direction}: {n}")
                        for n, p in zip(NEIGHBOURS, started, strict=True)
                    ]
                finally:
                    _stop(started)
                shares += [bps / MBIT / cap_mbit for bps in got]
                totals.append(sum(got) / MBIT / cap_mbit)
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
                started = [client(ns["b"], server, PORTS["b"], load_s, reverse)]
                try:
                    time.sleep(LEAD_S)
                    loaded = _ping(pinger, server)
                    result(started[0], load_s, f"{direction}: b's load")
                finally:
                    _stop(started)
                added.append(loaded - idle)
            name = f"fair.ping.{direction}_added_ms"
            results.append(at_most(name, round(statistics.median(added), 2), "ms", TARGET_ADDED_MS))
    return results
