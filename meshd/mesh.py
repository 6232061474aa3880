"""The control plane: finding neighbours, QUIC sessions with them, membership, links, Babel.

Runs in the daemon's event loop. Neighbours are found three ways: bootstrap peers from the
config (dialled for as long as the node runs), signed beacons heard on a shared segment
(``discovered``), and the endpoints verified neighbours tell us about (``ENDPOINTS``; a few
tries each). Each neighbour gets one QUIC session (both ends dial while they have none; the
transport keeps one when both succeed). Each side's first message is its membership
certificate; until it verifies against the mesh definition nothing else from the session
is read. Then each side tells the other its WireGuard port for their link (``LINK``): the
peer's WireGuard key is in its certificate and its address is where the session comes from,
so that is all a side needs to build the link (``Links.ensure_link``).

A node that has no certificate yet may send one thing instead: JOIN_REQUEST, its invite
and new keys (meshd.join). Such a session is join-only: the request goes to ``on_join``,
which answers through ``answer_join``; any other message closes the session, it is never
listed as a neighbour, and it is closed ``JOIN_S`` after it came up.

A neighbour is a Babel link only while its certificate verifies *and* its WireGuard tunnel
carries packets (the liveness signal), so a tunnel that stops carrying packets is a dead
link even while the QUIC session over the underlay still answers. The link outlives a
dropped session; it is removed when the neighbour is revoked or has been gone for
``forget_after_s``. Revocations are gossiped: sent whole when a session verifies, and each
new one forwarded to every other neighbour. Timers run on the monotonic clock (``now``);
certificates and revocations are checked against the mesh's wall clock (``MeshClock``: the
system's, corrected by the median of what verified neighbours say in CLOCK, the first
message of every session, so that a Pi that booted with a stale time still joins).

Renewal (meshd.join does the asking and the issuing): a neighbour's RENEW_* messages go to
``on_renewal``; a second MEMBERSHIP on a verified session is the neighbour's renewed
certificate, checked like the first and put in place of it; ``renewed`` puts our own in
place and sends it to every verified neighbour, so nobody waits for a reconnect.

Admin rotation (meshd.core.membership.rotation): a mesh definition with a higher serial, signed
by an admin of ours, is adopted, stored (``mesh.cert``, and every definition adopted in
``mesh.chain``, which lets a restarted node follow the chain from the admin key its
config pins) and flooded. A session starts CLOCK, MESH_DEFINITION (once rotated), then
MEMBERSHIP, so a neighbour learns a new admin before it judges a certificate it signed.

Versions (meshd.core.proto.session): the session's protocol is negotiated in its handshake
(``protocols``, newest first; ``Peer.protocol``). On meshd/2 each side's first message is
CAPABILITIES, before CLOCK, and nothing else is read before it; what a peer announced
(``Peer.features``: the names this build knows) gates every newer kind or field we send it
(``peer_supports``). A dial the neighbour refused for want of a common version counts
``version_unsupported`` in its refusals.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from nacl.signing import SigningKey

from meshd.core import addressing
from meshd.core import session_policy as policy
from meshd.core.endpoints import Address, format_endpoint
from meshd.core.errors import BadInput
from meshd.core.membership import (
    DEFAULT_SKEW_S,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    Revocation,
    RevocationTarget,
    VerifiedMember,
    verify_membership,
)
from meshd.core.membership.clock import ClockConsensus
from meshd.core.membership.directory import Added, Directory, DirectoryError, Entry
from meshd.core.membership.directory_sync import DirectoryMessage, DirectorySync
from meshd.core.membership.names import NameOpening, shown
from meshd.core.membership.rotation import adopt as adopt_successor
from meshd.core.proto import session as messages
from meshd.core.proto.babel import (
    TLV,
    BabelDecodeError,
    OriginSignature,
    RouterId,
    Update,
    decode_packet,
    decode_packet_detail,
    encode_packet,
    seqno_add,
)
from meshd.core.proto.gateway import GatewayAdvert, GatewayError, decode_advert
from meshd.core.routing.babel import BabelRouter, RefusedUpdate, RouteChange
from meshd.core.routing.gateways import Choice, GatewayTable
from meshd.core.routing.link_quality import LinkQuality, LinkQualityParams
from meshd.core.routing.origin import OriginPolicy, OriginSigner, Owner
from meshd.core.routing.progress import FlowSample, IPNetwork, ProgressWatch, Suspicion
from meshd.core.session_policy import Refusal, SessionKind, SessionState
from meshd.discovery.beacon_socket import BeaconService, Underlay
from meshd.discovery.beacons import BeaconSettings, BeaconState, Discovered, Rejected
from meshd.identity import public_from_node_id
from meshd.log import event
from meshd.net.hello_socket import HelloSocket
from meshd.transport.certs import NodeCredentials
from meshd.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.transport.session import VERSION_UNSUPPORTED, SessionSettings
from meshd.transport.udp import PeerEvent, QuicTransport
from meshd.trust import (
    OwnMembership,
    load_chain,
    save_chain,
    save_joined,
    save_revocations,
    write_atomically,
)

LINK_COST = 96  # RFC 8966 A.2.1 wired/tunnel cost, before the link is measured
REDIAL_S = 2.0  # first redial; doubling up to REDIAL_MAX_S while the neighbour is silent
REDIAL_MAX_S = 30.0
VERIFY_S = 10.0  # a session whose certificate has not verified by then is closed
JOIN_S = 30.0  # a join-only session is closed by then (the issuer may be hops away)
ENFORCE_EVERY_S = 10.0  # how often live neighbours' certificates are checked again
SHARED_TRIES = 3  # dials of an address a neighbour told us about before we drop it
MAX_PEERS = 512  # known nodes (neighbours and candidates): a flood cannot exhaust memory
SEQNO_FILE = "babel-seqno"
DIRECTORY_FILE = "directory"  # every member's certificate (meshd.core.membership.directory)
ROUTE_REFUSALS_LOGGED_EVERY = 1000  # a refused route is logged at the first, then each 1000th
# Babel's output is sent this long after the input that caused it, so that a burst of
# updates (a neighbour's full table, a cold start) leaves as one packet per neighbour and one
# batch of route changes, not one per update received (babeld buffers for about 10 ms too).
FLUSH_DELAY_S = 0.02
MeteringMessage = messages.Claim | messages.ReceiptMessage | messages.ReceiptAck
RenewalMessage = messages.RenewRequest | messages.RenewGranted | messages.RenewRefused
# Failures that only say "not now by our clock": worth a look with the peer's clock.
TIME_REASONS = frozenset({"not_yet_valid", "expired", "delegation_not_yet_valid"})
# Sessions: a silent cut is noticed by WireGuard liveness within seconds, so the session
# itself can idle longer: one PING per 40 s of silence (from the dialler) keeps the
# control plane's cost per link low, and a cut of under two minutes keeps the session.
SESSION_SETTINGS = SessionSettings(
    idle_timeout=120.0, keepalive_interval=40.0, handshake_timeout=10.0
)
# Probes through each tunnel measure RTT and loss for the link cost, not liveness: one per
# 16 s each way keeps them near 10 B/s per link (overhead.control_bytes_per_link_s).
PROBE_PARAMS = LinkQualityParams(hello_interval_s=16.0)


class MeshClock:
    """The node's one wall clock, Unix seconds: the system's (plus ``test_offset_s``, which
    only tests set, to play a Pi with a stale clock), corrected by the neighbours' median
    once that is off by more than the tolerance (meshd.core.membership.clock)."""

    def __init__(self, tolerance_s: int = DEFAULT_SKEW_S, test_offset_s: float = 0.0) -> None:
        self.consensus = ClockConsensus(tolerance_s)
        self.test_offset_s = test_offset_s

    def local(self) -> float:
        """The system clock as this node reads it, uncorrected."""
        return time.time() + self.test_offset_s

    def now(self) -> float:
        return self.local() + self.consensus.correction()

    def report(self, peer: str, offset_s: float) -> None:
        if self.consensus.report(peer, offset_s):
            correction = self.consensus.correction()
            event(
                "clock.off" if correction else "clock.agrees",
                logging.WARNING if correction else logging.INFO,
                message=f"clock is off by {round(-correction)} s" if correction else "",
                correction_s=round(correction, 1),
                peers=len(self.consensus.offsets),
            )

    def status(self) -> dict[str, Any]:
        return {
            "now": round(self.now(), 3),
            "correction_s": round(self.consensus.correction(), 3),
            "median_offset_s": round(self.consensus.median(), 3),
            "peers": len(self.consensus.offsets),
            "tolerance_s": self.consensus.tolerance_s,
        }


class Source(StrEnum):
    """How we came to know an address of a node."""

    BOOTSTRAP = "bootstrap"  # the config (from the invite)
    BEACON = "beacon"  # heard on a shared segment
    SHARED = "shared"  # a neighbour told us (ENDPOINTS)
    SESSION = "session"  # a session came from (or reached) it


@dataclass(frozen=True)
class LinkSpec:
    """What the node needs to build the WireGuard link to a neighbour."""

    node_id: str
    name: str
    ifname: str
    wireguard_public: bytes
    endpoint: Address  # the neighbour's underlay address and WireGuard port
    listen_port: int  # ours
    mesh_ipv4: ipaddress.IPv4Address | None = None  # the neighbour's, from its certificate


class Links(Protocol):
    """The node's side: WireGuard links made from what the sessions say."""

    def link_port(self, node_id: str) -> int:
        """Our WireGuard port for the link to ``node_id`` (kept while its interface lives)."""
        ...

    def ensure_link(self, spec: LinkSpec) -> None: ...

    def remove_link(self, node_id: str) -> None: ...


@dataclass
class Candidate:
    source: Source
    dials: int = 0


@dataclass
class Peer:
    node_id: str
    name: str
    ifname: str
    bootstrap: bool = False
    addresses: dict[Address, Candidate] = field(default_factory=dict)
    session_up: bool = False
    session_verified: bool = False  # this session's MEMBERSHIP verified (a later one renews)
    session_addr: Address | None = None
    member: VerifiedMember | None = None
    credential: Credential | None = None
    wireguard_up: bool = False
    routing: bool = False  # a Babel link now
    own_port: int | None = None
    peer_port: int | None = None
    link: LinkSpec | None = None  # what the node was asked to build
    quality: LinkQuality | None = None  # RTT and loss over the tunnel, once it exists
    last_seen: float = 0.0
    session_since: float = 0.0
    next_dial: float = 0.0
    failed_dials: int = 0
    last_refusal: str | None = None
    joining: bool = False  # its session sent JOIN_REQUEST: join-only (meshd.join)
    # What it sent that we refused, by reason code: sessions closed and route updates
    # dropped (``meshd status`` neighbours' ``refusals``; DESIGN.md, trust).
    refusals: dict[str, int] = field(default_factory=dict)
    clock_offset: float | None = None  # its CLOCK minus our uncorrected clock, this session
    protocol: str | None = None  # the version its session up speaks (its ALPN id)
    # What it announced in CAPABILITIES that this build knows (meshd/2 on; empty before).
    features: frozenset[str] = field(default_factory=frozenset)
    awaiting_capabilities: bool = False  # a meshd/2 session up, its CAPABILITIES not yet in

    def state(self, liveness: str | None) -> str:
        """What status shows of it: ``up`` only when its tunnel carries packets
        (``liveness``, the node's reading of the tunnel; None: no tunnel) and its session
        is verified and routing; a tunnel alive without a session is still connecting."""
        if liveness is not None and liveness != "up":
            return liveness
        if liveness is not None and self.routing:
            return "up"
        return "connecting" if self.session_up or not self.last_refusal else "down"

    def count_refusal(self, reason: str) -> int:
        """One more thing it sent refused for ``reason``; how many so far."""
        self.refusals[reason] = count = self.refusals.get(reason, 0) + 1
        return count

    @property
    def session_state(self) -> SessionState:
        """Where its session is (meshd.core.session_policy): what it may send now."""
        if self.awaiting_capabilities:
            return SessionState.OPENING
        if self.joining:
            return SessionState.JOINING
        return SessionState.UNVERIFIED if self.member is None else SessionState.VERIFIED

    @property
    def is_neighbour(self) -> bool:
        """Listed as a neighbour: configured, talking to us, or holding a link; a
        candidate we were only told about is not one until a session comes up."""
        return self.bootstrap or (self.session_up and not self.joining) or self.link is not None


def router_id(node_id_bytes: bytes) -> bytes:
    """Babel router-id: 8 bytes of the node's key hash (RFC 8966 4.1.2: any unique id)."""
    return hashlib.sha256(node_id_bytes).digest()[:8]


def owner_of(member: VerifiedMember) -> Owner:
    """What routing needs of a member's certificate: its router-id and its addresses."""
    key = public_from_node_id(member.node_id)
    return Owner(member.node_id, router_id(key), (member.mesh_ipv4, member.mesh_ipv6), key)


def _shareable(host: str) -> bool:
    """An address worth telling another node about: routable beyond one link."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_link_local or ip.is_loopback or ip.is_multicast or ip.is_unspecified)


def _without_proof(tlv: TLV) -> TLV:
    """An Update as meshd/1 sends it: without its OriginSignature."""
    if isinstance(tlv, Update) and tlv.sub_tlvs:
        kept = tuple(s for s in tlv.sub_tlvs if not isinstance(s, OriginSignature))
        return replace(tlv, sub_tlvs=kept)
    return tlv


def forged(tlvs: list[TLV], own: bytes, add: int, understate: bool = False) -> list[TLV]:
    """TESTS ONLY (routing.test_forge_seqnos, test_understate_metrics): the relayed routes
    with newer seqnos than their originators gave them (their signatures kept), or at
    metric 0."""
    out: list[TLV] = []
    origin = None
    for tlv in tlvs:
        if isinstance(tlv, RouterId):
            origin = tlv.router_id
        elif isinstance(tlv, Update) and origin != own and not tlv.retraction:
            metric = 0 if understate else tlv.metric
            tlv = replace(tlv, seqno=seqno_add(tlv.seqno, add), metric=metric)
        out.append(tlv)
    return out


class ControlPlane:
    def __init__(
        self,
        node_id: str,
        credentials: NodeCredentials,
        own: OwnMembership,
        router: BabelRouter,
        links: Links,
        apply_routes: Callable[[list[RouteChange]], None],
        state_dir: Path,
        *,
        interface_prefix: str = "mw",
        bootstrap: tuple[tuple[str, Address, str], ...] = (),
        share_endpoints: bool = True,
        forget_after_s: float = 600.0,
        on_metering: Callable[[str, MeteringMessage], None] | None = None,
        on_join: Callable[[str, messages.JoinRequestMessage], None] | None = None,
        on_renewal: Callable[[str, RenewalMessage], None] | None = None,
        clock: MeshClock | None = None,
        protocols: tuple[str, ...] = messages.PROTOCOLS,
        signing_key: SigningKey | None = None,
        accept_unsigned: bool = False,
        forge_seqnos: int = 0,
        understate_metrics: bool = False,
        name_opening: NameOpening | None = None,
        now: float = 0.0,
    ) -> None:
        self.node_id, self.credentials, self.own = node_id, credentials, own
        # The versions we offer and accept, newest first (config control.protocols).
        self.session_settings = replace(SESSION_SETTINGS, alpn_protocols=protocols)
        self.clock = clock or MeshClock()
        self.router, self.links, self.apply_routes = router, links, apply_routes
        self.state_dir = state_dir
        self.interface_prefix = interface_prefix
        self.share_endpoints = share_endpoints
        self.forget_after_s = forget_after_s
        self.on_metering = on_metering  # claims and receipts (meshd.claims), from members
        self.on_join = on_join  # join requests from nodes without a certificate (meshd.join)
        self.on_renewal = on_renewal  # RENEW_* from verified neighbours (meshd.join)
        self.peers: dict[str, Peer] = {}
        self.gateways = GatewayTable()
        self.gateway_choice = Choice(None, (), False)
        self.own_advert: GatewayAdvert | None = None
        # Gateways that refused us an exit: (their reason, until when it is believed).
        self.gateway_refusals: dict[str, tuple[str, float]] = {}
        self._by_ifname: dict[str, Peer] = {}
        # Our underlay subnets: a shared endpoint elsewhere (beyond the uplink, or on a
        # link of the neighbour's we are not on) would only cost handshakes to nowhere.
        self.local_subnets: list[ipaddress.IPv4Network] = []
        self._next_enforce = now + ENFORCE_EVERY_S
        for peer_id, address, name in bootstrap:
            peer = self._peer(peer_id, now, name)
            peer.bootstrap = True
            peer.addresses[address] = Candidate(Source.BOOTSTRAP)
        self.transport: QuicTransport | None = None
        self.hellos: HelloSocket | None = None
        self.beacons: BeaconService | None = None
        self._saved_seqno = router.seqno
        self._flush_timer: asyncio.TimerHandle | None = None
        self.membership_message = _membership_message(own)
        # Our private name and its salt, shown to verified neighbours (NAME); None: our
        # certificate holds the name itself (meshd.core.membership.names).
        self.name_opening = name_opening
        # Whose routes are whose (meshd.core.routing.origin): Babel stores only what it passes.
        definition = own.trust.definition
        self.origins = OriginPolicy(
            definition.ipv4_prefix, definition.ipv6_prefix, accept_unsigned=accept_unsigned
        )
        self.origins.learn(owner_of(own.member))
        # Our seqnos, signed with our identity key (none given: our updates carry no proof,
        # as a unit test's control plane that never routes).
        self.signer = (
            OriginSigner(signing_key, router.router_id) if signing_key is not None else None
        )
        self.forge_seqnos = forge_seqnos  # config routing.test_forge_seqnos: tests only
        self.understate_metrics = understate_metrics  # routing.test_understate_metrics
        # Next hops that lose a destination's traffic (meshd.core.routing.progress), and what
        # was suspected of each: (destination, neighbour) -> the suspicion.
        self.progress = ProgressWatch()
        self.black_holes: dict[tuple[IPNetwork, str], Suspicion] = {}
        self._router_ids: dict[str, bytes] = {}  # neighbour node id -> its router-id
        router.check_origins(self.origins.refusal, self._seqno_refusal, self._proof)
        # Every member's certificate, so the origin check knows far members' addresses too.
        self.directory = Directory(own.trust)
        self.directory_sync = DirectorySync(self.directory)
        self._directory_saved = b""  # the digest of what the file holds (none: write it)
        self._load_directory()

    def renewed(self, own: OwnMembership) -> None:
        """Our renewed certificate (stored already): used from now on, on every session,
        and shown at once to every verified neighbour."""
        self.own = own
        self.membership_message = _membership_message(own)
        self._send_verified(self.membership_message, but=None)

    def _peer(self, node_id: str, now: float, name: str = "") -> Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            ifname = addressing.link_interface_name(self.interface_prefix, self.node_id, node_id)
            peer = Peer(node_id, name or node_id[:8], ifname, last_seen=now)
            self.peers[node_id] = peer
            self._by_ifname[ifname] = peer
        return peer

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        self.transport = await QuicTransport.listen(
            credentials=self.credentials,
            authorize=self.authorize,
            on_event=self.on_event,
            host=host,
            port=port,
            settings=self.session_settings,
        )
        event("control.listening", port=port)
        self.hellos = await HelloSocket.open(self.on_hello)

    async def start_beacons(
        self, signing_key: SigningKey, port: int, quic_port: int, interval_s: float
    ) -> None:
        state = BeaconState(
            mesh_id=self.own.trust.mesh_id,
            signing_key=signing_key,
            quic_port=quic_port,
            random=random.random,
            settings=BeaconSettings(interval_s=interval_s),
        )
        self.beacons = BeaconService(state, self.on_beacon, port=port)
        event("beacons.listening", port=port)

    async def set_underlay(
        self, underlays: list[Underlay], subnets: list[ipaddress.IPv4Network]
    ) -> None:
        """The segments to beacon on and their subnets (the node reads them from the kernel
        now and then): endpoints a neighbour shares are only tried on these subnets."""
        self.local_subnets = subnets
        if self.beacons is not None:
            before = self.beacons.sockets.interfaces
            opened = await self.beacons.set_interfaces(underlays)
            if opened != before:
                event("beacons.interfaces", interfaces=",".join(sorted(opened)) or "none")

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        if self.beacons is not None:
            self.beacons.close()
        if self.hellos is not None:
            self.hellos.close()
        if self.transport is not None:
            await self.transport.close("shutdown")

    # ---- finding neighbours ----------------------------------------------------------

    def discovered(self, node_id: str, address: Address, source: Source, now: float) -> None:
        """A node is at ``address`` (a beacon, or a neighbour said so): dial it if we have
        no session with it."""
        if node_id == self.node_id or self.revoked(node_id):
            return
        if node_id not in self.peers and len(self.peers) >= MAX_PEERS:
            return
        if any(p.session_up and p.session_addr == address for p in self.peers.values()):
            # A verified neighbour is there (or one we are talking to): a beacon's source
            # address is not signed, and dialling it for another node id would make that
            # neighbour take our dial for a restart and drop the session it has with us.
            return
        peer = self._peer(node_id, now)
        if source is Source.BEACON:
            peer.last_seen = now  # heard directly: it is there
        known = peer.addresses.get(address)
        if known is None:
            peer.addresses[address] = Candidate(source)
            event(
                "peer.discovered",
                peer=peer.name,
                address=format_endpoint(address),
                source=source.value,
            )
            if not peer.session_up:
                peer.next_dial = min(peer.next_dial, now)
        elif known.source is Source.SHARED and source is not Source.SHARED:
            known.source, known.dials = source, 0  # heard directly now: no longer rationed

    def on_beacon(self, ev: Discovered | Rejected) -> None:
        if isinstance(ev, Discovered):
            self.discovered(ev.node_id, ev.address, Source.BEACON, time.monotonic())

    # ---- link quality ----------------------------------------------------------------

    def on_hello(
        self, data: bytes, source: ipaddress.IPv6Address, ifname: str, arrived: float
    ) -> None:
        """A probe came through a neighbour's tunnel (only that neighbour can send there)."""
        peer = self._by_ifname.get(ifname)
        if peer is None or peer.quality is None:
            return
        try:
            tlvs = decode_packet(data)
        except BabelDecodeError as exc:
            event("hello.malformed", logging.DEBUG, peer=peer.name, reason=exc.reason)
            return
        # Timed at arrival in the kernel: the RTT is the path's, not the event loop's.
        if peer.quality.receive(tlvs, arrived).cost_changed:
            self._cost_changed(peer, time.monotonic())

    def _cost_changed(self, peer: Peer, now: float) -> None:
        assert peer.quality is not None
        if peer.routing:
            self.router.link_cost(peer.node_id, peer.quality.reported_cost, now)
            event("babel.link_cost", peer=peer.name, cost=peer.quality.reported_cost)
            self.flush()

    def _probe(self, peer: Peer, now: float) -> None:
        quality = peer.quality
        if quality is None or self.hellos is None:
            return
        if quality.check(now):
            self._cost_changed(peer, now)
        if now >= quality.next_send_at:
            packet = encode_packet(quality.build(now))
            self.hellos.send(packet, addressing.link_local(peer.node_id), peer.ifname)

    # ---- sessions --------------------------------------------------------------------

    def authorize(self, node_id: str) -> str | None:
        """At the QUIC handshake: any node not revoked (the certificate comes next)."""
        return self.admits(node_id, self.peers, MAX_PEERS)

    def admits(self, node_id: str, sessions: Collection[str], limit: int) -> str | None:
        """Why ``node_id`` may not open a session beside ``sessions`` (at most ``limit``),
        or None: the handshake check of every QUIC endpoint of a node (neighbours, exits,
        join relays)."""
        if node_id == self.node_id:
            return "own_node_id"
        if self.revoked(node_id):
            return "revoked"
        if node_id not in sessions and len(sessions) >= limit:
            return "too_many_peers"
        return None

    def revoked(self, node_id: str) -> bool:
        target = RevocationTarget.node(node_id)
        return self.own.trust.revocations.in_force(target, self.clock.now()) is not None

    def on_event(self, ev: PeerEvent) -> None:
        node_id = ev.peer_node_id or ""
        now = time.monotonic()
        if isinstance(ev.event, SessionUp) and node_id:
            self._session_up(self._peer(node_id, now), ev.addr, now, ev.event.protocol)
            return
        known = self.peers.get(node_id)
        if isinstance(ev.event, MessageReceived) and known is not None:
            self._on_message(known, ev.event.data, now)
        elif isinstance(ev.event, SessionClosed):
            self._session_closed(known, node_id, ev, ev.event)

    def _session_up(
        self, peer: Peer, addr: Address, now: float, protocol: str = messages.MESHD_1
    ) -> None:
        # A new session may replace the old one (the neighbour restarted): the handshake
        # proved the same key, so what verified stays, and the Babel link with it, until
        # the new session's certificate is checked (a link down would withdraw every
        # route through the neighbour for the second Babel takes to learn them again).
        peer.joining = False
        peer.clock_offset = None
        peer.session_up, peer.session_verified = True, False
        peer.session_addr = addr
        peer.session_since = now
        peer.last_seen = now
        peer.protocol, peer.features = protocol, frozenset()
        peer.awaiting_capabilities = protocol in messages.WITH_CAPABILITIES
        event("session.up", peer=peer.name, address=format_endpoint(addr), protocol=protocol)
        if peer.awaiting_capabilities:
            self._send(peer.node_id, messages.encode(messages.Capabilities(messages.FEATURES)))
        self._send(peer.node_id, messages.encode(clock_message(self.clock)))
        if self.own.trust.definition.serial > 1:
            definition = self.own.trust.definition.encode()
            self._send(peer.node_id, messages.encode(messages.MeshDefinitionMessage(definition)))
        self._send(peer.node_id, self.membership_message)

    def _session_closed(
        self, peer: Peer | None, node_id: str, ev: PeerEvent, closed: SessionClosed
    ) -> None:
        if peer is None or not ev.was_up:
            # A neighbour not there yet, or a half-open session pushed out by newer ones
            # (a flood would otherwise log at its own rate): nothing to warn about.
            silent = closed.reason in ("handshake_timeout", "evicted")
            event(
                "session.timeout" if silent else "session.refused",
                logging.INFO if silent else logging.WARNING,
                peer=peer.name if peer else node_id or "?",
                address=format_endpoint(ev.addr),
                reason=closed.reason,
                by_peer=closed.by_peer,
            )
            if peer is not None:
                peer.last_refusal = closed.reason
                peer.failed_dials += 1
                if closed.reason == VERSION_UNSUPPORTED:  # refused before it was up
                    peer.count_refusal(closed.reason)
            return
        event("session.down", peer=peer.name, reason=closed.reason)
        peer.failed_dials += 1  # reset once a session verifies: a refusing peer backs off
        peer.session_up = False
        peer.member, peer.credential = None, None
        peer.peer_port = None
        peer.joining = False
        peer.protocol, peer.features, peer.awaiting_capabilities = None, frozenset(), False
        self.directory_sync.peer_down(peer.node_id)
        peer.last_refusal = closed.reason
        self._reevaluate(peer, time.monotonic())
        if not (peer.bootstrap or peer.addresses or peer.link):
            self._drop(peer)  # a stranger that never verified: nothing to remember

    def _on_message(self, peer: Peer, data: bytes, now: float) -> None:
        try:
            msg = messages.decode(data)
            policy.check(SessionKind.NEIGHBOUR, peer.session_state, msg, peer.features)
        except BadInput as exc:  # the bytes, or the policy
            self._refuse(peer, exc.reason, exc.message)
            return
        if isinstance(msg, messages.Capabilities):
            # Names this build does not know are a newer node's: ignored.
            peer.features = frozenset(f for f in messages.FEATURES if f in msg.features)
            peer.awaiting_capabilities = False
        elif isinstance(msg, messages.Clock):
            peer.clock_offset = msg.unix_ms / 1000 - self.clock.local()
        elif isinstance(msg, messages.MeshDefinitionMessage):
            self._on_definition(peer, msg.definition)
        elif isinstance(msg, messages.Membership):
            if peer.session_verified:
                self._on_renewed_membership(peer, msg, now)
            else:
                self._on_membership(peer, msg, now)
        elif isinstance(msg, messages.JoinRequestMessage):
            self._on_join_request(peer, msg)
        else:
            peer.last_seen = now
            self._on_verified(peer, msg, now)

    def _on_verified(self, peer: Peer, msg: messages.SessionMessage, now: float) -> None:
        """A message the session policy lets only a verified neighbour send."""
        if isinstance(msg, messages.Link):
            peer.peer_port = msg.wireguard_port
            self._update_link(peer)
        elif isinstance(msg, messages.Endpoints):
            for ep in msg.endpoints:
                if self._on_our_segments(ep.host):
                    self.discovered(ep.node_id, (ep.host, ep.port), Source.SHARED, now)
        elif isinstance(msg, messages.Revocations):
            self._on_revocations(peer, msg.revocations)
        elif isinstance(msg, DirectoryMessage):
            self._on_directory(peer, msg, now)
        elif isinstance(msg, messages.Name):
            self._on_name(peer, msg)
        elif isinstance(msg, messages.Gateway):
            self._on_gateway(peer, msg.advert)
        elif isinstance(msg, MeteringMessage):
            if self.on_metering is not None:
                self.on_metering(peer.node_id, msg)
        elif isinstance(msg, RenewalMessage):
            if self.on_renewal is None:
                self._refuse(peer, "renewal_unavailable", "this node takes no renewals")
            else:
                self.on_renewal(peer.node_id, msg)
        elif isinstance(msg, messages.BabelPacket):
            try:
                tlvs = decode_packet_detail(msg.packet).tlvs
            except BabelDecodeError as exc:
                self._refuse(peer, f"babel_{exc.reason}", str(exc))
                return
            self.router.receive(peer.node_id, tlvs, now)
            self._flush_soon()

    def _on_name(self, peer: Peer, msg: messages.Name) -> None:
        """A neighbour shows its private name: shown once it opens the commitment its
        certificate holds; a name that does not is counted in its refusals (``bad_name``)
        and the session stays up."""
        assert peer.member is not None
        try:
            opening: NameOpening | None = NameOpening(msg.name, msg.salt)
        except ValueError:
            opening = None
        if opening is None or not opening.opens(peer.member.name):
            peer.count_refusal("bad_name")
            event("peer.bad_name", logging.WARNING, peer=peer.name)
            return
        peer.name = opening.name
        event("peer.named", peer=peer.node_id[:8], name=peer.name)

    def peer_supports(self, peer: str | Peer, feature: messages.Feature) -> bool:
        """Whether a neighbour (node id or Peer) announced ``feature`` on its session now:
        what every message kind or field newer than meshd/1 is sent on."""
        found = self.peers.get(peer) if isinstance(peer, str) else peer
        return found is not None and feature in found.features

    def _on_join_request(self, peer: Peer, msg: messages.JoinRequestMessage) -> None:
        """A node without a certificate asks to join: one request per session, from a
        session that showed no certificate, handed to ``on_join`` (meshd.join)."""
        if self.on_join is None:
            self._refuse(peer, "join_unavailable", "this node takes no join requests")
            return
        peer.joining = True
        where = format_endpoint(peer.session_addr) if peer.session_addr else "?"
        event("join.session", peer=peer.node_id[:8], address=where)
        self.on_join(peer.node_id, msg)

    def answer_join(
        self, node_id: str, answer: messages.JoinGranted | messages.JoinRefused
    ) -> bool:
        """The answer to a join request, on the join-only session it came from (if that is
        still up); the joining node closes it once it has read it."""
        peer = self.peers.get(node_id)
        if peer is None or not peer.joining or not peer.session_up:
            return False
        self._send(node_id, messages.encode(answer))
        return True

    def _check_member(
        self, peer: Peer, msg: messages.Membership
    ) -> tuple[VerifiedMember, Credential]:
        """The peer's certificate checked at the mesh's time. One that is not valid by our
        clock but verifies at the time the peer said it is (in CLOCK) gives our clock its
        offset first: that is how a node with a stale clock learns the time
        (meshd.core.membership.clock), if our own certificate is valid at that time too. A peer
        whose certificate is fine by our clock gives none, so a neighbour with a stale clock
        never drags a node with a good one along, and one whose certificate expired cannot
        turn our clock back to before we were certified."""
        try:
            return check_membership(msg, self.own, peer.node_id, self.clock.now())
        except Refusal as exc:
            if exc.reason not in TIME_REASONS or peer.clock_offset is None:
                raise
            offset = peer.clock_offset
            theirs = self.clock.local() + offset
            check_membership(msg, self.own, peer.node_id, theirs)
            try:  # a time at which we are no member is no time of our mesh
                verify_membership(self.own.certificate, self.own.chain, self.own.trust, theirs)
            except MembershipError:
                raise exc from None
            self.clock.report(peer.node_id, offset)
            return check_membership(msg, self.own, peer.node_id, self.clock.now())

    def _on_renewed_membership(self, peer: Peer, msg: messages.Membership, now: float) -> None:
        """A verified neighbour shows its certificate again: renewed. It must verify and be
        for the same keys; then it replaces the old one (re-checked every 10 s)."""
        try:
            member, credential = self._check_member(peer, msg)
        except Refusal as exc:
            self._refuse(peer, exc.reason, exc.message)
            return
        assert peer.member is not None
        if member.wireguard_public != peer.member.wireguard_public:
            self._refuse(peer, "changed_keys", "a renewed certificate with another WireGuard key")
            return
        peer.member, peer.credential = member, credential
        event("peer.renewed", peer=peer.name, valid_until=member.valid_until)
        self._learn_origin(member, now)
        self._add_to_directory(credential)
        self._update_link(peer)

    def _on_membership(self, peer: Peer, msg: messages.Membership, now: float) -> None:
        try:
            member, credential = self._check_member(peer, msg)
        except Refusal as exc:
            self._refuse(peer, exc.reason, exc.message)
            return
        peer.member, peer.credential = member, credential
        peer.session_verified = True
        self._learn_origin(member, now)
        self._add_to_directory(credential)
        if self.peer_supports(peer, messages.Feature.DIRECTORY):
            self._send_directory(self.directory_sync.peer_up(peer.node_id))
        peer.name = shown(member.name, member.node_id)  # a private name comes by NAME
        opening = self.name_opening
        if opening is not None and self.peer_supports(peer, messages.Feature.PRIVATE_NAMES):
            self._send(peer.node_id, messages.encode(messages.Name(opening.salt, opening.name)))
        if peer.session_addr is not None:  # where a verified member is: worth redialling
            candidate = peer.addresses.setdefault(peer.session_addr, Candidate(Source.SESSION))
            candidate.dials = 0
        peer.last_refusal = None
        peer.failed_dials = 0
        event(
            "peer.verified",
            peer=peer.name,
            issuer=member.issuer,
            valid_until=member.valid_until,
        )
        peer.own_port = self.links.link_port(peer.node_id)
        self._send(peer.node_id, messages.encode(messages.Link(peer.own_port)))
        if len(self.own.trust.revocations):
            records = tuple(r.encode() for r in self.own.trust.revocations)
            self._send(peer.node_id, messages.encode(messages.Revocations(records)))
        adverts = list(self.gateways.adverts.values())
        if self.own_advert is not None:
            adverts.append(self.own_advert)
        for advert in adverts:  # the newcomer learns the exits
            self._send(peer.node_id, messages.encode(messages.Gateway(advert.encode())))
        if self.share_endpoints:
            self._share_endpoints(peer)
        self._update_link(peer)
        self._reevaluate(peer, now)

    def _share_endpoints(self, newcomer: Peer) -> None:
        """Tell the newcomer where our other neighbours are, and them where it is."""
        known = [
            messages.Endpoint(p.node_id, p.session_addr[0], p.session_addr[1])
            for p in self.peers.values()
            if p is not newcomer
            and p.member is not None
            and p.session_addr is not None
            and _shareable(p.session_addr[0])
        ][: messages.MAX_ENDPOINTS]
        if known:
            self._send(newcomer.node_id, messages.encode(messages.Endpoints(tuple(known))))
        if newcomer.session_addr is None or not _shareable(newcomer.session_addr[0]):
            return
        host, port = newcomer.session_addr
        news = messages.encode(
            messages.Endpoints((messages.Endpoint(newcomer.node_id, host, port),))
        )
        self._send_verified(news, but=newcomer.node_id)

    def _on_our_segments(self, host: str) -> bool:
        if not _shareable(host):
            return False
        ip = ipaddress.ip_address(host)
        return any(ip in subnet for subnet in self.local_subnets)

    def _update_link(self, peer: Peer) -> None:
        """Build (or change) the WireGuard link once both ports and the key are known."""
        if (
            peer.member is None
            or peer.own_port is None
            or peer.peer_port is None
            or peer.session_addr is None
        ):
            return
        spec = LinkSpec(
            node_id=peer.node_id,
            name=peer.name,
            ifname=peer.ifname,
            wireguard_public=peer.member.wireguard_public,
            endpoint=(peer.session_addr[0], peer.peer_port),
            listen_port=peer.own_port,
            mesh_ipv4=peer.member.mesh_ipv4,
        )
        if spec != peer.link:
            peer.link = spec
            self.links.ensure_link(spec)

    def _refuse(self, peer: Peer, reason: str, detail: str) -> None:
        """Bad input from a peer closes that session only, with the reason logged."""
        event("session.refused", logging.WARNING, peer=peer.name, reason=reason, detail=detail)
        peer.last_refusal = reason
        peer.count_refusal(reason)
        if self.transport is not None:
            self.transport.close_peer(peer.node_id, reason)

    # ---- gateways --------------------------------------------------------------------

    def _on_gateway(self, peer: Peer, data: bytes) -> None:
        """A gateway advert, flooded: keep the newest of each gateway, pass it on once."""
        try:
            advert = decode_advert(data)
        except GatewayError as exc:
            # Relayed, so not necessarily the sender's fault: drop it, keep the session.
            event("gateway.rejected", logging.WARNING, peer=peer.name, reason=str(exc.reason))
            return
        if advert.mesh_id != self.own.trust.mesh_id or self.revoked(advert.node_id):
            return
        if advert.node_id == self.node_id or not self.gateways.offer(advert, self.clock.now()):
            return
        event(
            "gateway.advert",
            gateway=advert.node_id[:8],
            available=advert.available,
            accepts_new=advert.accepts_new,
            seqno=advert.seqno,
        )
        self._send_verified(messages.encode(messages.Gateway(data)), but=peer.node_id)

    def originate_gateway(self, advert: GatewayAdvert) -> None:
        """Our own advert (sharing our uplink, or withdrawing it): to every neighbour."""
        self.own_advert = advert
        event(
            "gateway.announced",
            available=advert.available,
            accepts_new=advert.accepts_new,
            seqno=advert.seqno,
        )
        self._send_verified(messages.encode(messages.Gateway(advert.encode())), but=None)

    def choose_gateway(self) -> None:
        """Pick the exit from the adverts and Babel's metrics to the gateways (each tick)."""
        if not self.gateways.adverts and self.gateway_choice.selected is None:
            return  # nothing to choose from, and nothing chosen
        selected = self.router.selected()
        metrics = {}
        for node_id, advert in self.gateways.adverts.items():
            route = selected.get(ipaddress.ip_network(f"{advert.mesh_ipv4}/32"))
            if route is not None:
                metrics[node_id] = route.metric
        now = time.monotonic()
        refused = {g: r for g, (r, until) in self.gateway_refusals.items() if now < until}
        self.gateway_refusals = {g: self.gateway_refusals[g] for g in refused}
        self.gateway_choice = self.gateways.choose(metrics, self.clock.now(), refused)
        if self.gateway_choice.changed:
            event("gateway.selected", gateway=(self.gateway_choice.selected or "none")[:8])

    def gateway_status(self) -> dict[str, Any]:
        """The exit this node would take and why (DESIGN.md status ``gateway``)."""
        return {
            "selected": self.gateway_choice.selected,
            "candidates": [
                {
                    "node_id": c.node_id,
                    "metric": c.metric,
                    "usable": c.usable,
                    "reason": c.reason,
                    **_terms(advert),
                }
                for c in self.gateway_choice.candidates
                if (advert := self.gateways.adverts.get(c.node_id)) is not None
            ],
        }

    # ---- mesh definitions (admin rotation) -------------------------------------------

    def _on_definition(self, peer: Peer, data: bytes) -> None:
        try:
            self.adopt_definition(MeshDefinition.decode(data), learned_from=peer.node_id)
        except MembershipError as exc:
            # Relayed like revocations: not necessarily the sender's fault; keep the session.
            event("mesh.definition_rejected", logging.WARNING, peer=peer.name, reason=str(exc))

    def adopt_definition(self, newer: MeshDefinition, learned_from: str | None = None) -> bool:
        """A mesh definition gossiped or handed in (``meshd admin-key rotate``): True when
        it was newer and is now ours (stored, spread, every neighbour checked again under
        it); False when we hold it already; MembershipError when it may not follow ours."""
        trust = adopt_successor(self.own.trust, newer)
        if trust is None:
            return False
        chain = load_chain(self.state_dir) or [self.own.trust.definition]
        save_chain(self.state_dir, [*chain, newer])
        save_joined(self.state_dir, newer, self.own.certificate, None)
        self.own = OwnMembership(
            trust, self.own.certificate, self.own.chain, self.own.delegation, self.own.member
        )
        save_revocations(self.state_dir, trust.revocations)
        event("mesh.definition_adopted", serial=newer.serial, admins=len(newer.admins))
        message = messages.encode(messages.MeshDefinitionMessage(newer.encode()))
        for peer in self.peers.values():
            if peer.session_up and peer.node_id != learned_from:
                self._send(peer.node_id, message)
        self.enforce_membership(time.monotonic())
        return True

    # ---- revocations -----------------------------------------------------------------

    def add_revocation_records(self, records: list[bytes]) -> dict[str, int]:
        """Revocations handed in locally (the control API): all must verify, or none is
        taken and the first that does not raises MembershipError."""
        parsed = []
        for record in records:
            revocation = Revocation.decode(record)
            self.own.trust.revocations.check(revocation)
            parsed.append(revocation)
        fresh = [r for r in parsed if self.own.trust.revocations.add(r)]
        if fresh:
            self.add_revocations(fresh)
        return {"added": len(fresh), "known": len(parsed) - len(fresh)}

    def _on_revocations(self, peer: Peer, records: tuple[bytes, ...]) -> None:
        fresh: list[Revocation] = []
        for record in records:
            try:
                revocation = Revocation.decode(record)
                if self.own.trust.revocations.add(revocation):
                    fresh.append(revocation)
            except MembershipError as exc:
                # One bad record does not poison the rest, nor the session: a neighbour
                # may relay what it could not check as well as we can (another mesh).
                event("revocation.rejected", logging.WARNING, peer=peer.name, reason=str(exc))
        if fresh:
            self.add_revocations(fresh, learned_from=peer.node_id)

    def add_revocations(self, fresh: list[Revocation], learned_from: str | None = None) -> None:
        """Revocations new to us (already in the set): persist, spread, enforce."""
        save_revocations(self.state_dir, self.own.trust.revocations)
        message = messages.encode(messages.Revocations(tuple(r.encode() for r in fresh)))
        for revocation in fresh:
            event("revocation.learned", target=revocation.target.describe())
        self._send_verified(message, but=learned_from)
        self.enforce_membership(time.monotonic())

    def enforce_membership(self, now: float) -> None:
        """Drop neighbours whose certificate no longer verifies (revoked, expired), with
        their session and link; a revoked node we only know of is forgotten too."""
        wall = self.clock.now()
        for peer in list(self.peers.values()):
            reason = "revoked" if self.revoked(peer.node_id) else None
            if reason is None and peer.credential is not None:
                try:
                    verify_membership(*peer.credential, self.own.trust, wall)
                except MembershipError as exc:
                    reason = str(exc.reason)
            if reason is None:
                continue
            event("peer.dropped", logging.WARNING, peer=peer.name, reason=reason)
            if reason == "revoked":
                self.origins.forget(peer.node_id)
            if peer.session_up and self.transport is not None:
                self.transport.close_peer(peer.node_id, reason)
            peer.session_up, peer.member, peer.credential = False, None, None
            self._reevaluate(peer, now)
            peer.bootstrap = False  # never dialled again
            self._forget(peer)
        for node_id in self.directory.prune(wall):  # expired or revoked
            event("directory.dropped", node=node_id[:8])
            if node_id != self.node_id:
                self.origins.forget(node_id)
        self.router.revalidate(now)
        self._next_enforce = now + ENFORCE_EVERY_S

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
                    PROBE_PARAMS, now=now, initial_seqno=random.randrange(1 << 16)
                )
            self._reevaluate(peer, now)

    def _reevaluate(self, peer: Peer, now: float) -> None:
        routing = peer.session_up and peer.member is not None and peer.wireguard_up
        if routing == peer.routing:
            return
        peer.routing = routing
        if routing:
            cost = peer.quality.reported_cost if peer.quality else LINK_COST
            self.router.link_up(peer.node_id, cost, now)
        else:
            self.router.link_down(peer.node_id, now)
        event("babel.link_" + ("up" if routing else "down"), peer=peer.name)
        self.flush()

    def _forget(self, peer: Peer) -> None:
        """Remove the peer's link; a bootstrap peer stays known (and dialled)."""
        if peer.link is not None:
            self.links.remove_link(peer.node_id)
            peer.link = None
        peer.own_port = peer.peer_port = None
        peer.quality = None
        if not peer.bootstrap:
            self._drop(peer)

    def _drop(self, peer: Peer) -> None:
        del self.peers[peer.node_id]
        self._by_ifname.pop(peer.ifname, None)

    # ---- time ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now >= self._next_enforce:
            self.enforce_membership(now)
        for peer in list(self.peers.values()):
            self._probe(peer, now)
            if peer.joining and now - peer.session_since > JOIN_S:
                self._refuse(peer, "join_timeout", f"a join-only session for {JOIN_S:.0f} s")
            elif (
                peer.session_up
                and peer.member is None
                and not peer.joining
                and now - peer.session_since > VERIFY_S
            ):
                self._refuse(peer, "not_verified", f"no valid certificate within {VERIFY_S:.0f} s")
            if peer.session_up or peer.routing:
                peer.last_seen = now
                continue
            if peer.wireguard_up:
                peer.last_seen = now
            if now - peer.last_seen > self.forget_after_s:
                event("peer.forgotten", peer=peer.name, silent_s=round(now - peer.last_seen))
                self._forget(peer)
                continue
            if self.transport is not None and now >= peer.next_dial:
                self._dial(peer, now)
        self.router.tick(now)
        self.flush()
        self.choose_gateway()
        self._send_directory(self.directory_sync.tick(now))
        self._save_directory()

    def _dial(self, peer: Peer, now: float) -> None:
        """Both ends dial while they have no session (a restarted node cannot wait for its
        neighbour's idle timeout); the transport keeps one session. Addresses we were only
        told about get a few tries; the others are tried for as long as they are known."""
        for address, candidate in list(peer.addresses.items()):
            if candidate.source is Source.SHARED and candidate.dials >= SHARED_TRIES:
                del peer.addresses[address]
        if not peer.addresses:
            if not peer.bootstrap and peer.link is None:
                self._drop(peer)
            return
        address, candidate = min(peer.addresses.items(), key=lambda item: item[1].dials)
        candidate.dials += 1
        backoff = REDIAL_S * 2 ** min(peer.failed_dials, 8)
        peer.next_dial = now + min(backoff, REDIAL_MAX_S)
        assert self.transport is not None
        self.transport.dial(address, expected_node_id=peer.node_id)

    def _flush_soon(self) -> None:
        """``flush`` after FLUSH_DELAY_S (once for everything that arrives meanwhile)."""
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self.flush)

    def flush(self) -> None:
        """Send Babel's queued packets, apply its route changes, persist its seqno."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for node_id, tlvs in self.router.drain_outgoing():
            peer = self.peers.get(node_id)
            if tlvs and peer is not None and peer.session_up:
                if not self.peer_supports(peer, messages.Feature.SIGNED_ROUTES):
                    tlvs = [_without_proof(t) for t in tlvs]  # meshd/1's wire format
                if self.forge_seqnos or self.understate_metrics:
                    own = self.router.router_id
                    tlvs = forged(tlvs, own, self.forge_seqnos, self.understate_metrics)
                packet = encode_packet(tlvs)
                self._send(node_id, messages.encode(messages.BabelPacket(packet)))
        for refused in self.router.drain_refused():
            self._route_refused(refused)
        changes = self.router.drain_route_changes()
        if changes:
            self.apply_routes(changes)
        if self.router.seqno != self._saved_seqno:
            self._save_seqno(self.router.seqno)

    def _seqno_refusal(
        self,
        neighbour: str,
        prefix: ipaddress.IPv4Network | ipaddress.IPv6Network,
        origin: bytes,
        seqno: int,
        proof: OriginSignature | None,
    ) -> str | None:
        """Babel's seqno check (meshd.core.routing.origin): judged by our mesh clock; a
        neighbour's own routes need no proof (its session is its certificate)."""
        own_id = self._router_ids.get(neighbour)
        if own_id is None:
            own_id = self._router_ids[neighbour] = router_id(public_from_node_id(neighbour))
        return self.origins.seqno_refusal(
            prefix, origin, seqno, proof, self.clock.now(), from_originator=origin == own_id
        )

    def _proof(
        self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network, origin: bytes, seqno: int
    ) -> OriginSignature | None:
        """What to send with an Update of (prefix, origin, seqno): our signature for our
        own routes, else the originator's as we verified it."""
        if origin == self.router.router_id:
            return self.signer.proof(prefix, seqno, self.clock.now()) if self.signer else None
        return self.origins.proof(prefix, origin, seqno)

    def _learn_origin(self, member: VerifiedMember, now: float) -> None:
        """A certificate verified: its addresses are its own from now on, and routes to
        them that another origin announced go at the next flush (meshd.core.routing.origin)."""
        self.origins.learn(owner_of(member))
        self.router.revalidate(now)

    # ---- the certificate directory ------------------------------------------------------

    def _load_directory(self) -> None:
        """Start from the stored directory (what no longer verifies is left out) and our
        own certificate."""
        path = self.state_dir / DIRECTORY_FILE
        refused: list[DirectoryError] = []
        try:
            refused = self.directory.load(path.read_bytes(), self.clock.now())
        except FileNotFoundError:
            pass
        except (OSError, DirectoryError) as exc:
            event("directory.unreadable", logging.WARNING, path=str(path), error=str(exc))
        self._add_to_directory((self.own.certificate, self.own.chain))
        for member in self.directory.members():
            if member.node_id != self.node_id:
                self.origins.learn(owner_of(member))
        event("directory.loaded", members=len(self.directory), left_out=len(refused))

    def _save_directory(self) -> None:
        """The file again, once the set changed (its digest is cached until it does)."""
        digest = self.directory.digest()
        if digest != self._directory_saved:
            write_atomically(self.state_dir / DIRECTORY_FILE, self.directory.encode())
            self._directory_saved = digest

    def _add_to_directory(self, credential: Credential) -> None:
        """A certificate that verified on a session (a neighbour's, or ours) goes into
        the directory too, and from there to every neighbour."""
        try:
            added, _ = self.directory.add(Entry(*credential), self.clock.now())
        except DirectoryError as exc:
            event("directory.refused", logging.WARNING, reason=exc.reason, detail=exc.message)
            return
        if added is not Added.KNOWN:
            self._send_directory(self.directory_sync.changed())

    def _on_directory(self, peer: Peer, msg: DirectoryMessage, now: float) -> None:
        """Reconciliation with a neighbour that announced the feature
        (meshd.core.membership.directory_sync); entries that do not verify are counted in its
        refusals and the session stays up."""
        try:
            if isinstance(msg, messages.DirectoryDigest):
                self._send_directory(self.directory_sync.on_digest(peer.node_id, msg, now))
            elif isinstance(msg, messages.DirectoryFingerprints):
                self._send_directory(self.directory_sync.on_fingerprints(peer.node_id, msg))
            else:
                learned, refused = self.directory_sync.on_entries(
                    peer.node_id, msg, self.clock.now()
                )
                for error in refused:
                    reason = f"directory_{error.reason}"
                    peer.count_refusal(reason)
                for member in learned:  # one revalidation for the batch, not one each
                    self.origins.learn(owner_of(member))
                if learned:
                    self.router.revalidate(now)
                    event("directory.learned", peer=peer.name, members=len(learned))
                    self._send_directory(self.directory_sync.changed())
        except DirectoryError as exc:
            self._refuse(peer, f"directory_{exc.reason}", exc.message)

    def _send_directory(self, outgoing: list[tuple[str, DirectoryMessage]]) -> None:
        for node_id, message in outgoing:
            if self.peer_supports(node_id, messages.Feature.DIRECTORY):
                self._send(node_id, messages.encode(message))

    def observe_progress(self, flows: list[FlowSample], now: float) -> None:
        """A reading of the flows to mesh addresses: a next hop that loses a destination's
        traffic is kept out of its routes for a penalty, when another route is there."""
        next_hops = {
            prefix: chosen.next_hop
            for prefix, chosen in self.router.selected().items()
            if chosen.next_hop is not None
        }
        penalized = {(p, n) for p, n, _ in self.router.penalties()}
        for key in [k for k in self.black_holes if k not in penalized]:
            del self.black_holes[key]
        penalized_now = False
        for suspicion in self.progress.observe(flows, next_hops, now):
            peer = self.peers.get(suspicion.next_hop)
            until = now + suspicion.penalty_s
            if not self.router.penalize(suspicion.destination, suspicion.next_hop, until, now):
                continue  # no other way there: the destination itself may be down
            self.black_holes[(suspicion.destination, suspicion.next_hop)] = suspicion
            event(
                "route.black_hole",
                logging.WARNING,
                peer=peer.name if peer is not None else suspicion.next_hop[:8],
                destination=str(suspicion.destination),
                reason="no_progress",
                unanswered=suspicion.unanswered,
                penalty_s=round(suspicion.penalty_s),
            )
            penalized_now = True
        if penalized_now:
            self.flush()  # the route changes, at once

    def black_hole_status(self) -> list[dict[str, Any]]:
        """``meshd status``'s ``black_holes``: the next hops kept out of a destination's
        routes now because its traffic got no answer through them."""
        out = []
        for prefix, neighbour, until in self.router.penalties():
            suspicion = self.black_holes.get((prefix, neighbour))
            peer = self.peers.get(neighbour)
            out.append(
                {
                    "destination": str(prefix),
                    "via": neighbour,
                    "name": peer.name if peer is not None else "",
                    "reason": "no_progress",
                    "unanswered": suspicion.unanswered if suspicion else 0,
                    "for_s": round(until - time.monotonic(), 1),
                }
            )
        return out

    def origin_status(self) -> dict[str, Any]:
        """``meshd status``'s ``origins``: route updates held for an unknown origin, and
        the origin signatures made and checked (meshd.core.routing.origin)."""
        return {
            "unsigned_routes": "accept" if self.origins.accept_unsigned else "refuse",
            "held": self.router.held(),
            "signed": self.signer.signed if self.signer is not None else 0,
            "verified": self.origins.verified,
        }

    def directory_status(self) -> dict[str, Any]:
        """``meshd status``'s ``directory``: how many members it knows, and its digest
        (the same on two nodes exactly when they know the same certificates)."""
        return {"members": len(self.directory), "digest": self.directory.digest().hex()}

    def _route_refused(self, refused: RefusedUpdate) -> None:
        """A route update the origin check refused: counted for the neighbour, and said
        at the first of each reason (a flood is counted, not logged line by line)."""
        peer = self.peers.get(refused.neighbour)
        if peer is None:
            return
        count = peer.count_refusal(refused.reason)
        if count == 1 or count % ROUTE_REFUSALS_LOGGED_EVERY == 0:
            event(
                "route.refused",
                logging.WARNING,
                peer=peer.name,
                reason=refused.reason,
                prefix=str(refused.prefix),
                router_id=refused.router_id.hex(),
                count=count,
            )

    def _send_verified(self, data: bytes, but: str | None) -> None:
        """To every neighbour whose certificate verified, except ``but`` (the one a flooded
        message came from)."""
        for p in self.peers.values():
            if p.node_id != but and p.member is not None:
                self._send(p.node_id, data)

    def send_to_member(self, node_id: str, message: messages.SessionMessage) -> bool:
        """Send to a neighbour whose certificate verified (on its current session, or on
        the one that session replaced: the handshake proved the same key)."""
        peer = self.peers.get(node_id)
        if peer is None or peer.member is None:
            return False
        self._send(node_id, messages.encode(message))
        return True

    def _send(self, node_id: str, data: bytes) -> None:
        if self.transport is not None and (why := self.transport.try_send(node_id, data)):
            event("session.send_failed", logging.DEBUG, peer=node_id, error=why)

    # ---- persistence -----------------------------------------------------------------

    def _save_seqno(self, seqno: int) -> None:
        """RFC 8966 3.5.4: a node that forgets its seqno is shunned until sources expire."""
        path = self.state_dir / SEQNO_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{seqno}\n")
        os.replace(tmp, path)
        self._saved_seqno = seqno

    # ---- status ----------------------------------------------------------------------

    def neighbour_status(self, peer: Peer) -> dict[str, Any]:
        return {
            "session": "up" if peer.session_up else "down",
            "address": format_endpoint(peer.session_addr) if peer.session_addr else None,
            "verified": peer.member is not None,
            "routing": peer.routing,
            "refusal": peer.last_refusal,
            "found_by": sorted({c.source.value for c in peer.addresses.values()}),
            "protocol": peer.protocol,
            "features": sorted(str(f) for f in peer.features),
        }


Credential = tuple[MembershipCertificate, tuple[DelegationCertificate, ...]]


def _membership_message(own: OwnMembership) -> bytes:
    chain = b"".join(d.encode() for d in own.chain)
    return messages.encode(messages.Membership(own.certificate.encode(), chain))


def clock_message(clock: MeshClock) -> messages.Clock:
    """What we tell a peer first: our corrected time, so that a node that learned the time
    passes it on (and one with a stale clock does not spread its own)."""
    return messages.Clock(max(0, int(clock.now() * 1000)))


def check_membership(
    msg: messages.Membership | messages.RenewRequest,
    own: OwnMembership,
    node_id: str,
    now: float,
) -> tuple[VerifiedMember, Credential]:
    """The peer's certificate (and delegation) verified against our mesh at ``now`` (the
    mesh's time, every session's), for the node id its session authenticated; Refusal
    with the reason otherwise."""
    try:
        cert, chain = decode_credential(msg)
        member = verify_membership(cert, chain, own.trust, now)
    except MembershipError as exc:  # malformed, or does not verify
        raise Refusal(str(exc.reason), exc.message) from None
    if member.node_id != node_id:
        raise Refusal("wrong_node_id", f"certificate for {member.node_id}")
    return member, (cert, chain)


def decode_credential(msg: messages.CertificateMessage) -> Credential:
    """The certificate and chain a message carries, parsed (MembershipError if not)."""
    cert = MembershipCertificate.decode(msg.certificate)
    chain = (DelegationCertificate.decode(msg.delegation),) if msg.delegation else ()
    return cert, chain


def _terms(advert: GatewayAdvert) -> dict[str, Any]:
    return {
        "mesh_ipv4": str(advert.mesh_ipv4),
        "available": advert.available,
        "accepts_new": advert.accepts_new,
        "rate_cap_kbit": advert.rate_cap_kbit or None,
    }


def load_seqno(state_dir: Path) -> int:
    try:
        value = int((state_dir / SEQNO_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return int.from_bytes(os.urandom(2), "big")
    return value & 0xFFFF
