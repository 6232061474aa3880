"""failover.link_cut.median_s: a ping every 50 ms across the mesh, the link on its path cut
silently (`testbed cut`: packets dropped, interfaces up), and the outage measured as the
longest run of lost replies. Medians over the repetitions; target: at most 2 s (babeld with
default timers needs 11-17 s to notice a silent tunnel failure)."""

from __future__ import annotations

import re
import statistics
import subprocess
import time

from benchmarks.results import Result, at_most
from benchmarks.testbed import HERE, Testbed

TARGET_S = 2.0
INTERVAL_S = 0.05


def outage_s(ping_output: str) -> float:
    """The longest gap in reply sequence numbers, as time (replies are in order)."""
    seqs = [int(m) for m in re.findall(r"icmp_seq=(\d+)", ping_output)]
    gaps = [b - a - 1 for a, b in zip(seqs, seqs[1:], strict=False)]
    return max(gaps, default=0) * INTERVAL_S


def link_cut(quick: bool) -> list[Result]:
    reps = 3 if quick else 10
    tb = Testbed("mbf")
    outages = []
    with tb.up(HERE / "topologies" / "ring5.toml"):
        ns = tb.namespace("a")
        target = tb.meshd_status("c")["mesh_ipv4"]  # two hops: a-b-c, or a-e-d-c
        for _ in range(reps):
            via = _next_hop(tb, target)
            ping = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "ping",
                    "-n",
                    "-i",
                    str(INTERVAL_S),
                    "-c",
                    "160",
                    "-W",
                    "1",
                    target,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.5)
            tb.cli("cut", "a", via)
            out, _ = ping.communicate(timeout=60)
            tb.cli("heal", "a", via)
            outages.append(outage_s(out))
            tb.cli("wait-converged", "--timeout", "60")
            # Back on the first path before the next cut.
            deadline = time.monotonic() + 30
            while _next_hop(tb, target) != via and time.monotonic() < deadline:
                time.sleep(0.2)
    return [
        at_most("failover.link_cut.median_s", round(statistics.median(outages), 2), "s", TARGET_S),
        Result("failover.link_cut.max_s", round(max(outages), 2), "s"),
    ]


def _next_hop(tb: Testbed, target: str) -> str:
    """The name of a's neighbour on its route to ``target``."""
    status = tb.meshd_status("a")
    names = {n["node_id"]: n["name"] for n in status["neighbours"]}
    route = next(r for r in status["routes"] if r["prefix"] == f"{target}/32")
    return names[route["via"]]
