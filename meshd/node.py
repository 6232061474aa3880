"""The meshd daemon: one asyncio process configuring the kernel's data plane.

It holds the mesh addresses on ``lo``, runs the control plane (meshd.daemon.control, the
shell of meshd.core.control: sessions, membership, Babel) and builds one WireGuard
interface per neighbour from what the sessions say (one peer, allowed-ips everything, so
the kernel routing table picks the next hop). It watches each link's receive counter for
liveness, installs Babel's routes (in a routing table of their own, looked up only for the
mesh prefixes) and answers the control API.
It adopts what a crashed predecessor left (an interface keeps its port and peer when the
neighbour comes back; routes are relearned) and removes everything it made on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from meshd import api, control_calls, sysinfo, trust
from meshd.claims import ClaimService, Signer
from meshd.client import ControlClient, ControlError
from meshd.config import Config, parse_port_range, parse_rate_kbit, socket_path
from meshd.core import addressing
from meshd.core.control.effects import MeteringMessage
from meshd.core.control.peer import LinkSpec
from meshd.core.control.plane import ControlPlane
from meshd.core.control.routes import router_id
from meshd.core.endpoints import Address, format_endpoint, parse_endpoint
from meshd.core.membership import (
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    OwnMembership,
)
from meshd.core.membership.clock import MeshClock
from meshd.core.proto.babel import BABEL_PORT
from meshd.core.proto.session import MESHD_2, Claim, ReceiptMessage
from meshd.core.routing.babel import BabelParams, BabelRouter, RouteAction, RouteChange
from meshd.core.routing.liveness import LinkState, Liveness
from meshd.daemon.control import ControlService, load_directory, load_seqno
from meshd.discovery.beacon_socket import Underlay, candidate_interfaces
from meshd.exits import ExitService
from meshd.identity import Identity, public_from_node_id
from meshd.invites import Endpoint as InviteEndpoint
from meshd.join import JoinError, JoinService, bootstrap_endpoints, join_mesh, needs_join
from meshd.ledger import Ledger
from meshd.log import event
from meshd.net import firewall, sysctl
from meshd.net.conntrack import FlowReader
from meshd.net.echo import EchoProbe
from meshd.net.exit_tunnel import ExitTunnels, exit_interface_names
from meshd.net.link_meter import LinkMeter
from meshd.net.netlink import MAIN_TABLE, IPNetwork, Netlink, NetlinkError, Route, Rule
from meshd.net.resolver import system_resolver
from meshd.net.throttle import Throttle
from meshd.receipts.counting import Snapshot, advance
from meshd.receipts.exchange import ZERO
from meshd.wg.backend import WireGuardBackend
from meshd.wg.model import DeviceStatus, DeviceUpdate, PeerUpdate, WireGuardError

T = TypeVar("T")
ALL_TRAFFIC = ("0.0.0.0/0", "::/0")
RETRY_SETUP_S = 2.0
# An interface a crashed meshd left waits this long for its neighbour's session to claim
# it (keeping its port, peer and counters) before it is removed as stale.
ADOPT_GRACE_S = 60.0
ROUTE_GRACE_S = 10.0  # for Babel to install a crashed meshd's routes again
METER_S = 5.0  # how often the links' byte counters are read
SAVE_COUNTS_S = 60.0  # how often their totals are saved (SD cards: few writes)
UNDERLAY_EVERY_S = 5.0  # how often the interfaces to beacon on are read again
# How often the flows to mesh addresses are read (black holes): each read walks the
# kernel's whole conntrack table (about 4 ms at 262,144 buckets), so only every few seconds
# while there are none.
PROGRESS_EVERY_S = 1.0
PROGRESS_IDLE_S = 5.0


@dataclass
class Link:
    spec: LinkSpec
    liveness: Liveness
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: float | None = None
    ready: bool = False  # interface configured
    next_setup: float = 0.0

    @property
    def node_id(self) -> str:
        return self.spec.node_id

    @property
    def ifname(self) -> str:
        return self.spec.ifname


class Node:
    def __init__(
        self,
        cfg: Config,
        identity: Identity,
        backend: WireGuardBackend,
        netlink: Netlink,
        sysctl_root: Path = Path("/proc/sys"),
    ) -> None:
        self.sysctl_root = sysctl_root
        self.cfg, self.identity, self.backend, self.netlink = cfg, identity, backend, netlink
        self.node_id = identity.node_id
        assert cfg.node.mesh_ipv4 is not None  # checked when the config was loaded
        self.mesh_ipv4: ipaddress.IPv4Address = cfg.node.mesh_ipv4
        self.mesh_ipv6 = addressing.mesh_ipv6(cfg.mesh.ipv6_prefix, self.node_id)
        self.prefix = addressing.own_interface_prefix(cfg.wireguard.interface_prefix, self.node_id)
        # Kernel thread only: the links and their index by neighbour.
        self.links: dict[str, Link] = {}
        self._by_node: dict[str, Link] = {}
        # Interfaces found at start, not yet claimed by a neighbour: ifname -> port.
        self.adoptable: dict[str, int] = {}
        self._adopt_until = 0.0
        self._stale_routes: dict[IPNetwork, Route] = {}  # a crashed meshd's, kept a while
        self._stale_until = 0.0
        # Event loop only: the WireGuard port of each neighbour's link (by interface name).
        self._ports: dict[str, int] = {}
        self.control: ControlService | None = None
        self.exits: ExitService | None = None
        self.joins: JoinService | None = None  # joins through us and for our invites
        self.joined_via: InviteEndpoint | None = None  # the bootstrap that let us in now
        self.tunnels = ExitTunnels(
            backend,
            netlink,
            identity.wireguard_private,
            firewall_spec(cfg, self.mesh_ipv4, self.prefix),
            table=cfg.exit.table,
            fwmark=cfg.exit.fwmark,
            mtu=cfg.exit.mtu,
            exit_port=cfg.uplink.exit_port,
        )
        self.echo: EchoProbe | None = None  # liveness probes, once running
        # Metering (kernel thread): the links' counters, into totals saved in the ledger.
        self.link_meter = LinkMeter(self.prefix)
        self.flows = FlowReader()  # for black-hole detection (meshd.core.routing.progress)
        self._flows_failed = False
        self.ledger: Ledger | None = None
        self.link_counts: dict[str, Snapshot] = {}  # by neighbour node id; replaced whole
        self._counts_saved = 0.0
        # Claims and receipts (kernel thread, with the ledger), once running.
        self.claims: ClaimService | None = None
        self.throttle = Throttle(parse_rate_kbit(cfg.receipts.throttle_rate))
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.started = time.time()
        # The one wall clock of certificates, revocations and receipts.
        self.clock = MeshClock(
            time.time,
            cfg.membership.clock_tolerance_s,
            cfg.membership.test_clock_offset_s,
            journal=event,
        )
        # Every kernel call (WireGuard, netlink, sysctl) blocks: they run in order on one
        # worker thread, so the event loop keeps answering and pyroute2 keeps one thread.
        self._kernel = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")

    async def kernel(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._kernel, fn, *args)

    # ---- setting the kernel up -------------------------------------------------------

    def _lo_addresses(self) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
        return [(self.mesh_ipv4, 32), (self.mesh_ipv6, 128)]

    def _mesh_rules(self) -> list[Rule]:
        """Babel's routes live in a table of their own, looked up for the mesh prefixes
        only: nothing a member announces (0.0.0.0/1, say) can shadow the household's
        default route, LAN or uplink. Before the exit user's rules, so that mesh traffic
        (the exit tunnel's own packets to its gateway's mesh address too) never enters
        the exit tunnel; after the gateway's, whose exit table takes the uplink's replies."""
        rt, prefixes = self.cfg.routing, (self.cfg.mesh.ipv4_prefix, self.cfg.mesh.ipv6_prefix)
        return [Rule(prefix, rt.table, rt.rule_preference) for prefix in prefixes]

    def setup(self, now: float) -> None:
        """Configure the node; safe to run over what a crashed meshd left behind."""
        before = sysctl.apply(sysctl.ROUTER_SYSCTLS, self.sysctl_root)
        changed = [
            f"{k}={before[k]}->{v}" for k, v in sysctl.ROUTER_SYSCTLS.items() if before[k] != v
        ]
        if changed:
            event("sysctl.set", changed=",".join(changed))
        self.netlink.set_up("lo")
        for address, plen in self._lo_addresses():
            if self.netlink.ensure_address("lo", address, plen):
                event("address.added", address=f"{address}/{plen}", interface="lo")
        added, removed = self.netlink.ensure_rules(self._mesh_rules())  # a crash's: adopted
        for rule in added:
            event("rule.added", prefix=str(rule.dst), table=rule.table, pref=rule.pref)
        for rule in removed:
            event("rule.removed_stale", prefix=str(rule.dst), table=rule.table, pref=rule.pref)

        self.tunnels.setup()  # the exits start afresh (their users ask again)
        self.ledger = Ledger.open(self.cfg.node.state_dir)
        self.link_counts = self.ledger.link_counters()
        self.link_meter.open()  # adopted when a crashed meshd left it: its counts go on
        self.throttle.remove()  # decided again from the ledger at the first reading
        exit_ifnames = exit_interface_names(self.prefix)
        for ifname in sorted(self.backend.list_interfaces(self.prefix)):
            if ifname in exit_ifnames:
                continue
            try:
                port = self.backend.show(ifname).listen_port
            except WireGuardError:
                port = 0
            self.adoptable[ifname] = port
            event("link.found", interface=ifname, port=port)
        self._ports.update({i: p for i, p in self.adoptable.items() if p})
        self._adopt_until = now + ADOPT_GRACE_S

        # A crashed meshd's routes over the links adopted above stay while Babel learns
        # them again (the kernel kept forwarding meanwhile), so a restart drops no traffic;
        # what Babel has not installed again within ROUTE_GRACE_S goes then (poll).
        proto, table = self.cfg.routing.route_protocol, self.cfg.routing.table
        for route in self.netlink.routes(proto, table=table):
            if route.ifname in self.adoptable:
                self._stale_routes[route.dst] = route
                continue
            event("route.removed_stale", prefix=str(route.dst), interface=route.ifname)
            self.netlink.delete_route(route, proto, table=table)
        # Those a meshd from before the mesh's own table left in the main one.
        for route in self.netlink.routes(proto, table=MAIN_TABLE):
            event("route.removed_stale", prefix=str(route.dst), interface=route.ifname)
            self.netlink.delete_route(route, proto, table=MAIN_TABLE)
        self._stale_until = now + ROUTE_GRACE_S

    # ---- links, as the control plane asks (called in the event loop) -----------------

    def link_port(self, node_id: str) -> int:
        """Our port for the link to ``node_id``: the one its interface has, else the lowest
        free one of the configured range."""
        ifname = self._ifname(node_id)
        if ifname not in self._ports:
            used = set(self._ports.values())
            wg = self.cfg.wireguard
            free = (p for p in range(wg.listen_port_min, wg.listen_port_max + 1) if p not in used)
            port = next(free, None)
            if port is None:
                raise RuntimeError("no free WireGuard port left in the configured range")
            self._ports[ifname] = port
        return self._ports[ifname]

    def _ifname(self, node_id: str) -> str:
        return addressing.link_interface_name(
            self.cfg.wireguard.interface_prefix, self.node_id, node_id
        )

    def ensure_link(self, spec: LinkSpec) -> None:
        self._kernel.submit(self._ensure_link, spec, time.monotonic())

    def remove_link(self, node_id: str) -> None:
        self._ports.pop(self._ifname(node_id), None)
        self._kernel.submit(self._remove_link, node_id)

    def _ensure_link(self, spec: LinkSpec, now: float) -> None:
        link = self.links.get(spec.ifname)
        if link is None:
            live = self.cfg.liveness
            link = Link(spec, Liveness(live.dead_after_s, probe_after_s=live.probe_after_s))
            self.links[spec.ifname] = link
            self._by_node[spec.node_id] = link
            if self.adoptable.pop(spec.ifname, None) is not None:
                event("link.adopted", interface=spec.ifname, peer=spec.name)
        else:
            link.spec = spec
        self._setup_link(link, now)

    def _remove_link(self, node_id: str) -> None:
        link = self._by_node.pop(node_id, None)
        if link is None:
            return
        del self.links[link.ifname]
        self._delete_interface(link.ifname)

    def _delete_interface(self, ifname: str) -> None:
        try:
            self.backend.delete(ifname)
            event("link.deleted", interface=ifname)
        except WireGuardError as exc:
            event("link.delete_failed", logging.WARNING, interface=ifname, error=str(exc))

    def _setup_link(self, link: Link, now: float) -> None:
        """Create (or adopt) and configure one neighbour link; on failure, retry later."""
        spec = link.spec
        try:
            if self.backend.exists(link.ifname):
                update = self._link_update(link, self.backend.show(link.ifname))
            else:
                self.backend.create(link.ifname)
                event("link.created", interface=link.ifname, peer=spec.name)
                update = self._link_update(link, None)
            if update != DeviceUpdate():
                self.backend.configure(link.ifname, update)
            self.netlink.set_up(link.ifname, mtu=self.cfg.wireguard.mtu)
            sysctl.apply(sysctl.interface_rp_filter(link.ifname), self.sysctl_root)
            self.netlink.ensure_address(link.ifname, addressing.link_local(self.node_id), 64)
            self.link_meter.add(link.ifname, self._neighbour_addresses(spec))
        except (WireGuardError, NetlinkError, OSError) as exc:
            link.ready = False
            link.next_setup = now + RETRY_SETUP_S
            event(
                "link.setup_failed",
                logging.WARNING,
                interface=link.ifname,
                peer=spec.name,
                error=str(exc),
            )
            return
        event(
            "link.configured",
            interface=link.ifname,
            peer=spec.name,
            endpoint=format_endpoint(spec.endpoint),
            port=spec.listen_port,
        )
        link.ready = True

    def _link_update(self, link: Link, current: DeviceStatus | None) -> DeviceUpdate:
        """What the interface lacks. An adopted interface keeps its peer, session and
        counters: only what differs is set (replacing the peer would reset them)."""
        spec = link.spec
        private: bytes | None = self.identity.wireguard_private
        port: int | None = spec.listen_port
        stale: tuple[PeerUpdate, ...] = ()
        if current is not None:
            if current.public_key == self.identity.wireguard_public:
                private = None
            if current.listen_port == port:
                port = None
            stale = tuple(
                PeerUpdate(public_key=p.public_key, remove=True)
                for p in current.peers
                if p.public_key != spec.wireguard_public
            )
        wanted = PeerUpdate(
            public_key=spec.wireguard_public,
            endpoint=spec.endpoint,
            allowed_ips=ALL_TRAFFIC,
            persistent_keepalive_s=self.cfg.wireguard.keepalive_s,
        )
        peers = (*stale, wanted)
        if current is not None and not stale and _peer_matches(current, wanted):
            peers = ()
        return DeviceUpdate(private_key=private, listen_port=port, peers=peers)

    def _neighbour_addresses(
        self, spec: LinkSpec
    ) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        """What the neighbour itself sends from and receives at: not relayed traffic."""
        own: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
            addressing.mesh_ipv6(self.cfg.mesh.ipv6_prefix, spec.node_id),
            addressing.link_local(spec.node_id),
        ]
        if spec.mesh_ipv4 is not None:
            own.append(spec.mesh_ipv4)
        return tuple(own)

    def meter(self, now: float, save: bool = False) -> None:
        """Read the links' counters into the totals; save them every SAVE_COUNTS_S (a
        crash loses nothing: the kernel's table is adopted, see meshd.receipts.counting)."""
        reading = self.link_meter.read()
        counts = dict(self.link_counts)
        for link in self.links.values():
            found = reading.counts.get(link.ifname)
            if found is not None:
                counts[link.node_id] = advance(counts.get(link.node_id), reading.table, found)
        self.link_counts = counts
        if self.ledger is not None and (save or now - self._counts_saved >= SAVE_COUNTS_S):
            self.ledger.save_link_counters(counts)
            self._counts_saved = now

    def meter_round(self, now: float, reachable: set[str]) -> list[tuple[str, Claim]]:
        """Read the counters, then the claims due to ``reachable`` neighbours."""
        self.meter(now)
        if self.claims is None:
            return []
        ifnames = {link.node_id: link.ifname for link in self.links.values()}
        return self.claims.round(self.link_counts, ifnames, reachable, now, self.clock.now())

    def judge_claim(self, node_id: str, claim: Claim) -> ReceiptMessage | None:
        """A neighbour's claim against our own count, read now (after it read its own)."""
        assert self.claims is not None
        self.meter(time.monotonic())
        snap = self.link_counts.get(node_id)
        own = (snap.totals[2], snap.totals[3]) if snap else ZERO
        return self.claims.on_claim(node_id, claim, own, self.clock.now())

    def teardown(self) -> None:
        """Remove every interface, route, rule and address this node made."""
        self.throttle.remove()
        try:
            self.meter(time.monotonic(), save=True)  # saved: the next start goes on from here
            self.link_meter.remove()
        except OSError as exc:
            event("meter.failed", logging.WARNING, error=str(exc))
        proto, table = self.cfg.routing.route_protocol, self.cfg.routing.table
        for ifname in [*self.links, *self.adoptable]:
            self._delete_interface(ifname)
        self.links.clear()
        self._by_node.clear()
        self.adoptable.clear()
        for rule in self.netlink.remove_rules(table):
            event("rule.removed", prefix=str(rule.dst), table=rule.table, pref=rule.pref)
        for route in self.netlink.routes(proto, table=table):
            self.netlink.delete_route(route, proto, table=table)
        for address, plen in self._lo_addresses():
            self.netlink.remove_address("lo", address, plen)
        self.tunnels.teardown()
        self.flows.close()
        if self.ledger is not None:
            self.ledger.close()

    # ---- watching the links --------------------------------------------------------

    def poll(self, now_mono: float | None = None) -> list[tuple[Link, LinkState]]:
        """Read every link's counters; return the liveness changes. ``now_mono``: the time
        of every reading; None: the clock at each one. (A poll queued on the kernel thread
        behind a burst of route changes, or one that sets up a link, dated before it ran,
        would take the short gap to the next reading for a long silence and call live
        links down.)"""

        def clock() -> float:
            return time.monotonic() if now_mono is None else now_mono

        changes: list[tuple[Link, LinkState]] = []

        def note(link: Link, change: LinkState | None) -> None:
            if change is None:
                return
            silent = link.liveness.silent_for(clock()) if change is LinkState.DOWN else None
            extra: dict[str, Any] = {} if silent is None else {"silent_s": round(silent, 2)}
            event(f"peer.{change.value}", peer=link.spec.name, interface=link.ifname, **extra)
            changes.append((link, change))

        now = clock()
        if self._stale_routes and now >= self._stale_until:
            rt = self.cfg.routing
            for route in self._stale_routes.values():
                event("route.removed_stale", prefix=str(route.dst), interface=route.ifname)
                self.netlink.delete_route(route, rt.route_protocol, table=rt.table)
            self._stale_routes.clear()
        if self.adoptable and now >= self._adopt_until:
            for ifname in sorted(self.adoptable):
                event("link.removed_stale", interface=ifname)
                self._delete_interface(ifname)
            self.adoptable.clear()
        for link in self.links.values():
            if not link.ready:
                if clock() >= link.next_setup:
                    self._setup_link(link, clock())
                note(link, link.liveness.check(clock()))
                continue
            try:
                status = self.backend.show(link.ifname)
            except WireGuardError as exc:
                # The interface vanished (wireguard-go killed, link deleted): rebuild it.
                event("link.lost", logging.WARNING, interface=link.ifname, error=str(exc))
                link.ready = False
                note(link, link.liveness.check(clock()))
                continue
            read_at = clock()
            peer = status.peers[0] if status.peers else None
            if peer is None:
                link.ready = False
                continue
            link.rx_bytes, link.tx_bytes = peer.rx_bytes, peer.tx_bytes
            link.last_handshake = peer.last_handshake
            note(link, link.liveness.observe(peer.rx_bytes, read_at))
            # Asked even without an echo socket: the down decision waits for the probe.
            if link.liveness.wants_probe(read_at) and self.echo is not None:
                self.echo.send(str(addressing.link_local(link.node_id)), link.ifname)
        return changes

    def apply_routes(self, changes: list[RouteChange]) -> None:
        """Babel's route changes, in order, on the kernel thread (called from the loop)."""
        self._kernel.submit(self._apply_routes, changes)

    def _apply_routes(self, changes: list[RouteChange]) -> None:
        proto, table = self.cfg.routing.route_protocol, self.cfg.routing.table
        for change in changes:
            if change.action is not RouteAction.REMOVE:
                self._stale_routes.pop(change.prefix, None)  # replaced below
            link = self._by_node.get(change.next_hop)
            if link is None:
                continue
            src = self.mesh_ipv4 if change.prefix.version == 4 else self.mesh_ipv6
            route = Route(change.prefix, link.ifname, src, self.cfg.routing.metric)
            try:
                if change.action is RouteAction.REMOVE:
                    self.netlink.delete_route(route, proto, table=table)
                else:
                    self.netlink.replace_route(route, proto, table=table)
            except NetlinkError as exc:
                event(
                    "route.failed",
                    logging.WARNING,
                    prefix=str(change.prefix),
                    action=change.action.value,
                    error=str(exc),
                )
                continue
            event(
                "route.changed",
                prefix=str(change.prefix),
                action=change.action.value,
                via=link.spec.name,
                metric=change.metric,
            )

    def underlay(self) -> tuple[list[Underlay], list[ipaddress.IPv4Network]]:
        """The segments to beacon on, and the subnets they are on: every up interface with
        an IPv4 broadcast address but ours and the uplink (the interface of a default
        route: the internet is not a segment of the mesh), or those the config names."""
        try:
            addrs = json.loads(_ip("-j", "address", "show"))
            defaults = json.loads(_ip("-j", "route", "show", "default"))
        except (OSError, subprocess.CalledProcessError, ValueError) as exc:
            event("underlay.unreadable", logging.WARNING, error=str(exc))
            return [], []
        wanted = self.cfg.discovery.beacon_interfaces
        uplinks = {r.get("dev") for r in defaults if isinstance(r, dict)}
        candidates = candidate_interfaces(
            addrs, wireguard_prefix=self.cfg.wireguard.interface_prefix
        )
        found = [
            u for u in candidates if (u.ifname in wanted if wanted else u.ifname not in uplinks)
        ]
        names = {u.ifname for u in found}
        subnets = [
            ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}").network
            for link in addrs
            if link.get("ifname") in names
            for a in link.get("addr_info") or []
            if a.get("family") == "inet"
        ]
        return found, subnets

    async def watch(self) -> None:
        interval = self.cfg.liveness.poll_interval_s
        next_underlay = next_meter = next_progress = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            changes = await self.kernel(self.poll)
            if now >= next_meter:
                next_meter = now + METER_S
                await self._meter_round(now)
            if now >= next_progress and self.control is not None:
                busy = await self._watch_progress(now)
                next_progress = now + (PROGRESS_EVERY_S if busy else PROGRESS_IDLE_S)
            if self.control is not None:
                for link, state in changes:
                    self.control.wireguard_state(link.node_id, state is LinkState.UP, now)
                self.control.tick(now)
                if self.exits is not None:
                    self.exits.tick(now)
                if self.joins is not None:
                    self.joins.tick(now)
                if now >= next_underlay:
                    next_underlay = now + UNDERLAY_EVERY_S
                    await self.control.set_underlay(*await self.kernel(self.underlay))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=interval)

    async def _watch_progress(self, now: float) -> bool:
        """Flows to mesh addresses that get no answer through a next hop: it may be a
        black hole (meshd.core.routing.progress). Whether there were any."""
        assert self.control is not None
        try:
            flows = await self.kernel(self.flows.read)
        except OSError as exc:
            if not self._flows_failed:  # said once: a kernel without conntrack stays so
                event("kernel.failed", logging.WARNING, call="conntrack", error=str(exc))
            self._flows_failed = True
            return False
        self.control.observe_progress(flows, now)
        return bool(flows)

    async def _meter_round(self, now: float) -> None:
        reachable = set()
        if self.control is not None:
            reachable = {
                p.node_id for p in self.control.core.peers.values() if p.member is not None
            }
        try:
            claims = await self.kernel(self.meter_round, now, reachable)
        except OSError as exc:
            event("kernel.failed", logging.WARNING, call="meter_round", error=str(exc))
            return
        for node_id, claim in claims:
            assert self.control is not None
            self.control.send_to_member(node_id, claim)

    # ---- claims and receipts (meshd.claims) ------------------------------------------

    def _on_metering(self, node_id: str, msg: MeteringMessage) -> None:
        task = asyncio.get_running_loop().create_task(self._metering(node_id, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _metering(self, node_id: str, msg: MeteringMessage) -> None:
        """Answer a claim with a receipt, a receipt with an acknowledgement; each one
        stored durably on the kernel thread before the answer leaves."""
        if self.claims is None or self.control is None:
            return
        reply: MeteringMessage | None = None
        try:
            if isinstance(msg, Claim):
                reply = await self.kernel(self.judge_claim, node_id, msg)
            elif isinstance(msg, ReceiptMessage):
                peer = self.control.core.peers.get(node_id)
                member = peer.member if peer else None
                signer = None
                if member is not None:
                    delegation = member.delegation.encode() if member.delegation else b""
                    signer = Signer(member.certificate.encode(), delegation)
                reply = await self.kernel(
                    self.claims.on_receipt, node_id, msg, signer, self.clock.now()
                )
            else:
                await self.kernel(self.claims.on_ack, node_id, msg)
        except OSError as exc:
            event("receipts.failed", logging.WARNING, peer=node_id, error=str(exc))
            return
        if reply is not None:
            self.control.send_to_member(node_id, reply)

    # ---- control API ---------------------------------------------------------------

    def kernel_status(self) -> dict[str, Any]:
        """What the kernel says (on the kernel thread): links and installed routes."""
        now = time.monotonic()
        return {
            "links": {
                link.node_id: {
                    "interface": link.ifname,
                    "liveness": link.liveness.state.value,
                    "endpoint": format_endpoint(link.spec.endpoint),
                    "listen_port": link.spec.listen_port,
                    "silent_s": _round(link.liveness.silent_for(now)),
                    "last_handshake": link.last_handshake,
                    "rx_bytes": link.rx_bytes,
                    "tx_bytes": link.tx_bytes,
                }
                for link in self.links.values()
            },
            "receipts": (
                {
                    node_id: self.claims.status(node_id, snap)
                    for node_id, snap in self.link_counts.items()
                }
                if self.claims is not None
                else {}
            ),
            "receipts_summary": self.claims.summary() if self.claims is not None else None,
            "routes": [
                (r, link.node_id if (link := self.links.get(r.ifname)) else None)
                for r in self.netlink.routes(
                    self.cfg.routing.route_protocol, table=self.cfg.routing.table
                )
            ],
        }

    async def status(self) -> dict[str, Any]:
        kernel = await self.kernel(self.kernel_status)
        assert self.control is not None
        metrics = {p: sel.metric for p, sel in self.control.core.router.selected().items()}
        neighbours = []
        for peer in self.control.core.peers.values():
            if not peer.is_neighbour:
                continue
            link = kernel["links"].get(peer.node_id)
            quality = peer.quality.snapshot() if peer.quality else None
            neighbours.append(
                {
                    "node_id": peer.node_id,
                    "name": peer.name,
                    "interface": peer.ifname,
                    "state": peer.state(link["liveness"] if link else None),
                    # From the probes through the tunnel; unknown (null) until measured.
                    # loss: the share of the neighbour's probes that did not reach us.
                    "rtt_ms": _round(quality.rtt_ms) if quality else None,
                    "loss": _round(quality.loss) if quality else None,
                    "cost": quality.cost if quality else None,
                    **(link or {"endpoint": None}),
                    "control": peer.status(),
                    # What it sent that we refused, by reason (DESIGN.md contract).
                    "refusals": dict(peer.refusals),
                    # Destinations it is kept out of the routes to: their traffic got no
                    # answer through it (meshd.core.routing.progress).
                    "black_holes": sorted(
                        str(p)
                        for p, n, _ in self.control.core.router.penalties()
                        if n == peer.node_id
                    ),
                }
            )
        return {
            "node_id": self.node_id,
            "name": self.cfg.node.name,
            "mesh_ipv4": str(self.mesh_ipv4),
            "mesh_ipv6": str(self.mesh_ipv6),
            "backend": self.backend.name,
            # What this daemon routes to: every reachable node (`testbed wait-converged`
            # reads it to know what to expect).
            "routing": "babel",
            "uptime_s": round(time.time() - self.started, 1),
            # Our certificate's window and renewal, and the mesh's time as we keep it.
            "membership": self.joins.renewal_status() if self.joins is not None else None,
            "clock": self.clock.status(),
            "mesh": {
                "serial": self.control.core.own.trust.definition.serial,
                "admins": list(self.control.core.own.trust.admins),
            },
            "neighbours": neighbours,
            # Every member's certificate this node holds (meshd.core.membership.directory).
            "directory": self.control.core.trust.directory_status(),
            # Route updates held or signed (meshd.core.routing.origin).
            "origins": self.control.core.routes.status(),
            # Next hops kept out of routes that lost their traffic (meshd.core.routing.progress).
            "black_holes": self.control.black_hole_status(),
            "routes": [
                {
                    "prefix": str(r.dst),
                    "via": via,
                    "interface": r.ifname,
                    # The Babel metric where Babel chose the route, else the kernel's.
                    "metric": metrics.get(r.dst, r.metric),
                }
                for r, via in kernel["routes"]
            ],
            "gateway": self._gateway_status(),
            "usage": [
                {
                    "node_id": node_id,
                    "relayed_for_bytes": snap.totals[0],
                    "relayed_to_bytes": snap.totals[1],
                    "sent_bytes": snap.totals[2],
                    "received_bytes": snap.totals[3],
                    **kernel["receipts"].get(node_id, {}),
                }
                for node_id, snap in sorted(self.link_counts.items())
            ],
            "receipts": kernel["receipts_summary"],
        }

    def _gateway_status(self) -> dict[str, Any]:
        """The exit choice (``selected`` only while this node needs an exit: a working
        uplink of its own carries its traffic), the candidates, and our own uplink."""
        assert self.control is not None
        out = self.control.core.gateways.status()
        if self.exits is not None:
            if not self.exits.needs_exit:
                out["selected"] = None
            out.update(self.exits.status(time.monotonic()))
        return out

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a kernel change on the kernel thread, in order; failures are logged."""

        def run() -> None:
            try:
                fn(*args)
            except (WireGuardError, NetlinkError, OSError) as exc:
                event(
                    "kernel.failed",
                    logging.WARNING,
                    call=getattr(fn, "__name__", "?"),
                    error=str(exc),
                )

        self._kernel.submit(run)

    def _control_plane(self) -> ControlService:
        from meshd.transport.certs import node_certificate

        state_dir = self.cfg.node.state_dir
        own = self._own_membership(state_dir)
        if own.member.mesh_ipv4 != self.mesh_ipv4:
            raise trust.TrustError(
                f"{state_dir / trust.MEMBERSHIP_FILE}: certifies {own.member.mesh_ipv4}, the "
                f"config says {self.mesh_ipv4}"
            )
        now = time.monotonic()
        interval = self.cfg.routing.update_interval_s
        router = BabelRouter(
            router_id(bytes(self.identity.signing_key.verify_key)),
            load_seqno(state_dir),
            now,
            # A source outlives every copy of our last advertisement of it (babel_tables).
            BabelParams(
                update_interval_s=interval,
                source_gc_s=max(180.0, 8 * interval),
                max_routes_per_neighbour=self.cfg.routing.max_routes_per_neighbour,
                max_routes=self.cfg.routing.max_routes,
            ),
        )
        router.announce(ipaddress.ip_network(f"{self.mesh_ipv4}/32"))
        router.announce(ipaddress.ip_network(f"{self.mesh_ipv6}/128"))
        for prefix in self.cfg.routing.test_announce:  # a hostile member, in tests
            router.announce(ipaddress.ip_network(prefix, strict=False))
        core = ControlPlane(
            self.node_id,
            own,
            router,
            self.clock,
            self.link_port,
            interface_prefix=self.cfg.wireguard.interface_prefix,
            bootstrap=self._bootstrap(),
            share_endpoints=self.cfg.discovery.share_endpoints,
            forget_after_s=self.cfg.discovery.forget_after_s,
            signing_key=self.identity.signing_key,
            # A node that speaks only meshd/1 cannot get signatures: it takes routes as
            # meshd/1 did.
            accept_unsigned=self.cfg.routing.unsigned_routes == "accept"
            or MESHD_2 not in self.cfg.control.protocols,
            forge_seqnos=self.cfg.routing.test_forge_seqnos,
            understate_metrics=self.cfg.routing.test_understate_metrics,
            name_opening=trust.name_opening(state_dir, self.cfg.node.name, own.certificate.name),
            directory=load_directory(state_dir),
            journal=event,
            now=now,
        )
        return ControlService(
            core,
            node_certificate(self.identity.signing_key),
            self,
            self.apply_routes,
            state_dir,
            protocols=self.cfg.control.protocols,
            on_metering=self._on_metering,
        )

    def _own_membership(self, state_dir: Path) -> OwnMembership:
        """Our membership files, checked. A certificate that is sound but for the time is
        taken too, with a warning: a Pi without a real-time clock boots with a stale one,
        and only its neighbours can tell it the time (then they judge the certificate).
        The admin keys trusted are the config's and those it handed over to (rotation)."""
        admins = trust.admin_keys(state_dir, self.cfg.mesh.admin_keys)
        try:
            return trust.load(state_dir, admins, self.node_id, self.clock.now())
        except trust.TrustError as exc:
            try:
                cert = MembershipCertificate.decode(
                    (state_dir / trust.MEMBERSHIP_FILE).read_bytes()
                )
                own = trust.load(state_dir, admins, self.node_id, cert.not_before)
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

    def _bootstrap(self) -> tuple[tuple[str, Address, str], ...]:
        """Whom to dial: the config's bootstrap peers (one address each) and every endpoint
        of the node's invite, the one that let us in just now first."""
        names = {b.node_id: b.name for b in self.cfg.bootstrap}
        invited = [(e.node_id, (str(e.host), e.port)) for e in bootstrap_endpoints(self.state_dir)]
        first = []
        if self.joined_via is not None:
            via = self.joined_via
            first = [(via.node_id, (str(via.host), via.port))]
        configured = [(b.node_id, parse_endpoint(b.address)) for b in self.cfg.bootstrap]
        ordered = dict.fromkeys([*first, *configured, *invited])
        return tuple((node_id, address, names.get(node_id, "")) for node_id, address in ordered)

    def _relay_address(self, node_id: str) -> Address:
        """Where a node's join relay listens: its mesh IPv6 address (meshd.join)."""
        return (
            str(addressing.mesh_ipv6(self.cfg.mesh.ipv6_prefix, node_id)),
            self.cfg.exit.quic_port,
        )

    async def _join(self) -> bool:
        """A node with an invite and no certificate redeems it before anything else
        (meshd.join); False when told to stop first. JoinError when it cannot."""
        if not needs_join(self.state_dir):
            return True
        try:
            self.joined_via = await join_mesh(self.cfg, self.identity, self.stopping)
        except JoinError:
            self._kernel.shutdown()
            self.netlink.close()
            raise
        if self.joined_via is None:
            self._kernel.shutdown()
            self.netlink.close()
            return False
        return True

    @property
    def state_dir(self) -> Path:
        return Path(self.cfg.node.state_dir)

    async def handle(self, call: str, args: dict[str, Any]) -> Any:
        if call == "status":
            return await self.status()
        if call == "version":
            return sysinfo.version_info()
        if call == "revocations":
            assert self.control is not None
            return [r.to_json() for r in self.control.core.own.trust.revocations]
        if call == "add_revocations":
            assert self.control is not None
            try:
                return self.control.add_revocation_records(_hex_list(args.get("records")))
            except MembershipError as exc:
                raise api.CallError(str(exc.reason), exc.message) from None
        if call == "mesh_definition":
            assert self.control is not None
            records = _hex_list(args.get("records"))
            try:
                adopted = [self.control.adopt_definition(MeshDefinition.decode(r)) for r in records]
            except MembershipError as exc:
                raise api.CallError(str(exc.reason), exc.message) from None
            definition = self.control.core.own.trust.definition
            return {"adopted": sum(adopted), "definition": definition.to_json()}
        if call == "block":
            node_id, blocked = args.get("node_id"), args.get("blocked", True)
            if not isinstance(node_id, str) or not isinstance(blocked, bool):
                raise api.CallError("bad_args", "expected node_id (a string) and blocked (bool)")
            try:
                public_from_node_id(node_id)
                assert self.exits is not None
                self.exits.block(node_id, blocked)
            except ValueError as exc:
                raise api.CallError("bad_args", str(exc)) from None
            return {"node_id": node_id, "blocked": blocked}
        return await control_calls.handle(
            call,
            args,
            self.status,
            receipts=lambda after, limit: self.kernel(self.ledger_page, "receipts", after, limit),
            disputes=lambda after, limit: self.kernel(self.ledger_page, "disputes", after, limit),
        )

    def ledger_page(self, kind: str, after: str | None, limit: int) -> control_calls.Page:
        """A page of the ledger's receipts or disputes in the order stored (kernel thread,
        which owns the ledger); the cursor is the last row's id."""
        assert self.ledger is not None
        try:
            start = int(after or 0)
        except ValueError:
            raise api.CallError("bad_args", f"after: {after!r} is not a cursor") from None
        items: list[dict[str, Any]] = []
        ids: list[int] = []
        if kind == "receipts":
            for row, receipt, dispute in self.ledger.receipts(after=start, limit=limit + 1):
                items.append({"id": row, **receipt.to_json(), "dispute": dispute or None})
                ids.append(row)
        else:
            for row, found in self.ledger.disputes(after=start, limit=limit + 1):
                items.append({"id": row, **found.to_json()})
                ids.append(row)
        more = len(items) > limit
        return {"items": items[:limit], "next": str(ids[limit - 1]) if more else None}

    # ---- the process ---------------------------------------------------------------

    async def run(self) -> None:
        path = socket_path(self.cfg)
        if _answers(path):
            raise RuntimeError(f"another meshd answers on {path}")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Signal handlers only schedule work (ExaBGP's rule).
            loop.add_signal_handler(sig, self.stopping.set)
        if not await self._join():
            return  # stopped while joining: nothing was set up
        self.control = self._control_plane()  # refuses to start without valid membership
        echo = EchoProbe()
        if echo.open():
            self.echo = echo
        server = None
        try:
            await self.kernel(self.setup, time.monotonic())
            await self.control.start("0.0.0.0", self.cfg.control.quic_port)
            if self.cfg.discovery.beacons:
                await self.control.start_beacons(
                    self.identity.signing_key,
                    self.cfg.discovery.beacon_port,
                    self.cfg.control.quic_port,
                    self.cfg.discovery.beacon_interval_s,
                )
            assert self.ledger is not None  # opened by setup
            self.claims = await self.kernel(
                ClaimService,
                self.node_id,
                self.identity.signing_key,
                self.control.core.own.trust.definition.mesh_id,
                self.ledger,
                self.cfg.receipts,
                self.throttle,
            )
            self.exits = ExitService(
                self.node_id,
                self.control.credentials,
                self.identity.signing_key,
                self.control,
                self.tunnels,
                self.submit,
                self.kernel,
                self.ledger,
                self.cfg.uplink,
                self.cfg.exit,
                self.mesh_ipv4,
                self.cfg.node.state_dir,
            )
            await self.exits.start()
            self.joins = JoinService(
                self.node_id,
                self.identity.signing_key,
                self.control,
                self.state_dir,
                self.kernel,
                relay_host=str(self.mesh_ipv6),
                relay_port=self.cfg.exit.quic_port,
                relay_address=self._relay_address,
                renewal=self.cfg.membership,
            )
            await self.joins.start()
            server = await api.serve(path, self.handle)
            event(
                "node.started",
                node_id=self.node_id,
                name=self.cfg.node.name,
                backend=self.backend.name,
                bootstrap=len(self.cfg.bootstrap),
                socket=str(path),
            )
            await self.watch()
        finally:
            if server is not None:
                server.close()
                path.unlink(missing_ok=True)
            if self.exits is not None:
                await self.exits.close()  # withdraws our advert while sessions still run
            if self.joins is not None:
                await self.joins.close()
            await self.control.close()
            await self.kernel(self.teardown)
            self._kernel.shutdown()
            echo.close()
            self.netlink.close()
            event("node.stopped", name=self.cfg.node.name)


def _peer_matches(current: DeviceStatus, wanted: PeerUpdate) -> bool:
    for p in current.peers:
        if p.public_key == wanted.public_key:
            return (
                p.endpoint == wanted.endpoint
                and set(p.allowed_ips) == set(wanted.allowed_ips or ())
                and p.persistent_keepalive_s == wanted.persistent_keepalive_s
            )
    return False


def _hex_list(value: Any) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise api.CallError("bad_args", "records: expected a list of hex strings")
    try:
        return [bytes.fromhex(v) for v in value]
    except ValueError as exc:
        raise api.CallError("bad_args", f"records: {exc}") from None


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _answers(path: Any) -> bool:
    try:
        ControlClient(path, timeout=1.0).call("version")
    except ControlError:
        return False
    return True


def firewall_spec(
    cfg: Config, mesh_ipv4: ipaddress.IPv4Address, tunnel_prefix: str
) -> firewall.FirewallSpec:
    """What the firewall needs from the config: meshd's own ports are always open to the
    mesh (QUIC sessions, probes, exit sessions, the exit's WireGuard), then the operator's."""
    own = (cfg.control.quic_port, BABEL_PORT, cfg.exit.quic_port, cfg.uplink.exit_port)
    iso = cfg.isolation
    return firewall.FirewallSpec(
        mesh_ipv4,
        tunnel_prefix=tunnel_prefix,
        mesh_prefix=cfg.mesh.ipv4_prefix,
        mesh_prefix6=cfg.mesh.ipv6_prefix,
        open_udp=tuple((p, p) for p in own) + tuple(map(parse_port_range, iso.open_udp_ports)),
        open_tcp=tuple(map(parse_port_range, iso.open_tcp_ports)),
        uplink=cfg.uplink.interface,
        resolver=(cfg.uplink.resolver or system_resolver()) if cfg.uplink.share else "",
        block_smtp=cfg.uplink.block_smtp,
        lan=cfg.lan.interfaces,
    )
