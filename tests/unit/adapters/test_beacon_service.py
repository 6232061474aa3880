"""The beacon adapter (BeaconSockets + BeaconService) on the loopback interface: two
services on one port of ``lo``, its broadcast address 127.255.255.255. Both have the
source 127.0.0.1, so here the core (own_beacon), not the source filter, drops our own."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Awaitable, Callable

import pytest
from nacl.signing import SigningKey

from meshd.adapters.beacon_socket import BeaconService, Underlay
from meshd.core.discovery import BeaconState, Discovered, Rejected

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE needs root")

MESH_ID = bytes(range(16))
LO = Underlay("lo", "127.255.255.255", ifindex=1, prefixlen=8)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, seed: int, port: int) -> None:
        self.state = BeaconState(
            mesh_id=MESH_ID,
            signing_key=SigningKey(bytes([seed]) * 32),
            quic_port=6000 + seed,
            random=random.Random(seed).random,
        )
        self.events: list[Discovered | Rejected] = []
        self.changed = asyncio.Event()
        self.service = BeaconService(self.state, self.on_event, port=port)

    def on_event(self, event: Discovered | Rejected) -> None:
        self.events.append(event)
        self.changed.set()

    def found(self) -> list[Discovered]:
        return [e for e in self.events if isinstance(e, Discovered)]

    def reasons(self) -> list[str]:
        return [str(e.reason) for e in self.events if isinstance(e, Rejected)]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self.changed.clear()
            await self.changed.wait()


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(5.0):
            await test()

    asyncio.run(bounded())


def test_two_services_find_each_other_and_refuse_garbage() -> None:
    async def scenario() -> None:
        port = free_port()
        a, b = Node(1, port), Node(2, port)
        try:
            assert await a.service.set_interfaces([LO]) == {"lo"}
            assert await b.service.set_interfaces([LO]) == {"lo"}
            await a.wait_for(lambda: bool(a.found()))
            await b.wait_for(lambda: bool(b.found()))
            assert a.found()[0].node_id == b.state.node_id
            assert a.found()[0].address == ("127.0.0.1", 6002) and a.found()[0].new
            assert b.found()[0].address == ("127.0.0.1", 6001)
            assert "own_beacon" in a.reasons()

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                for junk in (b"", b"MSHB", b"\xff" * 2000):
                    s.sendto(junk, (LO.broadcast, port))
            await a.wait_for(lambda: {"truncated", "bad_magic"} <= set(a.reasons()))

            # The interface was deleted and created again (another ifindex): a fresh
            # socket, a fresh burst, and b is new again on it.
            before = len(a.found())
            await a.service.set_interfaces([Underlay("lo", LO.broadcast, ifindex=99, prefixlen=8)])
            assert a.state.get_timer() is not None
            await b.wait_for(lambda: b.found()[-1].solicit)  # a's new burst
            await a.wait_for(lambda: len(a.found()) > before)  # b answered promptly
            assert a.found()[before].new

            assert await a.service.set_interfaces([]) == frozenset()
            assert a.state.get_timer() is None
        finally:
            a.service.close()
            b.service.close()

    run(scenario)


def test_an_interface_that_does_not_exist_is_left_out() -> None:
    async def scenario() -> None:
        node = Node(1, free_port())
        try:
            opened = await node.service.set_interfaces([Underlay("nosuchif0", "10.0.0.255")])
            assert opened == frozenset() and node.state.get_timer() is None
        finally:
            node.service.close()

    run(scenario)
