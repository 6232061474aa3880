"""Owner first: while neighbours b and c load gateway a's shared line through their exit
tunnels (topologies/share3.toml: a 50 Mbit/s line, a 20 Mbit/s mesh cap), the household
behind a (its LAN host) still gets what the cap leaves, in each direction.

Per direction (upload: iperf3 to the internet server; download: iperf3 -R), interleaved
A B A B ...: (A) the owner's iperf3 alone, (B) the same while b (from its LAN host) and c
each run one, started before the owner's and running past it. Medians.

- owner_first.<dir>.ratio = owner under load / (owner alone * (line - cap) / line): the
  share of what the cap leaves that the owner gets. Target: at least 0.9.
- owner_first.<dir>.mesh_over_cap = b + c under load / cap. Target: at most 1.05.
- owner_first.<dir>.owner_alone_mbit, .owner_loaded_mbit, .mesh_mbit: the medians, raw."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import tomllib
from typing import Any

from nstestbed.topology import parse_rate

from benchmarks.results import Result, at_least, at_most
from benchmarks.testbed import HERE, Testbed

TOPOLOGY = HERE / "topologies" / "share3.toml"
GATEWAY, NEIGHBOURS = "a", ("b", "c")
TARGET_RATIO = 0.9
TARGET_OVER_CAP = 1.05
OMIT_S = 1  # iperf3 -O: slow start is not what is measured
LEAD_S = 1.5  # the neighbours' load starts this long before the owner's run
TAIL_S = 3.0  # ... and goes on at least this long after it
OWNER_PORT = 5201
LOAD_PORTS = {"b": 5202, "c": 5203}
EXIT_WAIT_S = 60.0
MBIT = 1e6


def line_and_cap_mbit(topology: dict[str, Any], node: str) -> tuple[float, float]:
    """The shaped line (``uplink_rate``) and mesh cap (``rate_cap``) of ``node``, in Mbit/s."""
    body = topology["nodes"][node]
    line = parse_rate(body["uplink_rate"]).bits_per_s / MBIT
    cap = parse_rate(body["rate_cap"]).bits_per_s / MBIT
    return line, cap


def received_bps(output: str) -> float:
    """The receiver's bits per second (``end.sum_received``) of an ``iperf3 -J`` run; raise
    RuntimeError when the run failed or reported nothing."""
    try:
        doc = json.loads(output)
    except ValueError:
        raise RuntimeError(f"iperf3 gave no JSON: {output[-300:]!r}") from None
    if not isinstance(doc, dict):
        raise RuntimeError(f"iperf3 gave no JSON object: {output[-300:]!r}")
    if doc.get("error"):
        raise RuntimeError(f"iperf3: {doc['error']}")
    received = (doc.get("end") or {}).get("sum_received") or {}
    bps = received.get("bits_per_second")
    if not isinstance(bps, int | float) or bps <= 0:
        raise RuntimeError("iperf3 reported no received throughput")
    return float(bps)


def figures(
    direction: str,
    alone_bps: list[float],
    loaded_bps: list[float],
    mesh_bps: list[float],
    line_mbit: float,
    cap_mbit: float,
) -> list[Result]:
    """The results of one direction from the runs' receiver throughputs (bits per second)."""
    alone = statistics.median(alone_bps) / MBIT
    loaded = statistics.median(loaded_bps) / MBIT
    mesh = statistics.median(mesh_bps) / MBIT
    expected = alone * (line_mbit - cap_mbit) / line_mbit
    prefix = f"owner_first.{direction}"
    return [
        at_least(f"{prefix}.ratio", round(loaded / expected, 3), "ratio", TARGET_RATIO),
        at_most(f"{prefix}.mesh_over_cap", round(mesh / cap_mbit, 3), "ratio", TARGET_OVER_CAP),
        Result(f"{prefix}.owner_alone_mbit", round(alone, 1), "Mbit/s"),
        Result(f"{prefix}.owner_loaded_mbit", round(loaded, 1), "Mbit/s"),
        Result(f"{prefix}.mesh_mbit", round(mesh, 1), "Mbit/s"),
    ]


def client(ns: str, server: str, port: int, seconds: float, reverse: bool) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", ns, "iperf3", "-c", server, "-p", str(port)]
    cmd += ["-t", f"{seconds:g}", "-O", str(OMIT_S), "-J"]
    if reverse:
        cmd.append("-R")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def result(proc: subprocess.Popen[str], seconds: float, what: str) -> float:
    out, _ = proc.communicate(timeout=seconds + OMIT_S + 30)
    try:
        return received_bps(out)
    except RuntimeError as exc:
        raise RuntimeError(f"{what}: {exc}") from None


def user_namespaces(status: dict[str, Any]) -> dict[str, str]:
    """Where each neighbour's load runs: its LAN host, else the node itself."""
    nodes = status["nodes"]
    return {n: str(nodes[n].get("lan_namespace") or nodes[n]["namespace"]) for n in NEIGHBOURS}


def stop(started: list[subprocess.Popen[str]]) -> None:
    """Every run ends on its own (-t); what did not is killed."""
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_exits(tb: Testbed) -> None:
    """Until b and c leave by a's exit tunnel (a sharing, announced)."""
    gateway_id = tb.meshd_status(GATEWAY)["node_id"]
    deadline = time.monotonic() + EXIT_WAIT_S
    waiting = list(NEIGHBOURS)
    while waiting:
        waiting = [
            n
            for n in waiting
            if (g := tb.meshd_status(n)["gateway"]).get("using") != "exit"
            or g.get("exit_gateway") != gateway_id
        ]
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(
                f"{', '.join(waiting)} not leaving by {GATEWAY} after {EXIT_WAIT_S} s"
            )
        if waiting:
            time.sleep(0.5)


def owner_first(quick: bool) -> list[Result]:
    reps = 2 if quick else 5
    seconds = 4 if quick else 6
    load_s = LEAD_S + OMIT_S + seconds + TAIL_S
    line_mbit, cap_mbit = line_and_cap_mbit(tomllib.loads(TOPOLOGY.read_text()), GATEWAY)
    tb = Testbed("mbo")
    results: list[Result] = []
    with tb.up(TOPOLOGY):
        status = tb.status()
        server = str(status["internet"]["address"])
        owner_ns = str(status["nodes"][GATEWAY]["lan_namespace"])
        load_ns = user_namespaces(status)
        wait_exits(tb)
        for direction, reverse in (("upload", False), ("download", True)):
            alone: list[float] = []
            loaded: list[float] = []
            mesh: list[float] = []
            for _ in range(reps):
                started: list[subprocess.Popen[str]] = []
                try:
                    started.append(client(owner_ns, server, OWNER_PORT, seconds, reverse))
                    alone.append(result(started[-1], seconds, f"{direction}: owner alone"))
                    loads = {
                        n: client(load_ns[n], server, LOAD_PORTS[n], load_s, reverse)
                        for n in NEIGHBOURS
                    }
                    started += loads.values()
                    time.sleep(LEAD_S)
                    started.append(client(owner_ns, server, OWNER_PORT, seconds, reverse))
                    loaded.append(result(started[-1], seconds, f"{direction}: owner under load"))
                    mesh.append(
                        sum(
                            result(p, load_s, f"{direction}: load from {n}")
                            for n, p in loads.items()
                        )
                    )
                finally:
                    stop(started)
            results += figures(direction, alone, loaded, mesh, line_mbit, cap_mbit)
    return results
