"""A gateway's monthly quota per neighbour (netns-testbed/topologies/quota.toml): a shares
its uplink with a quota of 3 MB a month; b (no uplink) leaves by a until its exit bytes,
counted by nftables on a and kept in a's ledger, reach it. Then a refuses b, also after
a restart."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
SERVER = "203.0.113.1"
QUOTA = 3_000_000


class Bed(meshbed.Bed):
    def gateway(self, node: str) -> dict[str, Any]:
        return dict(self.status(node)["gateway"])

    def fetch(self, node: str, path: str) -> str:
        url = f"http://{SERVER}/{path}"
        cmd = ("curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{size_download}", url)
        return self.sh(node, *cmd, check=False)


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("quota.toml", "q", Bed) as b:
        b.wait("b leaves by a", lambda: b.gateway("b")["exit_gateway"] is not None, 15)
        yield b


def test_a_neighbour_is_cut_off_at_its_monthly_quota_and_stays_so_across_restarts(
    bed: Bed,
) -> None:
    a_id, b_id = bed.status("a")["node_id"], bed.status("b")["node_id"]
    sharing = bed.gateway("a")["sharing"]
    assert sharing["monthly_quota_mb"] == 3 and sharing["exit_bytes"].get(b_id, 0) < QUOTA
    assert bed.fetch("b", "hello.txt").strip().isdigit()
    big = int(bed.fetch("b", "big.bin"))
    assert big == 4 * 1024 * 1024  # under the quota when it started

    def counted() -> int:
        return int(bed.gateway("a")["sharing"]["exit_bytes"].get(b_id, 0))

    bed.wait("a counts b's bytes", lambda: counted() >= big, within=15)
    # IP lengths: the payload plus headers (1300-byte segments inside the exit tunnel), the
    # ACKs and whatever TCP resent; seen here: 1.17 times the payload.
    print(f"a counted {counted()} bytes for a {big}-byte download ({counted() / big:.3f})")
    assert big < counted() < big * 1.25, counted()
    bed.wait("b is refused", lambda: bed.gateway("b")["exit_gateway"] is None, within=15)
    reasons = {c["node_id"]: c["reason"] for c in bed.gateway("b")["candidates"]}
    assert reasons[a_id] == "refused us: quota_reached", reasons
    assert bed.fetch("b", "hello.txt").strip() in ("", "0")  # no way out now
    query = meshbed.dns_query(bed.status("a")["mesh_ipv4"])
    assert bed.sh("b", sys.executable, "-c", query, check=False).strip() == "timeout"  # no DNS

    # The month's totals are in a's ledger: a restarted a still refuses b.
    before = counted()
    bed.run("kill", "a")
    bed.run("start", "a", "--wait")
    bed.wait("a is back", lambda: bed.gateway("a")["sharing"]["announced"] is True, within=20)
    assert counted() == before
    time.sleep(3)  # b asks again (refusals are kept 30 s on b, a restart closed them)
    assert bed.gateway("b")["exit_gateway"] is None
