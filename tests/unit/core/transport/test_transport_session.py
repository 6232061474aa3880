"""Two sans-IO sessions pumped into each other in memory, with a fake clock (no sockets)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.core.transport.certs import NodeCredentials, node_certificate
from meshd.core.transport.events import (
    DatagramReceived,
    MessageReceived,
    SessionClosed,
    SessionEvent,
    SessionUp,
)
from meshd.core.transport.session import VERSION_UNSUPPORTED, Session, SessionSettings

CLIENT_ADDR = ("10.0.0.1", 4433)
SERVER_ADDR = ("10.0.0.2", 4433)


def credentials(seed: int) -> NodeCredentials:
    return node_certificate(SigningKey(bytes([seed]) * 32))


ALICE = credentials(1)
BOB = credentials(2)


def allow(node_id: str) -> str | None:
    return None


def accept(
    authorize: Callable[[str], str | None],
    settings: SessionSettings | None,
    client: Session,
) -> Session:
    # The server needs the client's first INITIAL's destination cid (aioquic >= 1.7.2).
    first = client._quic._peer_cid.cid
    return Session.accept(
        credentials=BOB,
        authorize=authorize,
        original_destination_connection_id=first,
        settings=settings,
    )


class Link:
    """A client and a server session joined by a perfect wire, and a fake clock."""

    def __init__(
        self,
        *,
        client_authorize: Callable[[str], str | None] = allow,
        server_authorize: Callable[[str], str | None] = allow,
        expected_node_id: str | None = None,
        settings: SessionSettings | None = None,
        server_settings: SessionSettings | None = None,  # None: ``settings``
        now: float = 1000.0,
    ) -> None:
        self.now = now
        self.connected = True  # False: a silent cut, every datagram is lost
        self.wire_bytes = 0
        self.wire_datagrams = 0
        self.client = Session.dial(
            credentials=ALICE,
            authorize=client_authorize,
            addr=SERVER_ADDR,
            now=now,
            expected_node_id=expected_node_id,
            settings=settings,
        )
        self.server = accept(server_authorize, server_settings or settings, self.client)
        self.events: dict[str, list[SessionEvent]] = {"client": [], "server": []}

    def _collect(self) -> None:
        for name, session in (("client", self.client), ("server", self.server)):
            while (event := session.next_event()) is not None:
                self.events[name].append(event)

    def flush(self) -> bool:
        """Exchange datagrams until both sides are quiet; True if anything moved."""
        moved = False
        for _ in range(1000):
            out_c = self.client.datagrams_to_send(self.now)
            out_s = self.server.datagrams_to_send(self.now)
            if not out_c and not out_s:
                break
            moved = True
            for data, _addr in out_c:
                self.wire_bytes += len(data)
                self.wire_datagrams += 1
                if self.connected:
                    self.server.receive_datagram(data, CLIENT_ADDR, self.now)
            for data, _addr in out_s:
                self.wire_bytes += len(data)
                self.wire_datagrams += 1
                if self.connected:
                    self.client.receive_datagram(data, SERVER_ADDR, self.now)
        self._collect()
        return moved

    def run_until(self, until: float) -> None:
        """Advance the clock timer by timer, exchanging datagrams, up to ``until``."""
        self.flush()
        while True:
            timers = [
                t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None
            ]
            if not timers or min(timers) > until:
                break
            self.now = max(self.now, min(timers))
            for session in (self.client, self.server):
                timer = session.get_timer()
                if timer is not None and timer <= self.now:
                    session.handle_timer(self.now)
            self.flush()
        self.now = max(self.now, until)
        self._collect()

    def handshake(self) -> None:
        self.run_until(self.now + 1.0)

    def of(self, side: str, kind: type) -> list:
        return [e for e in self.events[side] if isinstance(e, kind)]

    def closed(self, side: str) -> SessionClosed:
        closes = self.of(side, SessionClosed)
        assert len(closes) == 1, self.events[side]
        return closes[0]


def test_handshake_gives_both_sides_the_peer_node_id() -> None:
    link = Link(expected_node_id=BOB.node_id)
    link.handshake()
    assert link.of("client", SessionUp) == [SessionUp(BOB.node_id, "meshd/2")]
    assert link.of("server", SessionUp) == [SessionUp(ALICE.node_id, "meshd/2")]
    assert link.client.is_up and link.server.is_up


def test_handshake_time_and_bytes_in_memory() -> None:
    link = Link()
    link.flush()  # no clock advance: the handshake needs no timer
    assert link.client.is_up and link.server.is_up
    # Two Ed25519 certificates: measured 3,824 B in 4 datagrams (INITIALs padded to 1200).
    assert link.wire_bytes < 8000


@pytest.mark.parametrize("reason", ["unknown", "revoked"])
def test_server_refusal_closes_both_sides_with_the_reason(reason: str) -> None:
    seen: list[str] = []

    def refuse(node_id: str) -> str | None:
        seen.append(node_id)
        return reason

    link = Link(server_authorize=refuse)
    link.run_until(link.now + 5.0)
    assert seen == [ALICE.node_id]
    # TLS 1.3 completes on the client first; it must not report the session up anyway.
    assert link.of("server", SessionUp) == [] and link.of("client", SessionUp) == []
    server_close = link.closed("server")
    assert (server_close.reason, server_close.by_peer) == (reason, False)
    client_close = link.closed("client")
    assert (client_close.reason, client_close.by_peer) == (reason, True)
    assert link.client.is_terminated and link.server.is_terminated


@pytest.mark.parametrize("reason", ["unknown", "revoked"])
def test_client_refusal_closes_both_sides_with_the_reason(reason: str) -> None:
    link = Link(client_authorize=lambda node_id: reason)
    link.run_until(link.now + 5.0)
    assert link.of("client", SessionUp) == []
    assert link.closed("client").reason == reason
    server_close = link.closed("server")
    assert (server_close.reason, server_close.by_peer) == (reason, True)


def test_wrong_expected_node_id_is_refused() -> None:
    link = Link(expected_node_id=credentials(3).node_id)
    link.run_until(link.now + 5.0)
    assert link.of("client", SessionUp) == []
    assert link.closed("client").reason == "wrong_node_id"
    assert link.closed("client").peer_node_id == BOB.node_id
    assert link.closed("server").reason == "wrong_node_id"


def test_messages_both_ways_many_and_large() -> None:
    link = Link()
    link.handshake()
    small = [f"hello {i}".encode() for i in range(500)]
    large = [bytes([i]) * (64 * 1024) for i in range(1, 4)]  # each split over ~60 packets
    for payload in small + large:
        link.client.send_message(payload)
    for payload in reversed(small):
        link.server.send_message(payload)
    link.run_until(link.now + 5.0)
    assert [e.data for e in link.of("server", MessageReceived)] == small + large
    assert [e.data for e in link.of("client", MessageReceived)] == list(reversed(small))


def test_server_may_speak_first() -> None:
    link = Link()
    link.handshake()
    link.server.send_message(b"route update")
    link.flush()
    assert link.of("client", MessageReceived) == [MessageReceived(b"route update")]


def test_own_oversized_message_is_refused_locally() -> None:
    link = Link()
    link.handshake()
    with pytest.raises(ValueError):
        link.client.send_message(b"x" * (64 * 1024 + 1))
    with pytest.raises(ValueError):
        link.client.send_message(b"")
    assert link.client.is_up


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x80\x01\x00\x01" + b"x" * 10, "frame_too_large"),  # declares 65537 bytes
        (b"\x40\x05hello", "malformed_frame"),  # 5 in two bytes: not the shortest form
    ],
)
def test_bad_frame_from_peer_closes_only_that_session(raw: bytes, reason: str) -> None:
    link = Link()
    other = Link()
    link.handshake()
    other.handshake()
    link.client._quic.send_stream_data(0, raw)  # bypass our encoder: a broken peer
    link.run_until(link.now + 5.0)
    assert link.closed("server").reason == reason
    assert link.closed("client").reason == reason
    assert link.closed("client").by_peer
    other.client.send_message(b"still fine")
    other.flush()
    assert other.of("server", MessageReceived) == [MessageReceived(b"still fine")]


def test_datagrams_both_ways_and_the_size_guard() -> None:
    link = Link()
    link.handshake()
    limit = link.client.max_datagram_payload
    assert limit is not None and 1100 <= limit <= 1158
    link.client.send_datagram(b"a" * limit)
    link.server.send_datagram(b"pong")
    with pytest.raises(ValueError):
        link.client.send_datagram(b"b" * (limit + 1))  # refused, never queued
    link.client.send_datagram(b"after")
    sent_before = link.wire_datagrams
    link.flush()
    assert link.of("server", DatagramReceived) == [
        DatagramReceived(b"a" * limit),
        DatagramReceived(b"after"),
    ]
    assert link.of("client", DatagramReceived) == [DatagramReceived(b"pong")]
    assert link.wire_datagrams > sent_before


def test_datagram_refused_when_peer_did_not_advertise_it() -> None:
    link = Link()
    link.server = accept(allow, SessionSettings(max_datagram_frame_size=None), link.client)
    link.handshake()
    assert link.client.is_up
    assert link.client.max_datagram_payload is None
    with pytest.raises(ValueError):
        link.client.send_datagram(b"x")
    link.client.send_message(b"control still works")
    link.flush()
    assert link.of("server", MessageReceived) == [MessageReceived(b"control still works")]


def test_silent_cut_ends_in_idle_timeout() -> None:
    settings = SessionSettings(idle_timeout=5.0, keepalive_interval=2.0)
    link = Link(settings=settings)
    link.handshake()
    link.connected = False
    start = link.now
    link.run_until(start + 30.0)
    for side in ("client", "server"):
        close = link.closed(side)
        assert close.reason == "idle_timeout"
        assert close.peer_node_id is not None
    assert link.client.is_terminated and link.server.is_terminated


def test_idle_session_without_keepalive_times_out() -> None:
    link = Link(settings=SessionSettings(idle_timeout=5.0, keepalive_interval=None))
    link.handshake()
    link.run_until(link.now + 30.0)
    assert link.closed("client").reason == "idle_timeout"


def test_keepalive_holds_an_idle_session_open_and_costs_little() -> None:
    settings = SessionSettings(idle_timeout=30.0, keepalive_interval=10.0)
    link = Link(settings=settings)
    link.handshake()
    link.run_until(link.now + 5.0)  # let the handshake's last ACKs settle
    bytes_before, start = link.wire_bytes, link.now
    link.run_until(start + 600.0)  # 20 idle timeouts
    assert link.client.is_up and link.server.is_up
    assert link.of("client", SessionClosed) == []
    # QUIC payload bytes per second, both directions together; add 28 B of IPv4+UDP
    # header per datagram for the wire. Measured: 6.2 B/s, 11.8 B/s with IPv4+UDP headers
    # (the dialler's 29 B PING and the 33 B ACK every 10 s).
    rate = (link.wire_bytes - bytes_before) / (link.now - start)
    assert rate < 8.0, rate


def test_local_close_reaches_the_peer() -> None:
    link = Link()
    link.handshake()
    link.client.close("shutdown")
    link.run_until(link.now + 5.0)
    assert link.closed("client") == SessionClosed(
        reason="shutdown", by_peer=False, error_code=0, peer_node_id=BOB.node_id
    )
    assert link.closed("server").reason == "shutdown"
    assert link.closed("server").by_peer


def test_dial_to_nobody_ends_in_handshake_timeout() -> None:
    link = Link(settings=SessionSettings(idle_timeout=5.0, keepalive_interval=2.0))
    link.connected = False
    link.run_until(link.now + 30.0)
    assert link.closed("client").reason == "handshake_timeout"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=1500), min_size=1, max_size=8), st.booleans())
def test_garbage_datagrams_never_raise(garbage: list[bytes], after_handshake: bool) -> None:
    link = Link()
    if after_handshake:
        link.handshake()
    for data in garbage:
        for session in (link.client, link.server):
            session.receive_datagram(data, ("192.0.2.9", 9), link.now)
            session.datagrams_to_send(link.now)
            session.get_timer()
    link.run_until(link.now + 1.0)
    if after_handshake:  # garbage is dropped: the session survives
        link.client.send_message(b"ok")
        link.flush()
        assert link.of("server", MessageReceived)[-1] == MessageReceived(b"ok")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=1300), st.integers(min_value=0, max_value=1299))
def test_garbage_with_a_valid_looking_header_never_raises(tail: bytes, cut: int) -> None:
    """Take a real packet, keep its header, replace the rest: aioquic must drop it."""
    link = Link()
    link.handshake()
    link.client.send_message(b"x")
    packet = link.client.datagrams_to_send(link.now)[0][0]
    mangled = packet[: min(cut, len(packet))] + tail
    link.server.receive_datagram(mangled, CLIENT_ADDR, link.now)
    link.server.handle_timer(link.now)
    link.flush()


def test_a_dial_nobody_answers_fails_at_the_handshake_deadline() -> None:
    settings = SessionSettings(handshake_timeout=3.0)
    creds = node_certificate(SigningKey(bytes([5]) * 32))
    dial = Session.dial(
        credentials=creds,
        authorize=lambda node_id: None,
        addr=("192.0.2.9", 6697),
        now=0.0,
        expected_node_id=None,
        settings=settings,
    )
    dial.datagrams_to_send(0.0)  # the INITIAL goes nowhere
    timer = dial.get_timer()
    assert timer is not None and timer <= 3.0
    dial.handle_timer(3.0)
    events = []
    while (ev := dial.next_event()) is not None:
        events.append(ev)
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert [e.reason for e in closed] == ["handshake_timeout"]
    assert dial.is_terminated and dial.datagrams_to_send(3.0) == []


# --- protocol versions (the ALPN list) ------------------------------------------------------


def versions(*protocols: str) -> SessionSettings:
    return SessionSettings(alpn_protocols=protocols)


@pytest.mark.parametrize(
    ("client", "server", "agreed"),
    [
        (("meshd/2", "meshd/1"), ("meshd/2", "meshd/1"), "meshd/2"),  # both new
        (("meshd/2", "meshd/1"), ("meshd/1",), "meshd/1"),  # a new node dials an old one
        (("meshd/1",), ("meshd/2", "meshd/1"), "meshd/1"),  # an old node dials a new one
        # The accepting side picks by its own order among what the dialler offers.
        (("meshd/1", "meshd/2"), ("meshd/2", "meshd/1"), "meshd/2"),
        (("meshd/3", "meshd/2"), ("meshd/2", "meshd/1"), "meshd/2"),  # a future node
    ],
)
def test_both_ends_agree_on_the_newest_version_they_share(
    client: tuple[str, ...], server: tuple[str, ...], agreed: str
) -> None:
    link = Link(settings=versions(*client), server_settings=versions(*server))
    link.handshake()
    assert link.of("client", SessionUp) == [SessionUp(BOB.node_id, agreed)]
    assert link.of("server", SessionUp) == [SessionUp(ALICE.node_id, agreed)]
    assert link.client.protocol == link.server.protocol == agreed
    link.client.send_message(b"hello")
    link.flush()
    assert link.of("server", MessageReceived) == [MessageReceived(b"hello")]


@pytest.mark.parametrize(
    ("client", "server"),
    [
        (("meshd/1",), ("meshd/3",)),  # an old node and a future one that dropped meshd/1
        (("meshd/3",), ("meshd/1",)),
        (("meshd/1",), ("meshd/2",)),  # a node that refuses neighbours too old
    ],
)
def test_no_version_in_common_is_refused_on_both_sides_with_the_reason(
    client: tuple[str, ...], server: tuple[str, ...]
) -> None:
    seen: list[str] = []

    def authorize(node_id: str) -> str | None:
        seen.append(node_id)
        return None

    link = Link(
        settings=versions(*client),
        server_settings=versions(*server),
        server_authorize=authorize,
        expected_node_id=BOB.node_id,
    )
    link.run_until(link.now + 5.0)
    assert link.of("client", SessionUp) == [] and link.of("server", SessionUp) == []
    assert seen == []  # refused in TLS, before any certificate
    client_close, server_close = link.closed("client"), link.closed("server")
    assert (client_close.reason, client_close.by_peer) == (VERSION_UNSUPPORTED, True)
    assert (server_close.reason, server_close.by_peer) == (VERSION_UNSUPPORTED, False)
    # The dialler names the node it dialled; the accepting side never learnt who it was.
    assert client_close.peer_node_id == BOB.node_id
    assert server_close.peer_node_id is None
    assert link.client.is_terminated and link.server.is_terminated


def test_a_refused_dial_of_no_one_in_particular_names_no_one() -> None:
    link = Link(settings=versions("meshd/1"), server_settings=versions("meshd/2"))
    link.run_until(link.now + 5.0)
    assert link.closed("client").reason == VERSION_UNSUPPORTED
    assert link.closed("client").peer_node_id is None


@pytest.mark.parametrize(
    "protocols",
    [(), ("meshd/1", "meshd/1"), ("",), ("x" * 256,), ("meshd/\u00e9",), ["meshd/1"], "meshd/1"],
)
def test_a_bad_version_list_is_our_own_misuse(protocols: object) -> None:
    with pytest.raises(ValueError):
        SessionSettings(alpn_protocols=protocols)  # type: ignore[arg-type]
