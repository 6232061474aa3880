"""netns-testbed/bench [NAME...] [--quick] [--nodes N...] [--soak-s S]

Runs the named benchmarks (all by default; with --quick and no names, the CI subset of
DESIGN.md: the data plane at one hop, link-cut failover with 3 repetitions and receipts
verification), writes results/latest.json and latest.md, and exits non-zero when a figure
misses its target, saying which."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import (
    core_scale,
    dataplane,
    failover,
    fair,
    false_downs,
    guests,
    join,
    overhead,
    owner_first,
    peers,
    receipts,
    scale,
    scrape,
    soak,
    tui,
)
from benchmarks.results import Result, write


@dataclass(frozen=True)
class Options:
    quick: bool
    nodes: tuple[int, ...] | None  # sizes for scale (each) and cost (the first)
    soak_s: float | None


BENCHMARKS: dict[str, Callable[[Options], list[Result]]] = {
    "core": lambda o: core_scale.core_scale(o.quick),
    "dataplane": lambda o: dataplane.dataplane(o.quick),
    "guests": lambda o: guests.kernel_dataplane(o.quick),
    "failover": lambda o: failover.both(o.quick),
    "false_downs": lambda o: false_downs.false_downs(o.quick),
    "join": lambda o: join.join_seconds(o.quick),
    "cost": lambda o: overhead.cost(o.quick, o.nodes[0] if o.nodes else None),
    "owner_first": lambda o: owner_first.owner_first(o.quick),
    "fair": lambda o: fair.fair(o.quick),
    "receipts": lambda o: receipts.relay(o.quick),
    "verify": lambda o: receipts.verify_speed(o.quick),
    "tui": lambda o: tui.dashboard(o.quick),
    "scale": lambda o: scale.scale(o.quick, o.nodes),
    "soak": lambda o: soak.soak(o.quick, o.soak_s),
    "peers": lambda o: peers.peers(o.quick),
    "metrics": lambda o: scrape.scrape_cost(o.quick),
}
QUICK = ("dataplane", "failover", "verify")  # DESIGN.md's CI subset


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the running benchmark takes its testbed down."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="bench", description=" ".join(__doc__.split("\n\n")[1].split())
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="the small, fast versions")
    parser.add_argument(
        "--nodes",
        type=int,
        nargs="+",
        metavar="N",
        help=f"mesh sizes: scale runs each (default {' '.join(map(str, scale.SIZES))}), "
        "cost the first (default topologies/mesh10.toml)",
    )
    parser.add_argument(
        "--soak-s",
        type=float,
        metavar="S",
        help=f"soak duration in seconds (default {soak.DURATION_S:g}, --quick {soak.QUICK_S:g})",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.nodes and not all(2 <= n <= 200 for n in args.nodes):
        parser.error("--nodes: each size from 2 to 200 (the testbed's limit)")
    options = Options(args.quick, tuple(args.nodes) if args.nodes else None, args.soak_s)
    names = args.names or list(QUICK if args.quick else BENCHMARKS)
    signal.signal(signal.SIGTERM, _terminate)
    results: list[Result] = []
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results.extend(BENCHMARKS[name](options))
    doc = write(results)
    failed = [r for r in doc["results"] if r["pass"] is False]
    for r in doc["results"]:
        print(
            f"{r['name']:36} {r['value']:>10g} {r['unit']:8} {r['target'] or '':8} "
            f"{'' if r['pass'] is None else ('pass' if r['pass'] else 'FAIL')}"
        )
    for r in failed:
        print(
            f"bench: {r['name']} = {r['value']:g} misses its target {r['target']}", file=sys.stderr
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
