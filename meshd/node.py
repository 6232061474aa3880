"""The meshd daemon: one asyncio process configuring the kernel's data plane.

It brings up one WireGuard interface per neighbour (one peer, allowed-ips everything, so the
kernel routing table picks the next hop), holds the mesh addresses on ``lo``, installs a
route to each neighbour's mesh addresses, watches each link's receive counter for liveness,
and answers the control API. It adopts what a crashed predecessor left (same interface
names, same route protocol) and removes everything it made on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from meshd import addressing, api, sysinfo, trust
from meshd.config import Config, Neighbour, parse_endpoint, socket_path
from meshd.identity import Identity, decode_wireguard_key
from meshd.log import event
from meshd.net import sysctl
from meshd.net.netlink import Netlink, NetlinkError, Route
from meshd.routing.babel import BabelRouter, RouteAction, RouteChange
from meshd.routing.liveness import LinkState, Liveness
from meshd.wg.backend import WireGuardBackend
from meshd.wg.model import DeviceStatus, DeviceUpdate, PeerUpdate, WireGuardError

T = TypeVar("T")
ALL_TRAFFIC = ("0.0.0.0/0", "::/0")
RETRY_SETUP_S = 2.0


@dataclass
class Link:
    neighbour: Neighbour
    ifname: str
    liveness: Liveness
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: float | None = None
    ready: bool = False  # interface configured and routed
    next_setup: float = 0.0

    @property
    def node_id(self) -> str:
        return self.neighbour.node_id


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
        self.links: dict[str, Link] = {}
        for nb in cfg.neighbours:
            ifname = addressing.link_interface_name(
                cfg.wireguard.interface_prefix, self.node_id, nb.node_id
            )
            self.links[ifname] = Link(nb, ifname, Liveness(cfg.liveness.dead_after_s))
        self._by_node = {link.node_id: link for link in self.links.values()}
        # With admin keys the node routes with Babel over QUIC sessions (mesh.py);
        # without, it routes to its configured neighbours only.
        self.babel = bool(cfg.mesh.admin_keys)
        self.control: Any = None  # mesh.ControlPlane once running
        self.stopping = asyncio.Event()
        self.started = time.time()
        # Every kernel call (WireGuard, netlink, sysctl) blocks: they run in order on one
        # worker thread, so the event loop keeps answering and pyroute2 keeps one thread.
        self._kernel = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")

    async def kernel(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._kernel, fn, *args)

    # ---- setting the kernel up -------------------------------------------------------

    def _lo_addresses(self) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
        return [(self.mesh_ipv4, 32), (self.mesh_ipv6, 128)]

    def _neighbour_routes(self, link: Link) -> list[Route]:
        nb = link.neighbour
        assert nb.mesh_ipv4 is not None
        metric = self.cfg.routing.metric
        peer_v6 = addressing.mesh_ipv6(self.cfg.mesh.ipv6_prefix, nb.node_id)
        return [
            Route(ipaddress.ip_network(f"{nb.mesh_ipv4}/32"), link.ifname, self.mesh_ipv4, metric),
            Route(ipaddress.ip_network(f"{peer_v6}/128"), link.ifname, self.mesh_ipv6, metric),
        ]

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

        found = set(self.backend.list_interfaces(self.prefix))
        for ifname in sorted(found - set(self.links)):
            event("link.removed_stale", interface=ifname)
            self.backend.delete(ifname)
        for link in self.links.values():
            if link.ifname in found:
                event("link.adopted", interface=link.ifname, peer=link.neighbour.name)
            self._setup_link(link, now)

        # Babel re-learns its routes within a second: a restart starts from none.
        wanted = (
            set()
            if self.babel
            else {r for link in self.links.values() for r in self._neighbour_routes(link)}
        )
        for route in self.netlink.routes(self.cfg.routing.route_protocol):
            if route not in wanted:
                event("route.removed_stale", prefix=str(route.dst), interface=route.ifname)
                self.netlink.delete_route(route, self.cfg.routing.route_protocol)

    def _setup_link(self, link: Link, now: float) -> None:
        """Create (or adopt) and configure one neighbour link; on failure, retry later."""
        nb = link.neighbour
        try:
            if self.backend.exists(link.ifname):
                update = self._link_update(link, self.backend.show(link.ifname))
            else:
                self.backend.create(link.ifname)
                event("link.created", interface=link.ifname, peer=nb.name)
                update = self._link_update(link, None)
            if update != DeviceUpdate():
                self.backend.configure(link.ifname, update)
            self.netlink.set_up(link.ifname, mtu=self.cfg.wireguard.mtu)
            sysctl.apply(sysctl.interface_rp_filter(link.ifname), self.sysctl_root)
            self.netlink.ensure_address(link.ifname, addressing.link_local(self.node_id), 64)
            if not self.babel:
                for route in self._neighbour_routes(link):
                    self.netlink.replace_route(route, self.cfg.routing.route_protocol)
        except (WireGuardError, NetlinkError, OSError) as exc:
            link.ready = False
            link.next_setup = now + RETRY_SETUP_S
            event(
                "link.setup_failed",
                logging.WARNING,
                interface=link.ifname,
                peer=nb.name,
                error=str(exc),
            )
            return
        if not link.ready:
            event("link.configured", interface=link.ifname, peer=nb.name, endpoint=nb.endpoint)
        link.ready = True

    def _link_update(self, link: Link, current: DeviceStatus | None) -> DeviceUpdate:
        """What the interface lacks. An adopted interface keeps its peer, session and
        counters: only what differs is set (replacing the peer would reset them)."""
        nb = link.neighbour
        peer_key = decode_wireguard_key(nb.wireguard_key)
        private: bytes | None = self.identity.wireguard_private
        port: int | None = nb.listen_port
        stale: tuple[PeerUpdate, ...] = ()
        if current is not None:
            if current.public_key == self.identity.wireguard_public:
                private = None
            if current.listen_port == port:
                port = None
            stale = tuple(
                PeerUpdate(public_key=p.public_key, remove=True)
                for p in current.peers
                if p.public_key != peer_key
            )
        wanted = PeerUpdate(
            public_key=peer_key,
            endpoint=parse_endpoint(nb.endpoint),
            allowed_ips=ALL_TRAFFIC,
            persistent_keepalive_s=self.cfg.wireguard.keepalive_s,
        )
        peers = (*stale, wanted)
        if current is not None and not stale and _peer_matches(current, wanted):
            peers = ()
        return DeviceUpdate(private_key=private, listen_port=port, peers=peers)

    def teardown(self) -> None:
        """Remove every interface, route and address this node made."""
        proto = self.cfg.routing.route_protocol
        for link in self.links.values():
            try:
                self.backend.delete(link.ifname)
                event("link.deleted", interface=link.ifname)
            except WireGuardError as exc:
                event("link.delete_failed", logging.WARNING, interface=link.ifname, error=str(exc))
        for route in self.netlink.routes(proto):
            self.netlink.delete_route(route, proto)
        for address, plen in self._lo_addresses():
            self.netlink.remove_address("lo", address, plen)

    # ---- watching the links --------------------------------------------------------

    def poll(self, now_mono: float) -> list[tuple[Link, LinkState]]:
        """Read every link's counters; return the liveness changes."""
        changes: list[tuple[Link, LinkState]] = []

        def note(link: Link, change: LinkState | None) -> None:
            if change is not None:
                event(f"peer.{change.value}", peer=link.neighbour.name, interface=link.ifname)
                changes.append((link, change))

        for link in self.links.values():
            if not link.ready:
                if now_mono >= link.next_setup:
                    self._setup_link(link, now_mono)
                note(link, link.liveness.check(now_mono))
                continue
            try:
                status = self.backend.show(link.ifname)
            except WireGuardError as exc:
                # The interface vanished (wireguard-go killed, link deleted): rebuild it.
                event("link.lost", logging.WARNING, interface=link.ifname, error=str(exc))
                link.ready = False
                note(link, link.liveness.check(now_mono))
                continue
            peer = status.peers[0] if status.peers else None
            if peer is None:
                link.ready = False
                continue
            link.rx_bytes, link.tx_bytes = peer.rx_bytes, peer.tx_bytes
            link.last_handshake = peer.last_handshake
            note(link, link.liveness.observe(peer.rx_bytes, now_mono))
        return changes

    def apply_routes(self, changes: list[RouteChange]) -> None:
        """Babel's route changes, in order, on the kernel thread (called from the loop)."""
        self._kernel.submit(self._apply_routes, changes)

    def _apply_routes(self, changes: list[RouteChange]) -> None:
        proto = self.cfg.routing.route_protocol
        for change in changes:
            link = self._by_node.get(change.next_hop)
            if link is None:
                continue
            src = self.mesh_ipv4 if change.prefix.version == 4 else self.mesh_ipv6
            route = Route(change.prefix, link.ifname, src, self.cfg.routing.metric)
            try:
                if change.action is RouteAction.REMOVE:
                    self.netlink.delete_route(route, proto)
                else:
                    self.netlink.replace_route(route, proto)
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
                via=link.neighbour.name,
                metric=change.metric,
            )

    async def watch(self) -> None:
        interval = self.cfg.liveness.poll_interval_s
        while not self.stopping.is_set():
            now = time.monotonic()
            changes = await self.kernel(self.poll, now)
            if self.control is not None:
                for link, state in changes:
                    self.control.wireguard_state(link.node_id, state is LinkState.UP, now)
                self.control.tick(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=interval)

    # ---- control API ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        by_if = {link.ifname: link for link in self.links.values()}
        now = time.monotonic()
        routes = []
        metrics = {}
        if self.control is not None:
            metrics = {p: sel.metric for p, sel in self.control.router.selected().items()}
        for r in self.netlink.routes(self.cfg.routing.route_protocol):
            link = by_if.get(r.ifname)
            routes.append(
                {
                    "prefix": str(r.dst),
                    "via": link.node_id if link else None,
                    "interface": r.ifname,
                    # The Babel metric where Babel chose the route, else the kernel's.
                    "metric": metrics.get(r.dst, r.metric),
                }
            )
        return {
            "node_id": self.node_id,
            "name": self.cfg.node.name,
            "mesh_ipv4": str(self.mesh_ipv4),
            "mesh_ipv6": str(self.mesh_ipv6),
            "backend": self.backend.name,
            # What this daemon routes to: "babel" (every reachable node) or "neighbours"
            # (configured links only); `testbed wait-converged` reads it to know what to expect.
            "routing": "babel" if self.babel else "neighbours",
            "uptime_s": round(time.time() - self.started, 1),
            "neighbours": [
                {
                    "node_id": link.node_id,
                    "name": link.neighbour.name,
                    "interface": link.ifname,
                    "state": self._state(link),
                    # RTT and loss come from hellos over the link (route discovery issue);
                    # until they exist they are unmeasured, not zero.
                    "rtt_ms": None,
                    "loss": None,
                    "endpoint": link.neighbour.endpoint,
                    "silent_s": _round(link.liveness.silent_for(now)),
                    "last_handshake": link.last_handshake,
                    "rx_bytes": link.rx_bytes,
                    "tx_bytes": link.tx_bytes,
                    **(
                        {"control": self.control.neighbour_status(link.node_id)}
                        if self.control is not None
                        else {}
                    ),
                }
                for link in self.links.values()
            ],
            "routes": routes,
            "gateway": {"selected": None, "candidates": []},
            "usage": [],
        }

    def _control_plane(self) -> Any:
        from meshd import mesh
        from meshd.transport.certs import node_certificate

        state_dir = self.cfg.node.state_dir
        own = trust.load(state_dir, self.cfg.mesh.admin_keys, self.node_id, time.time())
        if own.member.mesh_ipv4 != self.mesh_ipv4:
            raise trust.TrustError(
                f"{state_dir / trust.MEMBERSHIP_FILE}: certifies {own.member.mesh_ipv4}, the "
                f"config says {self.mesh_ipv4}"
            )
        router = BabelRouter(
            mesh.router_id(bytes(self.identity.signing_key.verify_key)),
            mesh.load_seqno(state_dir),
            time.monotonic(),
        )
        router.announce(ipaddress.ip_network(f"{self.mesh_ipv4}/32"))
        router.announce(ipaddress.ip_network(f"{self.mesh_ipv6}/128"))
        neighbours = {
            link.node_id: mesh.NeighbourInfo(
                name=link.neighbour.name,
                ifname=link.ifname,
                quic_address=(
                    parse_endpoint(link.neighbour.endpoint)[0],
                    self.cfg.control.quic_port,
                ),
                wireguard_public=decode_wireguard_key(link.neighbour.wireguard_key),
            )
            for link in self.links.values()
        }
        return mesh.ControlPlane(
            self.node_id,
            node_certificate(self.identity.signing_key),
            own,
            neighbours,
            router,
            self.apply_routes,
            state_dir,
        )

    def _state(self, link: Link) -> str:
        """up only when the tunnel carries packets and, with Babel, the neighbour's session
        is verified and routing; a tunnel alive without a session is still connecting."""
        state = link.liveness.state.value
        if self.control is not None and state == "up":
            return str(self.control.peers[link.node_id].state)
        return state

    async def handle(self, call: str, args: dict[str, Any]) -> Any:
        if call == "status":
            return await self.kernel(self.status)
        if call == "version":
            return sysinfo.version_info()
        raise api.CallError("unknown_call", f"no call named {call!r}")

    # ---- the process ---------------------------------------------------------------

    async def run(self) -> None:
        path = socket_path(self.cfg)
        if _answers(path):
            raise RuntimeError(f"another meshd answers on {path}")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Signal handlers only schedule work (ExaBGP's rule).
            loop.add_signal_handler(sig, self.stopping.set)
        if self.babel:
            self.control = self._control_plane()  # refuses to start without valid membership
        server = None
        try:
            await self.kernel(self.setup, time.monotonic())
            if self.control is not None:
                await self.control.start("0.0.0.0", self.cfg.control.quic_port)
            server = await api.serve(path, self.handle)
            event(
                "node.started",
                node_id=self.node_id,
                name=self.cfg.node.name,
                backend=self.backend.name,
                links=len(self.links),
                socket=str(path),
            )
            await self.watch()
        finally:
            if server is not None:
                server.close()
                path.unlink(missing_ok=True)
            if self.control is not None:
                await self.control.close()
            await self.kernel(self.teardown)
            self._kernel.shutdown()
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


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _answers(path: Any) -> bool:
    try:
        api.Client(path, timeout=1.0).call("version")
    except api.ApiError:
        return False
    return True
