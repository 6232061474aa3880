"""The node's neighbour links in the kernel: one WireGuard interface per neighbour, its
liveness, and Babel's routes over it.

Each link is one interface with one peer (allowed-ips everything, so the kernel routing
table picks the next hop), built from what the sessions say (``LinkSpec``). Its receive
counter, beside the data it sent, is its liveness (meshd.core.routing.liveness), read
every poll. What a crashed predecessor left is adopted: an interface keeps its port and
peer when its neighbour comes back (``ADOPT_GRACE_S``), and its routes stay while Babel
learns them again (``ROUTE_GRACE_S``).

Everything here runs on the node's kernel thread but the four calls the control plane's
shell makes in the event loop (``link_port``, ``ensure_link``, ``remove_link``,
``apply_routes``), which keep the ports on the loop's side and hand the kernel work to the
thread in order (``submit``)."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshd.adapters.identity import Identity
from meshd.adapters.net import if_stats, sysctl
from meshd.adapters.net.echo import EchoProbe
from meshd.adapters.net.exit_tunnel import exit_interface_names
from meshd.adapters.net.link_meter import LinkMeter
from meshd.adapters.net.netlink import IPNetwork, Netlink, NetlinkError, Route
from meshd.adapters.wg.backend import WireGuardBackend
from meshd.adapters.wg.model import DeviceStatus, DeviceUpdate, PeerUpdate, WireGuardError
from meshd.config import LivenessSettings, RoutingSettings, WireGuardSettings
from meshd.core import addressing
from meshd.core.control.peer import LinkSpec
from meshd.core.endpoints import format_endpoint
from meshd.core.keys import encode_key
from meshd.core.routing.babel import RouteAction, RouteChange
from meshd.core.routing.liveness import LinkState, Liveness
from meshd.log import event

ALL_TRAFFIC = ("0.0.0.0/0", "::/0")
RETRY_SETUP_S = 2.0
# An interface a crashed meshd left waits this long for its neighbour's session to claim
# it (keeping its port, peer and counters) before it is removed as stale.
ADOPT_GRACE_S = 60.0
ROUTE_GRACE_S = 10.0  # for Babel to install a crashed meshd's routes again


@dataclass
class KernelLink:
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


class KernelLinks:
    def __init__(
        self,
        identity: Identity,
        backend: WireGuardBackend,
        netlink: Netlink,
        meter: LinkMeter,
        submit: Callable[..., Any],
        *,
        wireguard: WireGuardSettings,
        routing: RoutingSettings,
        liveness: LivenessSettings,
        ipv6_prefix: ipaddress.IPv6Network,
        mesh_addresses: tuple[ipaddress.IPv4Address, ipaddress.IPv6Address],
        fwmark: int = 0,
        sysctl_root: Path = Path("/proc/sys"),
    ) -> None:
        self.identity, self.node_id = identity, identity.node_id
        self.backend, self.netlink, self.link_meter, self.submit = backend, netlink, meter, submit
        self.wg_settings, self.routing, self.liveness = wireguard, routing, liveness
        self.ipv6_prefix, self.sysctl_root = ipv6_prefix, sysctl_root
        self.mesh_ipv4, self.mesh_ipv6 = mesh_addresses
        # The links' own packets carry the exit tunnel's mark: a link to a neighbour across
        # the internet keeps leaving by the uplink while the node leaves by an exit (the
        # exit's default route, looked up for unmarked packets, would carry the link into
        # a tunnel that runs over the link itself).
        self.fwmark = fwmark
        self.prefix = addressing.own_interface_prefix(wireguard.interface_prefix, self.node_id)
        # Kernel thread only: the links and their index by neighbour.
        self.by_ifname: dict[str, KernelLink] = {}
        self._by_node: dict[str, KernelLink] = {}
        # Interfaces found at start, not yet claimed by a neighbour: ifname -> port.
        self.adoptable: dict[str, int] = {}
        self._adopt_until = 0.0
        self._stale_routes: dict[IPNetwork, Route] = {}  # a crashed meshd's, kept a while
        self._stale_until = 0.0
        # Event loop only: the WireGuard port of each neighbour's link (by interface name).
        self._ports: dict[str, int] = {}
        self.echo: EchoProbe | None = None  # liveness probes, once running
        # A link carried traffic at the last poll, or is in doubt: the next is due after
        # busy_poll_interval_s, not poll_interval_s (set by each poll, read by the loop).
        self.busy = False

    def adopt(self, now: float) -> None:
        """What a crashed meshd left: its link interfaces wait for their neighbours, and
        its routes over them stay while Babel learns them again (the kernel kept
        forwarding meanwhile), so a restart drops no traffic; what Babel has not installed
        again within ROUTE_GRACE_S goes then (``poll``)."""
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
        proto, table = self.routing.route_protocol, self.routing.table
        for route in self.netlink.routes(proto, table=table):
            if route.ifname in self.adoptable:
                self._stale_routes[route.dst] = route
                continue
            event("route.removed_stale", prefix=str(route.dst), interface=route.ifname)
            self.netlink.delete_route(route, proto, table=table)
        self._stale_until = now + ROUTE_GRACE_S

    def remove_all(self) -> None:
        """Every link interface and every route of ours (at the node's teardown)."""
        for ifname in [*self.by_ifname, *self.adoptable]:
            self._delete_interface(ifname)
        self.by_ifname.clear()
        self._by_node.clear()
        self.adoptable.clear()
        proto, table = self.routing.route_protocol, self.routing.table
        for route in self.netlink.routes(proto, table=table):
            self.netlink.delete_route(route, proto, table=table)

    def status(self) -> dict[str, dict[str, Any]]:
        """Each link as ``meshd status`` shows it, by neighbour node id."""
        now = time.monotonic()
        return {
            link.node_id: {
                "interface": link.ifname,
                "public_key": encode_key(link.spec.wireguard_public),
                "liveness": link.liveness.state.value,
                "endpoint": format_endpoint(link.spec.endpoint),
                "listen_port": link.spec.listen_port,
                "silent_s": round2(link.liveness.silent_for(now)),
                "last_handshake": link.last_handshake,
                "rx_bytes": link.rx_bytes,
                "tx_bytes": link.tx_bytes,
            }
            for link in self.by_ifname.values()
        }

    # ---- asked by the control plane's shell, in the event loop -----------------------

    def link_port(self, node_id: str) -> int | None:
        """Our port for the link to ``node_id``: the one its interface has, else the lowest
        free one of the configured range; None when none is free (the control plane
        refuses that neighbour, ``no_free_port``: a session's handler never raises)."""
        ifname = self._ifname(node_id)
        if ifname not in self._ports:
            used = set(self._ports.values())
            wg = self.wg_settings
            free = (p for p in range(wg.listen_port_min, wg.listen_port_max + 1) if p not in used)
            port = next(free, None)
            if port is None:
                return None
            self._ports[ifname] = port
        return self._ports[ifname]

    def _ifname(self, node_id: str) -> str:
        return addressing.link_interface_name(
            self.wg_settings.interface_prefix, self.node_id, node_id
        )

    def ensure_link(self, spec: LinkSpec) -> None:
        self.submit(self._ensure_link, spec, time.monotonic())

    def remove_link(self, node_id: str) -> None:
        self._ports.pop(self._ifname(node_id), None)
        self.submit(self._remove_link, node_id)

    def _ensure_link(self, spec: LinkSpec, now: float) -> None:
        link = self.by_ifname.get(spec.ifname)
        if link is None:
            link = KernelLink(spec, self._new_liveness())
            self.by_ifname[spec.ifname] = link
            self._by_node[spec.node_id] = link
            if self.adoptable.pop(spec.ifname, None) is not None:
                event("link.adopted", interface=spec.ifname, peer=spec.name)
        else:
            link.spec = spec
        self._setup_link(link, now)

    def _new_liveness(self) -> Liveness:
        live = self.liveness
        return Liveness(
            live.dead_after_s,
            probe_after_s=live.probe_after_s,
            answer_within_s=live.answer_within_s,
            # A send seen one poll after the last thing heard may be its reply (an ACK);
            # a link sending is read every busy poll.
            suspect_after_s=1.5 * live.busy_poll_interval_s,
        )

    def _remove_link(self, node_id: str) -> None:
        link = self._by_node.pop(node_id, None)
        if link is None:
            return
        del self.by_ifname[link.ifname]
        self._delete_interface(link.ifname)

    def _delete_interface(self, ifname: str) -> None:
        try:
            self.backend.delete(ifname)
            event("link.deleted", interface=ifname)
        except WireGuardError as exc:
            event("link.delete_failed", logging.WARNING, interface=ifname, error=str(exc))

    def _setup_link(self, link: KernelLink, now: float) -> None:
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
            self.netlink.set_up(link.ifname, mtu=self.wg_settings.mtu)
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

    def _link_update(self, link: KernelLink, current: DeviceStatus | None) -> DeviceUpdate:
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
            persistent_keepalive_s=self.wg_settings.keepalive_s,
        )
        peers = (*stale, wanted)
        if current is not None and not stale and _peer_matches(current, wanted):
            peers = ()
        fwmark = self.fwmark if current is None or current.fwmark != self.fwmark else None
        return DeviceUpdate(private_key=private, listen_port=port, fwmark=fwmark, peers=peers)

    def _neighbour_addresses(
        self, spec: LinkSpec
    ) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        """What the neighbour itself sends from and receives at: not relayed traffic."""
        own: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
            addressing.mesh_ipv6(self.ipv6_prefix, spec.node_id),
            addressing.link_local(spec.node_id),
        ]
        if spec.mesh_ipv4 is not None:
            own.append(spec.mesh_ipv4)
        return tuple(own)

    # ---- watching the links --------------------------------------------------------

    def poll(self, now_mono: float | None = None) -> list[tuple[KernelLink, LinkState]]:
        """Read every link's counters; return the liveness changes. ``now_mono``: the time
        of every reading; None: the clock at each one. (A poll queued on the kernel thread
        behind a burst of route changes, or one that sets up a link, dated before it ran,
        would take the short gap to the next reading for a long silence and call live
        links down.)"""

        def clock() -> float:
            return time.monotonic() if now_mono is None else now_mono

        changes: list[tuple[KernelLink, LinkState]] = []

        def note(link: KernelLink, change: LinkState | None) -> None:
            if change is None:
                return
            silent = link.liveness.silent_for(clock()) if change is LinkState.DOWN else None
            extra: dict[str, Any] = {} if silent is None else {"silent_s": round(silent, 2)}
            event(f"peer.{change.value}", peer=link.spec.name, interface=link.ifname, **extra)
            changes.append((link, change))

        now = clock()
        if self._stale_routes and now >= self._stale_until:
            rt = self.routing
            for route in self._stale_routes.values():
                event("route.removed_stale", prefix=str(route.dst), interface=route.ifname)
                self.netlink.delete_route(route, rt.route_protocol, table=rt.table)
            self._stale_routes.clear()
        if self.adoptable and now >= self._adopt_until:
            for ifname in sorted(self.adoptable):
                event("link.removed_stale", interface=ifname)
                self._delete_interface(ifname)
            self.adoptable.clear()
        for link in self.by_ifname.values():
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
            sent = if_stats.sent_bytes(link.ifname)
            note(link, link.liveness.observe(peer.rx_bytes, read_at, sent))
            # Asked even without an echo socket: the down decision waits for the probe.
            if link.liveness.wants_probe(read_at) and self.echo is not None:
                for _ in range(link.liveness.echoes()):
                    self.echo.send(str(addressing.link_local(link.node_id)), link.ifname)
        self.busy = any(link.ready and link.liveness.busy for link in self.by_ifname.values())
        return changes

    def apply_routes(self, changes: list[RouteChange]) -> None:
        """Babel's route changes, in order, on the kernel thread (called from the loop)."""
        self.submit(self._apply_routes, changes)

    def _apply_routes(self, changes: list[RouteChange]) -> None:
        proto, table = self.routing.route_protocol, self.routing.table
        for change in changes:
            if change.action is not RouteAction.REMOVE:
                self._stale_routes.pop(change.prefix, None)  # replaced below
            link = self._by_node.get(change.next_hop)
            if link is None:
                continue
            src = self.mesh_ipv4 if change.prefix.version == 4 else self.mesh_ipv6
            route = Route(change.prefix, link.ifname, src, self.routing.metric)
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


def _peer_matches(current: DeviceStatus, wanted: PeerUpdate) -> bool:
    for p in current.peers:
        if p.public_key == wanted.public_key:
            return (
                p.endpoint == wanted.endpoint
                and set(p.allowed_ips) == set(wanted.allowed_ips or ())
                and p.persistent_keepalive_s == wanted.persistent_keepalive_s
            )
    return False


def round2(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
