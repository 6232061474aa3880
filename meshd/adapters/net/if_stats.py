"""An interface's own counters, from sysfs (any thread: small file reads, no netlink).

On a WireGuard interface these count what went into and came out of the tunnel:
wireguard-go's TUN never sees a keepalive; the kernel's counts one as a packet of no bytes
(a peer sends one passively only after 10 s of receiving without sending). Bytes therefore
count data only under both.
"""

from __future__ import annotations

from pathlib import Path

STATISTICS = Path("/sys/class/net")


def _read(ifname: str, *names: str) -> tuple[int, ...] | None:
    stats = STATISTICS / ifname / "statistics"
    try:
        return tuple(int((stats / name).read_text()) for name in names)
    except (OSError, ValueError):  # the interface is gone
        return None


def packets(ifname: str) -> tuple[int, int] | None:
    """(sent, received) packets of ``ifname``, None when it is gone."""
    counted = _read(ifname, "tx_packets", "rx_packets")
    return None if counted is None else (counted[0], counted[1])


def sent_bytes(ifname: str) -> int | None:
    """Bytes ``ifname`` sent (into its tunnel, for WireGuard), None when it is gone."""
    counted = _read(ifname, "tx_bytes")
    return None if counted is None else counted[0]
