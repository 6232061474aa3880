"""The benchmark harness end to end: `bench --quick dataplane` on real namespaces writes the
results file of DESIGN.md and its exit status follows the targets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3"),
]


def test_quick_dataplane_writes_results(tmp_path: Path) -> None:
    env = {**os.environ, "MESHD_BENCH_RESULTS": str(tmp_path)}
    res = subprocess.run(
        [str(REPO / "netns-testbed/bench"), "--quick", "dataplane"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert set(doc) == {"machine", "date", "results"}
    by_name = {r["name"]: r for r in doc["results"]}
    ratio = by_name["dataplane.ratio.1hop"]
    assert set(ratio) == {"name", "value", "unit", "target", "pass"}
    assert 0.3 < ratio["value"] < 3  # both sides really carried traffic
    assert ratio["pass"] == (ratio["value"] >= 0.95)
    assert by_name["dataplane.meshd.1hop_mbit"]["value"] > 10
    assert by_name["dataplane.wg.1hop_mbit"]["pass"] is None
    assert res.returncode == (0 if ratio["pass"] else 1), res.stderr
    if not ratio["pass"]:
        assert "dataplane.ratio.1hop" in res.stderr and "misses its target" in res.stderr
    assert "| dataplane.ratio.1hop |" in (tmp_path / "latest.md").read_text()
