"""The sysctls a mesh router needs, set explicitly for its own network namespace.

A new namespace inherits the host's ``all`` values for some keys and the kernel defaults for
others, so nothing is assumed: forwarding on for both families, and no reverse-path filter
on the WireGuard links. With routes chosen per neighbour a packet's way back often differs
from its way in, and even the loose filter (2) drops those on a link: the kernel's
``fib_validate_source`` refuses any packet whose source is routed out of another
interface when the interface it came in on has no IPv4 address, which WireGuard links
here never have. Seen on a 2x3 grid once link costs came from measured RTTs: a ping
across the mesh whose reply took another path was dropped (TcpExtIPReversePathFilter).
The effective value per interface is the maximum of ``all`` and the interface's, so
``all`` goes to 0 and every other interface keeps its own (systemd sets 2 on each).
"""

from __future__ import annotations

from pathlib import Path

ROUTER_SYSCTLS: dict[str, str] = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    "net/ipv4/conf/all/rp_filter": "0",
    # Packet counts per tracked flow (meshd.adapters.net.conntrack: black-hole detection).
    "net/netfilter/nf_conntrack_acct": "1",
}


class SysctlMissing(OSError):
    """A key this kernel does not have (yet): its module is not loaded."""


# What makes a key exist, for the error (meshd may not load modules itself).
MODULE_OF = {"net/netfilter/": "nf_conntrack"}


def apply(values: dict[str, str], root: Path = Path("/proc/sys")) -> dict[str, str]:
    """Write each value; return what was there before (to log what changed)."""
    before: dict[str, str] = {}
    for key, value in values.items():
        path = root / key
        try:
            before[key] = path.read_text().strip()
        except FileNotFoundError:
            module = next((m for p, m in MODULE_OF.items() if key.startswith(p)), None)
            hint = f": load the {module} module first (modprobe {module})" if module else ""
            raise SysctlMissing(f"sysctl {key.replace('/', '.')} does not exist{hint}") from None
        if before[key] != value:
            path.write_text(value + "\n")
    return before


def keep_router_advertisements(ifname: str, root: Path = Path("/proc/sys")) -> str | None:
    """With IPv6 forwarding on, the kernel ignores router advertisements on an interface
    whose ``accept_ra`` is 1 (its default): an uplink that gets its IPv6 address and
    default route by SLAAC would lose them when they lapse. Its ``accept_ra`` becomes 2
    (taken while forwarding); 0 (an operator's choice) is left alone, and so is an
    interface without IPv6. What changed (``key=old->new``), or None."""
    path = root / f"net/ipv6/conf/{ifname}/accept_ra"
    try:
        before = path.read_text().strip()
    except FileNotFoundError:
        return None
    if before != "1":
        return None
    path.write_text("2\n")
    return f"net/ipv6/conf/{ifname}/accept_ra={before}->2"


def interface_rp_filter(ifname: str) -> dict[str, str]:
    """No reverse-path filter on one WireGuard link (see above): its peer is authenticated
    and allowed every source."""
    return {f"net/ipv4/conf/{ifname}/rp_filter": "0"}
