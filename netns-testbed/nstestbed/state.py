"""The state directory: one testbed per directory.

    <dir>/state.json          what exists and what runs (written before anything is made)
    <dir>/topology.toml       the topology as given to ``up`` (the plan is rebuilt from it)
    <dir>/nodes/<n>/          meshd.toml, meshd.sock, meshd.log, state/ (keys)
    <dir>/admin/              the mesh's admin keys (identity.key/.pub)
    <dir>/inet/               www/ (served over HTTP), http.log, iperf3-<port>.log

Commands that change it hold an exclusive ``flock`` on the directory itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nstestbed import topology
from nstestbed.plan import Plan, make_plan
from nstestbed.rules import Impairments

STATE_FILE = "state.json"
TOPOLOGY_FILE = "topology.toml"


@dataclass
class State:
    testbed_id: str
    state_dir: Path
    topology_source: str  # the path given to ``up``, for display
    phase: str  # "building" while ``up`` runs, then "up"
    namespaces: list[str]
    daemon: list[str] | None  # argv prefix; "run --config FILE" is appended; None: not started
    meshd_pids: dict[str, int | None] = field(default_factory=dict)
    internet_pids: list[int] = field(default_factory=list)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    impairments: Impairments = field(default_factory=Impairments)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.testbed_id,
            "state_dir": str(self.state_dir),
            "topology": self.topology_source,
            "phase": self.phase,
            "namespaces": self.namespaces,
            "daemon": self.daemon,
            "meshd_pids": self.meshd_pids,
            "internet_pids": self.internet_pids,
            "keys": self.keys,
            "impairments": self.impairments.to_json(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> State:
        return cls(
            testbed_id=doc["id"],
            state_dir=Path(doc["state_dir"]),
            topology_source=doc["topology"],
            phase=doc["phase"],
            namespaces=list(doc["namespaces"]),
            daemon=doc.get("daemon"),
            meshd_pids=dict(doc.get("meshd_pids", {})),
            internet_pids=list(doc.get("internet_pids", [])),
            keys=dict(doc.get("keys", {})),
            impairments=Impairments.from_json(doc.get("impairments", {})),
        )

    def plan(self) -> Plan:
        topo = topology.load(self.state_dir / TOPOLOGY_FILE)
        return make_plan(topo, self.testbed_id, self.state_dir)


class StateError(Exception):
    pass


def read(state_dir: Path) -> State | None:
    """The testbed in ``state_dir``, or None when there is none."""
    try:
        text = (state_dir / STATE_FILE).read_text()
    except FileNotFoundError:
        return None
    try:
        return State.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{state_dir / STATE_FILE}: unreadable ({exc}); run `down`") from None


def write(state: State) -> None:
    path = state.state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


# "vms": the VM tier's guests (netns-testbed/vmbed): overlays, payloads, consoles; their
# QEMU processes run in the node's namespace and are stopped with it before this.
OWN_ENTRIES = (STATE_FILE, TOPOLOGY_FILE, "state.tmp", "nodes", "inet", "admin", "vms")


def remove(state_dir: Path, keep_dir: bool = False) -> list[Path]:
    """Remove what the testbed put in ``state_dir``, then (unless ``keep_dir``) the
    directory itself when that leaves it empty (MESHD_TESTBED_DIR may name a directory
    holding other things).
    Returns our entries that could not be removed."""
    for name in OWN_ENTRIES:
        path = state_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if not keep_dir:
        with contextlib.suppress(OSError):
            state_dir.rmdir()
    return [state_dir / name for name in OWN_ENTRIES if (state_dir / name).exists()]


@contextlib.contextmanager
def locked(state_dir: Path, create: bool = True) -> Iterator[None]:
    """Hold the directory's lock (creating the directory when asked; when it does not
    exist and ``create`` is false, there is nothing to lock)."""
    if create:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
