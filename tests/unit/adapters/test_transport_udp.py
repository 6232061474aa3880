"""Two (or three) transports on 127.0.0.1 UDP sockets in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from nacl.signing import SigningKey

from meshd.adapters import quic as udp
from meshd.adapters.quic import Address, PeerEvent, QuicTransport
from meshd.core.transport.certs import NodeCredentials, node_certificate
from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.core.transport.session import Session, SessionSettings

LOOPBACK = "127.0.0.1"


def credentials(seed: int) -> NodeCredentials:
    return node_certificate(SigningKey(bytes([seed]) * 32))


class Node:
    def __init__(self, creds: NodeCredentials, refuse: dict[str, str] | None = None) -> None:
        self.creds = creds
        self.refuse = refuse or {}
        self.events: list[PeerEvent] = []
        self.changed = asyncio.Event()
        self.transport: QuicTransport

    def authorize(self, node_id: str) -> str | None:
        return self.refuse.get(node_id)

    def on_event(self, event: PeerEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def of(self, kind: type) -> list[PeerEvent]:
        return [e for e in self.events if isinstance(e.event, kind)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                # Session counts change without an event: poll too.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.01)


async def listening(
    node: Node,
    host: str = LOOPBACK,
    settings: SessionSettings | None = None,
    verifies: bool = False,
    mark: int | None = None,
) -> Node:
    """``node`` with its transport listening on ``host`` (a free port)."""
    node.transport = await QuicTransport.listen(
        credentials=node.creds,
        authorize=node.authorize,
        on_event=node.on_event,
        host=host,
        port=0,
        settings=settings or SessionSettings(idle_timeout=5.0, keepalive_interval=1.0),
        verifies=verifies,
        mark=mark,
    )
    return node


@asynccontextmanager
async def nodes(
    *seeds: int, settings: SessionSettings | None = None, **kwargs: dict[str, str]
) -> AsyncIterator[list[Node]]:
    made: list[Node] = []
    try:
        for seed in seeds:
            node = Node(credentials(seed), kwargs.get(f"refuse{seed}"))
            made.append(await listening(node, settings=settings))
        yield made
    finally:
        for node in made:
            await node.transport.close()
        for node in made:
            assert node.transport.session_count == 0


def run(test: Callable[[], Awaitable[None]], within: float = 5.0) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(within):
            await test()

    asyncio.run(bounded())


def test_connect_exchange_and_close() -> None:
    async def scenario() -> None:
        async with nodes(1, 2) as (a, b):
            a.transport.dial(b.transport.local_address, expected_node_id=b.creds.node_id)
            await a.wait_for(lambda: b.creds.node_id in a.transport.peers())
            await b.wait_for(lambda: a.creds.node_id in b.transport.peers())
            assert [e.event for e in a.of(SessionUp)] == [SessionUp(b.creds.node_id, "meshd/2")]
            assert [e.event for e in b.of(SessionUp)] == [SessionUp(a.creds.node_id, "meshd/2")]

            for i in range(50):
                a.transport.send_message(b.creds.node_id, b"a->b %d" % i)
            b.transport.send_message(a.creds.node_id, b"x" * 60_000)
            b.transport.send_datagram(a.creds.node_id, b"unreliable")
            await b.wait_for(lambda: len(b.of(MessageReceived)) == 50)
            await a.wait_for(lambda: len(a.of(MessageReceived)) == 1)
            assert [e.event.data for e in b.of(MessageReceived)] == [  # type: ignore[attr-defined]
                b"a->b %d" % i for i in range(50)
            ]
            assert a.of(MessageReceived)[0].event == MessageReceived(b"x" * 60_000)

            a.transport.close_peer(b.creds.node_id, "maintenance")
            await b.wait_for(lambda: bool(b.of(SessionClosed)))
            closed = b.of(SessionClosed)[0]
            assert closed.event.reason == "maintenance"  # type: ignore[attr-defined]
            assert closed.peer_node_id == a.creds.node_id and closed.was_up
            assert b.transport.peers() == {} and a.transport.peers() == {}

    run(scenario)


def test_handshake_time_on_loopback() -> None:
    async def scenario() -> None:
        async with nodes(1, 2) as (a, b):
            loop = asyncio.get_running_loop()
            start = loop.time()
            a.transport.dial(b.transport.local_address)
            await a.wait_for(lambda: bool(a.transport.peers()))
            elapsed = loop.time() - start
            assert elapsed < 0.5, elapsed  # measured ~5 ms

    run(scenario)


@pytest.mark.parametrize("order", ["smaller_first", "larger_first", "same_tick"])
def test_simultaneous_dial_leaves_exactly_one_session(
    order: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshd.core.transport")

    async def scenario() -> None:
        async with nodes(1, 2) as (a, b):
            small, large = sorted((a, b), key=lambda n: n.creds.node_id)
            first, second = (small, large) if order != "larger_first" else (large, small)
            first.transport.dial(second.transport.local_address, second.creds.node_id)
            if order != "same_tick":
                await asyncio.sleep(0)
            second.transport.dial(first.transport.local_address, first.creds.node_id)
            await a.wait_for(lambda: bool(a.transport.peers()))
            await b.wait_for(lambda: bool(b.transport.peers()))
            # Let the duplicate close and drain on both sides.
            await a.wait_for(lambda: a.transport.session_count == 1)
            await b.wait_for(lambda: b.transport.session_count == 1)
            # Told once, or once more when the survivor replaced the session first told of
            # (what was sent on that one may be lost: the owner says hello again).
            assert len(a.of(SessionUp)) in (1, 2) and len(b.of(SessionUp)) in (1, 2)
            assert a.of(SessionClosed) == [] and b.of(SessionClosed) == []
            # The survivor is the session the smaller node id dialled, on both ends.
            (small_entry,) = small.transport._entries
            (large_entry,) = large.transport._entries
            assert small_entry.session.is_client and not large_entry.session.is_client
            small.transport.send_message(large.creds.node_id, b"one session")
            large.transport.send_message(small.creds.node_id, b"back")
            await large.wait_for(lambda: bool(large.of(MessageReceived)))
            await small.wait_for(lambda: bool(small.of(MessageReceived)))

    run(scenario)
    # Both dials came up on both ends and each end chose: the tie-break really ran.
    duplicates = [r.getMessage() for r in caplog.records if "peer.duplicate" in r.getMessage()]
    assert len(duplicates) == 2, duplicates
    assert all("kept=" in line for line in duplicates)


def test_refused_peer_is_reported_with_the_reason() -> None:
    async def scenario() -> None:
        a_id = credentials(1).node_id
        async with nodes(1, 2, refuse2={a_id: "revoked"}) as (a, b):
            a.transport.dial(b.transport.local_address)
            await a.wait_for(lambda: bool(a.of(SessionClosed)))
            await b.wait_for(lambda: bool(b.of(SessionClosed)))
            for node in (a, b):
                (closed,) = node.of(SessionClosed)
                assert closed.event.reason == "revoked"  # type: ignore[attr-defined]
                assert not closed.was_up
            assert a.of(SessionUp) == [] and b.of(SessionUp) == []

    run(scenario)


def test_three_nodes_one_socket_each() -> None:
    async def scenario() -> None:
        async with nodes(1, 2, 3) as (a, b, c):
            a.transport.dial(b.transport.local_address)
            c.transport.dial(a.transport.local_address)
            b.transport.dial(c.transport.local_address)
            for node in (a, b, c):
                await node.wait_for(lambda node=node: len(node.transport.peers()) == 2)
            assert {e.event.peer_node_id for e in a.of(SessionUp)} == {  # type: ignore[attr-defined]
                b.creds.node_id,
                c.creds.node_id,
            }

    run(scenario)


@pytest.mark.parametrize("order", ["smaller_first", "larger_first", "same_tick"])
def test_a_hello_sent_at_each_session_up_always_arrives(order: str) -> None:
    """The pattern the control plane relies on: a message sent when SessionUp is reported
    reaches the peer, whichever of two simultaneous dials survives."""

    async def scenario() -> None:
        async with nodes(3, 4) as (a, b):
            for me, other in ((a, b), (b, a)):

                def hello(ev: PeerEvent, me: Node = me, other: Node = other) -> None:
                    Node.on_event(me, ev)
                    if isinstance(ev.event, SessionUp):
                        me.transport.send_message(other.creds.node_id, b"hello")

                me.on_event = hello  # type: ignore[method-assign]
                me.transport._on_event = hello
            small, large = sorted((a, b), key=lambda n: n.creds.node_id)
            first, second = (small, large) if order != "larger_first" else (large, small)
            first.transport.dial(second.transport.local_address, second.creds.node_id)
            if order != "same_tick":
                await asyncio.sleep(0)
            second.transport.dial(first.transport.local_address, first.creds.node_id)
            for node in (a, b):
                await node.wait_for(lambda node=node: bool(node.of(MessageReceived)))
                await node.wait_for(lambda node=node: node.transport.session_count == 1)

    run(scenario)


# -- half-open sessions: a flood of INITIALs must not lock new neighbours out ----------------

STRANGER = credentials(9)


class HalfOpenDialer:
    """Real INITIALs from one source address (each a new client's first datagram, with a
    fresh connection id) that are never followed up: each leaves the server half-open."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))  # any 127/8 address is loopback on Linux
        self.sock.setblocking(False)

    def send_initials(self, to: Address, count: int = 1, garbled: bool = False) -> None:
        for _ in range(count):
            client = Session.dial(credentials=STRANGER, authorize=lambda _: None, addr=to, now=0.0)
            for data, _addr in client.datagrams_to_send(0.0):
                if garbled:  # the header stays valid, the payload no longer decrypts
                    data = data[:64] + bytes(64) + data[128:]  # (the header is ~26 bytes)
                self.sock.sendto(data, to)

    def received(self) -> int:
        """How many datagrams arrived since the last call."""
        count = 0
        while True:
            try:
                self.sock.recv(65_536)
            except BlockingIOError:
                return count
            count += 1


@contextlib.contextmanager
def dialers(*hosts: str) -> Iterator[list[HalfOpenDialer]]:
    made = [HalfOpenDialer(host) for host in hosts]
    try:
        yield made
    finally:
        for dialer in made:
            dialer.sock.close()


def closes(node: Node, reason: str) -> list[PeerEvent]:
    return [e for e in node.of(SessionClosed) if getattr(e.event, "reason", None) == reason]


def test_a_handshake_not_done_by_the_deadline_is_dropped_quietly() -> None:
    settings = SessionSettings(idle_timeout=5.0, keepalive_interval=1.0, handshake_timeout=0.3)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with nodes(1, 2, settings=settings) as (a, b):
            with dialers("127.0.0.11") as (stranger,):

                def on_event(ev: PeerEvent) -> None:
                    Node.on_event(b, ev)
                    if isinstance(ev.event, SessionClosed):
                        stranger.received()  # what b sent before it dropped the session

                b.transport._on_event = on_event
                start = loop.time()
                stranger.send_initials(b.transport.local_address)
                await b.wait_for(lambda: b.transport.half_open_count == 1)
                assert stranger.received() >= 1  # b answered: a handshake was under way
                await b.wait_for(lambda: b.transport.session_count == 0)
                elapsed = loop.time() - start
                assert 0.3 <= elapsed < 1.0, elapsed  # not aioquic's 5 s idle timeout
                (dropped,) = b.of(SessionClosed)
                assert dropped.event == SessionClosed(reason="handshake_timeout")
                assert not dropped.was_up and dropped.peer_node_id is None
                assert dropped.addr[0] == "127.0.0.11"
                await asyncio.sleep(0.3)
                assert stranger.received() == 0  # since: no CONNECTION_CLOSE, no retransmission
                b.transport._on_event = b.on_event
            # A session that comes up is not bound by the deadline.
            a.transport.dial(b.transport.local_address, b.creds.node_id)
            await a.wait_for(lambda: bool(a.transport.peers()))
            await asyncio.sleep(0.5)
            assert b.creds.node_id in a.transport.peers()
            assert a.creds.node_id in b.transport.peers()
            assert len(b.of(SessionClosed)) == 1

    run(scenario)


def test_initials_that_do_not_decrypt_take_no_slot() -> None:
    async def scenario() -> None:
        async with nodes(1, 2) as (a, b):
            with dialers("127.0.0.11") as (flood,):
                flood.send_initials(b.transport.local_address, count=50, garbled=True)
                a.transport.dial(b.transport.local_address, b.creds.node_id)
                await a.wait_for(lambda: bool(a.transport.peers()))
                assert b.transport.session_count == 1  # a's session only
                assert flood.received() == 0  # nothing answered, nothing reported
                assert b.of(SessionClosed) == []

    run(scenario)


def test_a_full_table_evicts_the_oldest_half_open_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(udp, "MAX_SESSIONS", 4)
    hosts = [f"127.0.0.{11 + k}" for k in range(5)]

    async def scenario() -> None:
        async with nodes(1, 2) as (a, b):
            with dialers(*hosts) as strangers:
                for k, stranger in enumerate(strangers[:4]):
                    stranger.send_initials(b.transport.local_address)

                    def held(count: int = k + 1) -> bool:
                        return b.transport.half_open_count == count

                    await b.wait_for(held)
                assert b.of(SessionClosed) == []
                strangers[4].send_initials(b.transport.local_address)
                await b.wait_for(lambda: bool(closes(b, "evicted")))
                assert b.transport.session_count == 4
                (evicted,) = closes(b, "evicted")
                assert evicted.addr[0] == hosts[0] and not evicted.was_up
                # A real neighbour gets in the same way, and comes up.
                a.transport.dial(b.transport.local_address, b.creds.node_id)
                await a.wait_for(lambda: bool(a.transport.peers()))
                assert [e.addr[0] for e in closes(b, "evicted")] == hosts[:2]
                assert b.transport.session_count == 4 and b.transport.half_open_count == 3

    run(scenario)


def test_up_sessions_are_never_evicted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "MAX_SESSIONS", 2)

    async def scenario() -> None:
        async with nodes(1, 2, 3) as (a, b, c):
            a.transport.dial(b.transport.local_address, b.creds.node_id)
            await b.wait_for(lambda: a.creds.node_id in b.transport.peers())
            with dialers("127.0.0.11") as (stranger,):
                # One up, one half-open: a new INITIAL evicts the half-open one.
                stranger.send_initials(b.transport.local_address)
                await b.wait_for(lambda: b.transport.half_open_count == 1)
                stranger.send_initials(b.transport.local_address)
                await b.wait_for(lambda: len(closes(b, "evicted")) == 1)
                assert a.creds.node_id in b.transport.peers()
                # c's INITIAL evicts the other one, then every slot holds an up session.
                c.transport.dial(b.transport.local_address, b.creds.node_id)
                await c.wait_for(lambda: bool(c.transport.peers()))
                await b.wait_for(lambda: len(b.transport.peers()) == 2)
                assert len(closes(b, "evicted")) == 2
                stranger.received()
                stranger.send_initials(b.transport.local_address, count=5)
                await asyncio.sleep(0.2)
                assert stranger.received() == 0  # dropped: not even a first flight back
                assert len(b.transport.peers()) == 2 and b.transport.session_count == 2
                assert len(b.of(SessionClosed)) == 2  # the two evictions, nothing since
            for node in (a, c):
                node.transport.send_message(b.creds.node_id, b"still here")
            await b.wait_for(lambda: len(b.of(MessageReceived)) == 2)

    run(scenario)


def test_one_source_host_holds_at_most_its_share_of_half_open_sessions() -> None:
    cap = udp.MAX_HALF_OPEN_PER_HOST

    async def scenario() -> None:
        async with nodes(1, 2) as (a, b):
            with dialers("127.0.0.11", "127.0.0.12", LOOPBACK) as (flood, other, near):
                flood.send_initials(b.transport.local_address, count=cap + 24)
                await b.wait_for(lambda: len(closes(b, "evicted")) == 24)
                assert b.transport.half_open_count == cap
                assert {e.addr[0] for e in closes(b, "evicted")} == {"127.0.0.11"}
                # Other hosts are not affected by that host's cap.
                other.send_initials(b.transport.local_address, count=3)
                await b.wait_for(lambda: b.transport.half_open_count == cap + 3)
                assert len(closes(b, "evicted")) == 24
                # A flood from a real neighbour's own address: its handshake still gets
                # a slot, the flood's oldest, and comes up.
                near.send_initials(b.transport.local_address, count=cap + 4)
                await b.wait_for(lambda: len(closes(b, "evicted")) == 28)
                a.transport.dial(b.transport.local_address, b.creds.node_id)
                await a.wait_for(lambda: bool(a.transport.peers()))
                await b.wait_for(lambda: a.creds.node_id in b.transport.peers())
                assert b.transport.half_open_count == 2 * cap + 3 - 1

    run(scenario)


def test_a_dial_over_ipv6_comes_up() -> None:
    """An IPv6 socket reports peers as (host, port, flowinfo, scope_id) and aioquic knows
    a path by that tuple: a dial given (host, port) must still hear its answers (the join
    relay listens on the mesh IPv6 address)."""

    async def scenario() -> None:
        made = []
        try:
            for seed in (1, 2):
                made.append(await listening(Node(credentials(seed)), "::1", SessionSettings()))
            a, b = made
            a.transport.dial(b.transport.local_address, expected_node_id=b.creds.node_id)
            await a.wait_for(lambda: b.creds.node_id in a.transport.peers())
            await b.wait_for(lambda: a.creds.node_id in b.transport.peers())
            a.transport.send_message(b.creds.node_id, b"over v6")
            await b.wait_for(lambda: bool(b.of(MessageReceived)))
        finally:
            for node in made:
                await node.transport.close()

    run(scenario)


def test_try_send_says_why_instead_of_raising_when_no_session_is_up() -> None:
    async def scenario() -> None:
        async with nodes(1, 2) as (a, b):
            why = a.transport.try_send(b.creds.node_id, b"nobody there")
            assert why is not None and "no session up" in why
            a.transport.dial(b.transport.local_address, expected_node_id=b.creds.node_id)
            await a.wait_for(lambda: b.creds.node_id in a.transport.peers())
            assert a.transport.try_send(b.creds.node_id, b"now") is None

    run(scenario)


def test_a_dial_refused_for_its_version_reaches_the_owner_as_the_node_dialled() -> None:
    async def scenario() -> None:
        old, new = Node(credentials(1)), Node(credentials(2))
        for node, protocols in ((old, ("meshd/1",)), (new, ("meshd/2",))):
            settings = SessionSettings(
                alpn_protocols=protocols, idle_timeout=5.0, keepalive_interval=1.0
            )
            await listening(node, settings=settings)
        try:
            old.transport.dial(new.transport.local_address, expected_node_id=new.creds.node_id)
            await old.wait_for(lambda: bool(closes(old, "version_unsupported")))
            await new.wait_for(lambda: bool(closes(new, "version_unsupported")))
            (dialled,) = closes(old, "version_unsupported")
            assert (dialled.peer_node_id, dialled.was_up) == (new.creds.node_id, False)
            (accepted,) = closes(new, "version_unsupported")
            assert (accepted.peer_node_id, accepted.was_up) == (None, False)
            assert old.of(SessionUp) == [] and new.of(SessionUp) == []
            await new.wait_for(lambda: new.transport.session_count == 0)
        finally:
            for node in (old, new):
                await node.transport.close()

    run(scenario)


# -- unverified sessions: a handshake proves a key, not membership ----------------------


@asynccontextmanager
async def guarded(seed: int, settings: SessionSettings | None = None) -> AsyncIterator[Node]:
    """A node whose transport ``verifies``: sessions up are unverified until it says."""
    node = await listening(Node(credentials(seed)), settings=settings, verifies=True)
    try:
        yield node
    finally:
        await node.transport.close()


@asynccontextmanager
async def clients(hosts: list[str], first_seed: int = 100) -> AsyncIterator[list[Node]]:
    """A real client with a fresh key on each of ``hosts`` (a host may repeat)."""
    made: list[Node] = []
    try:
        for k, host in enumerate(hosts):
            made.append(await listening(Node(credentials(first_seed + k)), host))
        yield made
    finally:
        for node in made:
            await node.transport.close()


async def come_up(server: Node, client: Node) -> None:
    client.transport.dial(server.transport.local_address, server.creds.node_id)
    await server.wait_for(lambda: client.creds.node_id in server.transport.peers())


async def both_up(server: Node, client: Node) -> None:
    """come_up, and the dialler's side up too (it comes up after HANDSHAKE_DONE, after the
    acceptor's): before then it has no session to send on."""
    await come_up(server, client)
    await client.wait_for(lambda: server.creds.node_id in client.transport.peers())


def test_one_host_holds_at_most_its_share_of_unverified_sessions() -> None:
    cap = udp.MAX_UNVERIFIED_PER_HOST

    async def scenario() -> None:
        async with guarded(2) as b, nodes(1) as (a,):
            await come_up(b, a)
            b.transport.verified(a.creds.node_id)
            assert b.transport.unverified_count == 0
            flood_hosts = ["127.0.0.11"] * (cap + 3)
            async with clients([*flood_hosts, "127.0.0.12"]) as flood:
                for client in flood:
                    await come_up(b, client)
                await b.wait_for(lambda: len(closes(b, "evicted")) == 3)
                evicted = closes(b, "evicted")
                # The flood's oldest, each once up: the others, a and 127.0.0.12 stay.
                assert [e.peer_node_id for e in evicted] == [c.creds.node_id for c in flood[:3]]
                assert all(e.was_up for e in evicted)
                assert b.transport.unverified_count == cap + 1
                peers = b.transport.peers()
                assert a.creds.node_id in peers and flood[-1].creds.node_id in peers
                assert b.transport.status()["evicted"] == {"unverified_per_host": 3}
                for client in flood[:3]:  # the evicted heard why
                    await client.wait_for(lambda c=client: bool(closes(c, "evicted")))
            a.transport.send_message(b.creds.node_id, b"still here")
            await b.wait_for(lambda: bool(b.of(MessageReceived)))

    run(scenario, within=20.0)


def test_a_full_unverified_table_closes_the_oldest_of_the_busiest_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(udp, "MAX_UNVERIFIED", 4)
    monkeypatch.setattr(udp, "MAX_UNVERIFIED_PER_HOST", 3)

    async def scenario() -> None:
        async with guarded(2) as b, nodes(1) as (a,):
            hosts = ["127.0.0.13", "127.0.0.11", "127.0.0.11", "127.0.0.11", "127.0.0.14"]
            async with clients(hosts) as (newcomer, f1, f2, f3, f4):
                await come_up(b, newcomer)  # the oldest of all, alone on its host
                for client in (f1, f2, f3):
                    await come_up(b, client)
                assert closes(b, "evicted") == []
                await come_up(b, f4)  # one too many: 127.0.0.11 holds the most
                await b.wait_for(lambda: len(closes(b, "evicted")) == 1)
                assert closes(b, "evicted")[0].peer_node_id == f1.creds.node_id
                # A neighbour is unverified from its session up to its certificate: it
                # takes the busiest host's oldest slot, then no longer counts.
                await come_up(b, a)
                await b.wait_for(lambda: len(closes(b, "evicted")) == 2)
                assert closes(b, "evicted")[1].peer_node_id == f2.creds.node_id
                b.transport.verified(a.creds.node_id)
                assert b.transport.unverified_count == 3
                async with clients(["127.0.0.15"], first_seed=200) as (f5,):
                    await come_up(b, f5)
                    assert b.transport.unverified_count == 4
                    assert len(closes(b, "evicted")) == 2  # the verified one is not counted
                    peers = b.transport.peers()
                    assert newcomer.creds.node_id in peers and a.creds.node_id in peers
                    assert b.transport.status()["evicted"] == {"unverified": 2}

    run(scenario, within=20.0)


# -- stateless Retry once unverified sessions reach half their cap ------------------------


def packet_types(dialer: HalfOpenDialer) -> list[tuple[QuicPacketType, bytes]]:
    """The type and token of each datagram the dialer received since the last call."""
    out = []
    while True:
        try:
            data = dialer.sock.recv(65_536)
        except BlockingIOError:
            return out
        header = pull_quic_header(Buffer(data=data), host_cid_length=8)
        out.append((header.packet_type, header.token))


async def answered(
    dialer: HalfOpenDialer, kind: QuicPacketType | None = None, within: float = 5.0
) -> list[tuple[QuicPacketType, bytes]]:
    """What came back to the dialer, waiting until something (of ``kind``) did: a loaded
    machine answers later than a fixed sleep."""
    deadline = asyncio.get_running_loop().time() + within
    got: list[tuple[QuicPacketType, bytes]] = []
    while not any(kind in (None, k) for k, _ in got):
        assert asyncio.get_running_loop().time() < deadline, f"no {kind or 'answer'} came"
        await asyncio.sleep(0.01)
        got += packet_types(dialer)
    return got


def test_a_retry_answers_new_sources_once_half_the_unverified_slots_are_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(udp, "RETRY_UNVERIFIED", 2)

    async def scenario() -> None:
        async with guarded(2) as b, nodes(1) as (a,):
            to = b.transport.local_address
            with dialers("127.0.0.13", "127.0.0.14") as (probe, forger):
                probe.send_initials(to)
                await b.wait_for(lambda: b.transport.half_open_count == 1)
                assert (await answered(probe))[0][0] == QuicPacketType.INITIAL  # no pressure
                async with clients(["127.0.0.11", "127.0.0.12"]) as held:
                    for client in held:
                        await come_up(b, client)
                    assert b.transport.unverified_count == 2 and b.transport.retrying
                    # Now a new source gets a Retry with a token, and opens nothing.
                    before = b.transport.session_count
                    probe.send_initials(to)
                    # (the first probe's half-open session may resend its Initial meanwhile)
                    got = await answered(probe, QuicPacketType.RETRY)
                    (token,) = [t for k, t in got if k == QuicPacketType.RETRY]
                    assert token
                    assert b.transport.session_count == before
                    assert b.transport.status()["retry"] == {"sent": 1}
                    # That token from another address opens nothing and gets no answer.
                    client = Session.dial(
                        credentials=STRANGER, authorize=lambda _: None, addr=to, now=0.0
                    )
                    client._quic._peer_token = token  # aioquic's client sends it as is
                    for data, _ in client.datagrams_to_send(0.0):
                        forger.sock.sendto(data, to)
                    await asyncio.sleep(0.1)
                    assert forger.received() == 0
                    assert b.transport.status()["retry"] == {"sent": 1, "bad_token": 1}
                    assert b.transport.session_count == before
                    # A real client completes through the Retry (aioquic's client answers
                    # it with the token), and comes up.
                    await come_up(b, a)
                    assert b.transport.status()["retry"] == {"sent": 2, "bad_token": 1}
                    await a.wait_for(lambda: b.creds.node_id in a.transport.peers())
                    for client_node in (a, *held):
                        b.transport.verified(client_node.creds.node_id)
                    assert not b.transport.retrying
                    probe.send_initials(to)
                    await b.wait_for(lambda: b.transport.half_open_count >= 1)
                    assert [k for k, _ in await answered(probe)][0] == QuicPacketType.INITIAL

    run(scenario, within=20.0)


def test_half_open_sessions_past_half_the_table_make_new_sources_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(udp, "RETRY_HALF_OPEN", 3)

    async def scenario() -> None:
        async with nodes(1, 2) as (a, b):
            with dialers("127.0.0.11") as (flood,):
                flood.send_initials(b.transport.local_address, count=8)
                await b.wait_for(lambda: b.transport.status()["retry"] == {"sent": 5})
                assert b.transport.half_open_count == 3  # forged sources open no more
                kinds = [k for k, _ in packet_types(flood)]
                assert kinds.count(QuicPacketType.RETRY) == 5
                a.transport.dial(b.transport.local_address, b.creds.node_id)
                await a.wait_for(lambda: bool(a.transport.peers()))  # through a Retry
                assert b.transport.status()["retry"] == {"sent": 6}

    run(scenario)


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_MARK needs CAP_NET_ADMIN")
def test_a_marked_transport_marks_its_socket() -> None:
    """The underlay sessions' socket carries the exit tunnel's mark, which keeps a dial to
    an address no shared link reaches out of the exit tunnel (meshd.daemon.control)."""

    async def body() -> None:
        node = await listening(Node(credentials(1)), mark=0x4D58)
        try:
            sock = node.transport._sock
            assert sock is not None
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == 0x4D58
        finally:
            await node.transport.close()

    run(body)


def test_a_verified_peers_receive_budget_is_kept_across_its_sessions() -> None:
    """What a session may receive at all is one bucket of octets. A verified peer that
    drained it and dials again gets no new one: its next session takes the bucket over as
    it is; another peer's is its own."""
    settings = SessionSettings(
        idle_timeout=5.0, keepalive_interval=1.0, receive_burst=30_000, receive_rate=1
    )

    async def scenario() -> None:
        async with guarded(2, settings) as b, nodes(1, 3, settings=settings) as (a, c):
            a_id, b_id = a.creds.node_id, b.creds.node_id
            await both_up(b, a)
            b.transport.verified(a_id)
            a.transport.send_message(b_id, b"x" * 60_000)  # beyond the bucket
            await b.wait_for(lambda: b.transport.status()["over_budget"].get(a_id, 0) > 0)
            first = b.transport._active[a_id]
            a.transport.close_peer(b_id, "again")  # b hears nothing: dropped
            await both_up(b, a)
            await b.wait_for(lambda: b.transport._active[a_id] is not first)
            second = b.transport._active[a_id]
            assert second.received is first.received
            # More than a datagram: what the first left (less than one) cannot hold it.
            a.transport.send_message(b_id, b"y" * 5000)
            await b.wait_for(lambda: second.dropped > 0)
            await both_up(b, c)
            c.transport.send_message(b_id, b"hello")
            await b.wait_for(lambda: bool(b.of(MessageReceived)))
            assert [e.peer_node_id for e in b.of(MessageReceived)] == [c.creds.node_id]

    run(scenario, within=10.0)
