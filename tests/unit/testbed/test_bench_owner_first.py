"""The owner-first benchmark's pure helpers (netns-testbed/benchmarks/owner_first.py):
reading the line and cap from its topology, reading iperf3 -J output, and the figures."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TESTBED_DIR = REPO / "netns-testbed"
sys.path[:0] = [p for p in (str(REPO), str(TESTBED_DIR)) if p not in sys.path]

from benchmarks.owner_first import (  # noqa: E402
    GATEWAY,
    TOPOLOGY,
    figures,
    line_and_cap_mbit,
    received_bps,
)
from nstestbed.topology import load  # noqa: E402


def test_topology_is_valid_and_gives_line_and_cap() -> None:
    topology = load(TOPOLOGY)  # the testbed accepts it
    assert [n.name for n in topology.nodes] == ["a", "b", "c"]
    assert line_and_cap_mbit(tomllib.loads(TOPOLOGY.read_text()), GATEWAY) == (50.0, 20.0)


def test_line_and_cap_units() -> None:
    doc = {"nodes": {"x": {"uplink_rate": "1gbit", "rate_cap": "500kbit"}}}
    assert line_and_cap_mbit(doc, "x") == (1000.0, 0.5)


def _iperf(bps: float, sent: float = 1.0) -> str:
    return json.dumps(
        {
            "start": {},
            "intervals": [],
            "end": {
                "sum_sent": {"bits_per_second": sent},
                "sum_received": {"bits_per_second": bps},
            },
        }
    )


def test_received_bps_reads_the_receiver() -> None:
    assert received_bps(_iperf(28.5e6, sent=30e6)) == 28.5e6


@pytest.mark.parametrize(
    "output",
    [
        "",
        "iperf3: error - unable to connect to server",
        "[1, 2]",
        json.dumps({"start": {}, "intervals": [], "end": {}, "error": "the server is busy"}),
        json.dumps({"end": {}}),
        _iperf(0.0),
    ],
)
def test_received_bps_fails_loudly(output: str) -> None:
    with pytest.raises(RuntimeError):
        received_bps(output)


def test_figures() -> None:
    mbit = 1e6
    results = figures(
        "upload",
        alone_bps=[45 * mbit, 46 * mbit, 44 * mbit],
        loaded_bps=[27 * mbit, 20 * mbit, 28 * mbit],
        mesh_bps=[19 * mbit, 19.5 * mbit, 22 * mbit],
        line_mbit=50.0,
        cap_mbit=20.0,
    )
    by_name = {r.name: r for r in results}
    assert set(by_name) == {
        "owner_first.upload.ratio",
        "owner_first.upload.mesh_over_cap",
        "owner_first.upload.owner_alone_mbit",
        "owner_first.upload.owner_loaded_mbit",
        "owner_first.upload.mesh_mbit",
    }
    ratio = by_name["owner_first.upload.ratio"]
    assert ratio.value == pytest.approx(27 / (45 * 0.6), abs=1e-3)
    assert ratio.target == ">= 0.9" and ratio.passed is True
    over = by_name["owner_first.upload.mesh_over_cap"]
    assert over.value == pytest.approx(19.5 / 20, abs=1e-3)
    assert over.target == "<= 1.05" and over.passed is True
    assert by_name["owner_first.upload.owner_alone_mbit"].value == 45.0
    assert by_name["owner_first.upload.owner_loaded_mbit"].value == 27.0
    assert by_name["owner_first.upload.mesh_mbit"].value == 19.5
    assert by_name["owner_first.upload.mesh_mbit"].target is None


def test_figures_miss_the_targets() -> None:
    mbit = 1e6
    results = figures("download", [48 * mbit], [20 * mbit], [25 * mbit], 50.0, 20.0)
    by_name = {r.name: r for r in results}
    assert by_name["owner_first.download.ratio"].passed is False
    assert by_name["owner_first.download.mesh_over_cap"].passed is False
