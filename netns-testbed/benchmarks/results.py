"""The results file of DESIGN.md: {"machine", "date", "results": [{name, value, unit,
target, pass}]}, written as results/latest.json and a Markdown table beside it."""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# MESHD_BENCH_RESULTS redirects the output (the tests run the harness without touching
# the committed results).
RESULTS_DIR = Path(
    os.environ.get("MESHD_BENCH_RESULTS") or Path(__file__).resolve().parent.parent / "results"
)


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    target: str | None = None  # e.g. ">= 0.95"; None where a figure has no target
    passed: bool | None = None

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["pass"] = d.pop("passed")
        return d


def at_least(name: str, value: float, unit: str, minimum: float) -> Result:
    return Result(name, value, unit, f">= {minimum}", value >= minimum)


def at_most(name: str, value: float, unit: str, maximum: float) -> Result:
    return Result(name, value, unit, f"<= {maximum}", value <= maximum)


def within(name: str, value: float, unit: str, minimum: float, maximum: float) -> Result:
    """Two-sided: a figure that is wrong both ways (a count too low or too high)."""
    return Result(name, value, unit, f">= {minimum} and <= {maximum}", minimum <= value <= maximum)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# meshd benchmarks, {doc['date']}",
        "",
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
        f"kernel {doc['machine']['kernel']}",
        "",
        "| name | value | unit | target | pass |",
        "|---|---:|---|---|---|",
    ]
    for r in doc["results"]:
        verdict = {True: "yes", False: "**NO**", None: ""}[r["pass"]]
        lines.append(
            f"| {r['name']} | {r['value']:g} | {r['unit']} | {r['target'] or ''} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def write(results: list[Result], directory: Path = RESULTS_DIR) -> dict[str, Any]:
    doc = {
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "results": [r.as_json() for r in results],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    (directory / "latest.md").write_text(markdown(doc))
    return doc
