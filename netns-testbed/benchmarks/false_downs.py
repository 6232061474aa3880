"""Links called down while they worked (issue 18: "no false downs"), counted from the
`peer.down` events in every meshd's log while loads ran across live links:

- liveness.false_downs.busy: ring5, two iperf3 TCP streams from a to c for LOAD_S (both
  cores busy: wireguard-go encrypting, meshd polling), then one back from c. Target: 0.
- liveness.false_downs.lossy: line3 with 10 % loss each way on a-b (radio links lose
  packets): iperf3 TCP from a to c for LOAD_S, then one-way UDP at 10 Mbit/s each way for
  UDP_S (nothing answers a one-way flow but the liveness echoes). Target: 0.

Each figure fails, whatever the count, when a load did not run (iperf3 exited non-zero):
a load that never flowed tests nothing. --quick shortens every load to a quarter."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results import Result, at_most
from benchmarks.testbed import HERE, Testbed

LOAD_S = 60
UDP_S = 30
SERVER_PORT = 5301
LOSS_PERCENT = 10
SERVER_START_S = 0.5  # for the one-off server to listen


def count_downs(tb: Testbed) -> int:
    nodes = Path(tb.env["MESHD_TESTBED_DIR"]) / "nodes"
    return sum(log.read_text().count(" peer.down ") for log in nodes.glob("*/meshd.log"))


def _iperf3(tb: Testbed, client: str, server: str, seconds: int, *extra: str) -> bool:
    """One iperf3 run from ``client`` to ``server``'s mesh address (a one-off server there
    that exits after it): whether both ended well."""
    address = tb.meshd_status(server)["mesh_ipv4"]
    port = str(SERVER_PORT)
    serve = subprocess.Popen(
        ["ip", "netns", "exec", tb.namespace(server), "iperf3", "-s", "-1", "-p", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(SERVER_START_S)
        run = subprocess.run(
            ["ip", "netns", "exec", tb.namespace(client), "iperf3", "-c", address, "-p", port]
            + ["-t", str(seconds), "--connect-timeout", "3000", *extra],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        served = serve.wait(timeout=30) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    if run.returncode != 0 or not served:
        print(f"bench: false_downs: iperf3 {client}->{server} failed: {run.stderr[-300:]}",
              file=sys.stderr)  # fmt: skip
        return False
    return True


def no_downs(name: str, downs: int, loads_ran: bool) -> Result:
    figure = at_most(name, downs, "count", 0)
    return figure if loads_ran else Result(name, downs, "count", figure.target, False)


def false_downs(quick: bool) -> list[Result]:
    load_s, udp_s = (LOAD_S // 4, UDP_S // 4) if quick else (LOAD_S, UDP_S)
    tb = Testbed("mbd")
    with tb.up(HERE / "topologies" / "ring5.toml"):
        before = count_downs(tb)
        ran = _iperf3(tb, "a", "c", load_s, "-P", "2")
        ran = _iperf3(tb, "c", "a", load_s // 3) and ran
        busy = no_downs("liveness.false_downs.busy", count_downs(tb) - before, ran)
    with tb.up(HERE / "topologies" / "line3.toml"):
        tb.cli("impair", "a", "b", "--loss", str(LOSS_PERCENT))
        before = count_downs(tb)
        ran = _iperf3(tb, "a", "c", load_s)
        ran = _iperf3(tb, "a", "c", udp_s, "-u", "-b", "10M") and ran
        ran = _iperf3(tb, "a", "c", udp_s, "-u", "-b", "10M", "-R") and ran
        lossy = no_downs("liveness.false_downs.lossy", count_downs(tb) - before, ran)
    return [busy, lossy]
