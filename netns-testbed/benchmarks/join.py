"""join.seconds: a fresh box with only an invite, from `testbed join` to full reachability
(issue 7; target under 15 s).

topologies/join.toml: members a - b - c, and the invited boxes n (cabled to a) and m (to a
and b). For each box, a issues an invite (`meshd invite`); `testbed join NODE --invite
TOKEN --wait` provisions it with provisioning/provision (into a scratch root, as a Pi's
would be, the testbed starting meshd instead of systemd), its meshd redeems the invite and
the clock stops when `testbed wait-converged` sees every node route to every other. The
figure is the slowest of the boxes (one with --quick)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.results import Result, at_most
from benchmarks.testbed import HERE, Testbed

TARGET_S = 15.0


def join_seconds(quick: bool) -> list[Result]:
    tb = Testbed("mbj")
    times = []
    with tb.up(HERE / "topologies" / "join.toml"):
        config = Path(tb.env["MESHD_TESTBED_DIR"]) / "nodes" / "a" / "meshd.toml"
        for box in ("n",) if quick else ("n", "m"):
            out = tb.exec("a", "meshd", "invite", "--name", box, "--config", str(config))
            token = out.splitlines()[0]
            started = time.monotonic()
            tb.cli("join", box, "--invite", token, "--wait")
            tb.cli("wait-converged", "--timeout", "60")
            times.append(time.monotonic() - started)
    return [
        at_most("join.seconds", round(max(times), 2), "s", TARGET_S),
        Result("join.boxes", len(times), "count"),
    ]
