"""Starting and stopping processes inside namespaces.

Every process runs in a session of its own (so a terminal's Ctrl-C does not reach it), with
output appended to a log file, and is started through ``ip netns exec``, which execs the
command in place: the pid recorded is the process itself. Nothing is daemonised twice; what
is still running in a testbed namespace at ``down`` is found with ``ip netns pids``, and
meshd's wireguard-go daemons also by the interface they serve (``wireguard_go``).

A process that has exited stays in the process table, as a zombie, until its parent reaps
it; the testbed's are orphans by ``down``, reaped by init, which on some machines takes a
second. ``down`` waits for that too (``wait_reaped``): until then ``pgrep`` still lists them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Stat:
    """What /proc/PID/stat says of a process, a zombie included."""

    comm: str
    state: str  # R, S, D, T, ...; Z: exited, not yet reaped by its parent
    parent: int
    start_time: int  # clock ticks after boot: with the pid, names one process


def stat(pid: int) -> Stat | None:
    """``pid``'s /proc/PID/stat, None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The fields after the parenthesised command name, which may itself hold ") ": the
    # state is field 3, the parent field 4, the start time field 22.
    comm, _, rest = text[text.find("(") + 1 :].rpartition(")")
    fields = rest.split()
    return Stat(comm, fields[0], int(fields[1]), int(fields[19]))


def start_time(pid: int) -> int | None:
    st = stat(pid)
    return st.start_time if st else None


def describe(pid: int) -> str:
    """``pid N (comm, ...)``: how it stands (running, a zombie its parent has not reaped)."""
    st = stat(pid)
    if st is None:
        return f"pid {pid} (gone)"
    if st.state in ("Z", "X"):
        return f"pid {pid} ({st.comm}, exited but not reaped by its parent, pid {st.parent})"
    return f"pid {pid} ({st.comm}, state {st.state})"


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


def wait_reaped(processes: Mapping[int, int], timeout: float) -> list[int]:
    """Wait until each of ``processes`` (pid: start time) has left the process table, a
    zombie once init (or we, its parent) reaped it; return the pids still there at the
    deadline. A zombie whose parent is a process of someone else's (the command they ran
    with ``testbed exec``, their own child) is theirs to reap: it is not waited for."""
    ours = {*processes, 1, os.getpid()}
    deadline = time.monotonic() + timeout
    while True:
        _reap()
        pending = []
        for pid, started in processes.items():
            st = stat(pid)
            if st is None or st.start_time != started:
                continue
            if st.state in ("Z", "X") and st.parent not in ours:
                continue
            pending.append(pid)
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.05)


WIREGUARD_GO = "wireguard-go"


def wireguard_go(names: Iterable[str], prefixes: Iterable[str] = ()) -> dict[int, str]:
    """The running wireguard-go daemons serving one of these interfaces, or one whose name
    starts with one of ``prefixes``, by pid. Found by their command line (``wireguard-go
    [-f] IFNAME``), whatever their namespace: the interface names are unique machine-wide, so
    another testbed's daemons never match. A zombie has no command line: call this while the
    daemons run."""
    names, prefixes = set(names), tuple(p for p in prefixes if p)
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() != WIREGUARD_GO:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        ifname = args[-1] if len(args) >= 2 else ""
        if ifname in names or (prefixes and ifname.startswith(prefixes)):
            found[int(entry.name)] = ifname
    return found


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
