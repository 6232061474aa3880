"""tui.*: the dashboard's cost on a 10-node mesh with traffic flowing (issue 6).

topologies/mesh10.toml, UDP iperf3 streams crossing the mesh (a -> f, c -> h) for the
whole measurement, pings between other pairs; the dashboard (benchmarks.tui_probe, headless
at 80x24, following node a's daemon) runs in a process of its own. Reported:
``tui.cpu_core_fraction`` (target <= 0.05 of one core), ``tui.refresh_gap_max_s`` (the
longest the screen went without a new status; target <= 1.2 s: once a second, as the
dashboard asks the daemon, give or take the timers' jitter) and ``tui.refresh_per_s``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.results import Result, at_most
from benchmarks.testbed import HERE, Testbed

CPU_TARGET = 0.05
GAP_TARGET_S = 1.2


def dashboard(quick: bool) -> list[Result]:
    seconds = 10 if quick else 30
    tb = Testbed("mbt")
    with tb.up(HERE / "topologies" / "mesh10.toml"):
        ips = {n: tb.meshd_status(n)["mesh_ipv4"] for n in "acfh"}
        load = []
        for server, port in (("f", "5301"), ("h", "5302")):
            tb.exec(server, "iperf3", "-s", "-1", "-D", "-p", port)
        for client, server, port in (("a", "f", "5301"), ("c", "h", "5302")):
            load.append(
                subprocess.Popen(
                    [str(HERE / "testbed"), "exec", client, "--", "iperf3", "-c", ips[server],
                     "-p", port, "-u", "-b", "10M", "-t", str(seconds + 8)],
                    env=tb.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        load.append(
            subprocess.Popen(
                [str(HERE / "testbed"), "exec", "h", "--", "ping", "-q", "-i", "0.2", "-c",
                 str(5 * (seconds + 8)), ips["a"]],
                env=tb.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        socket = Path(tb.env["MESHD_TESTBED_DIR"]) / "nodes" / "a" / "meshd.sock"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.tui_probe", str(socket), str(seconds)],
            env=env, capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
        for proc in load:
            proc.wait(timeout=60)
    found = json.loads(out)
    return [
        at_most("tui.cpu_core_fraction", round(found["cpu_core_fraction"], 4), "cores", CPU_TARGET),
        at_most("tui.refresh_gap_max_s", round(found["refresh_gap_max_s"], 3), "s", GAP_TARGET_S),
        Result("tui.refresh_per_s", round(found["refresh_per_s"], 2), "1/s"),
    ]
