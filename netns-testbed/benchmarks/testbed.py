"""Drive the testbed through its CLI (the DESIGN.md contract), in a state dir of its own so
a benchmark never disturbs a demo mesh that is up."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
TESTBED = HERE / "testbed"


class Testbed:
    def __init__(self, ident: str = "mbn") -> None:
        self.env = {
            **os.environ,
            "MESHD_TESTBED_ID": ident,
            "MESHD_TESTBED_DIR": f"/run/meshd-testbed-{ident}",
        }

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        res = subprocess.run(
            [str(TESTBED), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"testbed {' '.join(args)}: {res.stderr.strip() or res.stdout}")
        return res.stdout

    def exec(self, node: str, *cmd: str, timeout: float = 120) -> str:
        return self.cli("exec", node, "--", *cmd, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json"))

    def namespace(self, node: str) -> str:
        return str(self.status()["nodes"][node]["namespace"])

    def meshd_status(self, node: str) -> dict[str, Any]:
        return json.loads(self.exec(node, "meshd", "status", "--json"))

    @contextmanager
    def up(
        self, topology: Path, converge_s: float | None = 60, answer_s: float = 30
    ) -> Iterator[Testbed]:
        """Up with every daemon answering (within ``answer_s``) and, unless ``converge_s``
        is None, converged; down afterwards, also when interrupted."""
        self.cli("down", check=False)  # a benchmark killed halfway leaves its testbed up
        try:
            self.cli(
                "up", str(topology), "--wait", "--timeout", str(answer_s), timeout=answer_s + 600
            )
            if converge_s is not None:
                self.cli("wait-converged", "--timeout", str(converge_s))
            yield self
        finally:
            self.cli("down", check=False)
