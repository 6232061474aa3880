"""soak.*: topologies/mesh10.toml for 10 minutes (--soak-s; 60 s with --quick) with user
traffic (TCP, 2 Mbit/s, on three 3-hop paths), random silent link cuts and heals and random
meshd kills (SIGKILL) and restarts, at most two of each at a time, each held 3-12 s. The
witnesses a, d and h are never killed: their memory is the one that would grow.

Timeline: a first window of traffic without faults (a minute, or a quarter of a short
run), a receipts export from every node, faults until the last window (and every 10 s a
receipts export of one node, in turn, killed or not), everything healed and restarted, a
last window of traffic without faults; then, once converged:
- soak.expired_packets: packets that expired in transit anywhere (a routing loop): ICMP and
  ICMPv6 time-exceeded sent by any node, and packets forwarded with a TTL or hop limit of
  1, counted by a table of the benchmark's own in every node. Target 0.
- soak.reachable_pairs: ordered node pairs answering a ping. Target: all.
- soak.receipts_lost: over every export taken (the first, those during the faults and a
  last one at the end): receipts missing from the node's last export (each export holds
  every receipt the node stored), chains (provider, consumer, epoch) whose seq or totals go
  backwards, and exports `meshd receipts verify` refuses. Target 0.
  soak.receipts: the receipts in the first exports; target at least 1, or there was nothing
  to lose. soak.receipt_exports: the exports checked.
- soak.leaks: differences between the start and the end, in every node, in interfaces,
  routes, policy rules, nftables tables and processes (by name). Target 0.
- soak.pss_growth_mb.max: the witnesses' PSS, median of the last window minus median of
  the first, the largest. Target: at most 5 MB.
- soak.traffic_delivered.quiet, .faults, .recovery, .healed: per stretch of the run (the
  first window; the faults; the first half of the last window, which opens with the
  restarts; its second half), the bytes the worst path's iperf3 server received, in runs
  iperf3 ended well (exit status 0, no error), over what 2 Mbit/s carries in the time the
  path's runs took (failed ones and the pause after them included). Iperf3 runs end with
  each stretch. Targets: 0.95 in the first window and the last half (converged, no
  faults), 0.5 during the faults; none while recovering. A soak whose traffic did not flow
  fails here, not silently elsewhere. soak.traffic_runs(_failed): the iperf3 runs, and
  those that did not end well (the first few are printed).
- soak.converged: `testbed wait-converged` succeeded within 60 s at the end. Target 1."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nstestbed.lifecycle import wait_listening

from benchmarks.overhead import meshd_pids, pss_mb
from benchmarks.results import Result, at_least, at_most
from benchmarks.scale import ping_ok
from benchmarks.testbed import HERE, Testbed

DURATION_S = 600.0
QUICK_S = 60.0
WITNESSES = ("a", "d", "h")
TRAFFIC = (("a", "d"), ("h", "e"), ("g", "b"))  # three hops apart on mesh10
TRAFFIC_PORT = 5301
TRAFFIC_BPS = 2_000_000
RUN_S = 30  # the longest iperf3 run
EXPORT_EVERY_S = 10.0  # during the faults, a receipts export of one node (in turn) this often
FAULTS_AT_ONCE = 2
HOLD_S = (3.0, 12.0)
FAULT_EVERY_S = 3.0
PSS_GROWTH_MB = 5.0
# Of 2 Mbit/s, on the worst path: all of it on a converged mesh without faults (the first
# window, and the second half of the last: its first half, "recovery", starts with the
# restarts of the daemons killed last); at least half of it while faults take paths and
# their endpoints (b, e, g) down.
DELIVERED = {"quiet": 0.95, "faults": 0.5, "healed": 0.95}
SEED = 8
LOOPS = """table inet benchsoak {
	chain output {
		type filter hook output priority -300; policy accept;
		icmp type time-exceeded counter
		icmpv6 type time-exceeded counter
	}
	chain forward {
		type filter hook forward priority -300; policy accept;
		ip ttl 1 counter
		ip6 hoplimit 1 counter
	}
}
"""


def expired_packets(tb: Testbed, node: str) -> int:
    doc = json.loads(tb.exec(node, "nft", "-j", "list", "table", "inet", "benchsoak"))
    return sum(
        expr["counter"]["packets"]
        for item in doc["nftables"]
        if "rule" in item
        for expr in item["rule"]["expr"]
        if "counter" in expr
    )


def snapshot(tb: Testbed, node: str, namespace: str) -> Counter[str]:
    """What a leak would add to or take from a node: interfaces, routes (table, type,
    destination, protocol), policy rules, nftables tables and processes by name."""
    items: Counter[str] = Counter()
    for link in json.loads(tb.exec(node, "ip", "-j", "link", "show")):
        items[f"interface {link['ifname']}"] += 1
    for family in ("-4", "-6"):
        for r in json.loads(tb.exec(node, "ip", family, "-j", "route", "show", "table", "all")):
            items[f"route {r.get('table', 'main')} {r.get('type', '')} {r['dst']} "
                  f"{r.get('protocol', '')}"] += 1  # fmt: skip
        for r in json.loads(tb.exec(node, "ip", family, "-j", "rule", "show")):
            items[f"rule {json.dumps(r, sort_keys=True)}"] += 1
    for item in json.loads(tb.exec(node, "nft", "-j", "list", "tables"))["nftables"]:
        if "table" in item:
            items[f"nft table {item['table']['family']} {item['table']['name']}"] += 1
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in pids.stdout.split():
        try:
            items[f"process {Path(f'/proc/{pid}/comm').read_text().strip()}"] += 1
        except OSError:
            continue  # a short-lived command (nft, tc) that just ended
    return items


def receipts(tb: Testbed, node: str) -> tuple[list[dict[str, Any]], str]:
    text = tb.exec(node, "meshd", "receipts", "export")
    return [r for r in map(json.loads, text.splitlines()) if r["type"] == "receipt"], text


def chain_faults(records: list[dict[str, Any]]) -> int:
    """Steps where a chain's seq or totals do not grow (the export keeps each in order)."""
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    faults = 0
    for r in records:
        key = (r["provider"], r["consumer"], r["epoch"])
        prev = last.get(key)
        if prev is not None and not (
            r["seq"] > prev["seq"]
            and r["relayed_for_bytes"] >= prev["relayed_for_bytes"]
            and r["relayed_to_bytes"] >= prev["relayed_to_bytes"]
        ):
            faults += 1
        last[key] = r
    return faults


@dataclass(frozen=True)
class TrafficRun:
    """One iperf3 run on a path: the phase it ran in, the seconds asked, the seconds it took
    (with the pause after a failed one: until the next run began), iperf3's exit status and
    the bytes the server received (0 when the run reported none)."""

    path: tuple[str, str]
    phase: str
    seconds: int
    took_s: float
    exit_status: int
    received_bytes: int
    error: str

    @property
    def ok(self) -> bool:
        """iperf3 exited 0 and reported no error (with -J, 3.12 exits 0 on "unable to
        connect to server")."""
        return self.exit_status == 0 and not self.error


class Traffic:
    """TCP at 2 Mbit/s on each path, phase after phase (``phases``: name and seconds, in
    order, from ``start``, once every server listens), in iperf3 runs of at most 30 s that
    end with their phase (to the second), a new one after any that ends (an outage may end
    one); stops on its own after the last phase. ``runs`` holds what every run did."""

    def __init__(self, tb: Testbed, phases: list[tuple[str, float]]) -> None:
        self.runs: list[TrafficRun] = []
        self.lock = threading.Lock()
        self.servers = []
        self.threads = []
        status = tb.status()["nodes"]
        address = {dst: tb.meshd_status(dst)["mesh_ipv4"] for _, dst in TRAFFIC}
        for _, dst in TRAFFIC:
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", status[dst]["namespace"], "iperf3", "-s", "-B",
                 address[dst], "-p", str(TRAFFIC_PORT)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for _, dst in TRAFFIC:
            wait_listening(status[dst]["namespace"], [TRAFFIC_PORT], 10.0)
        self.start = time.monotonic()
        ends = [self.start + sum(s for _, s in phases[: i + 1]) for i in range(len(phases))]
        self.phases = [(name, end) for (name, _), end in zip(phases, ends, strict=True)]
        for src, dst in TRAFFIC:
            thread = threading.Thread(
                target=self._run, args=((src, dst), status[src]["namespace"], address[dst]),
                daemon=True,
            )  # fmt: skip
            thread.start()
            self.threads.append(thread)

    def _run(self, path: tuple[str, str], namespace: str, address: str) -> None:
        for phase, end in self.phases:
            while (left := end - time.monotonic()) > 0.5:
                began = time.monotonic()
                seconds = max(1, round(min(left, RUN_S)))
                run = TrafficRun(path, phase, seconds, 0.0,
                                 *self._iperf3(namespace, address, seconds))  # fmt: skip
                if not run.ok:
                    time.sleep(0.5)  # not at once again: the path may be out for a while
                with self.lock:
                    self.runs.append(replace(run, took_s=time.monotonic() - began))

    @staticmethod
    def _iperf3(namespace: str, address: str, seconds: int) -> tuple[int, int, str]:
        """iperf3's exit status, the bytes its server received and its error."""
        try:
            res = subprocess.run(
                ["ip", "netns", "exec", namespace, "iperf3", "-c", address, "-p",
                 str(TRAFFIC_PORT), "-b", str(TRAFFIC_BPS), "-t", str(seconds), "-J"],
                capture_output=True, text=True, timeout=seconds + 30,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return -1, 0, f"no end within {seconds + 30} s"
        try:
            doc = json.loads(res.stdout)
        except ValueError:
            return res.returncode, 0, f"no JSON: {res.stderr.strip()[-200:]}"
        received = ((doc.get("end") or {}).get("sum_received") or {}).get("bytes", 0)
        error = str(doc.get("error") or (res.stderr.strip()[-200:] if res.returncode else ""))
        return res.returncode, int(received), error

    def stop(self) -> None:
        for thread in self.threads:
            thread.join()
        for server in self.servers:
            server.kill()
            server.wait()


def delivered(runs: list[TrafficRun], phase: str) -> float:
    """The worst path's share of 2 Mbit/s in ``phase``: the bytes its server received in the
    runs iperf3 ended well (``ok``), over what 2 Mbit/s carries in the time all its
    runs of the phase took, failed ones included; 0 for a path without a run."""
    fractions = []
    for path in TRAFFIC:
        mine = [r for r in runs if r.path == path and r.phase == phase]
        took = sum(r.took_s for r in mine)
        got = sum(r.received_bytes for r in mine if r.ok)
        fractions.append(got / (took * TRAFFIC_BPS / 8) if took else 0.0)
    return min(fractions)


def soak(quick: bool, duration_s: float | None = None) -> list[Result]:
    duration = duration_s or (QUICK_S if quick else DURATION_S)
    window = min(60.0, duration / 4)
    rng = random.Random(SEED)
    tb = Testbed("mbk")
    with tb.up(HERE / "topologies" / "mesh10.toml"):
        status = tb.status()["nodes"]
        names = sorted(status)
        victims = [n for n in names if n not in WITNESSES]
        links = [tuple(sorted((n, nb["name"]))) for n in names
                 for nb in tb.meshd_status(n)["neighbours"]]  # fmt: skip
        links = sorted(set(links))
        for node in names:
            subprocess.run(["ip", "netns", "exec", status[node]["namespace"], "nft", "-f", "-"],
                           input=LOOPS, text=True, check=True)  # fmt: skip
        before = {n: snapshot(tb, n, status[n]["namespace"]) for n in names}
        pids = meshd_pids(tb)
        phases = [("quiet", window), ("faults", duration - 2 * window),
                  ("recovery", window / 2), ("healed", window / 2)]  # fmt: skip
        traffic = Traffic(tb, phases)
        start = traffic.start
        first_pss = _pss_window(pids, start + window)
        # The exports load the machine: not inside the window whose traffic must all arrive.
        time.sleep(max(0.0, start + window - time.monotonic()))
        # Every export taken, in order: each must verify, and keep its chains in order,
        # and every receipt in it must still be in the node's last export.
        exports: dict[str, list[tuple[list[dict[str, Any]], str]]] = {
            n: [receipts(tb, n)] for n in names
        }
        first_receipts = sum(len(e[0][0]) for e in exports.values())
        cuts: dict[tuple[str, str], float] = {}
        dead: dict[str, float] = {}
        faults = Counter[str]()
        next_export, turn = time.monotonic() + EXPORT_EVERY_S, 0
        while time.monotonic() < start + duration - window:
            now = time.monotonic()
            for pair in [p for p, t in cuts.items() if t <= now]:
                tb.cli("heal", *pair)
                del cuts[pair]
            for node in [n for n, t in dead.items() if t <= now]:
                tb.cli("start", node)
                del dead[node]
            if rng.random() < 0.5 and len(cuts) < FAULTS_AT_ONCE:
                pair = rng.choice([p for p in links if p not in cuts])
                tb.cli("cut", *pair)
                cuts[pair] = now + rng.uniform(*HOLD_S)
                faults["cut"] += 1
            elif len(dead) < FAULTS_AT_ONCE:
                node = rng.choice([n for n in victims if n not in dead])
                tb.cli("kill", node)
                dead[node] = now + rng.uniform(*HOLD_S)
                faults["kill"] += 1
            if now >= next_export:  # a killed node's too: its ledger is on disk
                node = names[turn % len(names)]
                exports[node].append(receipts(tb, node))
                next_export, turn = now + EXPORT_EVERY_S, turn + 1
            time.sleep(FAULT_EVERY_S)
        for pair in cuts:
            tb.cli("heal", *pair)
        if dead:
            tb.cli("start", *dead)
        last_pss = _pss_window(pids, start + duration)
        traffic.stop()
        converged = _converged(tb)
        expired = sum(expired_packets(tb, n) for n in names)
        pairs = [(x, y) for x in names for y in names if x != y]
        address = {n: tb.meshd_status(n)["mesh_ipv4"] for n in names}
        with ThreadPoolExecutor(4) as pool:
            reachable = sum(pool.map(lambda p: ping_ok(status[p[0]]["namespace"], address[p[1]]),
                                     pairs))  # fmt: skip
        lost = 0
        for n in names:
            exports[n].append(receipts(tb, n))
            kept = {r["signature"] for r in exports[n][-1][0]}
            for records, text in exports[n]:
                lost += sum(r["signature"] not in kept for r in records) + chain_faults(records)
                lost += _refused(tb, n, text)
        status = tb.status()["nodes"]
        leaks = []
        for n in names:
            now_items = snapshot(tb, n, status[n]["namespace"])
            diff = (now_items - before[n]) + (before[n] - now_items)
            leaks += [f"{n}: {'+' if now_items[k] > before[n][k] else '-'}{k}" for k in diff]
    for line in leaks:
        print(f"bench: soak: leak {line}", file=sys.stderr)
    runs = traffic.runs
    failed_runs = [r for r in runs if not r.ok]
    for r in failed_runs[:10]:
        print(f"bench: soak: iperf3 {r.path[0]} -> {r.path[1]} ({r.phase}, {r.seconds} s): "
              f"exit {r.exit_status}: {r.error[:200]}", file=sys.stderr)  # fmt: skip
    growth = max(statistics.median(last_pss[n]) - statistics.median(first_pss[n])
                 for n in WITNESSES)  # fmt: skip
    return [
        at_most("soak.expired_packets", expired, "packets", 0),
        at_least("soak.reachable_pairs", round(reachable / len(pairs), 3), "fraction", 1.0),
        at_most("soak.receipts_lost", lost, "count", 0),
        at_most("soak.leaks", len(leaks), "count", 0),
        at_most("soak.pss_growth_mb.max", round(growth, 1), "MB", PSS_GROWTH_MB),
        *[at_least(f"soak.traffic_delivered.{phase}", round(delivered(runs, phase), 3),
                   "fraction", DELIVERED[phase]) if phase in DELIVERED else
          Result(f"soak.traffic_delivered.{phase}", round(delivered(runs, phase), 3), "fraction")
          for phase, _ in phases],
        Result("soak.traffic_runs", len(runs), "count"),
        Result("soak.traffic_runs_failed", len(failed_runs), "count"),
        at_least("soak.receipts", first_receipts, "count", 1),
        Result("soak.receipt_exports", sum(len(e) for e in exports.values()), "count"),
        Result("soak.link_cuts", faults["cut"], "count"),
        Result("soak.meshd_kills", faults["kill"], "count"),
        at_least("soak.converged", 1 if converged else 0, "bool", 1),
        Result("soak.seconds", round(duration), "s"),
    ]  # fmt: skip


def _pss_window(pids: dict[str, int], until: float) -> dict[str, list[float]]:
    """The witnesses' PSS every 5 s until ``until``."""
    samples: dict[str, list[float]] = {n: [] for n in WITNESSES}
    while True:
        for n in WITNESSES:
            samples[n].append(pss_mb(pids[n]))
        if time.monotonic() + 5 > until:
            return samples
        time.sleep(5)


def _converged(tb: Testbed) -> bool:
    tb.cli("start", "--all", "--wait")
    try:
        tb.cli("wait-converged", "--timeout", "60")
    except RuntimeError as exc:
        print(f"bench: soak: {exc}", file=sys.stderr)
        return False
    return True


def _refused(tb: Testbed, node: str, export: str) -> int:
    """1 when `meshd receipts verify` (membership checked) refuses the node's export."""
    config = Path(tb.env["MESHD_TESTBED_DIR"]) / "nodes" / node / "meshd.toml"
    admin = tomllib.loads(config.read_text())["mesh"]["admin_keys"][0]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
        f.write(export)
        f.flush()
        try:
            tb.exec(node, "meshd", "receipts", "verify", f.name, "--admin-key", admin)
        except RuntimeError as exc:
            print(f"bench: soak: export of {node}: {exc}", file=sys.stderr)
            return 1
    return 0
