"""Record status documents from a node of a running testbed into tests/tui/snapshots/.

    MESHD_TESTBED_ID=tui MESHD_TESTBED_DIR=/run/meshd-testbed-tui \\
        .venv/bin/python -m tests.tui.record NODE NAME [COUNT] [INTERVAL_S]

writes NAME-1.json .. NAME-COUNT.json, INTERVAL_S apart (the dashboard's rates come from
successive documents). The dashboard's tests replay them; the hand-edited variants
(dispute, throttled, ...) start from a copy of one.

    ... .venv/bin/python -m tests.tui.record --events NODE NAME

turns the node's log (``meshd.log`` in the testbed's directory) into NAME.json, the events
as the ``subscribe`` stream carries them (field values as the log line shows them).

    ... .venv/bin/python -m tests.tui.record --series NODE NAME COUNT INTERVAL_S

writes the COUNT documents into one file, NAME.jsonl, a line each (the traffic view's
plots need minutes of them).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from meshd.api.client import parse_status

REPO = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).parent / "snapshots"


def documents(node: str, count: int, interval: float) -> list[str]:
    out = []
    for i in range(1, count + 1):
        doc = subprocess.run(
            [str(REPO / "netns-testbed/testbed"), "exec", node, "--", "meshd", "status", "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        parse_status(json.loads(doc))  # a document the client refuses is no snapshot
        out.append(doc)
        if i < count:
            time.sleep(interval)
    return out


def record(node: str, name: str, count: int, interval: float) -> None:
    for i, doc in enumerate(documents(node, count, interval), 1):
        (SNAPSHOTS / f"{name}-{i}.json").write_text(doc)


def record_series(node: str, name: str, count: int, interval: float) -> None:
    docs = documents(node, count, interval)
    lines = [json.dumps(json.loads(doc), separators=(",", ":")) for doc in docs]
    (SNAPSHOTS / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def record_events(node: str, name: str) -> None:
    log = Path(os.environ["MESHD_TESTBED_DIR"]) / "nodes" / node / "meshd.log"
    events: list[dict[str, object]] = []
    for line in log.read_text().splitlines():
        day, clock, level, event_name, *fields = shlex.split(line)
        stamp = time.mktime(time.strptime(f"{day} {clock[:8]}", "%Y-%m-%d %H:%M:%S"))
        events.append(
            {
                "kind": "event",
                "id": len(events) + 1,
                "time": stamp + int(clock[9:]) / 1000,
                "level": level.lower(),
                "name": event_name,
                "fields": dict(f.split("=", 1) for f in fields),
            }
        )
    (SNAPSHOTS / f"{name}.json").write_text(json.dumps(events, indent=1) + "\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "--events":
        record_events(args[1], args[2])
    elif args[0] == "--series":
        record_series(args[1], args[2], int(args[3]), float(args[4]))
    else:
        record(
            args[0],
            args[1],
            int(args[2]) if len(args) > 2 else 3,
            float(args[3]) if len(args) > 3 else 1.0,
        )
