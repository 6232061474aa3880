"""scale.*: a community mesh of N nodes (benchmarks/community.py) from cold to full
reachability: `testbed wait-converged` (every link up, every node's route table holding
every other node's mesh /32 and /128, from `meshd status`), confirmed by pings between
sampled pairs.

- scale.cold_start_from_first_daemon_s.N: from the moment the first meshd started (the
  earliest start time, /proc/PID/stat field 22, of the testbed's meshd processes: `up`
  starts them one after another once the namespaces are built; from the start of `up`,
  earlier, should none be left to read) to `wait-converged` returning. It counts every
  daemon's start-up, key loading and first handshakes, which the figure below leaves out.
  Target: 50 nodes within 25 s (issue 18: the median of three runs on the 2-core test
  machine; a run reports one).
- scale.cold_start_s.N: the same from `testbed up --wait` returning (every meshd answering
  its control socket). Targets: 25 nodes within 10 s, 50 within 20 s (Babel reaches full
  delivery at 20-24 s on 50 nodes in published emulation).
- scale.cpu_s_per_daemon.N (median) and scale.cpu_s_per_daemon_max.N: the CPU seconds each
  meshd spent from its start to that convergence (utime and stime, its own and its reaped
  children's, such as nft; wireguard-go, a process of its own, is not counted).

Both cold-start figures fail, whatever the size, when the mesh did not converge within
CONVERGE_LIMIT_S. Also reported, to tell whether the machine carries it: how long
`up --wait` took, and once converged the memory (PSS) of every process in the testbed's
nodes (meshd and wireguard-go) and the cores they keep busy, over 10 s."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nstestbed import procs

from benchmarks.community import write_topology
from benchmarks.core_scale import node_name
from benchmarks.overhead import cpu_s, pss_mb
from benchmarks.results import Result, at_least, at_most
from benchmarks.testbed import Testbed

SIZES = (10, 25, 50)
TARGETS_S = {25: 10.0, 50: 20.0}
FROM_FIRST_DAEMON_TARGETS_S = {50: 25.0}
CONVERGE_LIMIT_S = 120.0
PING_PAIRS = 20
IDLE_WINDOW_S = 10.0


def testbed_pids(tb: Testbed) -> list[int]:
    """Every process in the testbed's node namespaces: meshd, wireguard-go."""
    pids = []
    for node in tb.status()["nodes"].values():
        pids += procs.namespace_pids(node["namespace"])
    return pids


def ping_ok(ns: str, address: str) -> bool:
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1",
         address],
        capture_output=True,
    )  # fmt: skip
    return res.returncode == 0


def started_boottime_s(pid: int) -> float | None:
    """When ``pid`` started, in seconds of CLOCK_BOOTTIME (the clock of /proc/PID/stat's
    start time, field 22, in clock ticks); None for a process that has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def cold_start(n: int) -> list[Result]:
    tb = Testbed("mbs")
    names = [node_name(i) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        topology = write_topology(n, Path(tmp))
        started = time.monotonic()
        up_boottime = time.clock_gettime(time.CLOCK_BOOTTIME)
        with tb.up(topology, converge_s=None, answer_s=30 + 6 * n):
            answering = time.monotonic()
            daemons = [p for p in (node["pid"] for node in tb.status()["nodes"].values()) if p]
            try:
                tb.cli("wait-converged", "--timeout", str(CONVERGE_LIMIT_S))
                converged = True
            except RuntimeError as exc:
                lines = str(exc).splitlines()  # a line per node: the first few say enough
                print(f"bench: scale at {n} nodes: " + "\n".join(line[:300] for line in lines[:6]),
                      file=sys.stderr)  # fmt: skip
                converged = False
            done, done_boottime = time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME)
            daemon_cpu = [c for c in map(_cpu_s, daemons) if c is not None]
            starts = [t for t in map(started_boottime_s, daemons) if t is not None]
            if len(daemon_cpu) < n:
                print(f"bench: scale at {n} nodes: {n - len(daemon_cpu)} meshd not running",
                      file=sys.stderr)  # fmt: skip
            # No daemon to read: from the start of `up` instead, earlier than any of them.
            first_daemon = min(starts, default=up_boottime)
            cold = done - answering
            from_first = done_boottime - first_daemon
            pids = testbed_pids(tb)
            cpu0, t0 = {p: _cpu_s(p) for p in pids}, time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            cpu1, t1 = {p: _cpu_s(p) for p in pids}, time.monotonic()
            spent = [(b - a) for a, b in zip(cpu0.values(), cpu1.values(), strict=True)
                     if a is not None and b is not None]  # fmt: skip
            cores = sum(spent) / (t1 - t0)
            memory = sum(map(_pss_mb, pids))
            status = tb.status()["nodes"]
            address = {m: _mesh_ipv4(tb, m) for m in names}
            pairs = random.Random(n).sample([(x, y) for x in names for y in names if x != y],
                                            min(PING_PAIRS, n * (n - 1)))  # fmt: skip
            ok = sum(bool(address[y]) and ping_ok(status[x]["namespace"], address[y])
                     for x, y in pairs)  # fmt: skip
    return [
        _cold_figure(f"scale.cold_start_from_first_daemon_s.{n}", from_first,
                     FROM_FIRST_DAEMON_TARGETS_S.get(n), converged),
        _cold_figure(f"scale.cold_start_s.{n}", cold, TARGETS_S.get(n), converged),
        at_least(f"scale.pings_ok.{n}", round(ok / len(pairs), 3), "fraction", 1.0),
        Result(f"scale.up_wait_s.{n}", round(answering - started, 1), "s"),
        Result(f"scale.cpu_s_per_daemon.{n}", round(statistics.median(daemon_cpu or [0.0]), 2),
               "s"),
        Result(f"scale.cpu_s_per_daemon_max.{n}", round(max(daemon_cpu, default=0.0), 2), "s"),
        Result(f"scale.testbed_pss_mb.{n}", round(memory), "MB"),
        Result(f"scale.testbed_cpu_cores.{n}", round(cores, 3), "cores"),
    ]  # fmt: skip


def _cold_figure(name: str, seconds: float, target: float | None, converged: bool) -> Result:
    """A cold-start figure: against its target where the size has one; failed, even where it
    has none, when the mesh did not converge."""
    if not converged:
        return Result(name, round(seconds, 2), "s", f"<= {target or CONVERGE_LIMIT_S}", False)
    if target is None:
        return Result(name, round(seconds, 2), "s")
    return at_most(name, round(seconds, 2), "s", target)


def scale(quick: bool, sizes: tuple[int, ...] | None = None) -> list[Result]:
    results: list[Result] = []
    for n in sizes or ((10,) if quick else SIZES):
        results += cold_start(n)
    return results


def _cpu_s(pid: int) -> float | None:
    """None for a process that has ended (a command meshd ran): left out."""
    try:
        return cpu_s(pid)
    except OSError:
        return None


def _pss_mb(pid: int) -> float:
    try:
        return pss_mb(pid)
    except OSError:
        return 0.0


def _mesh_ipv4(tb: Testbed, node: str) -> str:
    """The node's mesh address, or "" when its meshd does not answer (its pings fail)."""
    try:
        return str(tb.meshd_status(node)["mesh_ipv4"])
    except RuntimeError:
        return ""
