"""The neutral WireGuard device/peer model shared by every backend.

Updates are partial, as in wireguard-tools: a field left ``None`` is left as it is.
Keys are raw 32-byte values; backends encode them as their interface needs (hex for the
UAPI, base64 for `wg`, bytes for netlink).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerUpdate:
    public_key: bytes
    endpoint: tuple[str, int] | None = None
    allowed_ips: tuple[str, ...] | None = None  # replaces the peer's list when given
    persistent_keepalive_s: int | None = None
    remove: bool = False
    # Only change the peer if it is already there, never create it (UAPI ``update_only``,
    # netlink WGPEER_F_UPDATE_ONLY): lets a late endpoint update not resurrect a removed peer.
    update_only: bool = False


@dataclass(frozen=True)
class DeviceUpdate:
    private_key: bytes | None = None
    listen_port: int | None = None
    # Marks the interface's own UDP packets, so that policy routing can keep them out of
    # the tunnel they carry (an exit tunnel's default route); 0 clears it.
    fwmark: int | None = None
    peers: tuple[PeerUpdate, ...] = ()
    # Drop every peer first, as WireGuard's own replace_peers does: a peer named in ``peers``
    # is created afresh, so its fields not given here are reset and its counters restart.
    replace_peers: bool = False


@dataclass(frozen=True)
class PeerStatus:
    public_key: bytes
    endpoint: tuple[str, int] | None
    allowed_ips: tuple[str, ...]
    persistent_keepalive_s: int
    rx_bytes: int
    tx_bytes: int
    last_handshake: float | None  # seconds since the epoch, None when never


@dataclass(frozen=True)
class DeviceStatus:
    name: str
    public_key: bytes | None
    listen_port: int
    peers: tuple[PeerStatus, ...]
    fwmark: int = 0  # the mark of the interface's own UDP packets; 0: none


class WireGuardError(Exception):
    """A backend operation failed; ``errno`` is set when the OS or the UAPI gave one."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


# --- checks shared by every backend -------------------------------------------------------
# They run before anything is sent: the UAPI applies a ``set`` line by line and stops at the
# first bad one, so a bad value caught late would leave a half-applied configuration.

KEY_LEN = 32
IFNAME_MAX_LEN = 15  # IFNAMSIZ - 1


def check_ifname(ifname: str) -> None:
    """Raise ValueError unless ``ifname`` is a name the kernel accepts (dev_valid_name)."""
    if not ifname or len(ifname.encode()) > IFNAME_MAX_LEN:
        raise ValueError(f"interface name must be 1..{IFNAME_MAX_LEN} bytes: {ifname!r}")
    if ifname in (".", "..") or any(c in ifname for c in "/:") or any(c.isspace() for c in ifname):
        raise ValueError(f"invalid interface name: {ifname!r}")


def normalise_prefix(prefix: str) -> str:
    """``10.1.2.3/24`` -> ``10.1.2.0/24``, as WireGuard stores it; ValueError when invalid."""
    if "/" not in prefix:
        raise ValueError(f"allowed ip needs a prefix length: {prefix!r}")
    return str(ipaddress.ip_network(prefix, strict=False))


def check_update(update: DeviceUpdate) -> None:
    """Raise ValueError on anything a backend would refuse halfway through."""
    if update.private_key is not None and len(update.private_key) != KEY_LEN:
        raise ValueError(f"private key must be {KEY_LEN} bytes")
    if update.listen_port is not None and not 0 <= update.listen_port <= 0xFFFF:
        raise ValueError(f"listen port out of range: {update.listen_port}")
    if update.fwmark is not None and not 0 <= update.fwmark <= 0xFFFFFFFF:
        raise ValueError(f"fwmark out of range: {update.fwmark}")
    for peer in update.peers:
        if len(peer.public_key) != KEY_LEN:
            raise ValueError(f"peer public key must be {KEY_LEN} bytes")
        if peer.endpoint is not None:
            host, port = peer.endpoint
            ipaddress.ip_address(host)  # an IP literal: WireGuard resolves no names
            if not 1 <= port <= 0xFFFF:
                raise ValueError(f"endpoint port out of range: {port}")
        for prefix in peer.allowed_ips or ():
            normalise_prefix(prefix)
        keepalive = peer.persistent_keepalive_s
        if keepalive is not None and not 0 <= keepalive <= 0xFFFF:
            raise ValueError(f"persistent keepalive out of range: {keepalive}")


def public_key_from_private(private_key: bytes) -> bytes:
    """The X25519 public key of a WireGuard private key (the UAPI ``get`` omits it)."""
    from nacl.bindings import crypto_scalarmult_base  # libsodium clamps, as WireGuard does

    return crypto_scalarmult_base(private_key)
