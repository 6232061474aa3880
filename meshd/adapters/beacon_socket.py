"""The asyncio adapter for discovery beacons: one UDP socket per underlay interface.

Each socket is bound to 0.0.0.0:PORT and to its device (SO_BINDTODEVICE), so that a
datagram says which segment it came from, and broadcasts to that interface's IPv4
broadcast address. ``BeaconSockets`` only moves datagrams; ``BeaconService`` drives the
pure core (meshd.core.discovery.beacons.BeaconState) with them as aioquic's protocol drives a
connection: feed datagrams in, send what comes out, re-arm one timer.

``candidate_interfaces`` picks the underlay interfaces from ``ip -j addr`` output (pure).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from meshd.core.discovery.beacons import BeaconState, Discovered, Rejected

log = logging.getLogger("meshd.core.discovery")

DEFAULT_PORT = 6698
OnDatagram = Callable[[bytes, str, str], None]  # (data, source IP, interface name)


@dataclass(frozen=True)
class Underlay:
    """A LAN interface to beacon on. ``address`` (ours on it) lets the sockets drop our own
    broadcasts early; ``ifindex`` lets them notice an interface deleted and recreated under
    the same name (a device-bound socket is bound to the old index); ``prefixlen`` is its
    subnet's, the only addresses whose beacons are read there (None: none are)."""

    ifname: str
    broadcast: str
    address: str | None = None
    ifindex: int | None = None
    prefixlen: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.ifname.encode()) <= 15:  # IFNAMSIZ - 1
            raise ValueError(f"bad interface name {self.ifname!r}")
        ipaddress.IPv4Address(self.broadcast)  # ValueError if not an IPv4 address
        if self.address is not None:
            ipaddress.IPv4Address(self.address)
        if self.prefixlen is not None and not 0 < self.prefixlen < 31:
            raise ValueError(f"a segment's prefix length is 1..30, got {self.prefixlen}")

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        """The segment's subnet; with no prefix length known, the broadcast address alone
        (a /32: every beacon heard there is refused ``off_subnet``)."""
        prefixlen = 32 if self.prefixlen is None else self.prefixlen
        return ipaddress.IPv4Network(f"{self.broadcast}/{prefixlen}", strict=False)


def candidate_interfaces(
    ip_addr: Iterable[Mapping[str, Any]],
    *,
    wireguard_prefix: str,
    exclude: Collection[str] = (),
) -> list[Underlay]:
    """The interfaces of ``ip -j addr`` output (parsed JSON) that beacons go out on: up
    with a carrier, not loopback, not ours (names starting with ``wireguard_prefix``), not
    in ``exclude`` (the household LAN, say), with an IPv4 address on a subnet that has a
    broadcast address (prefix shorter than /31). The first such address of each interface
    is used; an address added without ``brd`` gets its subnet's."""
    out = []
    for link in ip_addr:
        ifname = link.get("ifname")
        flags = link.get("flags") or []
        if not isinstance(ifname, str) or not isinstance(flags, list):
            continue
        if (
            ifname == "lo"
            or "LOOPBACK" in flags
            or "UP" not in flags
            or "LOWER_UP" not in flags
            or (wireguard_prefix and ifname.startswith(wireguard_prefix))
            or ifname in exclude
        ):
            continue
        for addr in link.get("addr_info") or []:
            if addr.get("family") != "inet" or not addr.get("local"):
                continue
            try:
                subnet = ipaddress.IPv4Interface(f"{addr['local']}/{addr.get('prefixlen')}")
                if subnet.network.prefixlen >= 31:
                    continue
                broadcast = addr.get("broadcast") or str(subnet.network.broadcast_address)
                underlay = Underlay(
                    ifname,
                    broadcast=broadcast,
                    address=addr["local"],
                    ifindex=link.get("ifindex"),
                    prefixlen=subnet.network.prefixlen,
                )
            except ValueError:
                continue
            out.append(underlay)
            break
    return out


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, ifname: str, owner: BeaconSockets) -> None:
        self.ifname = ifname
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._received(data, str(addr[0]), self.ifname)

    def error_received(self, exc: Exception) -> None:
        # A send to an interface that went down, an ICMP error: nothing to do but say so.
        log.info("beacon.socket_error ifname=%s error=%s", self.ifname, exc)


@dataclass
class _Open:
    underlay: Underlay
    transport: asyncio.DatagramTransport


class BeaconSockets:
    """One broadcast UDP socket per underlay interface; datagrams in go to ``on_datagram``
    (data, source IP, interface name), except those from our own addresses."""

    def __init__(self, on_datagram: OnDatagram, *, port: int = DEFAULT_PORT) -> None:
        self.port = port
        self._on_datagram = on_datagram
        self._open: dict[str, _Open] = {}
        self._own_addresses: frozenset[str] = frozenset()

    @property
    def interfaces(self) -> frozenset[str]:
        return frozenset(self._open)

    async def set_interfaces(self, underlays: Iterable[Underlay]) -> frozenset[str]:
        """Open sockets for new interfaces, close those of dropped ones, update broadcast
        and own addresses; return the interfaces that have a socket now. An interface whose
        socket cannot be opened is logged and left out (the next call tries again)."""
        wanted = {u.ifname: u for u in underlays}
        self._own_addresses = frozenset(u.address for u in wanted.values() if u.address)
        for ifname, entry in list(self._open.items()):
            new = wanted.get(ifname)
            if new is None or new.ifindex != entry.underlay.ifindex:
                entry.transport.close()
                del self._open[ifname]
            else:
                entry.underlay = new
        for ifname, underlay in wanted.items():
            if ifname not in self._open:
                try:
                    self._open[ifname] = _Open(underlay, await self._bind(ifname))
                except OSError as exc:
                    log.warning("beacon.socket_failed ifname=%s error=%s", ifname, exc)
        return self.interfaces

    def replaced(self, underlays: Iterable[Underlay]) -> frozenset[str]:
        """The interfaces that ``set_interfaces(underlays)`` would close and open again:
        deleted and recreated under the same name (another ifindex)."""
        return frozenset(
            u.ifname
            for u in underlays
            if u.ifname in self._open and self._open[u.ifname].underlay.ifindex != u.ifindex
        )

    def send(self, ifname: str, data: bytes) -> None:
        entry = self._open.get(ifname)
        if entry is not None and not entry.transport.is_closing():
            entry.transport.sendto(data, (entry.underlay.broadcast, self.port))

    def close(self) -> None:
        for entry in self._open.values():
            entry.transport.close()
        self._open.clear()

    async def _bind(self, ifname: str) -> asyncio.DatagramTransport:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            # Before bind: one socket per device may then share the port with the others.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            sock.bind(("0.0.0.0", self.port))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(ifname, self), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        return cast(asyncio.DatagramTransport, transport)

    def _received(self, data: bytes, source_ip: str, ifname: str) -> None:
        if source_ip in self._own_addresses:
            return  # our own broadcast, looped back (the core would reject it as own_beacon)
        self._on_datagram(data, source_ip, ifname)


class BeaconService:
    """Runs a BeaconState on real sockets: every Discovered and Rejected goes to
    ``on_event``. The wall clock is only read here (``wall_clock``, for tests)."""

    def __init__(
        self,
        state: BeaconState,
        on_event: Callable[[Discovered | Rejected], None],
        *,
        port: int = DEFAULT_PORT,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.sockets = BeaconSockets(self._received, port=port)
        self._on_event = on_event
        self._wall_clock = wall_clock
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    async def set_interfaces(self, underlays: Iterable[Underlay]) -> frozenset[str]:
        """Beacon on these interfaces (those whose socket opened: returned) from now on. A
        recreated interface starts afresh: a new burst, and what was heard on it forgotten."""
        underlays = list(underlays)
        replaced = self.sockets.replaced(underlays)
        opened = await self.sockets.set_interfaces(underlays)
        now = self._loop.time()
        subnets = {u.ifname: u.subnet for u in underlays if u.ifname in opened}
        if replaced:
            self.state.set_interfaces({n: s for n, s in subnets.items() if n not in replaced}, now)
        self.state.set_interfaces(subnets, now)
        self._service()
        return opened

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sockets.close()

    def _received(self, data: bytes, source_ip: str, ifname: str) -> None:
        event = self.state.receive(data, source_ip, ifname, self._loop.time(), self._wall_clock())
        if isinstance(event, Discovered):
            if event.new or event.address_changed:
                log.debug(
                    "beacon.discovered node_id=%s address=%s:%d ifname=%s",
                    event.node_id,
                    *event.address,
                    ifname,
                )
        elif not event.quiet:
            log.debug(
                "beacon.rejected reason=%s source=%s ifname=%s %s",
                event.reason,
                source_ip,
                ifname,
                event.detail,
            )
        try:
            self._on_event(event)
        finally:  # the owner's callback may fail; a prompt beacon is still due
            self._service()

    def _service(self) -> None:
        now = self._loop.time()
        for ifname, data in self.state.beacons_to_send(now, self._wall_clock()):
            self.sockets.send(ifname, data)
        timer_at = self.state.get_timer()
        if timer_at == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = timer_at
        self._timer = None if timer_at is None else self._loop.call_at(timer_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._service()
