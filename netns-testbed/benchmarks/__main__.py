"""netns-testbed/bench [NAME...] [--quick]

Runs the named benchmarks (all by default), writes results/latest.json and latest.md, and
exits non-zero when a figure misses its target, saying which."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from benchmarks import (
    core_scale,
    dataplane,
    failover,
    join,
    overhead,
    owner_first,
    receipts,
    tui,
)
from benchmarks.results import Result, write

BENCHMARKS: dict[str, Callable[[bool], list[Result]]] = {
    "core": core_scale.core_scale,
    "dataplane": dataplane.ratio_1hop,
    "failover": failover.both,
    "join": join.join_seconds,
    "overhead": overhead.control_bytes,
    "owner_first": owner_first.owner_first,
    "receipts": receipts.relay,
    "verify": receipts.verify_speed,
    "tui": tui.dashboard,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="the small, fast subset")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    results: list[Result] = []
    for name in args.names or list(BENCHMARKS):
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results.extend(BENCHMARKS[name](args.quick))
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
