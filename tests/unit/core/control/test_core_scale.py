"""The core-at-scale benchmark (netns-testbed/benchmarks/core_scale.py) on a small graph:
it converges to full routes, its figures are sane, and they do not depend on how the nodes
are split over processes or on whether packets are decoded."""

from __future__ import annotations

import math
import sys
from collections import deque
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
TESTBED_DIR = REPO / "netns-testbed"
sys.path[:0] = [p for p in (str(REPO), str(TESTBED_DIR)) if p not in sys.path]

from benchmarks import core_scale  # noqa: E402
from benchmarks.core_scale import (  # noqa: E402
    HOP_DELAY_S,
    PARAMS,
    Graph,
    ScaleRun,
    random_geometric_graph,
    simulate,
)

N = 20


def _diameter(graph: Graph) -> int:
    neighbours = graph.neighbours()
    longest = 0
    for start in range(graph.n):
        hops = {start: 0}
        queue = deque([start])
        while queue:
            i = queue.popleft()
            for j in neighbours[i]:
                if j not in hops:
                    hops[j] = hops[i] + 1
                    queue.append(j)
        assert len(hops) == graph.n, "the graph is not connected"
        longest = max(longest, *hops.values())
    return longest


@pytest.fixture(scope="module")
def graph() -> Graph:
    return random_geometric_graph(N)


@pytest.fixture(scope="module")
def run(graph: Graph) -> ScaleRun:
    return simulate(graph, steady_intervals=2, workers=1)


def _figures(r: ScaleRun) -> tuple[object, ...]:
    return (
        r.converged_s,
        r.converge_packets,
        r.converge_bytes,
        r.quiet_s,
        r.steady_packets,
        r.steady_bytes,
        r.window_send_times,
    )


def test_graph_is_connected_with_the_intended_degree(graph: Graph) -> None:
    assert graph.n == N
    assert all(a < b for a, b in graph.links)
    assert 4 <= graph.mean_degree <= 9
    _diameter(graph)  # asserts connectivity


def test_unconnectable_graph_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no connected graph"):
        random_geometric_graph(50, mean_degree=0.5, tries=5)


def test_cold_start_converges_no_faster_than_the_diameter(graph: Graph, run: ScaleRun) -> None:
    # simulate() raises unless every node ends with a route to all 2 (N - 1) prefixes.
    diameter = _diameter(graph)
    assert diameter * HOP_DELAY_S <= run.converged_s + 1e-9, "faster than the packets travel"
    assert run.converged_s <= 4 * diameter * HOP_DELAY_S, "slow for a loss-free cold start"
    assert run.converge_rounds == pytest.approx(run.converged_s / HOP_DELAY_S)
    # The last packet of the cold start is the second sending of the new sources, exactly
    # when it is due: the benchmark's lazy deadline checks never tick a router late.
    assert run.quiet_s == PARAMS.triggered_resend_s


def test_steady_state_is_the_periodic_updates(graph: Graph, run: ScaleRun) -> None:
    interval = PARAMS.update_interval_s
    assert run.window_s == 2 * interval
    assert run.window_send_times == [interval, 2 * interval]
    # Per destination per interval and link: a Router-Id (12 octets), a /32 Update (16) and
    # a /128 Update (28), less what split horizon leaves out, plus packet headers.
    per_dest_link = run.bytes_per_dest_link_s * interval
    assert 0.6 * 56 < per_dest_link < 1.1 * 56
    for figure in (run.bytes_per_node_s, run.bytes_per_dest_link_s, run.converge_bytes):
        assert 0 < figure < math.inf
    assert run.converge_packets > len(graph.links)
    assert run.routes_per_node >= 2 * (N - 1)
    assert run.memory_mb > 0


def test_figures_do_not_depend_on_processes_or_decoding(graph: Graph, run: ScaleRun) -> None:
    split = simulate(graph, steady_intervals=2, workers=2)
    decoded = simulate(graph, steady_intervals=2, workers=2, decode_all=True)
    assert split.workers == 2
    assert _figures(split) == _figures(run)
    assert _figures(decoded) == _figures(run)


def test_steady_state_counted_without_delivery_is_the_same(graph: Graph, run: ScaleRun) -> None:
    counted = simulate(graph, steady_intervals=1, workers=1, deliver_in_window=False)
    assert not counted.delivered_in_window
    assert counted.window_send_times == [PARAMS.update_interval_s]
    assert 2 * counted.steady_bytes == run.steady_bytes
    assert counted.bytes_per_node_s == run.bytes_per_node_s


def test_results_and_extrapolation(run: ScaleRun) -> None:
    results = {r.name: r for r in core_scale.results_of([run])}
    for name in ("seconds", "rounds", "messages"):
        assert results[f"core.converge.{name}_{N}"].value > 0
    assert results[f"core.steady.bytes_per_node_s_{N}"].value > 0
    assert all(r.passed is None and r.target is None for r in results.values())
    c = core_scale.fit_per_dest_link([run])
    assert c == pytest.approx(run.bytes_per_dest_link_s)
    assert core_scale.extrapolate([run], 5000) == pytest.approx(c * 4999 * run.mean_degree)
    extrapolated = results["core.extrapolated.bytes_per_node_s_5000"].value
    assert extrapolated == pytest.approx(c * 4999 * run.mean_degree, rel=1e-3)
