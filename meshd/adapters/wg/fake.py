"""An in-memory WireGuard backend with the real ones' semantics, for tests of the layers above.

It follows what wireguard-go and the kernel do with the same update: fields left ``None`` stay
as they are, ``replace_peers`` drops every peer before the named ones are applied (so those
start afresh), ``allowed_ips`` replaces the peer's list, ``remove`` of an unknown peer and
``update_only`` on one are no-ops, and allowed ips come back normalised (``10.1.2.0/24``).
Traffic never flows here: tests set counters and handshakes with ``set_peer_stats``.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field

from meshd.adapters.wg.model import (
    DeviceStatus,
    DeviceUpdate,
    PeerStatus,
    PeerUpdate,
    WireGuardError,
    check_ifname,
    check_update,
    normalise_prefix,
    public_key_from_private,
)


@dataclass
class _Peer:
    endpoint: tuple[str, int] | None = None
    allowed_ips: list[str] = field(default_factory=list)
    persistent_keepalive_s: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: float | None = None


@dataclass
class _Device:
    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: dict[bytes, _Peer] = field(default_factory=dict)  # insertion order, as shown


class FakeBackend:
    name: str = "fake"

    def __init__(self) -> None:
        self._devices: dict[str, _Device] = {}
        # Every configure() call that was accepted, in order, for tests to inspect.
        self.updates: list[tuple[str, DeviceUpdate]] = []

    def create(self, ifname: str) -> None:
        check_ifname(ifname)
        if ifname in self._devices:
            raise WireGuardError(f"{ifname} already exists", errno.EEXIST)
        self._devices[ifname] = _Device()

    def delete(self, ifname: str) -> None:
        check_ifname(ifname)
        self._devices.pop(ifname, None)

    def exists(self, ifname: str) -> bool:
        check_ifname(ifname)
        return ifname in self._devices

    def list_interfaces(self, prefix: str) -> list[str]:
        return sorted(name for name in self._devices if name.startswith(prefix))

    def configure(self, ifname: str, update: DeviceUpdate) -> None:
        device = self._device(ifname)
        check_update(update)
        if update.private_key is not None:
            device.private_key = None if update.private_key == bytes(32) else update.private_key
        if update.listen_port is not None:
            device.listen_port = update.listen_port
        if update.fwmark is not None:
            device.fwmark = update.fwmark
        if update.replace_peers:
            device.peers.clear()
        for peer in update.peers:
            _apply_peer(device, peer)
        self.updates.append((ifname, update))

    def show(self, ifname: str) -> DeviceStatus:
        device = self._device(ifname)
        return DeviceStatus(
            name=ifname,
            public_key=None
            if device.private_key is None
            else public_key_from_private(device.private_key),
            listen_port=device.listen_port,
            fwmark=device.fwmark,
            peers=tuple(
                PeerStatus(
                    public_key=key,
                    endpoint=peer.endpoint,
                    allowed_ips=tuple(peer.allowed_ips),
                    persistent_keepalive_s=peer.persistent_keepalive_s,
                    rx_bytes=peer.rx_bytes,
                    tx_bytes=peer.tx_bytes,
                    last_handshake=peer.last_handshake,
                )
                for key, peer in device.peers.items()
            ),
        )

    def set_peer_stats(
        self,
        ifname: str,
        public_key: bytes,
        *,
        rx_bytes: int | None = None,
        tx_bytes: int | None = None,
        last_handshake: float | None = None,
    ) -> None:
        """Pretend traffic: set a peer's counters and last handshake (None: left as is)."""
        device = self._device(ifname)
        peer = device.peers.get(public_key)
        if peer is None:
            raise WireGuardError(f"{ifname}: no such peer", errno.ENOENT)
        if rx_bytes is not None:
            peer.rx_bytes = rx_bytes
        if tx_bytes is not None:
            peer.tx_bytes = tx_bytes
        if last_handshake is not None:
            peer.last_handshake = last_handshake

    def _device(self, ifname: str) -> _Device:
        check_ifname(ifname)
        device = self._devices.get(ifname)
        if device is None:
            raise WireGuardError(f"{ifname}: no such interface", errno.ENODEV)
        return device


def _apply_peer(device: _Device, update: PeerUpdate) -> None:
    peer = device.peers.get(update.public_key)
    if update.remove:
        device.peers.pop(update.public_key, None)
        return
    if peer is None:
        if update.update_only:
            return
        peer = device.peers[update.public_key] = _Peer()
    if update.endpoint is not None:
        host, port = update.endpoint
        peer.endpoint = (str(ipaddress.ip_address(host)), port)  # as the real ones print it
    if update.persistent_keepalive_s is not None:
        peer.persistent_keepalive_s = update.persistent_keepalive_s
    if update.allowed_ips is not None:
        peer.allowed_ips = []
        for prefix in map(normalise_prefix, update.allowed_ips):
            # One prefix belongs to one peer: adding it elsewhere moves it (allowedips trie).
            for other in device.peers.values():
                if prefix in other.allowed_ips:
                    other.allowed_ips.remove(prefix)
            peer.allowed_ips.append(prefix)
