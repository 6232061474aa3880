"""The meshd daemon: one asyncio process configuring the kernel's data plane.

It holds the mesh addresses on ``lo`` and the rules that send the mesh prefixes to the
mesh's own routing table, starts the services (the control plane in its shell,
meshd.daemon.control; the exits; joins and renewals; claims and receipts) and runs the
watch loop: the links' liveness (meshd.daemon.links), the counters (meshd.daemon.metering),
black holes, the underlay to beacon on, and each service's tick. Every blocking kernel call
runs on one worker thread, in order (``kernel``, ``submit``). It answers the control API's
calls, adopts what a crashed predecessor left and removes everything it made on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from meshd import api
from meshd.adapters.beacon_socket import Underlay, candidate_interfaces
from meshd.adapters.identity import Identity
from meshd.adapters.ledger import Ledger
from meshd.adapters.net import firewall, sysctl
from meshd.adapters.net.conntrack import FlowReader
from meshd.adapters.net.echo import EchoProbe
from meshd.adapters.net.exit_tunnel import ExitTunnels
from meshd.adapters.net.link_meter import LinkMeter
from meshd.adapters.net.netlink import MAIN_TABLE, Netlink, NetlinkError, Rule
from meshd.adapters.net.resolver import system_resolver
from meshd.adapters.net.throttle import Throttle
from meshd.adapters.trust import load_clock_floor
from meshd.adapters.wg.backend import WireGuardBackend
from meshd.adapters.wg.model import WireGuardError
from meshd.api import calls
from meshd.api.client import ControlClient, ControlError
from meshd.config import Config, socket_path
from meshd.core import addressing, devices
from meshd.core.endpoints import Address
from meshd.core.invites import BootstrapEndpoint
from meshd.core.membership import (
    Cosigned,
    MeshDefinition,
)
from meshd.core.membership.clock import MeshClock
from meshd.core.proto.babel import BABEL_PORT
from meshd.core.routing.liveness import LinkState
from meshd.daemon import community_map, metrics
from meshd.daemon.claims import ClaimService
from meshd.daemon.control import ControlService, build_control
from meshd.daemon.devices import DeviceService
from meshd.daemon.exits import ExitService
from meshd.daemon.joining import JoinError, bootstrap_endpoints, join_mesh, needs_join
from meshd.daemon.joins import JoinService
from meshd.daemon.links import KernelLinks
from meshd.daemon.metering import Metering
from meshd.daemon.releases import PublishError, ReleaseService
from meshd.daemon.status import proposals_status, status
from meshd.log import event

if TYPE_CHECKING:  # prometheus_client only where metrics are served
    from meshd.adapters.metrics import MetricsServer

T = TypeVar("T")
METER_S = 5.0  # how often the links' byte counters are read
UNDERLAY_EVERY_S = 5.0  # how often the interfaces to beacon on are read again
# How often the flows to mesh addresses are read (black holes): each read walks the
# kernel's whole conntrack table (about 4 ms at 262,144 buckets), so only every few seconds
# while there are none.
PROGRESS_EVERY_S = 1.0
PROGRESS_IDLE_S = 5.0


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
        self.control: ControlService | None = None
        self.exits: ExitService | None = None
        self.joins: JoinService | None = None  # joins through us and for our invites
        self.releases: ReleaseService | None = None  # new meshd from neighbours
        self.joined_via: BootstrapEndpoint | None = None  # the bootstrap that let us in now
        self.tunnels = ExitTunnels(
            backend,
            netlink,
            identity.wireguard_private,
            firewall_spec(cfg, self.mesh_ipv4, self.prefix, devices.interface_name(self.node_id)),
            table=cfg.exit.table,
            fwmark=cfg.exit.fwmark,
            mtu=cfg.exit.mtu,
            exit_port=cfg.uplink.exit_port,
        )
        self.link_meter = LinkMeter(self.prefix)  # the links' counters (nftables)
        self.flows = FlowReader()  # for black-hole detection (meshd.core.routing.progress)
        self._flows_failed = False
        self.throttle = Throttle(cfg.receipts.throttle_rate.kbit)
        self.stopping = asyncio.Event()
        self.started = time.time()
        self.api_refused: Counter[str] = Counter()  # control API callers refused, by reason
        # [metrics]: the server once listening, or why it does not.
        self.metrics: MetricsServer | None = None
        self.metrics_refused: str | None = None
        # The community map's records kept across restarts and its files (meshd.daemon.
        # community_map).
        self.map = community_map.MapKeeper(cfg, self.state_dir)
        # The one wall clock of certificates, revocations and receipts.
        self.clock = MeshClock(
            time.time,
            cfg.membership.clock_tolerance_s,
            cfg.membership.test_clock_offset_s,
            journal=event,
            floor=load_clock_floor(Path(cfg.node.state_dir)),
        )
        # Every kernel call (WireGuard, netlink, sysctl) blocks: they run in order on one
        # worker thread, so the event loop keeps answering and pyroute2 keeps one thread.
        self._kernel = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        # The neighbour links and the routes over them (meshd.daemon.links).
        self.links = KernelLinks(
            identity,
            backend,
            netlink,
            self.link_meter,
            self.submit,  # kernel changes in order, failures logged
            wireguard=cfg.wireguard,
            routing=cfg.routing,
            liveness=cfg.liveness,
            ipv6_prefix=cfg.mesh.ipv6_prefix,
            mesh_addresses=(self.mesh_ipv4, self.mesh_ipv6),
            fwmark=cfg.exit.fwmark,
            sysctl_root=sysctl_root,
        )
        # The household's roaming devices (meshd device add).
        self.devices = DeviceService(
            identity,
            backend,
            netlink,
            self.kernel,
            cfg.devices,
            cfg.uplink,
            (cfg.mesh.ipv4_prefix, cfg.mesh.ipv6_prefix),
            cfg.wireguard.mtu,
            self.state_dir,
            fwmark=cfg.exit.fwmark,
            lan=cfg.lan.interfaces,
        )
        # Counters, claims and receipts (meshd.daemon.metering).
        self.metering = Metering(
            self.link_meter, self.links, self.throttle, self.clock, self.kernel
        )

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
        uplink = self.cfg.uplink.interface
        if uplink and (ra := sysctl.keep_router_advertisements(uplink, self.sysctl_root)):
            changed.append(ra)
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
        self.devices.load()
        self.metering.open(Ledger.open(self.cfg.node.state_dir))
        self.links.adopt(now)
        # Those a meshd from before the mesh's own table left in the main one.
        proto = self.cfg.routing.route_protocol
        for route in self.netlink.routes(proto, table=MAIN_TABLE):
            event("route.removed_stale", prefix=str(route.dst), interface=route.ifname)
            self.netlink.delete_route(route, proto, table=MAIN_TABLE)

    def teardown(self) -> None:
        """Remove every interface, route, rule and address this node made."""
        self.metering.close()
        self.links.remove_all()
        for rule in self.netlink.remove_rules(self.cfg.routing.table):
            event("rule.removed", prefix=str(rule.dst), table=rule.table, pref=rule.pref)
        for address, plen in self._lo_addresses():
            self.netlink.remove_address("lo", address, plen)
        self.tunnels.teardown()
        self.devices.remove_interface()
        self.flows.close()
        if self.metering.ledger is not None:
            self.metering.ledger.close()

    def underlay(
        self,
    ) -> tuple[list[Underlay], list[ipaddress.IPv4Network], bool, list[ipaddress.IPv4Interface]]:
        """The segments to beacon on, the subnets they are on, whether an uplink (the
        interface of a default route: the internet is not a segment of the mesh) reaches
        the internet, and our addresses on the uplinks (where another node behind the same
        home router finds us): every up interface with an IPv4 broadcast address but
        ours, the uplink and the household LAN, or those the config names (but the LAN)."""
        try:
            addrs, uplinks = self.netlink.underlay()
        except NetlinkError as exc:
            event("underlay.unreadable", logging.WARNING, error=str(exc))
            return [], [], False, []
        wanted = self.cfg.discovery.beacon_interfaces
        # Never the household's LAN ([lan] interfaces), even where the config names it: it
        # is no segment of the mesh, and whoever is on it is no neighbour.
        candidates = candidate_interfaces(
            addrs,
            wireguard_prefix=self.cfg.wireguard.interface_prefix,
            exclude=self.cfg.lan.interfaces,
        )
        found = [
            u for u in candidates if (u.ifname in wanted if wanted else u.ifname not in uplinks)
        ]
        subnets = [a.network for a in _ipv4_of(addrs, {u.ifname for u in found})]
        return found, subnets, bool(uplinks), _ipv4_of(addrs, uplinks)

    async def watch(self) -> None:
        live = self.cfg.liveness
        next_meter = next_progress = 0.0
        next_underlay = time.monotonic() + UNDERLAY_EVERY_S  # start read it just now
        while not self.stopping.is_set():
            now = time.monotonic()
            changes = await self.kernel(self.links.poll)
            if now >= next_meter:
                next_meter = now + METER_S
                await self.metering.round(now)
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
                if self.releases is not None:
                    self.releases.tick(now)
                if writes := self.map.due(self.control.core, now):
                    self.submit(community_map.write, writes)
                if now >= next_underlay:
                    next_underlay = now + UNDERLAY_EVERY_S
                    await self.control.set_underlay(*await self.kernel(self.underlay))
                    self._allow_metrics()
            interval = live.busy_poll_interval_s if self.links.busy else live.poll_interval_s
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

    def _allow_metrics(self) -> None:
        """Tell the firewall again who may scrape: members come, go and are revoked."""
        assert self.control is not None
        if self.cfg.metrics.listen is None:
            return
        allow = metrics.allowed(self.cfg.metrics.allow, self.control.core.trust.member)
        if allow != self.tunnels.spec.metrics_allow:
            event("metrics.allow", addresses=[str(a) for a in allow])
            self.submit(self.tunnels.allow_metrics, allow)

    async def _start_metrics(self) -> None:
        uplink = self.cfg.uplink.interface
        try:
            found = await self.kernel(self.netlink.addresses, uplink) if uplink else set()
        except NetlinkError:
            found = set()  # no uplink now: nothing of it to keep the metrics off
        try:
            self.metrics = metrics.start(
                self.cfg.metrics,
                {address for address, _ in found},
                asyncio.get_running_loop(),
                lambda: status(self, kernel_routes=False),
            )
        except metrics.MetricsRefused as exc:
            self.metrics_refused = str(exc)
            event("metrics.refused", logging.ERROR, reason=str(exc))

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

    def _relay_address(self, node_id: str) -> Address:
        """Where a node's join relay listens: its mesh IPv6 address (meshd.daemon.joins)."""
        return (
            str(addressing.mesh_ipv6(self.cfg.mesh.ipv6_prefix, node_id)),
            self.cfg.exit.quic_port,
        )

    async def _join(self) -> bool:
        """A node with an invite and no certificate redeems it before anything else
        (meshd.daemon.joining); False when told to stop first. JoinError when it cannot."""
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

    async def handle(self, call: str, args: dict[str, Any], caller: api.Caller) -> Any:
        """The control API's calls (meshd.api.calls), answered from this node."""
        return await calls.handle(
            call,
            args,
            caller,
            lambda: status(self),
            receipts=lambda after, limit: self.kernel(self.ledger_page, "receipts", after, limit),
            disputes=lambda after, limit: self.kernel(self.ledger_page, "disputes", after, limit),
            node=self,
            refused=self.api_refused,
        )

    # ---- what the calls that change the node do (meshd.api.calls.Changes) ------------

    def revocations(self) -> list[dict[str, Any]]:
        assert self.control is not None
        return [s.to_json() for s in self.control.core.own.trust.revocations.all_signed()]

    def add_revocations(self, records: list[bytes]) -> dict[str, int]:
        assert self.control is not None
        return self.control.add_revocation_records(records)

    def adopt_definitions(self, records: list[bytes]) -> dict[str, Any]:
        assert self.control is not None
        adopted = [
            self.control.adopt_definition(Cosigned.decode(r, MeshDefinition)) for r in records
        ]
        definition = self.control.core.own.trust.definition
        return {"adopted": sum(adopted), "definition": definition.to_json()}

    def proposals(self) -> list[dict[str, Any]]:
        assert self.control is not None
        return proposals_status(self.control.core)

    def propose(self, records: list[bytes]) -> list[dict[str, Any]]:
        assert self.control is not None
        return self.control.hear_proposals(records)

    def block(self, node_id: str, blocked: bool) -> None:
        assert self.exits is not None
        self.exits.block(node_id, blocked)

    async def add_device(self, name: str, endpoint: str | None, everything: bool) -> dict[str, Any]:
        return await self.devices.add(name, endpoint, everything)

    async def remove_device(self, name: str) -> dict[str, Any]:
        return await self.devices.remove(name)

    async def device_list(self) -> list[dict[str, Any]]:
        return await self.devices.listing()

    def publish_release(self, manifest: bytes) -> dict[str, Any]:
        assert self.releases is not None
        try:
            return self.releases.publish(manifest)
        except PublishError as exc:
            raise api.CallError(exc.code, str(exc)) from None

    def map_documents(self) -> dict[str, Any]:
        assert self.control is not None
        return community_map.documents(self.control.core)

    def ledger_page(self, kind: str, after: str | None, limit: int) -> calls.Page:
        """A page of the ledger's receipts or disputes in the order stored (kernel thread,
        which owns the ledger); the cursor is the last row's id."""
        ledger = self.metering.ledger
        assert ledger is not None
        try:
            start = int(after or 0)
        except ValueError:
            raise api.CallError("bad_args", f"after: {after!r} is not a cursor") from None
        items: list[dict[str, Any]] = []
        ids: list[int] = []
        if kind == "receipts":
            for row, receipt, dispute in ledger.receipts(after=start, limit=limit + 1):
                items.append({"id": row, **receipt.to_json(), "dispute": dispute or None})
                ids.append(row)
        else:
            for row, found in ledger.disputes(after=start, limit=limit + 1):
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
        # Refuses to start without valid membership.
        self.control = build_control(
            self.cfg,
            self.identity,
            self.clock,
            self.links,
            self.metering.on_message,
            bootstrap_endpoints(self.state_dir),
            self.joined_via,
        )
        self.map.load(self.control.core)
        self.releases = ReleaseService(self.control, self.state_dir, self.cfg.update.stage)
        self.control.on_release = self.releases.on_message
        self.releases.load()
        echo = EchoProbe()
        if echo.open():
            self.links.echo = echo
        server = None
        try:
            await self.kernel(self.setup, time.monotonic())
            # Our segments and uplink before the first session: a neighbour tells us where
            # the others are as soon as ours verifies, and what is not on them is not tried.
            await self.control.set_underlay(*await self.kernel(self.underlay))
            await self.control.start("0.0.0.0", self.cfg.control.quic_port, self.cfg.exit.fwmark)
            if self.cfg.discovery.beacons:
                await self.control.start_beacons(
                    self.identity.signing_key,
                    self.cfg.discovery.beacon_port,
                    self.cfg.control.quic_port,
                    self.cfg.discovery.beacon_interval_s,
                )
            ledger = self.metering.ledger
            assert ledger is not None  # opened by setup
            self.metering.control = self.control
            self.metering.claims = await self.kernel(
                ClaimService,
                self.node_id,
                self.identity.signing_key,
                self.control.core.own.trust.definition.mesh_id,
                ledger,
                self.cfg.receipts,
                self.throttle,
            )
            self.exits = ExitService(
                self.control.credentials,
                self.identity.signing_key,
                self.control,
                self.tunnels,
                self.submit,
                self.kernel,
                ledger,
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
            if self.cfg.metrics.listen is not None:
                await self._start_metrics()
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
            if self.metrics is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.metrics.close)
            if self.exits is not None:
                await self.exits.close()  # withdraws our advert while sessions still run
            if self.joins is not None:
                await self.joins.close()
            if writes := self.map.due(self.control.core, time.monotonic(), final=True):
                await self.kernel(community_map.write, writes)
            await self.metering.stop()
            if self.releases is not None:
                await self.releases.stop()
            await self.control.close()
            await self.kernel(self.teardown)
            self._kernel.shutdown()
            echo.close()
            self.netlink.close()
            event("node.stopped", name=self.cfg.node.name)


def _answers(path: Any) -> bool:
    try:
        ControlClient(path, timeout=1.0).call("version")
    except ControlError:
        return False
    return True


def firewall_spec(
    cfg: Config, mesh_ipv4: ipaddress.IPv4Address, tunnel_prefix: str, device_interface: str
) -> firewall.FirewallSpec:
    """What the firewall needs from the config: meshd's own ports are always open to the
    mesh (QUIC sessions, probes, exit sessions, the exit's WireGuard), then the operator's."""
    own = (cfg.control.quic_port, BABEL_PORT, cfg.exit.quic_port, cfg.uplink.exit_port)
    iso = cfg.isolation
    listen = cfg.metrics.listen
    return firewall.FirewallSpec(
        mesh_ipv4,
        tunnel_prefix=tunnel_prefix,
        mesh_prefix=cfg.mesh.ipv4_prefix,
        mesh_prefix6=cfg.mesh.ipv6_prefix,
        open_udp=tuple((p, p) for p in own) + iso.open_udp_ports,
        open_tcp=iso.open_tcp_ports,
        uplink=cfg.uplink.interface,
        resolver=(cfg.uplink.resolver or system_resolver()) if cfg.uplink.share else "",
        block_smtp=cfg.uplink.block_smtp,
        lan=cfg.lan.interfaces,
        metrics_port=listen[1] if listen else 0,
        metrics_allow=metrics.allowed(cfg.metrics.allow, lambda _: None),  # members: later
        device_interface=device_interface,
        device_pool=cfg.devices.pool,
    )


def _ipv4_of(addrs: list[dict[str, Any]], names: Collection[str]) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses (with their prefixes) of the interfaces named, from an address
    dump as NetlinkPort.underlay gives it."""
    return [
        ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
        for link in addrs
        if link.get("ifname") in names
        for a in link.get("addr_info") or []
        if a.get("family") == "inet"
    ]
