"""A mesh of the first release upgraded one household at a time (issue 20), on real
namespaces: the first release's own code (commit 111bccd, from git) runs a - b on its own
testbed, each node with a household LAN host whose pings the node forwards (what the first
release meters and receipts). Then b, and later a, is stopped and this build started on the
same config and state directory: it upgrades the directory (a copy kept), speaks meshd/1
with the old neighbour and meshd/2 once both are new, and the LAN hosts' traffic is routed,
metered and receipted in each phase; every receipt b holds, the first release's included,
verifies offline."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshd.adapters import identity, state_dir
from meshd.config import load as load_config
from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
REPO = meshbed.REPO
FIRST_RELEASE = "111bccde6c9875cf32a11e3a98cec75b3a8be841"
TOPOLOGY = """
[nodes.a]
lan = true
[nodes.b]
lan = true
[[links]]
between = ["a", "b"]
"""
ADDRESSES = {"a": "10.77.0.1", "b": "10.77.0.2"}  # the first release's testbed gives these


@pytest.fixture(scope="module")
def first_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first release's tree, exported from this repository's history."""
    tree = tmp_path_factory.mktemp("first-release")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", FIRST_RELEASE], capture_output=True
    )
    assert archive.returncode == 0, (
        f"git archive {FIRST_RELEASE}: {archive.stderr.decode()} (this test needs the "
        "repository's history back to the first release: a full clone)"
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    return tree


class Mesh:
    """The first release's testbed (its own CLI), and this build started in its nodes'
    places."""

    def __init__(self, tree: Path, ident: str, logs: Path) -> None:
        self.dir = Path(f"/run/meshd-testbed-{ident}")
        self.ident, self.logs, self.tree = ident, logs, tree
        testbed = {"MESHD_TESTBED_ID": ident, "MESHD_TESTBED_DIR": str(self.dir)}
        self.old_env = {
            **os.environ,
            **testbed,
            "PYTHONPATH": f"{tree}:{tree}/netns-testbed",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.new_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.new: dict[str, subprocess.Popen[bytes]] = {}
        self.said = ""  # the last status call's answer or error

    def old(self, *args: str, check: bool = True) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "nstestbed", *args],
            env=self.old_env,
            cwd=self.tree,  # python -m puts the working directory first on its path
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert not check or res.returncode == 0, f"first release's testbed {args}: {res.stderr}"
        return res.stdout

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def node_id(self, node: str) -> str:
        return identity.load(self.node_dir(node) / "state").node_id

    def old_pid(self, node: str) -> int:
        return int(json.loads((self.dir / "state.json").read_text())["meshd_pids"][node])

    def upgrade(self, node: str) -> None:
        """Stop the first release's meshd on ``node`` (SIGTERM) and start this build's on
        the same config and state directory, in the node's namespace."""
        pid = self.old_pid(node)
        os.kill(pid, 15)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            assert time.monotonic() < deadline, f"{node}'s old meshd did not stop"
            time.sleep(0.1)
        log = (self.logs / f"{node}-new.log").open("wb")
        config = str(self.node_dir(node) / "meshd.toml")
        self.new[node] = subprocess.Popen(
            ["ip", "netns", "exec", f"{self.ident}-{node}", sys.executable, "-m", "meshd"]
            + ["run", "--config", config],
            env=self.new_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def status(self, node: str) -> dict[str, Any] | None:
        """This build's status of ``node`` (None until its control socket answers)."""
        res = subprocess.run(
            [sys.executable, "-m", "meshd", "status", "--json"],
            env={**self.new_env, "MESHD_SOCKET": str(self.node_dir(node) / "meshd.sock")},
            capture_output=True,
            text=True,
        )
        self.said = (
            json.dumps(json.loads(res.stdout)["neighbours"]) if res.returncode == 0 else res.stderr
        )
        return json.loads(res.stdout) if res.returncode == 0 else None

    def talks(self, node: str, protocol: str) -> bool:
        status = self.status(node)
        neighbours = status["neighbours"] if status else []
        return any(n["state"] == "up" and n["control"]["protocol"] == protocol for n in neighbours)

    def ping(self, node: str, to: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["ip", "netns", "exec", f"{self.ident}-{node}-lan", "ping", "-q", "-n"]
            + ["-i", "0.5", "-c", "20", ADDRESSES[to]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def receipts_since(self, node: str, provider: str, consumer: str, since: float) -> int:
        path = self.node_dir(node) / "state" / "ledger.sqlite"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(
                db.execute(
                    "SELECT count(*) FROM receipts WHERE provider = ? AND consumer = ? AND "
                    "stored_at >= ?",
                    [provider, consumer, since],
                ).fetchone()[0]
            )
        finally:
            db.close()

    def stop_new(self) -> None:
        for proc in self.new.values():
            proc.terminate()
        for proc in self.new.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _state(pid: int) -> str:
    try:
        return next(
            line
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("State:")
        )
    except (OSError, StopIteration):
        return "Z"


def _wait(what: str, predicate: Any, within: float, mesh: Mesh | None = None) -> float:
    start = time.monotonic()
    while not predicate():
        said = f" (last status: {mesh.said[-3000:]})" if mesh else ""
        assert time.monotonic() - start < within, f"{what}: not within {within} s{said}"
        time.sleep(0.5)
    return time.monotonic() - start


@pytest.fixture
def mesh(first_release: Path, tmp_path: Path) -> Iterator[Mesh]:
    topology = tmp_path / "line2lan.toml"
    topology.write_text(TOPOLOGY)
    m = Mesh(first_release, f"upg{os.getpid() % 10000}", tmp_path)
    m.old("down", check=False)
    try:
        m.old("up", str(topology), "--wait", "--timeout", "60")
        m.old("wait-converged", "--timeout", "60")
        yield m
    finally:
        m.stop_new()
        m.old("down", check=False)


def traffic_is_receipted(mesh: Mesh, phase: str, ids: dict[str, str]) -> None:
    """Each LAN host pings the other node (20 pings each, none lost), and each node then
    stores a receipt of this phase in each role: the other signs what it relayed, it signs
    what the other relayed."""
    since = time.time()
    pings = {n: mesh.ping(n, "b" if n == "a" else "a") for n in "ab"}
    for node, ping in pings.items():
        out = ping.communicate(timeout=60)[0].decode()
        assert ping.returncode == 0 and " 0% packet loss" in out, f"{phase}: {node}: {out}"
    for node, other in (("a", "b"), ("b", "a")):

        def both_roles(node: str = node, me: str = ids[node], them: str = ids[other]) -> bool:
            return (
                mesh.receipts_since(node, me, them, since) > 0
                and mesh.receipts_since(node, them, me, since) > 0
            )

        took = _wait(f"{phase}: receipts in {node}'s ledger", both_roles, 90)
        print(f"{phase}: {node} holds receipts of both roles {took:.1f} s after the pings")


def test_a_first_release_mesh_upgraded_one_household_at_a_time(mesh: Mesh) -> None:
    ids = {n: mesh.node_id(n) for n in "ab"}
    for node in "ab":  # the first release runs there: its tree first on the daemon's path
        environ = Path(f"/proc/{mesh.old_pid(node)}/environ").read_bytes().split(b"\0")
        assert any(v.startswith(f"PYTHONPATH={mesh.tree}:".encode()) for v in environ)
    traffic_is_receipted(mesh, "first release", ids)

    mesh.upgrade("b")
    took = _wait("b talks meshd/1 with a", lambda: mesh.talks("b", "meshd/1"), 60, mesh)
    print(f"b upgraded: session with a (first release) on meshd/1 {took:.1f} s after start")
    log = (mesh.logs / "b-new.log").read_text()
    assert "state.upgraded schema=1 to=2 stores=ledger.sqlite:0" in log, log[-2000:]
    b_state = mesh.node_dir("b") / "state"
    [copy] = state_dir.copies(b_state)
    assert state_dir.store_schema(copy / "ledger.sqlite") == 0
    traffic_is_receipted(mesh, "b upgraded, a first release", ids)

    mesh.upgrade("a")
    took = _wait("a and b talk meshd/2", lambda: mesh.talks("a", "meshd/2"), 60, mesh)
    print(f"a upgraded: session on meshd/2 {took:.1f} s after start")
    assert "state.upgraded schema=1 to=2" in (mesh.logs / "a-new.log").read_text()
    traffic_is_receipted(mesh, "both upgraded", ids)

    # Every receipt b holds, those of the first release's days included, verifies offline.
    config = str(mesh.node_dir("b") / "meshd.toml")
    export = subprocess.run(
        [sys.executable, "-m", "meshd", "receipts", "export", "--config", config],
        env=mesh.new_env,
        capture_output=True,
        text=True,
    )
    assert export.returncode == 0, export.stderr
    exported = mesh.logs / "b-receipts.jsonl"
    exported.write_text(export.stdout)
    [admin] = load_config(config).mesh.admin_keys
    verify = subprocess.run(
        [sys.executable, "-m", "meshd", "receipts", "verify", str(exported)]
        + [f"--admin-key={admin}"],
        env=mesh.new_env,
        capture_output=True,
        text=True,
    )
    said = verify.stderr.strip()
    assert verify.returncode == 0 and " 0 records refused; membership checked" in said, said
    verified = int(said.split(": ", 1)[1].split()[0])
    assert verified >= 2, said  # at least one chain each way
    print(f"b's receipts: {said}")
