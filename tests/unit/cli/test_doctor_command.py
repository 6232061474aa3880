"""`meshd doctor --json`: the same findings as the lines, one object for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_doctor_json_is_one_object_with_every_finding(tmp_path: Path) -> None:
    args = ["--config", str(tmp_path / "missing.toml"), "--socket", str(tmp_path / "no.sock")]
    run = [sys.executable, "-m", "meshd", "doctor", *args]
    text = subprocess.run(run, capture_output=True, text=True)
    as_json = subprocess.run([*run, "--json"], capture_output=True, text=True)
    assert text.returncode == as_json.returncode == 1  # no config, no daemon
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False
    verdicts = {f["check"]: f["verdict"] for f in doc["findings"]}
    assert verdicts["config"] == verdicts["daemon"] == "fail"
    lines = text.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [f["check"] for f in doc["findings"]]
    assert as_json.stderr == ""
