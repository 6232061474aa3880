"""The probe socket: one UDP socket on [::]:6696 for the link-quality probes of every
WireGuard link (the asyncio adapter of ``meshd.core.routing.link_quality``).

A probe goes to the neighbour's link-local address on that link's interface, so the
destination carries the interface index as its scope id and the packet can only leave by
that tunnel: the probe measures the WireGuard data path, not the underlay. Received
datagrams are reported with their link-local source and the interface they came in on
(IPV6_PKTINFO), as raw bytes: decoding them is the caller's, where a bad packet becomes a
reason code.

Interfaces come and go with neighbours; the socket is bound to the wildcard address and
looks the interface up on every send, so it needs no notice of either. A send that cannot
go (the interface vanished, no route, a full buffer) is logged at debug and dropped, as a
lost probe would be: the loss history will say so.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable

from meshd.core.proto.babel import BABEL_PORT
from meshd.log import event

# (data, source, interface, when it arrived: the kernel's time, on the monotonic clock)
OnPacket = Callable[[bytes, ipaddress.IPv6Address, str, float], None]
"""Called with (datagram, link-local source address, interface name)."""

MAX_DATAGRAM = 1500  # probes are 36 octets; anything longer than an MTU is not ours
READS_PER_WAKEUP = 64  # then yield to the loop, so a flood cannot starve it
_PKTINFO = struct.Struct("@16sI")  # struct in6_pktinfo: in6_addr, ifindex
# Kernel receive timestamps (<asm-generic/socket.h>; Python's socket module lacks them): a
# probe's arrival is timed when the kernel took it, not when a busy event loop got to it.
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("=qq")
_ANCILLARY_SPACE = socket.CMSG_SPACE(_PKTINFO.size) + socket.CMSG_SPACE(_TIMESPEC.size)


class HelloSocket:
    """Send and receive probes on one UDP socket. ``open`` binds it; ``close`` ends it."""

    def __init__(
        self,
        on_packet: OnPacket,
        *,
        port: int = BABEL_PORT,
        peer_port: int | None = None,
        host: str = "::",
    ) -> None:
        """``port``: where we listen (0: any, for tests); ``peer_port``: where neighbours
        listen, ``port`` unless given."""
        if not 0 <= port <= 0xFFFF or (peer_port is not None and not 0 < peer_port <= 0xFFFF):
            raise ValueError(f"bad port {port} / {peer_port}")
        self._on_packet = on_packet
        self._host, self._port = host, port
        self.peer_port = peer_port if peer_port is not None else port
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def open(
        cls,
        on_packet: OnPacket,
        *,
        port: int = BABEL_PORT,
        peer_port: int | None = None,
        host: str = "::",
    ) -> HelloSocket:
        hello = cls(on_packet, port=port, peer_port=peer_port, host=host)
        hello.start(asyncio.get_running_loop())
        return hello

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sock is not None:
            raise RuntimeError("HelloSocket already started")
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            sock.bind((self._host, self._port, 0, 0))
        except OSError:
            sock.close()
            raise
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._readable)
        event("hello.listening", port=self.port)

    @property
    def port(self) -> int:
        """The bound port (the one chosen when opened with port 0)."""
        if self._sock is None:
            return self._port
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()

    # --- sending ------------------------------------------------------------------------

    def send(self, data: bytes, address: ipaddress.IPv6Address | str, ifname: str) -> bool:
        """Send ``data`` to ``address`` (link-local) out of ``ifname``. False, logged at
        debug, when it could not go; never raises for the network's reasons."""
        sock = self._sock
        if sock is None:
            return False
        try:
            index = socket.if_nametoindex(ifname)
        except OSError:  # the interface went away (its neighbour left, or is being rebuilt)
            event("hello.send_failed", logging.DEBUG, interface=ifname, reason="no_interface")
            return False
        destination = str(address).split("%", 1)[0]
        try:
            sock.sendto(data, (destination, self.peer_port, 0, index))
        except OSError as exc:  # vanished between the lookup and the send, down, buffer full
            event(
                "hello.send_failed",
                logging.DEBUG,
                interface=ifname,
                reason=type(exc).__name__,
                errno=exc.errno,
            )
            return False
        return True

    # --- receiving ----------------------------------------------------------------------

    def _readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            sock = self._sock
            if sock is None:
                return
            try:
                data, ancillary, flags, source = sock.recvmsg(MAX_DATAGRAM, _ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. a queued ICMP error: nothing to read, keep going
                event("hello.receive_failed", logging.DEBUG, errno=exc.errno)
                continue
            self._dispatch(data, ancillary, flags, source)

    def _dispatch(
        self,
        data: bytes,
        ancillary: list[tuple[int, int, bytes]],
        flags: int,
        source: tuple[str, int, int, int] | tuple[str, int],
    ) -> None:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            event("hello.dropped", logging.DEBUG, reason="truncated")
            return
        index = 0
        waited = 0.0  # how long the datagram sat in the socket before we read it
        for level, kind, payload in ancillary:
            ours = level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
            if ours and len(payload) >= _PKTINFO.size:
                index = _PKTINFO.unpack_from(payload)[1]
            stamp = level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS
            if stamp and len(payload) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                waited = max(0.0, time.time() - (sec + nsec / 1e9))
        if not index and len(source) == 4:
            index = source[3]  # the scope id of a link-local source names the interface too
        try:
            address = ipaddress.IPv6Address(source[0].split("%", 1)[0])
            ifname = socket.if_indextoname(index)
        except (ValueError, OSError):  # no interface (gone already), or not an address
            event("hello.dropped", logging.DEBUG, reason="unknown_interface", index=index)
            return
        if not address.is_link_local:
            # Probes only ever come from the other end of a tunnel, from its link-local
            # address: anything else was sent to us by something that is not a neighbour.
            event("hello.dropped", logging.DEBUG, reason="not_link_local", source=address)
            return
        try:
            self._on_packet(data, address, ifname, time.monotonic() - waited)
        except Exception:  # a bug in the caller must not take the socket down with it
            logging.getLogger("meshd").exception("hello.callback_failed interface=%s", ifname)
