"""A household's roaming devices (pure): phones and laptops running a stock WireGuard
client, each with a key and an address from the node's device pool.

A device is part of the household, not a member of the mesh: it reaches the mesh and the
internet the way the household's LAN does (meshd.adapters.net.firewall: NATed to the node's
mesh address when it enters the mesh, masqueraded out of the node's own uplink), so the
route-origin rules, metering, quota and exit policy that hold for the household hold for
it, and nothing in the mesh can reach it first. Only its public key is kept; the private
key goes into the config it is given (``wg_quick``), once.

The book is a JSON file (``devices.json`` in the state directory) holding a version and
the devices; ``DeviceBook.from_json`` refuses a file that is not one, saying where.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from meshd.core.addressing import short_tag
from meshd.core.endpoints import format_endpoint, parse_endpoint

BOOK_VERSION = 1
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")  # a device's name: how a person calls it
MIN_POOL_PREFIX = 16  # a pool of /16 to /30
MAX_POOL_PREFIX = 30
KEEPALIVE_S = 25  # in the device's config: what holds its NAT mapping to the node


class DeviceError(ValueError):
    """A device request or file that cannot be taken; the message says why."""


def interface_name(own_id: str) -> str:
    """The node's device interface: unique machine-wide like its links (wireguard-go's
    sockets share one directory), and outside its tunnels' wildcard (``<prefix><tag>*``:
    letters and digits only), since its devices are household, not mesh."""
    return f"dv-{short_tag(own_id)}"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise DeviceError(
            f"device name {name!r}: expected 1 to 32 of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def check_pool(pool: ipaddress.IPv4Network) -> None:
    if not MIN_POOL_PREFIX <= pool.prefixlen <= MAX_POOL_PREFIX:
        raise DeviceError(f"device pool {pool}: expected /{MIN_POOL_PREFIX} to /{MAX_POOL_PREFIX}")


HOSTNAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)


def check_endpoint(text: str) -> str:
    """``HOST:PORT`` a device can dial: an address (``[V6]:PORT`` for IPv6) or a DNS name
    (a dynamic-DNS name, say); DeviceError saying why not."""
    try:
        return format_endpoint(parse_endpoint(text))
    except ValueError as exc:
        host, _, port = text.rpartition(":")
        if (
            not HOSTNAME.fullmatch(host.lower())
            or not port.isdigit()
            or not 1 <= int(port) <= 65535
        ):
            raise DeviceError(f"endpoint {text!r}: expected HOST:PORT ({exc})") from None
        return f"{host.lower()}:{int(port)}"


def node_address(pool: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The node's own address on its device interface: the pool's first host."""
    return pool.network_address + 1


def _key(text: Any, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise DeviceError(f"{what}: expected a WireGuard key (32 bytes, base64)")
    return raw


@dataclass(frozen=True)
class Device:
    name: str
    public_key: bytes  # the device's WireGuard key (its private key is never kept)
    address: ipaddress.IPv4Address
    added_at: int  # Unix seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "public_key": base64.b64encode(self.public_key).decode(),
            "address": str(self.address),
            "added_at": self.added_at,
        }


@dataclass
class DeviceBook:
    pool: ipaddress.IPv4Network
    devices: dict[str, Device] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Device]:
        return iter(sorted(self.devices.values(), key=lambda d: d.address))

    def __len__(self) -> int:
        return len(self.devices)

    def add(self, name: str, public_key: bytes, now: int) -> Device:
        """A new device on the lowest free address of the pool; DeviceError when the name
        or the key is taken, or the pool is full."""
        check_name(name)
        if name in self.devices:
            raise DeviceError(f"a device named {name!r} exists: remove it first")
        if any(d.public_key == public_key for d in self.devices.values()):
            raise DeviceError("that key belongs to another device")
        used = {d.address for d in self.devices.values()} | {node_address(self.pool)}
        free = (a for a in self.pool.hosts() if a not in used)
        address = next(free, None)
        if address is None:
            raise DeviceError(f"the device pool {self.pool} is full ({len(self)} devices)")
        device = Device(name, public_key, address, now)
        self.devices[name] = device
        return device

    def remove(self, name: str) -> Device:
        device = self.devices.pop(name, None)
        if device is None:
            raise DeviceError(f"no device named {name!r}")
        return device

    def to_json(self) -> dict[str, Any]:
        return {"version": BOOK_VERSION, "devices": [d.to_json() for d in self]}

    @classmethod
    def from_json(cls, obj: Any, pool: ipaddress.IPv4Network) -> DeviceBook:
        """The book a file holds, its devices checked against ``pool`` (a device outside it,
        after the pool was changed, is refused by name rather than routed nowhere)."""
        if not isinstance(obj, dict) or obj.get("version") != BOOK_VERSION:
            raise DeviceError(f"expected an object with version {BOOK_VERSION}")
        items = obj.get("devices")
        if not isinstance(items, list):
            raise DeviceError("devices: expected a list")
        book = cls(pool)
        for i, item in enumerate(items):
            where = f"devices[{i}]"
            if not isinstance(item, dict):
                raise DeviceError(f"{where}: expected an object")
            try:
                name = check_name(str(item.get("name")))
                address = ipaddress.IPv4Address(str(item.get("address")))
                added_at = item.get("added_at")
            except ValueError as exc:
                raise DeviceError(f"{where}: {exc}") from None
            if not isinstance(added_at, int) or added_at < 0:
                raise DeviceError(f"{where}: added_at: expected Unix seconds")
            if address not in pool or address in (pool.network_address, node_address(pool)):
                raise DeviceError(f"{where} ({name}): {address} is not a device address of {pool}")
            public = _key(item.get("public_key"), f"{where}.public_key")
            if name in book.devices or address in {d.address for d in book}:
                raise DeviceError(f"{where} ({name}): its name or address is there twice")
            book.devices[name] = Device(name, public, address, added_at)
        return book


@dataclass(frozen=True)
class ClientConfig:
    """What a stock WireGuard client needs: rendered by ``wg_quick``."""

    private_key: bytes
    address: ipaddress.IPv4Address
    node_public_key: bytes
    endpoint: str  # HOST:PORT
    allowed_ips: tuple[str, ...]
    dns: tuple[str, ...] = ()


def allowed_ips(
    everything: bool, mesh_prefixes: Iterable[ipaddress._BaseNetwork]
) -> tuple[str, ...]:
    """Everything (the device's internet goes by the household's uplink or its exit), or
    the mesh's prefixes only."""
    if everything:
        return ("0.0.0.0/0",)
    return tuple(str(p) for p in mesh_prefixes if p.version == 4)


def wg_quick(config: ClientConfig) -> str:
    """The device's wg-quick file (as ``wg-quick up`` and the phone apps read it)."""

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    lines = [
        "[Interface]",
        f"PrivateKey = {b64(config.private_key)}",
        f"Address = {config.address}/32",
    ]
    if config.dns:
        lines.append(f"DNS = {', '.join(config.dns)}")
    lines += [
        "",
        "[Peer]",
        f"PublicKey = {b64(config.node_public_key)}",
        f"Endpoint = {config.endpoint}",
        f"AllowedIPs = {', '.join(config.allowed_ips)}",
        f"PersistentKeepalive = {KEEPALIVE_S}",
    ]
    return "\n".join(lines) + "\n"
