"""soak.*: topologies/mesh10.toml for 10 minutes (--soak-s; 60 s with --quick) with user
traffic (TCP, 2 Mbit/s, on three 3-hop paths), random silent link cuts and heals and random
meshd kills (SIGKILL) and restarts, at most two of each at a time, each held 3-12 s. The
witnesses a, d and h are never killed: their memory is the one that would grow.

Timeline: a first window of traffic without faults (a minute, or a quarter of a short
run), a receipts export from every node, faults until the last window, everything healed
and restarted, a last window of traffic without faults; then, once converged:
- soak.expired_packets: packets that expired in transit anywhere (a routing loop): ICMP and
  ICMPv6 time-exceeded sent by any node, and packets forwarded with a TTL or hop limit of
  1, counted by a table of the benchmark's own in every node. Target 0.
- soak.reachable_pairs: ordered node pairs answering a ping. Target: all.
- soak.receipts_lost: receipts in the first export missing from the last (each node's
  export holds every receipt it stored), plus chains (provider, consumer, epoch) whose seq
  or totals go backwards, plus exports `meshd receipts verify` refuses. Target 0.
- soak.leaks: differences between the start and the end, in every node, in interfaces,
  routes, policy rules, nftables tables and processes (by name). Target 0.
- soak.pss_growth_mb.max: the witnesses' PSS, median of the last window minus median of
  the first, the largest. Target: at most 5 MB.
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
from pathlib import Path
from typing import Any

from benchmarks.overhead import meshd_pids, pss_mb
from benchmarks.results import Result, at_least, at_most
from benchmarks.scale import ping_ok
from benchmarks.testbed import HERE, Testbed

DURATION_S = 600.0
QUICK_S = 60.0
WITNESSES = ("a", "d", "h")
TRAFFIC = (("a", "d"), ("h", "e"), ("g", "b"))  # three hops apart on mesh10
TRAFFIC_PORT = 5301
FAULTS_AT_ONCE = 2
HOLD_S = (3.0, 12.0)
FAULT_EVERY_S = 3.0
PSS_GROWTH_MB = 5.0
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


class Traffic:
    """TCP at 2 Mbit/s on each path until ``until``, a new iperf3 run after any that ends
    (an outage may end one); stops on its own."""

    def __init__(self, tb: Testbed, until: float) -> None:
        self.tb, self.until = tb, until
        self.servers = []
        self.threads = []
        status = tb.status()["nodes"]
        for src, dst in TRAFFIC:
            address = tb.meshd_status(dst)["mesh_ipv4"]
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", status[dst]["namespace"], "iperf3", "-s", "-B", address,
                 "-p", str(TRAFFIC_PORT)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            thread = threading.Thread(
                target=self._run, args=(status[src]["namespace"], address), daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def _run(self, namespace: str, address: str) -> None:
        while (left := self.until - time.monotonic()) > 1:
            subprocess.run(
                ["ip", "netns", "exec", namespace, "iperf3", "-c", address, "-p",
                 str(TRAFFIC_PORT), "-b", "2M", "-t", str(int(min(left, 30)))],
                capture_output=True, timeout=left + 30,
            )  # fmt: skip
            time.sleep(0.5)

    def stop(self) -> None:
        for thread in self.threads:
            thread.join()
        for server in self.servers:
            server.kill()
            server.wait()


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
        start = time.monotonic()
        traffic = Traffic(tb, start + duration)
        first_pss = _pss_window(pids, start + window)
        exported = {n: receipts(tb, n)[0] for n in names}
        cuts: dict[tuple[str, str], float] = {}
        dead: dict[str, float] = {}
        faults = Counter[str]()
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
            after, text = receipts(tb, n)
            kept = {r["signature"] for r in after}
            lost += sum(r["signature"] not in kept for r in exported[n]) + chain_faults(after)
            lost += _refused(tb, n, text)
        status = tb.status()["nodes"]
        leaks = []
        for n in names:
            now_items = snapshot(tb, n, status[n]["namespace"])
            diff = (now_items - before[n]) + (before[n] - now_items)
            leaks += [f"{n}: {'+' if now_items[k] > before[n][k] else '-'}{k}" for k in diff]
    for line in leaks:
        print(f"bench: soak: leak {line}", file=sys.stderr)
    growth = max(statistics.median(last_pss[n]) - statistics.median(first_pss[n])
                 for n in WITNESSES)  # fmt: skip
    return [
        at_most("soak.expired_packets", expired, "packets", 0),
        at_least("soak.reachable_pairs", round(reachable / len(pairs), 3), "fraction", 1.0),
        at_most("soak.receipts_lost", lost, "count", 0),
        at_most("soak.leaks", len(leaks), "count", 0),
        at_most("soak.pss_growth_mb.max", round(growth, 1), "MB", PSS_GROWTH_MB),
        Result("soak.receipts", sum(len(r) for r in exported.values()), "count"),
        Result("soak.link_cuts", faults["cut"], "count"),
        Result("soak.meshd_kills", faults["kill"], "count"),
        at_least("soak.converged", 1 if converged else 0, "bool", 1),
        Result("soak.seconds", round(duration), "s"),
    ]


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
