"""The false-downs benchmark's pure helpers (netns-testbed/benchmarks/false_downs.py):
counting `peer.down` in the logs, and a figure that fails when its load did not run."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TESTBED_DIR = REPO / "netns-testbed"
sys.path[:0] = [p for p in (str(REPO), str(TESTBED_DIR)) if p not in sys.path]

from benchmarks import testbed  # noqa: E402
from benchmarks.false_downs import count_downs, no_downs  # noqa: E402

LOG = """2026-12-06 00:27:55,147 INFO peer.down peer=b interface=mw6c silent_s=0.76
2026-12-06 00:27:55,150 INFO route.changed prefix=10.77.0.3/32 action=remove via=b
2026-12-06 00:27:58,001 INFO peer.up peer=b interface=mw6c
"""


def test_downs_are_counted_in_every_node_log(tmp_path: Path) -> None:
    tb = testbed.Testbed("unit")
    tb.env["MESHD_TESTBED_DIR"] = str(tmp_path)
    for node, times in (("a", 2), ("b", 0), ("c", 1)):
        (tmp_path / "nodes" / node).mkdir(parents=True)
        (tmp_path / "nodes" / node / "meshd.log").write_text(LOG * times)
    assert count_downs(tb) == 3


def test_no_down_passes_only_when_the_load_ran() -> None:
    assert no_downs("x", 0, loads_ran=True).passed is True
    assert no_downs("x", 1, loads_ran=True).passed is False
    ran_not = no_downs("x", 0, loads_ran=False)
    assert ran_not.passed is False and ran_not.target == "<= 0"
