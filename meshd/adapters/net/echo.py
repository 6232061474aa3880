"""ICMPv6 echo requests through a link (the adapter behind liveness probes).

A live neighbour's kernel answers an echo to its link-local address at once, and the
answer shows in the WireGuard peer's receive counter, which is all liveness reads: the
replies themselves are filtered out of this socket (ICMP6_FILTER blocks every type), so
nothing is ever read here. Raw ICMPv6 needs CAP_NET_RAW; without it probing is off.
"""

from __future__ import annotations

import logging
import os
import socket
import struct

from meshd.log import event

ICMP6_FILTER = 1  # <netinet/icmp6.h>; not exported by Python's socket module
ECHO_REQUEST = 128


class EchoProbe:
    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._ident = os.getpid() & 0xFFFF
        self._seq = 0

    def open(self) -> bool:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except OSError as exc:
            event("echo.unavailable", logging.WARNING, error=str(exc))
            return False
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)  # block all
        sock.setblocking(False)
        self._sock = sock
        return True

    def send(self, address: str, ifname: str) -> bool:
        """One echo request to ``address`` on ``ifname``; False when it could not leave."""
        if self._sock is None:
            return False
        self._seq = (self._seq + 1) & 0xFFFF
        # Type, code, checksum (the kernel fills it in for raw ICMPv6), identifier, seqno.
        packet = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, self._ident, self._seq)
        try:
            self._sock.sendto(packet, (address, 0, 0, socket.if_nametoindex(ifname)))
        except OSError as exc:  # interface gone, queue full: the liveness timer decides
            event("echo.send_failed", logging.DEBUG, interface=ifname, error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
