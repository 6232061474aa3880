"""Every node the control plane knows of (pure): found (configured, heard in a beacon, or
told of by a neighbour), dialled with backoff, probed once its tunnel carries packets,
and forgotten after ``forget_after_s`` of silence.

A beacon proves a key, not membership, and its source address is not signed: nodes only
heard of (``Peer.candidate``: from beacons or ENDPOINTS, never verified, no session, and
not a member our certificate directory holds) live in budgets of their own,
``MAX_CANDIDATES`` for those heard in beacons and as many for those verified neighbours
told us of, apart from ``MAX_PEERS``, which only neighbours and sessions count: a flood of
fresh keys can neither fill the peer table nor make the node refuse a newcomer
``too_many_peers``, nor keep out the members a neighbour tells us of. Candidates are
dialled at most ``CANDIDATE_TRIES`` times each and, all of a budget together, at
``CANDIDATE_DIALS_PER_S`` (a burst of ``CANDIDATE_DIAL_BURST``), then forgotten until
heard again: whoever sends beacons in other nodes' names makes the node send handshakes
at that rate at most. What does not fit is counted (``refusals``: ``candidates_full``,
``peers_full``).

A neighbour is a Babel link only while its certificate verifies *and* a session is up
*and* its WireGuard tunnel carries packets (the liveness signal), so a tunnel that stops
carrying packets is a dead link even while the QUIC session over the underlay still
answers. The link outlives a dropped session; it is removed when the neighbour is revoked
or has been gone for ``forget_after_s``."""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable, Collection, Sequence

from meshd.core import addressing
from meshd.core.control import effects as fx
from meshd.core.control.peer import Candidate, Peer, Source
from meshd.core.endpoints import Address, format_endpoint
from meshd.core.journal import Journal
from meshd.core.proto import session as messages
from meshd.core.proto.babel import BabelDecodeError, decode_packet, encode_packet
from meshd.core.routing.babel import BabelRouter
from meshd.core.routing.link_quality import LinkQuality, LinkQualityParams

LINK_COST = 96  # RFC 8966 A.2.1 wired/tunnel cost, before the link is measured
REDIAL_S = 2.0  # first redial; doubling up to REDIAL_MAX_S while the neighbour is silent
REDIAL_MAX_S = 30.0
SHARED_TRIES = 3  # dials of an address a neighbour told us about before we drop it
# Addresses of one node that neighbours told us about, held at once: a member cannot make
# us dial (and so send packets to) any number of addresses in its name or another's.
MAX_SHARED_ADDRESSES = 4
# Addresses a neighbour says it has on its home network (meshd.core.control.plane), held.
MAX_HOME_ADDRESSES = 2
MAX_PEERS = 512  # neighbours and sessions (candidates apart): a flood cannot exhaust memory
MAX_CANDIDATES = 32  # nodes only heard of, never verified
CANDIDATE_TRIES = 3  # dials of a candidate before it is forgotten (until heard again)
CANDIDATE_DIALS_PER_S = 1.0  # dials of candidates, all together
CANDIDATE_DIAL_BURST = 4.0
# Probes through each tunnel measure RTT and loss for the link cost, not liveness: one per
# 16 s each way keeps them near 10 B/s per link (overhead.control_bytes_per_link_s).
PROBE_PARAMS = LinkQualityParams(hello_interval_s=16.0)


def _budget(peer: Peer) -> Source:
    """Which candidates' budget a peer is in: BEACON, or SHARED (told of by a neighbour)."""
    first = next((c.source for c in peer.addresses.values()), Source.BEACON)
    return Source.BEACON if first is Source.BEACON else Source.SHARED


def shareable(host: str) -> bool:
    """An address worth telling another node about: routable beyond one link."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_link_local or ip.is_loopback or ip.is_multicast or ip.is_unspecified)


class Neighbours:
    def __init__(
        self,
        node_id: str,
        router: BabelRouter,
        effects: list[fx.Effect],
        journal: Journal,
        revoked: Callable[[str], bool],
        flush: Callable[[], None],
        *,
        member: Callable[[str], bool] = lambda node_id: False,
        interface_prefix: str = "mw",
        forget_after_s: float = 600.0,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id, self.router, self.effects, self.journal = node_id, router, effects, journal
        self.revoked = revoked
        self.member = member  # its certificate is in our directory: no stranger
        self.flush = flush  # the plane's: Babel's output and route changes, now
        self.interface_prefix = interface_prefix
        self.forget_after_s = forget_after_s
        self.rng = rng or random.Random()
        self.peers: dict[str, Peer] = {}
        self._by_ifname: dict[str, Peer] = {}
        # Our underlay subnets: a shared endpoint elsewhere (beyond the uplink, or on a
        # link of the neighbour's we are not on) would only cost handshakes to nowhere.
        self.local_subnets: list[ipaddress.IPv4Network] = []
        self.internet = False  # we have an uplink: shared internet addresses are tried too
        # The networks our uplinks are on (a household's home network, behind its router),
        # and where our sessions are on them, when that is no internet address: another
        # node behind the same router reaches us there, not at the router's public address
        # (home routers seldom send back what their inside sends to that address).
        self.home: list[ipaddress.IPv4Interface] = []
        self.session_port: int | None = None  # where our sessions listen, once they do
        # Set by the shell once it can: dial (the transport is up), probe (the probe socket).
        self.dialling = False
        self.probing = False
        # The candidates' dial budgets (token buckets: tokens, when counted), one for those
        # heard in beacons and one for those a neighbour told us of; what did not fit.
        self._dial_tokens: dict[Source, tuple[float, float | None]] = {}
        self.refusals: dict[str, int] = {}

    def is_candidate(self, peer: Peer) -> bool:
        """Only heard of, and no member we know of (meshd.core.control.peer)."""
        return peer.candidate and not self.member(peer.node_id)

    def established(self) -> set[str]:
        """The node ids that count against ``MAX_PEERS``: every known node but candidates."""
        return {node_id for node_id, peer in self.peers.items() if not self.is_candidate(peer)}

    def candidates(self, source: Source | None = None) -> int:
        """How many candidates there are (first heard of from ``source``: any when None)."""
        return sum(
            1
            for peer in self.peers.values()
            if self.is_candidate(peer) and (source is None or _budget(peer) is source)
        )

    def _refused(self, reason: str) -> str:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        return reason

    def admits(self, node_id: str, sessions: Collection[str], limit: int) -> str | None:
        """Why ``node_id`` may not open a session beside ``sessions`` (at most ``limit``),
        or None: the handshake check of every QUIC endpoint of a node (neighbours, exits,
        join relays); the certificate comes next."""
        if node_id == self.node_id:
            return "own_node_id"
        if self.revoked(node_id):
            return "revoked"
        if node_id not in sessions and len(sessions) >= limit:
            return "too_many_peers"
        return None

    def dial_failed(self, node_id: str, addr: Address, reason: str, by_peer: bool) -> None:
        """A session with ``node_id`` (empty: a dial that never learned who answered) closed
        before it was up: a dial or handshake failed, or it was refused."""
        peer = self.peers.get(node_id)
        if peer is not None:
            peer.last_refusal = reason
            peer.failed_dials += 1
            if reason == messages.VERSION_UNSUPPORTED:  # refused before it was up
                peer.count_refusal(reason)
        # A neighbour not there yet, or a half-open session pushed out by newer ones
        # (a flood would otherwise log at its own rate): nothing to warn about. A neighbour
        # that stays away is told of at its 1st, 2nd, 4th, 8th... failure in a row, not at
        # every redial (an SD card keeps the journal; `meshd status` has the last reason).
        silent = reason in ("handshake_timeout", "evicted")
        failed = peer.failed_dials if peer is not None else 1
        if failed & (failed - 1) == 0:
            self.journal(
                "session.timeout" if silent else "session.refused",
                logging.INFO if silent else logging.WARNING,
                peer=peer.name if peer else node_id or "?",
                address=format_endpoint(addr),
                reason=reason,
                by_peer=by_peer,
                failures=failed,
            )

    def add(self, node_id: str, now: float, name: str = "") -> Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            ifname = addressing.link_interface_name(self.interface_prefix, self.node_id, node_id)
            peer = Peer(node_id, name or node_id[:8], ifname, last_seen=now)
            self.peers[node_id] = peer
            self._by_ifname[ifname] = peer
        return peer

    def set_subnets(
        self,
        subnets: list[ipaddress.IPv4Network],
        internet: bool = False,
        home: Sequence[ipaddress.IPv4Interface] = (),
    ) -> None:
        """Our underlay subnets, whether we have an uplink, and our addresses on the
        uplinks (the node reads them from the kernel now and then): endpoints a neighbour
        shares are only tried on these subnets and our home networks (an uplink's own
        network where our address on it is no internet address: behind a home router),
        and on the internet when we have an uplink to reach it by."""
        self.local_subnets, self.internet = subnets, internet
        self.home = [a for a in home if not addressing.internet_address(str(a.ip))]

    @property
    def home_networks(self) -> list[ipaddress.IPv4Network]:
        return [address.network for address in self.home]

    @property
    def home_endpoints(self) -> tuple[Address, ...]:
        """Where our sessions are on our home networks: what we tell neighbours besides."""
        if self.session_port is None:
            return ()
        return tuple((str(address.ip), self.session_port) for address in self.home)

    # ---- finding neighbours ----------------------------------------------------------

    def discovered(self, node_id: str, address: Address, source: Source, now: float) -> str | None:
        """A node is at ``address`` (a beacon, or a neighbour said so): dial it if we have
        no session with it. Why it was not taken (counted in ``refusals``), or None."""
        if node_id == self.node_id or self.revoked(node_id):
            return None
        if node_id not in self.peers:
            # A node we do not know is a candidate, in a budget of its own by where we heard
            # of it (a flood of beacons does not keep out what a neighbour tells us), never
            # the peers'; a member our directory holds is none.
            kind = Source.BEACON if source is Source.BEACON else Source.SHARED
            if not self.member(node_id) and self.candidates(kind) >= MAX_CANDIDATES:
                return self._refused("candidates_full")
            if len(self.peers) >= MAX_PEERS + 2 * MAX_CANDIDATES:
                return self._refused("peers_full")
        if any(p.session_up and p.session_addr == address for p in self.peers.values()):
            # A verified neighbour is there (or one we are talking to): a beacon's source
            # address is not signed, and dialling it for another node id would make that
            # neighbour take our dial for a restart and drop the session it has with us.
            return None
        peer = self.add(node_id, now)
        if source is Source.BEACON:
            peer.last_seen = now  # heard directly: it is there
        known = peer.addresses.get(address)
        shared = sum(c.source is Source.SHARED for c in peer.addresses.values())
        if known is None and source is Source.SHARED and shared >= MAX_SHARED_ADDRESSES:
            return self._refused("addresses_full")
        if known is None:
            peer.addresses[address] = Candidate(source)
            self.journal(
                "peer.discovered",
                peer=peer.name,
                address=format_endpoint(address),
                source=source.value,
            )
            if not peer.session_up:
                peer.next_dial = min(peer.next_dial, now)
        elif known.source is Source.SHARED and source is not Source.SHARED:
            known.source = source  # heard directly now: no longer rationed (but a candidate)
            if not self.is_candidate(peer):
                known.dials = 0
        return None

    # ---- link quality ----------------------------------------------------------------

    def on_probe(self, data: bytes, ifname: str, arrived: float, now: float) -> None:
        """A probe came through a neighbour's tunnel (only that neighbour can send there),
        at ``arrived`` by the kernel's clock (the same monotonic clock as ``now``)."""
        peer = self._by_ifname.get(ifname)
        if peer is None or peer.quality is None:
            return
        try:
            tlvs = decode_packet(data)
        except BabelDecodeError as exc:
            self.journal("hello.malformed", logging.DEBUG, peer=peer.name, reason=exc.reason)
            return
        # Timed at arrival in the kernel: the RTT is the path's, not the event loop's.
        if peer.quality.receive(tlvs, arrived).cost_changed:
            self._cost_changed(peer, now)

    def _cost_changed(self, peer: Peer, now: float) -> None:
        assert peer.quality is not None
        if peer.routing:
            self.router.link_cost(peer.node_id, peer.quality.reported_cost, now)
            self.journal("babel.link_cost", peer=peer.name, cost=peer.quality.reported_cost)
            self.flush()

    def probe(self, peer: Peer, now: float) -> None:
        quality = peer.quality
        if quality is None or not self.probing:
            return
        if quality.check(now):
            self._cost_changed(peer, now)
        if now >= quality.next_send_at:
            packet = encode_packet(quality.build(now))
            address = addressing.link_local(peer.node_id)
            self.effects.append(fx.Probe(packet, address, peer.ifname))

    def reachable(self, host: str) -> bool:
        """A shared endpoint worth dialling: on one of our segments, or on the internet
        while we have an uplink (both ends behind NATs: the other end, told of us at the
        same moment, dials too, and the NATs let each other's packets in)."""
        if not shareable(host):
            return False
        ip = ipaddress.ip_address(host)
        if any(ip in subnet for subnet in (*self.local_subnets, *self.home_networks)):
            return True
        return self.internet and addressing.internet_address(host)

    def reached(self, peer: Peer) -> str | None:
        """How its session reaches it: ``segment`` (an address on one of our segments),
        ``home_network`` (an address on our uplink's own network: behind the same home
        router), ``bootstrap`` (the address the config gives), ``punched`` (an internet
        address a neighbour shared: both ends dialled, through their NATs), ``internet``
        (another address off our segments: it dialled us); None without a session."""
        address = peer.session_addr
        if not peer.session_up or address is None:
            return None
        try:
            ip = ipaddress.ip_address(address[0])
        except ValueError:
            return None
        if any(ip in subnet for subnet in self.local_subnets):
            return "segment"
        if any(ip in network for network in self.home_networks):
            return "home_network"
        known = peer.addresses.get(address)
        if known is not None and known.source is Source.BOOTSTRAP:
            return "bootstrap"
        if known is not None and known.source is Source.SHARED:
            return "punched"
        return "internet"

    # ---- links -----------------------------------------------------------------------

    def wireguard_state(self, node_id: str, up: bool, now: float) -> None:
        """The WireGuard liveness of a neighbour's tunnel changed."""
        peer = self.peers.get(node_id)
        if peer is not None and peer.wireguard_up != up:
            peer.wireguard_up = up
            peer.last_seen = now
            if up and not peer.session_up:
                # The tunnel carries packets again, so the underlay is back: redial now
                # rather than at the end of a backoff grown during a long cut.
                peer.next_dial, peer.failed_dials = now, 0
            if up and peer.quality is None:
                # Probes start once the tunnel carries packets: one sent before the
                # handshake would time the handshake, not the path.
                peer.quality = LinkQuality(
                    PROBE_PARAMS, now=now, initial_seqno=self.rng.randrange(1 << 16)
                )
            self.reevaluate(peer, now)

    def reevaluate(self, peer: Peer, now: float) -> None:
        routing = peer.session_up and peer.member is not None and peer.wireguard_up
        if routing == peer.routing:
            return
        peer.routing = routing
        if routing:
            cost = peer.quality.reported_cost if peer.quality else LINK_COST
            self.router.link_up(peer.node_id, cost, now)
        else:
            self.router.link_down(peer.node_id, now)
        self.journal("babel.link_" + ("up" if routing else "down"), peer=peer.name)
        self.flush()

    def forget(self, peer: Peer) -> None:
        """Remove the peer's link, and give back its port (held from its verification on,
        whether or not a LINK followed); a bootstrap peer stays known (and dialled)."""
        if peer.link is not None or peer.own_port is not None:
            self.effects.append(fx.RemoveLink(peer.node_id))
            peer.link = None
        peer.own_port = peer.peer_port = None
        peer.quality = None
        if not peer.bootstrap:
            self.drop(peer)

    def drop(self, peer: Peer) -> None:
        del self.peers[peer.node_id]
        self._by_ifname.pop(peer.ifname, None)

    def dial(self, peer: Peer, now: float) -> None:
        """Both ends dial while they have no session (a restarted node cannot wait for its
        neighbour's idle timeout); the transport keeps one session. Addresses we were only
        told about get a few tries; the others are tried for as long as they are known."""
        for address, candidate in list(peer.addresses.items()):
            if candidate.source is Source.SHARED and candidate.dials >= SHARED_TRIES:
                del peer.addresses[address]
        stranger = self.is_candidate(peer)
        if stranger and sum(c.dials for c in peer.addresses.values()) >= CANDIDATE_TRIES:
            peer.addresses.clear()  # it never verified: forgotten until heard again
        if not peer.addresses:
            if not peer.bootstrap and peer.link is None:
                self.drop(peer)
            return
        if stranger and (wait := self._dial_token(_budget(peer), now)) > 0:
            peer.next_dial = now + wait
            return
        address, candidate = min(peer.addresses.items(), key=lambda item: item[1].dials)
        candidate.dials += 1
        backoff = REDIAL_S * 2 ** min(peer.failed_dials, 8)
        peer.next_dial = now + min(backoff, REDIAL_MAX_S)
        self.effects.append(fx.Dial(address, peer.node_id))

    def _dial_token(self, budget: Source, now: float) -> float:
        """Take one dial from a candidates' budget: 0 if there was one, else how long until
        there is."""
        tokens, at = self._dial_tokens.get(budget, (CANDIDATE_DIAL_BURST, None))
        if at is not None:
            tokens = min(CANDIDATE_DIAL_BURST, tokens + max(0.0, now - at) * CANDIDATE_DIALS_PER_S)
        if tokens < 1.0:
            self._dial_tokens[budget] = (tokens, now)
            return (1.0 - tokens) / CANDIDATE_DIALS_PER_S
        self._dial_tokens[budget] = (tokens - 1.0, now)
        return 0.0

    def idle(self, peer: Peer, now: float) -> None:
        """A tick for a neighbour: seen while a session or link is up; else forgotten
        after ``forget_after_s`` of silence, or dialled when its backoff is over."""
        if peer.session_up or peer.routing:
            peer.last_seen = now
            return
        if peer.wireguard_up:
            peer.last_seen = now
        if now - peer.last_seen > self.forget_after_s:
            self.journal("peer.forgotten", peer=peer.name, silent_s=round(now - peer.last_seen))
            self.forget(peer)
        elif self.dialling and now >= peer.next_dial:
            self.dial(peer, now)
