"""Starting and stopping processes inside namespaces.

Every process runs in a session of its own (so a terminal's Ctrl-C does not reach it), with
output appended to a log file, and is started through ``ip netns exec``, which execs the
command in place: the pid recorded is the process itself. Nothing is daemonised twice; what
is still running in a testbed namespace at ``down`` is found with ``ip netns pids``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def start(
    namespace: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    return proc.pid


def is_alive(pid: int | None, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (a zombie does not), and its command line holds ``marker`` (so a
    recycled pid is not mistaken for ours)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself hold ") ".
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return False
    return marker is None or marker.encode() in cmdline


def namespace_pids(namespace: str) -> list[int]:
    proc = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    pending = [p for p in pids if is_alive(p)]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
        pending = [p for p in pending if is_alive(p)]
    return pending


def stop(pids: Iterable[int], grace: float) -> list[int]:
    """SIGTERM, up to ``grace`` seconds to exit, then SIGKILL. Returns the pids that
    outlived even SIGKILL (none, unless stuck in the kernel)."""
    pids = [p for p in pids if is_alive(p)]
    signal_all(pids, signal.SIGTERM)
    left = wait_gone(pids, grace)
    signal_all(left, signal.SIGKILL)
    return wait_gone(left, 2.0)


def _reap() -> None:
    """Collect our own exited children (only ``up`` cleaning up after itself has any)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
