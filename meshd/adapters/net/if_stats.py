"""An interface's own counters, from sysfs (any thread: small file reads, no netlink).

On a WireGuard interface they differ by backend. wireguard-go's TUN counts what went into
and came out of the tunnel: data only, never a keepalive. The kernel's interface counts
WireGuard's own messages as sent, handshakes and keepalives included: its ``tx_bytes``
equals ``wg show`` transfer's sent bytes (measured in the VM tier: 9 packets, 464 bytes in
6 s with no data and a 1 s keepalive; tests/vm/test_guest_node.py). A kernel keepalive is
a lone send (one per keepalive interval, or 10 s after receiving without sending), which
link liveness's busy rule does not doubt by itself (it needs sends at two readings within
2 s with nothing received).
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


def transferred(ifname: str) -> tuple[int, int] | None:
    """(received, sent) bytes of ``ifname`` (the uplink's, for the dashboard), None when
    it is gone."""
    counted = _read(ifname, "rx_bytes", "tx_bytes")
    return None if counted is None else (counted[0], counted[1])
