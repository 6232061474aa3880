"""The control plane's shell: the asyncio side of ``meshd.core.control.plane.ControlPlane``,
and how the node builds the two (``build_control``).

It owns the QUIC transport, the probe socket, the beacons and the one timer; it turns
their events into the plane's inputs (with ``now`` from the monotonic clock), then does
what the plane asked (``drain``: sends, closes, dials, probes, links, routes, files, and
the messages for the metering, join and renewal services) and re-arms the timer, as
aioquic's ``asyncio/protocol.py`` does around its connection. Every method that feeds the
plane ends in ``_run``; what only reads the plane's state reads ``core``."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from nacl.signing import SigningKey

from meshd.adapters import trust
from meshd.adapters.beacon_socket import BeaconService, Underlay
from meshd.adapters.identity import Identity
from meshd.adapters.net.hello_socket import HelloSocket
from meshd.adapters.quic import PeerEvent, QuicTransport
from meshd.adapters.trust import (
    load_chain,
    save_chain,
    save_clock_floor,
    save_joined,
    save_proposals,
    save_revocations,
    write_atomically,
)
from meshd.config import Config
from meshd.core import addressing
from meshd.core.control import effects as fx
from meshd.core.control.peer import LinkSpec, Source
from meshd.core.control.plane import ControlPlane
from meshd.core.control.routes import router_id
from meshd.core.discovery.beacons import BeaconSettings, BeaconState, Discovered, Rejected
from meshd.core.endpoints import Address
from meshd.core.errors import BadInput
from meshd.core.invites import BootstrapEndpoint
from meshd.core.membership import (
    Cosigned,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    OwnMembership,
)
from meshd.core.membership.clock import MeshClock
from meshd.core.membership.proposals import Proposal
from meshd.core.proto import session as messages
from meshd.core.proto.gateway import GatewayAdvert
from meshd.core.proto.session import MESHD_2
from meshd.core.routing.babel import BabelParams, BabelRouter, RouteChange
from meshd.core.routing.progress import FlowSample
from meshd.core.transport.certs import NodeCredentials, node_certificate
from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.core.transport.session import SessionSettings
from meshd.daemon import community_map
from meshd.daemon.links import KernelLinks
from meshd.log import event

SEQNO_FILE = "babel-seqno"
DIRECTORY_FILE = "directory"  # every member's certificate (meshd.core.membership.directory)
# Sessions: a silent cut is noticed by WireGuard liveness within seconds, so the session
# itself can idle longer: one PING per 40 s of silence (from the dialler) keeps the
# control plane's cost per link low, and a cut of under two minutes keeps the session.
SESSION_SETTINGS = SessionSettings(
    idle_timeout=120.0, keepalive_interval=40.0, handshake_timeout=10.0
)


class Links(Protocol):
    """The node's side: WireGuard links made from what the sessions say."""

    def link_port(self, node_id: str) -> int | None:
        """Our WireGuard port for the link to ``node_id`` (kept while its interface lives);
        None when the range has none free."""
        ...

    def ensure_link(self, spec: LinkSpec) -> None: ...

    def remove_link(self, node_id: str) -> None: ...


MeteringHandler = Callable[[str, fx.MeteringMessage], None]
JoinHandler = Callable[[str, messages.JoinRequestMessage], None]
RenewalHandler = Callable[[str, fx.RenewalMessage], None]
ReleaseHandler = Callable[[str, fx.ReleaseMessage], None]


class ControlService:
    def __init__(
        self,
        core: ControlPlane,
        credentials: NodeCredentials,
        links: Links,
        apply_routes: Callable[[list[RouteChange]], None],
        state_dir: Path,
        *,
        protocols: tuple[str, ...] = messages.PROTOCOLS,
        on_metering: MeteringHandler | None = None,
    ) -> None:
        self.core, self.credentials, self.links = core, credentials, links
        self.apply_routes, self.state_dir = apply_routes, state_dir
        # The versions we offer and accept, newest first (config control.protocols).
        self.session_settings = replace(SESSION_SETTINGS, alpn_protocols=protocols)
        self.on_metering = on_metering  # claims and receipts (meshd.daemon.claims), from members
        self._on_join: JoinHandler | None = None
        self._on_renewal: RenewalHandler | None = None
        self.on_release: ReleaseHandler | None = None  # meshd.daemon.releases
        self._transport: QuicTransport | None = None
        self.hellos: HelloSocket | None = None
        self.beacons: BeaconService | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._run()  # what loading asked for (the directory, once it changed)

    # ---- what the plane hands on, and to whom -----------------------------------------

    @property
    def transport(self) -> QuicTransport | None:
        return self._transport

    @transport.setter
    def transport(self, transport: QuicTransport | None) -> None:
        self._transport = transport
        self.core.neighbours.dialling = transport is not None

    @property
    def on_join(self) -> JoinHandler | None:
        """Join requests from nodes without a certificate (meshd.daemon.joins); None: refused."""
        return self._on_join

    @on_join.setter
    def on_join(self, handler: JoinHandler | None) -> None:
        self._on_join = handler
        self.core.takes_joins = handler is not None

    @property
    def on_renewal(self) -> RenewalHandler | None:
        """RENEW_* from verified neighbours (meshd.daemon.joins); None: refused."""
        return self._on_renewal

    @on_renewal.setter
    def on_renewal(self, handler: RenewalHandler | None) -> None:
        self._on_renewal = handler
        self.core.takes_renewals = handler is not None

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int, mark: int | None = None) -> None:
        """Sessions on the underlay at ``host:port``. ``mark``: the exit tunnel's own mark,
        so that a dial to an address that is not on a shared segment or link (a bootstrap
        endpoint of the invite, an address a neighbour told of) never leaves by the exit
        tunnel, whose default route would carry it into the mesh and out of a gateway's
        uplink (seen in the VM tier: a household without an uplink sent about 5 kB/s of
        QUIC handshakes to its invite's other endpoints that way)."""
        self.transport = await QuicTransport.listen(
            credentials=self.credentials,
            authorize=self.core.authorize,
            on_event=self.on_event,
            host=host,
            port=port,
            settings=self.session_settings,
            verifies=True,  # strangers reach this port: until a certificate verifies, capped
            mark=mark,
        )
        self.core.neighbours.session_port = port
        event("control.listening", port=port)
        self.hellos = await HelloSocket.open(self.on_hello)
        self.core.neighbours.probing = True

    async def start_beacons(
        self, signing_key: SigningKey, port: int, quic_port: int, interval_s: float
    ) -> None:
        state = BeaconState(
            mesh_id=self.core.own.trust.mesh_id,
            signing_key=signing_key,
            quic_port=quic_port,
            random=random.random,
            settings=BeaconSettings(interval_s=interval_s),
        )
        self.beacons = BeaconService(state, self.on_beacon, port=port)
        event("beacons.listening", port=port)

    async def set_underlay(
        self,
        underlays: list[Underlay],
        subnets: list[ipaddress.IPv4Network],
        internet: bool,
        home: list[ipaddress.IPv4Interface],
    ) -> None:
        """The segments to beacon on, their subnets, whether we have an uplink and our
        addresses on it (the node reads them from the kernel now and then): endpoints a
        neighbour shares are only tried on these subnets and the uplink's own networks,
        and on the internet with an uplink; where we are on the uplink's network, when it
        is no internet address, is what we tell neighbours besides (meshd.core.control)."""
        self.core.neighbours.set_subnets(subnets, internet, home)
        if self.beacons is not None:
            before = self.beacons.sockets.interfaces
            opened = await self.beacons.set_interfaces(underlays)
            if opened != before:
                event("beacons.interfaces", interfaces=",".join(sorted(opened)) or "none")

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self.beacons is not None:
            self.beacons.close()
        if self.hellos is not None:
            self.hellos.close()
            self.core.neighbours.probing = False
        if self.transport is not None:
            await self.transport.close("shutdown")

    # ---- inputs ----------------------------------------------------------------------

    def on_event(self, ev: PeerEvent) -> None:
        node_id, now = ev.peer_node_id or "", time.monotonic()
        if isinstance(ev.event, SessionUp) and node_id:
            self.core.session_up(node_id, ev.addr, ev.event.protocol, now)
        elif isinstance(ev.event, MessageReceived):
            self.core.session_message(node_id, ev.event.data, now)
        elif isinstance(ev.event, SessionClosed):
            closed = ev.event
            self.core.session_closed(
                node_id, ev.addr, closed.reason, closed.by_peer, ev.was_up, now
            )
        self._run()

    def on_beacon(self, ev: Discovered | Rejected) -> None:
        if isinstance(ev, Discovered):
            self.discovered(ev.node_id, ev.address, Source.BEACON, time.monotonic())

    def on_hello(
        self, data: bytes, source: ipaddress.IPv6Address, ifname: str, arrived: float
    ) -> None:
        self.core.neighbours.on_probe(data, ifname, arrived, time.monotonic())
        self._run()

    def tick(self, now: float) -> None:
        self.core.tick(now)
        self._run()
        self.core.probe(time.monotonic())  # last, stamped as they leave
        self._run()

    def flush(self) -> None:
        self.core.flush()
        self._run()

    def discovered(
        self, node_id: str, address: tuple[str, int], source: Source, now: float
    ) -> None:
        self.core.neighbours.discovered(node_id, address, source, now)
        self._run()

    def wireguard_state(self, node_id: str, up: bool, now: float) -> None:
        self.core.neighbours.wireguard_state(node_id, up, now)
        self._run()

    def observe_progress(self, flows: list[FlowSample], now: float) -> None:
        self.core.observe_progress(flows, now)
        self._run()

    def choose_gateway(self) -> None:
        self.core.choose_gateway(time.monotonic())
        self._run()

    def enforce_membership(self, now: float) -> None:
        self.core.enforce_membership(now)
        self._run()

    def renewed(self, own: OwnMembership) -> None:
        self.core.renewed(own)
        self._run()

    def originate_gateway(self, advert: GatewayAdvert) -> None:
        self.core.originate_gateway(advert)
        self._run()

    def send_to_member(self, node_id: str, message: messages.SessionMessage) -> bool:
        sent = self.core.send_to_member(node_id, message)
        self._run()
        return sent

    def count_refusal(self, node_id: str, reason: str, name: str, **fields: Any) -> None:
        """One of ``node_id``'s messages refused for ``reason``, its session kept: counted
        in its refusals, logged as ``name`` at the first of each reason and every 100th
        after it (every one from a node with no session)."""
        peer = self.core.peers.get(node_id)
        count = peer.count_refusal(reason) if peer is not None else 1
        if count == 1 or count % 100 == 0:
            event(name, logging.WARNING, reason=reason, count=count, **fields)

    def offer_release(self, manifest: bytes) -> None:
        self.core.offer_release(manifest)
        self._run()

    def answer_join(
        self, node_id: str, answer: messages.JoinGranted | messages.JoinRefused
    ) -> bool:
        sent = self.core.answer_join(node_id, answer)
        self._run()
        return sent

    def adopt_definition(self, newer: Cosigned[MeshDefinition]) -> bool:
        """A mesh definition handed in (``meshd admin-key rotate``): see the plane's."""
        try:
            return self.core.adopt_definition(newer, time.monotonic())
        finally:
            self._run()

    def hear_proposals(self, records: list[bytes]) -> list[dict[str, Any]]:
        """Proposals handed in (``meshd proposals``): what each did; the first refused one
        raises BadInput (those before it were taken)."""
        try:
            heard = [self.core.hear_proposal(Proposal.decode(r), time.monotonic()) for r in records]
        finally:
            self._run()
        trust = self.core.own.trust
        return [
            {
                "id": h.proposal.id,
                "outcome": h.outcome,
                "signed": len(h.proposal.signed.signers(trust.definition.admins)),
                "needed": self.core.proposals.needed(h.proposal, trust),
            }
            for h in heard
        ]

    def add_revocation_records(self, records: list[bytes]) -> dict[str, int]:
        try:
            return self.core.add_revocation_records(records, time.monotonic())
        finally:
            self._run()

    def black_hole_status(self) -> list[dict[str, Any]]:
        return self.core.black_hole_status(time.monotonic())

    # ---- outputs ---------------------------------------------------------------------

    def _run(self) -> None:
        """Do what the plane asked, in order, then re-arm the flush timer."""
        for effect in self.core.drain():
            self._do(effect)
        if self.core.flush_at is None:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
        elif self._flush_timer is None:
            delay = max(0.0, self.core.flush_at - time.monotonic())
            self._flush_timer = asyncio.get_running_loop().call_later(delay, self._flush_due)

    def _flush_due(self) -> None:
        self._flush_timer = None
        self.flush()

    def _do(self, effect: fx.Effect) -> None:
        transport = self.transport
        if isinstance(effect, fx.Send):
            if transport is not None and (why := transport.try_send(effect.node_id, effect.data)):
                event("session.send_failed", logging.DEBUG, peer=effect.node_id, error=why)
        elif isinstance(effect, fx.Close):
            if transport is not None:
                transport.close_peer(effect.node_id, effect.reason)
        elif isinstance(effect, fx.Verified):
            if transport is not None:
                transport.verified(effect.node_id)
        elif isinstance(effect, fx.Dial):
            if transport is not None:
                transport.dial(effect.address, expected_node_id=effect.node_id)
        elif isinstance(effect, fx.Probe):
            if self.hellos is not None:
                self.hellos.send(effect.packet, effect.address, effect.ifname)
        elif isinstance(effect, fx.EnsureLink):
            self.links.ensure_link(effect.spec)
        elif isinstance(effect, fx.RemoveLink):
            self.links.remove_link(effect.node_id)
        elif isinstance(effect, fx.ApplyRoutes):
            self.apply_routes(list(effect.changes))
        elif isinstance(effect, fx.Metering):
            if self.on_metering is not None:
                self.on_metering(effect.node_id, effect.message)
        elif isinstance(effect, fx.Release):
            if self.on_release is not None:
                self.on_release(effect.node_id, effect.message)
        elif isinstance(effect, fx.JoinRequest):
            if self.on_join is not None:
                self.on_join(effect.node_id, effect.message)
        elif isinstance(effect, fx.Renewal):
            if self.on_renewal is not None:
                self.on_renewal(effect.node_id, effect.message)
        else:
            self._store(effect)

    def _store(self, effect: fx.Effect) -> None:
        if isinstance(effect, fx.SaveSeqno):
            write_atomically(self.state_dir / SEQNO_FILE, f"{effect.seqno}\n".encode())
        elif isinstance(effect, fx.SaveDirectory):
            write_atomically(self.state_dir / DIRECTORY_FILE, effect.data)
        elif isinstance(effect, fx.SaveRevocations):
            save_revocations(self.state_dir, effect.revocations)
        elif isinstance(effect, fx.SaveProposals):
            save_proposals(self.state_dir, effect.proposals)
        elif isinstance(effect, fx.SaveClockFloor):
            save_clock_floor(self.state_dir, effect.floor)
        elif isinstance(effect, fx.SaveDefinition):
            chain = load_chain(self.state_dir) or [effect.previous]
            save_chain(self.state_dir, [*chain, effect.definition])
            save_joined(self.state_dir, effect.definition, effect.certificate, None)
        else:
            raise TypeError(f"not an effect: {effect!r}")


# ---- how the node builds it ----------------------------------------------------------


def build_control(
    cfg: Config,
    identity: Identity,
    clock: MeshClock,
    links: KernelLinks,
    on_metering: MeteringHandler,
    invited: tuple[BootstrapEndpoint, ...],
    joined_via: BootstrapEndpoint | None,
) -> ControlService:
    """The node's control plane and its shell, from the config and the state directory
    (TrustError: our membership files are missing, malformed or not ours). ``invited``:
    the bootstrap endpoints of our invite; ``joined_via``: the one that let us in now."""
    mesh_ipv4 = cfg.node.mesh_ipv4
    mesh_ipv6 = addressing.mesh_ipv6(cfg.mesh.ipv6_prefix, identity.node_id)
    state_dir = cfg.node.state_dir
    own = _own_membership(cfg, identity.node_id, clock, state_dir)
    if own.member.mesh_ipv4 != mesh_ipv4:
        raise trust.TrustError(
            f"{state_dir / trust.MEMBERSHIP_FILE}: certifies {own.member.mesh_ipv4}, the "
            f"config says {mesh_ipv4}"
        )
    now = time.monotonic()
    interval = cfg.routing.update_interval_s
    router = BabelRouter(
        router_id(bytes(identity.signing_key.verify_key)),
        load_seqno(state_dir),
        now,
        # A source outlives every copy of our last advertisement of it (babel_tables).
        BabelParams(
            update_interval_s=interval,
            source_gc_s=max(180.0, 8 * interval),
            max_routes_per_neighbour=cfg.routing.max_routes_per_neighbour,
            max_routes=cfg.routing.max_routes,
        ),
    )
    router.announce(ipaddress.ip_network(f"{mesh_ipv4}/32"))
    router.announce(ipaddress.ip_network(f"{mesh_ipv6}/128"))
    for prefix in cfg.routing.test_announce:  # a hostile member, in tests
        router.announce(ipaddress.ip_network(prefix, strict=False))
    core = ControlPlane(
        identity.node_id,
        own,
        router,
        clock,
        links.link_port,
        interface_prefix=cfg.wireguard.interface_prefix,
        issuer_link_limit=cfg.wireguard.issuer_link_limit,
        bootstrap=bootstrap_peers(cfg, invited, joined_via),
        share_endpoints=cfg.discovery.share_endpoints,
        forget_after_s=cfg.discovery.forget_after_s,
        signing_key=identity.signing_key,
        # A node that speaks only meshd/1 cannot get signatures: it takes routes as
        # meshd/1 did.
        accept_unsigned=cfg.routing.unsigned_routes == "accept"
        or MESHD_2 not in cfg.control.protocols,
        forge_seqnos=cfg.routing.test_forge_seqnos,
        understate_metrics=cfg.routing.test_understate_metrics,
        name_opening=trust.name_opening(state_dir, cfg.node.name, own.certificate.name),
        publishing=community_map.publishing(cfg),
        directory=load_directory(state_dir),
        journal=event,
        now=now,
    )
    for record in trust.load_proposals(state_dir):  # checked again: some may have lapsed
        try:
            core.hear_proposal(Proposal.decode(record), now)
        except BadInput as exc:
            event("proposal.stored_rejected", logging.INFO, reason=str(exc))
    return ControlService(
        core,
        node_certificate(identity.signing_key),
        links,
        links.apply_routes,
        state_dir,
        protocols=cfg.control.protocols,
        on_metering=on_metering,
    )


def _own_membership(cfg: Config, node_id: str, clock: MeshClock, state_dir: Path) -> OwnMembership:
    """Our membership files, checked. A certificate that is sound but for the time is
    taken too, with a warning: a Pi without a real-time clock boots with a stale one,
    and only its neighbours can tell it the time (then they judge the certificate).
    The admin keys trusted are the config's and those it handed over to (rotation)."""
    admins = trust.admin_keys(state_dir, cfg.mesh.admin_keys)
    try:
        return trust.load(state_dir, admins, node_id, clock.now())
    except trust.TrustError as exc:
        try:
            cert = MembershipCertificate.decode((state_dir / trust.MEMBERSHIP_FILE).read_bytes())
            own = trust.load(state_dir, admins, node_id, cert.not_before)
        except (OSError, MembershipError, trust.TrustError):
            raise exc from None
        event(
            "membership.not_valid_now",
            logging.WARNING,
            message="our certificate is not valid by this clock: is the clock off? "
            "starting; the neighbours' time decides",
            error=str(exc),
            not_before=cert.not_before,
            expires_at=cert.expires_at,
        )
        return own


def bootstrap_peers(
    cfg: Config, invited: tuple[BootstrapEndpoint, ...], joined_via: BootstrapEndpoint | None
) -> tuple[tuple[str, Address, str], ...]:
    """Whom to dial: the config's bootstrap peers (one address each) and every endpoint
    of the node's invite, the one that let us in just now first."""
    names = {b.node_id: b.name for b in cfg.bootstrap}
    endpoints = [(e.node_id, (str(e.host), e.port)) for e in invited]
    first = []
    if joined_via is not None:
        via = joined_via
        first = [(via.node_id, (str(via.host), via.port))]
    configured = [(b.node_id, b.address) for b in cfg.bootstrap]
    ordered = dict.fromkeys([*first, *configured, *endpoints])
    return tuple((node_id, address, names.get(node_id, "")) for node_id, address in ordered)


def load_seqno(state_dir: Path) -> int:
    try:
        value = int((state_dir / SEQNO_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return int.from_bytes(os.urandom(2), "big")
    return value & 0xFFFF


def load_directory(state_dir: Path) -> bytes | None:
    """The stored directory's bytes (None: there is none, or it cannot be read)."""
    path = state_dir / DIRECTORY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        event("directory.unreadable", logging.WARNING, path=str(path), error=str(exc))
        return None
