"""`meshd leave` on nodes provisioned as a Pi is (netns-testbed/topologies/join.toml: n and
m join by invite through provisioning/provision --root): on n while its meshd runs (leave
stops it, which takes its kernel state down), on m after `kill -9` (leave's own sweep
removes the links, wireguard-go daemons, routes, addresses and nftables tables the dead
daemon left). Afterwards neither the namespace nor the root holds anything of meshd's,
the receipts export was saved and verifies, and the mesh has dropped the node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
Bed = meshbed.Bed

# What is meshd's in a node's namespace, one line each (empty: nothing).
KERNEL = (
    "ip -br link | grep -o '^mw[^ ]*'; "
    "nft list tables | grep -o 'inet meshd[a-z_]*'; "
    "ip route show table all proto 176; ip -6 route show table all proto 176; "
    "ip -br addr show lo | grep -o '10\\.77\\.[0-9.]*/32'; "
    "ip rule | grep -E '^(1000|1050|1100|1101):'; ip -6 rule | grep -E '^1050:'; true"
)


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("join.toml", "htwo", Bed) as b:
        yield b


def _join(bed: Bed, name: str) -> Path:
    config = bed.dir / "nodes" / "a" / "meshd.toml"
    token = bed.sh("a", "meshd", "invite", "--name", name, "--config", str(config))
    bed.run("join", name, "--invite", token.splitlines()[0], "--wait", "--timeout", "30")
    bed.wait(f"{name} has a link up", lambda: _up(bed, name), 20)
    return bed.dir / "nodes" / name / "root"


def _up(bed: Bed, node: str) -> bool:
    return any(n["state"] == "up" for n in bed.status(node)["neighbours"])


def _kernel(bed: Bed, node: str) -> list[str]:
    return bed.sh(node, "sh", "-c", KERNEL).split("\n")[:-1]


def _node_id(root: Path) -> str:
    return (root / "var/lib/meshd/identity.pub").read_text().strip()


def _leave(bed: Bed, node: str, root: Path, *args: str) -> str:
    return bed.sh(node, "meshd", "leave", "--root", str(root), "--yes", *args)


def _gone(bed: Bed, node_id: str) -> bool:
    """a has no working link or route to it (a neighbour gone is listed, down, for a while)."""
    s = bed.status("a")
    up = any(n["node_id"] == node_id and n["state"] == "up" for n in s["neighbours"])
    return not up and all(r["via"] != node_id for r in s["routes"])


def _nothing_left(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()]


def test_leave_stops_the_daemon_saves_the_receipts_and_removes_everything(
    bed: Bed, tmp_path: Path
) -> None:
    root = _join(bed, "n")
    node_id = _node_id(root)
    assert _kernel(bed, "n"), "n's meshd made nothing?"
    export = tmp_path / "n-receipts.jsonl"
    out = _leave(bed, "n", root, "--export", str(export))
    assert "stop meshd (pid" in out and "the kernel: nothing of this node's here" in out, out
    assert bed.pid("n") is None
    assert _kernel(bed, "n") == []
    assert _nothing_left(root) == []
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert any(line.get("node_id") == node_id for line in lines)  # its certificate
    bed.sh("a", "meshd", "receipts", "verify", str(export))
    bed.wait("a no longer routes to n", lambda: _gone(bed, node_id), 15)
    again = _leave(bed, "n", root)
    assert "nothing of meshd here" in again, again


def test_leave_after_kill_9_sweeps_what_the_dead_daemon_left(bed: Bed) -> None:
    root = _join(bed, "m")
    bed.run("kill", "m")
    left = _kernel(bed, "m")
    assert any(line.startswith("mw") for line in left), left
    assert "inet meshd" in left and "inet meshd_links" in left, left
    assert sum(line.startswith("1050:") for line in left) == 2, left  # the mesh table's rules
    sockets = {p.name for p in Path("/run/wireguard").glob("*.sock")}
    links = [line for line in left if line.startswith("mw")]
    assert {f"{name}.sock" for name in links} <= sockets

    out = _leave(bed, "m", root, "--purge")
    assert "remove interface mw" in out and "remove nftables table inet meshd" in out, out
    assert "remove rule pref 1050 to 10.77.0.0/16 lookup 176" in out, out
    assert "save the receipts" not in out  # --purge
    assert _kernel(bed, "m") == []
    assert not {f"{name}.sock" for name in links} & {
        p.name for p in Path("/run/wireguard").iterdir()
    }
    assert _nothing_left(root) == []
