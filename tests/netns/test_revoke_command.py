"""`meshd revoke NODE` on a real 5-node ring (a-b-c-d-e-a): a delegate cannot revoke; the
node holding the admin key refuses itself and unknown nodes, then revokes b by name, and
every other node drops b's session, link and routes within seconds; b, restarted, is
refused by its neighbours and stays cut off."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from meshd.cli.commands import ADMIN_KEY
from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
Bed = meshbed.Bed


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("ring5.toml", "htwo", Bed) as b:
        yield b


def _revoke(bed: Bed, node: str, target: str) -> str:
    return bed.sh(node, "sh", "-c", f"meshd revoke {target} 2>&1; echo rc=$?", check=False)


def test_revoke_cuts_a_node_off_everywhere_and_it_cannot_come_back(bed: Bed) -> None:
    a, b, c = bed.status("a"), bed.status("b"), bed.status("c")
    # Every testbed node holds a delegation (it may invite), none the admin key.
    refused = _revoke(bed, "b", "c")
    assert "holds no admin key" in refused and "rc=1" in refused, refused

    key = bed.dir / "nodes" / "a" / "state" / ADMIN_KEY
    shutil.copyfile(bed.dir / "admin" / "identity.key", key)
    os.chmod(key, 0o600)
    for target, why in (
        ("a", "is this node"),
        (a["node_id"], "is this node"),
        ("nobody", "no node 'nobody' known"),
        (c["node_id"], "give --unseen"),  # c is no neighbour of a's
    ):
        out = _revoke(bed, "a", target)
        assert why in out and "rc=1" in out, (target, out)
    assert not (bed.dir / "nodes" / "a" / "state" / "revocations").exists()

    b_prefixes = {f"{b['mesh_ipv4']}/32", f"{b['mesh_ipv6']}/128"}

    def b_cut_off() -> bool:
        for node in "acde":
            s = bed.status(node)
            if any(n["node_id"] == b["node_id"] for n in s["neighbours"]):
                return False
            if any(r["prefix"] in b_prefixes or r["via"] == b["node_id"] for r in s["routes"]):
                return False
        return True

    started = time.monotonic()
    out = _revoke(bed, "a", "b")
    assert f"revoked b {b['node_id']}" in out and "rc=0" in out, out
    took = bed.wait("every node drops b", b_cut_off, within=15)
    print(f"meshd revoke b: every other node dropped b {time.monotonic() - started:.2f} s after")
    print(f"the command started ({took:.2f} s after it returned)")
    again = _revoke(bed, "a", b["node_id"])
    assert "revoked already" in again and "rc=0" in again, again

    # b restarted with its certificate and keys: refused. When the revocation reached b
    # before its sessions closed (the usual case), b's meshd itself refuses to run;
    # otherwise its neighbours refuse it at every handshake.
    log = bed.dir / "nodes" / "b" / "meshd.log"
    bed.run("kill", "b")
    seen = len(log.read_text())
    bed.run("start", "b")

    def refused() -> bool:
        new = log.read_text()[seen:]
        return "membership.cert: revoked" in new or "reason=revoked" in new

    bed.wait("b is refused as revoked", refused, 40)
    print("b after its restart:", "refuses to run" if bed.pid("b") is None else "is refused")
    time.sleep(2)  # time to come back, were it let back
    assert b_cut_off()
