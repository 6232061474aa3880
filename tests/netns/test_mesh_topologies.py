"""Babel across other shapes: a 2 x 3 grid, and a shared segment with a chain off it where
the far ends are four hops apart. Every node reaches every other's mesh addresses."""

from __future__ import annotations

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD


def _all_pairs_reach(bed: meshbed.Bed, names: str) -> dict[str, dict[str, object]]:
    status = {n: bed.status(n) for n in names}
    for name, s in status.items():
        prefixes = {r["prefix"] for r in s["routes"]}
        for other, o in status.items():
            if other != name:
                assert f"{o['mesh_ipv4']}/32" in prefixes, (name, other)
                assert f"{o['mesh_ipv6']}/128" in prefixes, (name, other)
    return status


@pytest.mark.parametrize(
    ("topology", "names", "far", "hops"),
    [("grid6.toml", "abcdef", ("a", "f"), 3), ("street.toml", "abcdef", ("a", "f"), 4)],
)
def test_every_pair_reaches_across_hops(
    topology: str, names: str, far: tuple[str, str], hops: int
) -> None:
    with meshbed.testbed(topology, "g", meshbed.Bed) as bed:
        status = _all_pairs_reach(bed, names)
        src, dst = far
        route = bed.route(src, f"{status[dst]['mesh_ipv4']}/32")
        # 96 per hop, plus what the probes measured (RTT above 10 ms, loss): never a hop's worth
        assert route is not None and meshbed.metric_is_hops(route["metric"], hops)
        for addr in (status[dst]["mesh_ipv4"], status[dst]["mesh_ipv6"]):
            out = bed.sh(src, "ping", "-c", "2", "-i", "0.2", "-W", "2", str(addr))
            assert f"ttl={64 - (hops - 1)}" in out or f"hlim={64 - (hops - 1)}" in out, out
