"""The sysctls a mesh router needs, set explicitly for its own network namespace.

A new namespace inherits the host's ``all`` values for some keys and the kernel defaults for
others, so nothing is assumed: forwarding on for both families, reverse-path filtering loose
(2), because with routes chosen per neighbour a packet's way back may differ from its way in.
"""

from __future__ import annotations

from pathlib import Path

ROUTER_SYSCTLS: dict[str, str] = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    "net/ipv4/conf/all/rp_filter": "2",
    "net/ipv4/conf/default/rp_filter": "2",
}


def apply(values: dict[str, str], root: Path = Path("/proc/sys")) -> dict[str, str]:
    """Write each value; return what was there before (to log what changed)."""
    before: dict[str, str] = {}
    for key, value in values.items():
        path = root / key
        before[key] = path.read_text().strip()
        if before[key] != value:
            path.write_text(value + "\n")
    return before


def interface_rp_filter(ifname: str) -> dict[str, str]:
    """Loose reverse-path filtering on one interface (the effective value is the max)."""
    return {f"net/ipv4/conf/{ifname}/rp_filter": "2"}
