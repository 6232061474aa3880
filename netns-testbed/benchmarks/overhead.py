"""What a quiet mesh costs, measured over one window at steady state (60 s; 10 s with
--quick), past the start-up burst, on topologies/mesh10.toml (or a community mesh of
``--nodes N``, benchmarks/community.py), with no user traffic:

- overhead.control_bytes_per_link_s: the bytes every node sends on its underlay links
  (WireGuard keepalives, QUIC keep-alives and acknowledgements, Babel updates), summed over
  both ends and divided by links and seconds. Target: at most 60 B/s per link (issue 18;
  it was 200 while keepalives went every second).
- cost.pss_mb.max (and .median): each meshd's proportional set size, from
  /proc/PID/smaps_rollup at the end of the window (wireguard-go, a process of its own, is
  not counted). Target: under 80 MB for every meshd.
- cost.cpu_core.max (and .median): each meshd's CPU time over the window (its own and its
  reaped children's, such as nft), as a fraction of one core. Target: under 2 %."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.community import write_topology
from benchmarks.results import Result, at_most
from benchmarks.testbed import HERE, Testbed

TARGET_B_S = 60.0
PSS_TARGET_MB = 80.0
CPU_TARGET = 0.02
SETTLE_S = 10.0


def _underlay_tx(tb: Testbed, nodes: list[str]) -> int:
    total = 0
    for node in nodes:
        links = json.loads(tb.exec(node, "ip", "-j", "-s", "link", "show"))
        total += sum(
            link["stats64"]["tx"]["bytes"] for link in links if link["ifname"].startswith("u-")
        )
    return total


def pss_mb(pid: int) -> float:
    """Proportional set size of one process (shared pages divided among their users)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def cpu_s(pid: int) -> float:
    """CPU seconds of a process and its reaped children (utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def meshd_pids(tb: Testbed) -> dict[str, int]:
    return {name: int(node["pid"]) for name, node in tb.status()["nodes"].items() if node["pid"]}


def cost(quick: bool, nodes: int | None = None) -> list[Result]:
    window = 10.0 if quick else 60.0
    tb = Testbed("mbo")
    with tempfile.TemporaryDirectory() as tmp:
        topology = (
            HERE / "topologies" / "mesh10.toml"
            if nodes is None
            else write_topology(nodes, Path(tmp))
        )
        with tb.up(topology, converge_s=60 + 2 * (nodes or 0)):
            names = sorted(tb.status()["nodes"])
            links = sum(len(tb.meshd_status(n)["neighbours"]) for n in names) // 2
            pids = meshd_pids(tb)
            time.sleep(SETTLE_S)  # past the start-up burst of full updates
            before, t0 = _underlay_tx(tb, names), time.monotonic()
            cpu0 = {n: cpu_s(pid) for n, pid in pids.items()}
            time.sleep(window)
            cpu1 = {n: cpu_s(pid) for n, pid in pids.items()}
            after, t1 = _underlay_tx(tb, names), time.monotonic()
            pss = [pss_mb(pid) for pid in pids.values()]
    per_link = (after - before) / links / (t1 - t0)
    cpu = [(cpu1[n] - cpu0[n]) / (t1 - t0) for n in pids]
    return [
        at_most("overhead.control_bytes_per_link_s", round(per_link, 1), "B/s", TARGET_B_S),
        at_most("cost.pss_mb.max", round(max(pss), 1), "MB", PSS_TARGET_MB),
        Result("cost.pss_mb.median", round(statistics.median(pss), 1), "MB"),
        at_most("cost.cpu_core.max", round(max(cpu), 4), "fraction", CPU_TARGET),
        Result("cost.cpu_core.median", round(statistics.median(cpu), 4), "fraction"),
        Result("cost.nodes", len(pids), "count"),
    ]
