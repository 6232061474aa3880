"""Running the kernel's own tools (ip, tc, nft) for the adapters that have no netlink
binding here: a failure is an OSError carrying the tool's message."""

from __future__ import annotations

import subprocess


def run(*cmd: str, stdin: str | None = None) -> str:
    """The command's standard output."""
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise OSError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout


def run_ok(*cmd: str) -> bool:
    """Run a command whose failure is expected and harmless (deleting what may be gone)."""
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0
