"""The household's roaming devices (``meshd device add|list|remove``): the book in the
state directory (meshd.core.devices) and the WireGuard interface they reach the node by.

The interface exists while the book holds a device: the node's WireGuard key, the
configured listen port, the pool's first address, a peer per device allowed its one
address. Adding writes the book before the peer is configured; removing writes it and
removes the peer at once (the device's packets are dropped from that moment). A book that
cannot be read is left as it is, said in the log, and every device call answers why
(``devices_unreadable``) until it is mended: nothing stored is overwritten.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from meshd.adapters import safe_files
from meshd.adapters.identity import Identity
from meshd.adapters.net.netlink import Netlink, NetlinkError
from meshd.adapters.wg.backend import WireGuardBackend
from meshd.adapters.wg.model import DeviceUpdate, PeerUpdate, WireGuardError
from meshd.api.server import CallError
from meshd.config import DevicesSettings, UplinkSettings
from meshd.core import devices
from meshd.core.devices import ClientConfig, Device, DeviceBook, DeviceError
from meshd.core.endpoints import format_endpoint
from meshd.log import event

BOOK_FILE = "devices.json"
Kernel = Callable[..., Awaitable[Any]]


class DeviceService:
    def __init__(
        self,
        identity: Identity,
        backend: WireGuardBackend,
        netlink: Netlink,
        kernel: Kernel,
        settings: DevicesSettings,
        uplink: UplinkSettings,
        mesh_prefixes: tuple[ipaddress.IPv4Network, ipaddress.IPv6Network],
        mtu: int,
        state_dir: Path,
        fwmark: int = 0,
        lan: tuple[str, ...] = (),
    ) -> None:
        self.identity, self.backend, self.netlink, self.kernel = identity, backend, netlink, kernel
        self.settings, self.uplink, self.lan = settings, uplink, lan
        self.mesh_prefixes, self.mtu = mesh_prefixes, mtu
        self.fwmark = fwmark  # the exit's: replies to a device leave by the uplink, as links do
        self.path = state_dir / BOOK_FILE
        self.ifname = devices.interface_name(identity.node_id)
        self.book: DeviceBook | None = None
        self.unreadable = ""  # why the book on disk could not be read

    # ---- kernel thread ---------------------------------------------------------------

    def load(self) -> None:
        """Read the book (none: empty) and make the interface match it."""
        try:
            raw = safe_files.read_bytes(self.path)
        except FileNotFoundError:
            self.book = DeviceBook(self.settings.pool)
        except OSError as exc:
            self._refuse(str(exc))
        else:
            try:
                self.book = DeviceBook.from_json(json.loads(raw), self.settings.pool)
            except (ValueError, DeviceError) as exc:
                self._refuse(str(exc))
        clash = self.pool_clash() if self.book else ""
        if clash:  # the devices keep their addresses; the operator is told where it hurts
            event("devices.pool_overlaps", logging.ERROR, pool=str(self.settings.pool), net=clash)
        try:
            self._apply(replace=True)
        except (WireGuardError, NetlinkError, OSError) as exc:  # the node runs on without
            event("devices.apply_failed", logging.ERROR, interface=self.ifname, error=str(exc))

    def _refuse(self, why: str) -> None:
        self.unreadable = f"{self.path}: {why}"
        event("devices.unreadable", logging.ERROR, path=str(self.path), error=why)

    def _apply(self, replace: bool = False, removed: Device | None = None) -> None:
        if self.book is None or not self.book:
            self.remove_interface()
            return
        fresh = not self.backend.exists(self.ifname)
        if fresh:
            self.backend.create(self.ifname)
            event("devices.interface_created", interface=self.ifname)
        peers = [PeerUpdate(d.public_key, allowed_ips=(f"{d.address}/32",)) for d in self.book]
        if removed is not None:
            peers.append(PeerUpdate(removed.public_key, remove=True))
        self.backend.configure(
            self.ifname,
            DeviceUpdate(
                private_key=self.identity.wireguard_private,
                listen_port=self.settings.listen_port,
                fwmark=self.fwmark or None,
                peers=tuple(peers),
                replace_peers=replace or fresh,
            ),
        )
        pool = self.settings.pool
        self.netlink.set_up(self.ifname, mtu=self.mtu)
        self.netlink.ensure_address(self.ifname, devices.node_address(pool), pool.prefixlen)

    def remove_interface(self) -> None:
        try:
            if self.backend.exists(self.ifname):
                self.backend.delete(self.ifname)
                event("devices.interface_removed", interface=self.ifname)
        except WireGuardError as exc:
            event("devices.remove_failed", logging.WARNING, interface=self.ifname, error=str(exc))

    def _save(self, book: DeviceBook) -> None:
        data = json.dumps(book.to_json(), indent=1).encode() + b"\n"
        safe_files.write_atomically(self.path, data, 0o600)

    def _uplink_address(self) -> str:
        if self.uplink.interface:
            try:
                found = self.netlink.addresses(self.uplink.interface)
            except NetlinkError:
                found = set()
            for address, _ in sorted(found, key=lambda a: (a[0].version, a[0])):
                if address.version == 4:
                    return format_endpoint((str(address), self.settings.listen_port))
        raise DeviceError(
            "no endpoint for the device: this node has no uplink address; give --endpoint "
            "HOST:PORT (a public name or address of this node) or set devices.endpoint"
        )

    def pool_clash(self) -> str:
        """The LAN's or the uplink's network the pool overlaps ("" none): a device's address
        there would be routed to the device and away from the household's own machines."""
        pool = self.settings.pool
        for ifname in (*self.lan, self.uplink.interface):
            try:
                found = self.netlink.addresses(ifname) if ifname else set()
            except NetlinkError:
                continue
            for address, length in sorted(found, key=lambda a: (a[0].version, a[0])):
                network = ipaddress.ip_interface(f"{address}/{length}").network
                if network.version == 4 and network.overlaps(pool):
                    return f"{ifname}'s {network}"
        return ""

    def entries(self) -> list[dict[str, Any]]:
        """Each device with what its WireGuard peer shows: where it was last seen, its last
        handshake and its bytes (none while the book cannot be read or holds none)."""
        if not self.book:
            return []
        peers = {}
        if self.backend.exists(self.ifname):
            peers = {p.public_key: p for p in self.backend.show(self.ifname).peers}
        out = []
        for device in self.book:
            peer = peers.get(device.public_key)
            out.append(
                {
                    **device.to_json(),
                    "endpoint": format_endpoint(peer.endpoint) if peer and peer.endpoint else None,
                    "last_handshake": peer.last_handshake if peer else None,
                    "rx_bytes": peer.rx_bytes if peer else 0,
                    "tx_bytes": peer.tx_bytes if peer else 0,
                }
            )
        return out

    def status(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """The status document's ``devices`` (``entries`` read on the kernel thread)."""
        return {
            "interface": self.ifname,
            "pool": str(self.settings.pool),
            "listen_port": self.settings.listen_port,
            "unreadable": self.unreadable or None,
            "items": entries,
        }

    # ---- the control API's calls (event loop) ------------------------------------------

    def _book(self) -> DeviceBook:
        if self.book is None:
            raise CallError("devices_unreadable", f"{self.unreadable}: mend or remove it")
        return self.book

    async def add(self, name: str, endpoint: str | None, everything: bool) -> dict[str, Any]:
        """A new device: its wg-quick config (with its private key, kept nowhere else)."""
        book = self._book()
        clash = await self.kernel(self.pool_clash)
        if clash:
            raise CallError(
                "bad_args",
                f"devices.pool {self.settings.pool} overlaps {clash}: set [devices] pool to "
                "addresses the household does not use",
            )
        try:
            given = endpoint or self.settings.endpoint
            if given:
                where = devices.check_endpoint(given)
            else:
                where = await self.kernel(self._uplink_address)
            key = PrivateKey.generate()
            device = book.add(name, bytes(key.public_key), int(time.time()))
        except DeviceError as exc:
            raise CallError("bad_args", str(exc)) from None
        try:
            await self.kernel(self._save, book)
        except OSError as exc:
            book.remove(name)
            raise CallError("devices_unwritable", f"{self.path}: {exc}") from None
        await self._kernel_apply()
        event("device.added", name=name, address=str(device.address))
        config = ClientConfig(
            private_key=bytes(key),
            address=device.address,
            node_public_key=self.identity.wireguard_public,
            endpoint=where,
            allowed_ips=devices.allowed_ips(everything, self.mesh_prefixes),
            dns=self.settings.dns,
        )
        return {**device.to_json(), "endpoint": where, "config": devices.wg_quick(config)}

    async def _kernel_apply(self, removed: Device | None = None) -> None:
        """The interface made to match the book just written; a failure is answered (the
        book holds the change, and the next start applies it)."""
        try:
            await self.kernel(self._apply, False, removed)
        except (WireGuardError, NetlinkError, OSError) as exc:
            raise CallError("kernel_failed", f"{self.ifname}: {exc}") from None

    async def remove(self, name: str) -> dict[str, Any]:
        book = self._book()
        try:
            device = book.remove(name)
        except DeviceError as exc:
            raise CallError("bad_args", str(exc)) from None
        try:
            await self.kernel(self._save, book)
        except OSError as exc:
            book.devices[name] = device
            raise CallError("devices_unwritable", f"{self.path}: {exc}") from None
        await self._kernel_apply(device)
        event("device.removed", name=name, address=str(device.address))
        return device.to_json()

    async def listing(self) -> list[dict[str, Any]]:
        self._book()
        entries: list[dict[str, Any]] = await self.kernel(self.entries)
        return entries
