"""The asyncio adapter: one UDP socket per node for every dialled and accepted session.

Like aioquic's ``asyncio/protocol.py``, it only feeds datagrams in (routed by destination
connection id), sends what comes out and re-arms one timer per session. What it adds:
one active session per peer node id, with the tie-break for simultaneous dials, and a
bounded table of sessions that INITIALs nobody completes cannot lock:

- an INITIAL that does not decrypt opens nothing (``Session.heard_from_peer``);
- a session accepted from a peer is dropped if it is not up within the settings'
  ``handshake_timeout`` (5 s by default, instead of the idle timeout);
- a new INITIAL makes room by evicting the oldest accepted session that never came up:
  from its own source host when that one already holds ``MAX_HALF_OPEN_PER_HOST``, so one
  flooding address cannot take every slot, and from anyone when the table is full. It is
  dropped only when every slot holds a session that came up or one we dialled.
  Evicting (rather than refusing the newcomer) keeps new handshakes answered through a
  flood; a handshake only has to finish before ``MAX_SESSIONS`` (or, behind the flooding
  address itself, ``MAX_HALF_OPEN_PER_HOST``) newer INITIALs arrive. Sources are counted
  by host, not port: ports are free to vary. Forged source addresses (or an IPv6 host
  using its whole /64) defeat the per-host count, not the eviction.

A completed handshake proves a key, not membership: anyone can make keys. On a transport
that ``verifies`` (the neighbour sessions', which strangers reach), a session that came up
is *unverified* until its owner says its certificate verified (``verified``), and those
are capped apart from the verified ones: at most ``MAX_UNVERIFIED_PER_HOST`` per source
host (its oldest is closed, ``evicted``, when another comes up) and ``MAX_UNVERIFIED`` in
all (then the oldest of the host holding the most goes). A flood of handshakes with fresh
keys thus never takes a verified neighbour's slot, and from one address it only ever
pushes out its own sessions: a newcomer (an invitee's join-only session is unverified for
its whole life) is closed only once ``MAX_UNVERIFIED`` other hosts hold one each.
What was evicted is counted (``status``).

Stateless Retry (RFC 9000 8.1.2; aioquic has it only in its asyncio server, so it is done
here): once unverified sessions reach half their cap, or half-open ones half the table,
an INITIAL without a token gets a Retry packet carrying one (sealed with a key of this
process: the client's address and port, the cid it chose, the Retry's cid, the time) and
opens nothing; only an INITIAL that returns a valid token from the same address opens a
session. A source must then prove it receives at its address before it costs a session,
so forged addresses cannot fill the table nor make us send a first flight to a victim.
An INITIAL whose token does not validate is dropped then without an answer. Counted in
``status`` (``retry``: ``sent``, ``bad_token``).

What a session may receive at all is bounded too, before anything is decrypted: a token
bucket of octets per session (the settings' ``receive_burst`` and ``receive_rate``; what
each message kind may cost once decoded is meshd.core.proto.session.budget's). A datagram
beyond it is dropped as lost (an honest sender's congestion control slows down; a flood
costs a dictionary lookup a datagram), counted in ``status`` (``over_budget``: by peer).
A verified peer's bucket is kept by its node id, and its next sessions take it over as it
is: closing and dialling again does not refill it (the last ``MAX_SESSIONS`` peers' are
kept).
The socket is read in batches (up to ``READ_BATCH`` datagrams a wakeup, where asyncio's
datagram transport reads one): each session is serviced (events, sends, its timer) once
a batch, so a burst of datagrams costs one round of acknowledgements, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aioquic.quic.packet import encode_quic_retry
from aioquic.quic.retry import QuicRetryTokenHandler

from meshd.core.control.rates import TokenBucket
from meshd.core.endpoints import Address, format_endpoint
from meshd.core.transport.certs import NodeCredentials
from meshd.core.transport.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    DatagramReceived,
    MessageReceived,
    SessionClosed,
    SessionEvent,
    SessionUp,
)
from meshd.core.transport.session import (
    ERROR_DUPLICATE,
    Authorize,
    Session,
    SessionNotUp,
    SessionSettings,
    destination_cid,
    initial_header,
)

log = logging.getLogger("meshd.core.transport")


# Two sessions with one peer that both came up within this many seconds are a simultaneous
# dial; otherwise the older one is a leftover (the peer restarted) and the newer one wins.
DUPLICATE_WINDOW = 5.0
MAX_SESSIONS = 256  # accepted + dialled; a flood of INITIALs cannot exhaust memory
# Accepted sessions not up yet, per source host. A handshake takes one round trip and
# neighbours dial once each: 16 is many legitimate dialers behind one NAT address.
MAX_HALF_OPEN_PER_HOST = 16
# Sessions up whose certificate has not verified (``verifies`` transports): a neighbour
# verifies within a round trip of coming up, a joining node is unverified until it leaves.
MAX_UNVERIFIED = 64
MAX_UNVERIFIED_PER_HOST = 4
# From this many unverified or half-open sessions on, a new source must return a Retry
# token first: half of their caps.
RETRY_UNVERIFIED = MAX_UNVERIFIED // 2
RETRY_HALF_OPEN = MAX_SESSIONS // 2
READ_BATCH = 64  # datagrams read a wakeup before their sessions are serviced
_MAX_DATAGRAM = 65_535


@dataclass(frozen=True)
class PeerEvent:
    """A session event for the owner, with the peer it concerns.

    ``event`` is SessionUp, MessageReceived, DatagramReceived or SessionClosed. A
    SessionClosed with ``was_up=False`` is a session that never came up (refused by either
    side, handshake timeout, evicted to make room): log it, the peer's state did not change.
    """

    peer_node_id: str | None
    addr: Address
    event: SessionEvent
    was_up: bool = True


class _Entry:
    """A session, its address, its timer, and the connection ids routed to it."""

    def __init__(self, session: Session, addr: Address, settings: SessionSettings) -> None:
        self.session = session
        self.addr = addr
        self.received = TokenBucket(settings.receive_burst, settings.receive_rate)
        self.dropped = 0  # datagrams beyond that budget
        self.source_host = addr[0]  # where its first datagram came from (addr may move)
        self.cids: set[bytes] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.up_at: float | None = None
        self.up_seq = 0  # the order sessions came up in: the oldest unverified goes first


class _ByHost:
    """Sessions of one kind (half-open, unverified), oldest first, and the same per source
    host: what the caps count and evict from."""

    def __init__(self) -> None:
        self.entries: dict[_Entry, None] = {}
        self.hosts: dict[str, dict[_Entry, None]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, entry: object) -> bool:
        return entry in self.entries

    def oldest(self) -> _Entry:
        return next(iter(self.entries))

    def of(self, host: str) -> dict[_Entry, None]:
        """The host's, oldest first (empty for a host holding none)."""
        return self.hosts.get(host, {})

    def add(self, entry: _Entry) -> dict[_Entry, None]:
        """Count ``entry``; its host's, oldest first, with it."""
        self.entries[entry] = None
        same_host = self.hosts.setdefault(entry.source_host, {})
        same_host[entry] = None
        return same_host

    def discard(self, entry: _Entry) -> None:
        if entry not in self.entries:
            return
        del self.entries[entry]
        same_host = self.hosts[entry.source_host]
        del same_host[entry]
        if not same_host:
            del self.hosts[entry.source_host]


class QuicTransport:
    """All of a node's neighbour sessions on one UDP socket."""

    def __init__(
        self,
        *,
        credentials: NodeCredentials,
        authorize: Authorize,
        on_event: Callable[[PeerEvent], None],
        settings: SessionSettings | None = None,
        verifies: bool = False,
    ) -> None:
        self.credentials = credentials
        self.settings = settings or SessionSettings()
        # Sessions stay unverified until the owner calls ``verified``; else up is enough.
        self.verifies = verifies
        self._authorize = authorize
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._by_cid: dict[bytes, _Entry] = {}
        self._entries: set[_Entry] = set()
        self._active: dict[str, _Entry] = {}  # peer node id -> its one session that is up
        # Accepted sessions that never came up, oldest first (dicts keep insertion order):
        # the ones a new INITIAL may evict. Our own dials are never evicted.
        self._half_open = _ByHost()
        # Sessions up, certificate not verified, oldest first (``verifies`` only).
        self._unverified = _ByHost()
        # Each peer's receive bucket, kept across its sessions, least recently up first.
        self._receive_budgets: dict[str, TokenBucket] = {}
        self._up_seq = 0
        # Sessions closed to make room, by why (``status``).
        self.evicted: dict[str, int] = {}
        # Stateless Retry under pressure: tokens sealed with a key of this process.
        self._retry_tokens = QuicRetryTokenHandler()
        self.retry: dict[str, int] = {}
        # UDP payload bytes of the port, every datagram (``status``: the control traffic).
        self.bytes = {"sent": 0, "received": 0}
        # Datagrams the kernel would not take (its send buffer full, or no route): lost,
        # as QUIC expects of UDP; its loss recovery sends them again.
        self.send_errors = 0

    @classmethod
    async def listen(
        cls,
        *,
        credentials: NodeCredentials,
        authorize: Authorize,
        on_event: Callable[[PeerEvent], None],
        host: str,
        port: int,
        settings: SessionSettings | None = None,
        verifies: bool = False,
        mark: int | None = None,
    ) -> QuicTransport:
        """A transport on ``host:port``; with ``mark``, its packets carry that firewall
        mark (SO_MARK, CAP_NET_ADMIN), which the exit's policy rules keep out of the exit
        tunnel (meshd.adapters.net.exit_tunnel)."""
        loop = asyncio.get_running_loop()
        family, kind, proto, _, sockaddr = (
            await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(sockaddr)
            if mark is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        except OSError:
            sock.close()
            raise
        transport = cls(
            credentials=credentials,
            authorize=authorize,
            on_event=on_event,
            settings=settings,
            verifies=verifies,
        )
        transport._sock = sock
        loop.add_reader(sock.fileno(), transport._read_ready)
        return transport

    # -- the socket ----------------------------------------------------------------------

    def _read_ready(self) -> None:
        """Read what the socket holds (``READ_BATCH`` at most), then service each session
        that received once."""
        assert self._sock is not None
        received: dict[_Entry, None] = {}
        for _ in range(READ_BATCH):
            try:
                data, addr = self._sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error queued on the socket: nothing to read
                log.debug("socket.error %s", exc)
                break
            entry = self._received(data, addr)
            if entry is not None:
                received[entry] = None
        for entry in received:
            if entry in self._entries:  # servicing another may have closed it
                self._service(entry)

    def _received(self, data: bytes, addr: Address) -> _Entry | None:
        """Feed one datagram to its session (not serviced yet), or accept a new one."""
        self.bytes["received"] += len(data)
        cid = destination_cid(data)
        if cid is None:
            return None
        entry = self._by_cid.get(cid)
        if entry is None:
            self._accept(data, addr)
            return None
        now = self._loop.time()
        if not entry.received.take(len(data), now):
            entry.dropped += 1  # beyond its receive budget: not even decrypted
            return None
        entry.addr = addr
        entry.session.receive_datagram(data, addr, now=now)
        return entry

    @property
    def _open(self) -> bool:
        return self._sock is not None

    # -- commands ------------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return (host, port)

    def dial(self, addr: Address, expected_node_id: str | None = None) -> None:
        """Start a session to ``addr``; nothing if that neighbour is already up."""
        if expected_node_id is not None and expected_node_id in self._active:
            return
        addr = self._as_received(addr)
        session = Session.dial(
            credentials=self.credentials,
            authorize=self._authorize,
            addr=addr,
            now=self._loop.time(),
            expected_node_id=expected_node_id,
            settings=self.settings,
        )
        self._service(self._add(session, addr))

    def _as_received(self, addr: Address) -> Address:
        """``addr`` as this socket reports its peers: an IPv6 socket gives (host, port,
        flowinfo, scope_id), and aioquic knows a datagram's path by that tuple's equality
        (its own client dials so too): a 2-tuple dial would never hear its answers."""
        if self._sock is not None and self._sock.family == socket.AF_INET6 and len(addr) == 2:
            return cast(Address, (addr[0], addr[1], 0, 0))
        return addr

    def peers(self) -> dict[str, Address]:
        """The neighbours with a session up, and their addresses."""
        return {node_id: entry.addr for node_id, entry in self._active.items()}

    @property
    def session_count(self) -> int:
        """Sessions of any state still held (dialling, up, closing, draining)."""
        return len(self._entries)

    @property
    def half_open_count(self) -> int:
        """Accepted sessions that have not come up (handshaking, or refused and closing)."""
        return len(self._half_open)

    @property
    def unverified_count(self) -> int:
        """Sessions up whose certificate the owner has not said verified."""
        return len(self._unverified)

    def verified(self, node_id: str) -> None:
        """The owner checked the certificate of ``node_id``'s session up: it is a verified
        one from now on (nothing if no session with it is up)."""
        entry = self._active.get(node_id)
        if entry is not None:
            self._unverified.discard(entry)
            self._keep_receive_budget(node_id, entry)

    def status(self) -> dict[str, object]:
        """What strangers' handshakes hold and what was closed to make room."""
        return {
            "sessions": len(self._entries),
            "half_open": len(self._half_open),
            "unverified": len(self._unverified),
            "evicted": dict(self.evicted),
            "retrying": self.retrying,
            "retry": dict(self.retry),
            "bytes": dict(self.bytes),
            "send_errors": self.send_errors,
            "over_budget": {
                e.session.peer_node_id or format_endpoint(e.addr): e.dropped
                for e in self._entries
                if e.dropped
            },
        }

    @property
    def retrying(self) -> bool:
        """Whether a new source must return a Retry token before it opens a session."""
        return len(self._unverified) >= RETRY_UNVERIFIED or len(self._half_open) >= RETRY_HALF_OPEN

    def send_message(self, node_id: str, data: bytes) -> None:
        entry = self._up(node_id)
        entry.session.send_message(data)
        self._service(entry)

    def try_send(self, node_id: str, data: bytes) -> str | None:
        """``send_message``, or why it could not be sent (no session up with the node, or
        it is closing; a message it refuses): the callers that only log it and go on."""
        try:
            self.send_message(node_id, data)
        except (KeyError, ValueError, SessionNotUp) as exc:
            return str(exc)
        return None

    def send_datagram(self, node_id: str, data: bytes) -> None:
        entry = self._up(node_id)
        entry.session.send_datagram(data)
        self._service(entry)

    def max_datagram_payload(self, node_id: str) -> int | None:
        return self._up(node_id).session.max_datagram_payload

    def close_peer(self, node_id: str, reason: str = "closed") -> None:
        entry = self._active.get(node_id)
        if entry is not None:
            entry.session.close(reason)
            self._service(entry)

    async def close(self, reason: str = "shutdown", linger: float = 0.05) -> None:
        """Close every session (the peers get ``reason``) and the socket."""
        for entry in list(self._entries):
            entry.session.close(reason)
            self._service(entry)
        await asyncio.sleep(linger)  # let the CONNECTION_CLOSE datagrams leave
        for entry in list(self._entries):
            self._forget(entry)
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    # -- internals -----------------------------------------------------------------------

    def _up(self, node_id: str) -> _Entry:
        entry = self._active.get(node_id)
        if entry is None:
            raise SessionNotUp(f"no session up with {node_id}")
        return entry

    def _accept(self, data: bytes, addr: Address) -> None:
        """A datagram to no session we know: an INITIAL may open one."""
        header = initial_header(data)
        if header is None:
            return
        if len(self._entries) >= MAX_SESSIONS and not self._half_open:
            return  # every slot holds a session that came up or one we dialled
        original_cid, retry_cid = header.destination_cid, None
        if header.token:
            try:
                original_cid = self._retry_tokens.validate_token(
                    address=addr,
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=self._loop.time(),
                )
                retry_cid = header.destination_cid
            except ValueError:
                if self.retrying:
                    self._count_retry("bad_token")
                    return  # no answer: the address may be anyone's
        if retry_cid is None and self.retrying:
            self._send_retry(header.version, header.destination_cid, header.source_cid, addr)
            return
        session = Session.accept(
            credentials=self.credentials,
            authorize=self._authorize,
            original_destination_connection_id=original_cid,
            settings=self.settings,
            retry_source_connection_id=retry_cid,
        )
        session.receive_datagram(data, addr, now=self._loop.time())
        if not session.heard_from_peer:
            return  # garbage shaped like an INITIAL: it takes no slot and evicts no one
        same_host = self._half_open.of(addr[0])
        if len(same_host) >= MAX_HALF_OPEN_PER_HOST:
            self._evict(next(iter(same_host)))
        while len(self._entries) >= MAX_SESSIONS and self._half_open:
            self._evict(self._half_open.oldest())
        if len(self._entries) >= MAX_SESSIONS:
            return  # the owner dialled while hearing of an eviction: no room left
        entry = self._add(session, addr)
        self._half_open.add(entry)
        self._route(entry, header.destination_cid)
        self._service(entry)

    def _send_retry(
        self, version: int | None, original_cid: bytes, client_cid: bytes, addr: Address
    ) -> None:
        """RFC 9000 17.2.5: a Retry, as aioquic's asyncio server builds it."""
        if not self._open or version is None:
            return
        retry_cid = os.urandom(8)
        token = self._retry_tokens.create_token(
            address=addr,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
            now=self._loop.time(),
        )
        packet = encode_quic_retry(
            version=version,
            source_cid=retry_cid,
            destination_cid=client_cid,
            original_destination_cid=original_cid,
            retry_token=token,
        )
        self._send(packet, addr)
        self._count_retry("sent")

    def _count_retry(self, what: str) -> None:
        self.retry[what] = self.retry.get(what, 0) + 1

    def _evict(self, entry: _Entry, why: str = "half_open") -> None:
        """Make room: the owner hears SessionClosed(evicted); a half-open session's client
        hears nothing, an unverified one's (its address answered a handshake) a close."""
        log.debug("session.evicted address=%s:%d why=%s", *entry.addr[:2], why)
        self.evicted[why] = self.evicted.get(why, 0) + 1
        if entry.session.is_up:
            entry.session.close("evicted")
        else:
            entry.session.drop("evicted")
        self._service(entry)

    def _hold_unverified(self, entry: _Entry) -> None:
        """``entry`` came up unverified: count it, and keep within the caps by closing
        the oldest of its host, or else of the host holding the most."""
        self._up_seq += 1
        entry.up_seq = self._up_seq
        same_host = self._unverified.add(entry)
        if len(same_host) > MAX_UNVERIFIED_PER_HOST:
            self._evict(next(iter(same_host)), "unverified_per_host")
        while len(self._unverified) > MAX_UNVERIFIED:
            hosts = self._unverified.hosts.values()
            busiest = max(hosts, key=lambda held: (len(held), -next(iter(held)).up_seq))
            self._evict(next(iter(busiest)), "unverified")

    def _add(self, session: Session, addr: Address) -> _Entry:
        entry = _Entry(session, addr, self.settings)
        self._entries.add(entry)
        return entry

    def _route(self, entry: _Entry, cid: bytes) -> None:
        entry.cids.add(cid)
        self._by_cid[cid] = entry

    def _forget(self, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        for cid in entry.cids:
            if self._by_cid.get(cid) is entry:
                del self._by_cid[cid]
        entry.cids.clear()
        self._entries.discard(entry)
        self._half_open.discard(entry)
        self._unverified.discard(entry)
        node_id = entry.session.peer_node_id
        if node_id is not None and self._active.get(node_id) is entry:
            del self._active[node_id]

    def _send(self, data: bytes, addr: Address) -> None:
        assert self._sock is not None
        self.bytes["sent"] += len(data)
        try:
            self._sock.sendto(data, addr)
        except OSError as exc:  # EAGAIN, ENETUNREACH...: the datagram is lost
            self.send_errors += 1
            log.debug("socket.send_error address=%s %s", format_endpoint(addr), exc)

    def _service(self, entry: _Entry) -> None:
        """Handle events, send what is due, re-arm the timer (aioquic's ``transmit``)."""
        session = entry.session
        now = self._loop.time()
        for _ in range(2):  # events can queue data (and sending can produce events)
            while (event := session.next_event()) is not None:
                self._handle(entry, event)
            if self._open:
                for data, addr in session.datagrams_to_send(now):
                    self._send(data, addr)
        if session.is_terminated:
            self._forget(entry)
            return
        timer_at = session.get_timer()
        if timer_at != entry.timer_at:
            if entry.timer is not None:
                entry.timer.cancel()
            entry.timer = (
                None if timer_at is None else self._loop.call_at(timer_at, self._on_timer, entry)
            )
            entry.timer_at = timer_at

    def _on_timer(self, entry: _Entry) -> None:
        entry.timer = None
        entry.timer_at = None
        entry.session.handle_timer(now=self._loop.time())
        self._service(entry)

    def _handle(self, entry: _Entry, event: SessionEvent) -> None:
        node_id = entry.session.peer_node_id
        if isinstance(event, ConnectionIdIssued):
            self._route(entry, event.connection_id)
        elif isinstance(event, ConnectionIdRetired):
            entry.cids.discard(event.connection_id)
            if self._by_cid.get(event.connection_id) is entry:
                del self._by_cid[event.connection_id]
        elif isinstance(event, SessionUp):
            self._on_up(entry, event)
        elif isinstance(event, MessageReceived | DatagramReceived):
            if node_id is not None and self._active.get(node_id) is entry:
                self._on_event(PeerEvent(node_id, entry.addr, event))
        elif isinstance(event, SessionClosed):
            self._unverified.discard(entry)
            if node_id is not None and self._active.get(node_id) is entry:
                del self._active[node_id]
                self._on_event(PeerEvent(node_id, entry.addr, event))
            elif event.reason != "duplicate":
                # The event's node id: a dial refused for its version names the node dialled.
                self._on_event(PeerEvent(event.peer_node_id, entry.addr, event, was_up=False))

    def _on_up(self, entry: _Entry, event: SessionUp) -> None:
        now = self._loop.time()
        entry.up_at = now
        self._half_open.discard(entry)
        node_id = event.peer_node_id
        kept = self._receive_budgets.get(node_id)
        if kept is not None:  # its last session's, as that one left it
            entry.received = kept
        if not self.verifies:
            self._keep_receive_budget(node_id, entry)
        current = self._active.get(node_id)
        if current is None:
            self._active[node_id] = entry
            self._on_event(PeerEvent(node_id, entry.addr, event))
            if self.verifies and entry.session.is_up:
                self._hold_unverified(entry)
            return
        winner, loser = self._tie_break(current, entry, now)
        log.info(
            "peer.duplicate node_id=%s kept=%s",
            node_id,
            "dialled" if winner.session.is_client else "accepted",
        )
        self._active[node_id] = winner
        loser.session.close("duplicate", ERROR_DUPLICATE)
        if loser is not entry:  # entry is being serviced by our caller
            self._service(loser)
        if winner is entry:
            # A new session replaced the one the owner knew (a restarted peer, or the other
            # half of a simultaneous dial): the peer starts afresh, so the owner must too —
            # say hello again on this session. What it sent on the old one may be lost.
            self._on_event(PeerEvent(node_id, entry.addr, event))
            if self.verifies and entry.session.is_up:
                self._hold_unverified(entry)  # until its certificate verifies again

    def _keep_receive_budget(self, node_id: str, entry: _Entry) -> None:
        """Keep the bucket of ``node_id``'s session for its next ones (on a transport that
        ``verifies``, once the owner said it verified: a stranger's fresh keys cannot push
        a member's bucket out)."""
        self._receive_budgets.pop(node_id, None)
        self._receive_budgets[node_id] = entry.received
        while len(self._receive_budgets) > MAX_SESSIONS:
            del self._receive_budgets[next(iter(self._receive_budgets))]

    def _tie_break(self, current: _Entry, new: _Entry, now: float) -> tuple[_Entry, _Entry]:
        """Which of two sessions with one peer to keep; both ends must pick the same one."""
        assert current.up_at is not None
        if now - current.up_at > DUPLICATE_WINDOW or (
            current.session.is_client == new.session.is_client
        ):
            return new, current  # the peer restarted or redialled: the old one is stale
        # A simultaneous dial: keep the session dialled by the smaller node id.
        peer = new.session.peer_node_id
        assert peer is not None
        smaller_dialled_by_us = self.credentials.node_id < peer
        keep_dialled = current if current.session.is_client else new
        keep_accepted = new if keep_dialled is current else current
        if smaller_dialled_by_us:
            return keep_dialled, keep_accepted
        return keep_accepted, keep_dialled
