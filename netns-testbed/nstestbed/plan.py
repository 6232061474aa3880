"""Names, addresses, ports and per-node meshd configs for a topology (pure).

Everything the testbed creates is derived here, deterministically, from the topology, the
testbed id and the state directory; ``build`` only carries it out.

Plan (all addresses live inside the testbed's namespaces, never in the host's):
- namespaces: ``<id>-<node>`` per node, ``<id>-<node>-lan`` per LAN host, ``<id>-inet`` for the
  internet, ``<id>-sw`` for segment bridges (only when there are segments);
- p2p link k (file order): 100.64.0.0/10 carved in /24s, ``100.64.0.0 + 256*k``; the first
  node of ``between`` gets .1, the second .2; interfaces ``u-<peer>`` in each node;
- segment s: bridge ``seg<s>`` in ``<id>-sw``; member i gets ``s<s>`` with 100.127.<s>.<i+1>/24
  and MAC 02:6d:74:00:<s>:<i+1> (cut rules match it); its bridge port is ``s<s>-<node>``;
- internet: bridge ``inet0`` in ``<id>-inet`` holding 198.51.100.1/24, its servers on
  203.0.113.1 (on its ``lo``, one hop beyond the uplinks' router); node i with an uplink
  gets ``upl`` with 198.51.100.<10+i>/24 (default route via .1), bridge port ``n-<node>``,
  and, with an ``uplink_rate``, ``ifb-<node>`` in ``<id>-inet`` shaping what it sends;
  behind a NAT (``nat``), that address is its home router's instead: namespace
  ``<id>-<node>-nat`` with ``wan0`` on the bridge and the bridge ``in0`` 192.168.<i>.1/24
  (its home network; each node's port ``in-<node>``), the node's ``upl`` 192.168.<i>.2/24
  (default via .1), a node ``behind`` it .3, .4, ... in file order; with ``cgnat`` the
  router's ``wan0`` is 100.96.<i>.2/24 instead, towards the carrier's NAT (namespace
  ``<id>-<node>-cgn``: ``in0`` 100.96.<i>.1/24, ``wan0`` on the bridge with the public
  address); its ``bootstrap`` nodes are dialled at their uplink's address;
- LAN of node i: 172.20.<i>.0/24, node .1 on ``lan0``, host .2 on ``eth0`` (default via .1);
- mesh IPv4 of node i: 10.77.0.<i+1> in 10.77.0.0/16;
- meshd's QUIC port: 6697 on every node; a node's bootstrap peers are its neighbours across
  point-to-point links, at their address on the link (segment members find each other by
  beacons; meshd picks its own WireGuard ports), but for invited nodes: they have no keys
  until they join, and find the mesh from their invite;
- an invited node's files are provisioning/provision's, under ``<dir>/nodes/<n>/root``;
  its mesh address is the one its invite gives;
- UDP listen ports for hand-made WireGuard (the data plane benchmark's baseline): node's
  k-th neighbour (links in file order, then segments) -> 51000 + k; A's endpoint for B is
  B's address on their shared link or segment and B's port for A.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from meshd.config.settings import CONFIG_VERSION
from nstestbed.topology import LinkSpec, Rate, SegmentSpec, Settings, SettingValue, Topology

DEFAULT_ID = "mtb"
DEFAULT_STATE_DIR = Path("/run/meshd-testbed")
TESTBED_ID = re.compile(r"[a-z0-9]{1,16}")
LINK_POOL = ipaddress.IPv4Network("100.64.0.0/10")
SEGMENT_BASE = ipaddress.IPv4Address("100.127.0.0")
STRANGER_HOST = 200  # a stranger's host number on a segment's /24 (members count from 1)
INTERNET_NET = ipaddress.IPv4Network("198.51.100.0/24")
INTERNET_ADDRESS = ipaddress.IPv4Address("198.51.100.1")  # the uplinks' router
# The servers sit beyond that router (on the internet namespace's lo), as a real ISP's do:
# an address on the uplinks' own subnet would be reached over a dead uplink's connected
# route even when the node leaves by a gateway.
SERVER_ADDRESS = ipaddress.IPv4Address("203.0.113.1")
UPLINK_HOST_BASE = 10
LAN_BASE = ipaddress.IPv4Address("172.20.0.0")
MESH_PREFIX = ipaddress.IPv4Network("10.77.0.0/16")
QUIC_PORT = 6697  # meshd's default control.quic_port
LINK_PORTS = (51820, 52819)  # meshd's default [wireguard] listen_port_min and _max
MESH_IPV6_PREFIX = "fd6d:6573:6864::/48"  # meshd's default ULA prefix
LISTEN_PORT_BASE = 51000
HTTP_PORT = 80
IPERF_PORTS = tuple(range(5201, 5211))
SMTP_PORT = 25  # a TCP listener (iperf3) standing in for a mail server: exit policy tests
DNS_PORT = 53  # dnsmasq on the uplinks' router (the households' resolver) and the server
DNS_SUFFIX = "test"  # every name under it resolves to SERVER_ADDRESS
MESH_IPERF_PORTS = "5301-5310"  # benchmarks' iperf3 servers on nodes' mesh addresses
METRICS_PORT = 9478  # a topology's `metrics`: [metrics] listen on the mesh address
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the trailing NUL
UPLINK_IF = "upl"
NAT_INSIDE_IF = "in0"
NAT_WAN_IF = "wan0"
NAT_INSIDE_BASE = ipaddress.IPv4Address("192.168.0.0")  # node i's home network: .<i>.0/24
CARRIER_BASE = ipaddress.IPv4Address("100.96.0.0")  # node i's carrier NAT: .<i>.0/24
LAN_NODE_IF = "lan0"
LAN_HOST_IF = "eth0"
INTERNET_BRIDGE = "inet0"


class PlanError(Exception):
    """The topology cannot be laid out with these settings (id, state directory)."""


@dataclass(frozen=True)
class Endpoint:
    """One node's interface on a link or segment."""

    node: str
    ifname: str
    address: ipaddress.IPv4Interface
    mac: str | None = None  # set on segment ports, where cut rules match the sender's MAC


@dataclass(frozen=True)
class LinkPlan:
    index: int
    a: Endpoint
    b: Endpoint
    rate: Rate | None
    loss: float
    mtu: int | None

    @property
    def key(self) -> str:
        return pair_key(self.a.node, self.b.node)


@dataclass(frozen=True)
class SegmentPort:
    endpoint: Endpoint
    switch_port: str  # the veth end enslaved to the bridge in <id>-sw


@dataclass(frozen=True)
class SegmentPlan:
    index: int
    bridge: str
    ports: tuple[SegmentPort, ...]


@dataclass(frozen=True)
class CarrierPlan:
    """A carrier's NAT (CGNAT) between a household's router and the internet."""

    namespace: str
    inside_address: ipaddress.IPv4Interface  # on NAT_INSIDE_IF; the router's wan has .2
    wan_ifname: str  # on the internet bridge, with the household's public address

    @property
    def router_address(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.inside_address.ip + 1}/24")


@dataclass(frozen=True)
class NatPlan:
    """A household's home router between its home network and the internet."""

    namespace: str
    kind: str  # topology.NAT_KINDS
    inside_ifname: str  # the home network's bridge: each node behind it has a port
    inside_address: ipaddress.IPv4Interface
    wan_ifname: str  # on the internet bridge with the public address (or the carrier's)
    carrier: CarrierPlan | None = None  # kind ``cgnat``


def home_port(node: str) -> str:
    """The home router's end of a node's uplink, a port of its ``in0`` bridge."""
    return f"in-{node}"


@dataclass(frozen=True)
class UplinkPlan:
    ifname: str
    address: ipaddress.IPv4Interface  # the internet's address: the NAT's, behind one
    internet_port: str  # the veth end enslaved to the internet bridge
    rate: Rate | None
    ifb: str  # in the internet namespace: shapes what the node sends (only with a rate)
    nat: NatPlan | None = None
    behind: str = ""  # the node whose home router (``nat``) it shares; "": its own
    host: int = 1  # its place on the home network: the router is .1, the node .1 + host

    @property
    def node_address(self) -> ipaddress.IPv4Interface:
        """The address on the node's own uplink interface."""
        if self.nat is None:
            return self.address
        return ipaddress.IPv4Interface(f"{self.nat.inside_address.ip + self.host}/24")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return INTERNET_ADDRESS if self.nat is None else self.nat.inside_address.ip


@dataclass(frozen=True)
class LanPlan:
    namespace: str
    node_ifname: str
    node_address: ipaddress.IPv4Interface
    host_ifname: str
    host_address: ipaddress.IPv4Interface


@dataclass(frozen=True)
class Adjacency:
    """A neighbour relation seen from ``local.node``: how it reaches ``remote.node``."""

    local: Endpoint
    remote: Endpoint
    listen_port: int  # local node's UDP port for this neighbour
    peer_port: int  # the neighbour's UDP port for local node
    medium: str  # "links[k]" or "segments[s]"

    @property
    def peer(self) -> str:
        return self.remote.node

    @property
    def is_segment(self) -> bool:
        return self.medium.startswith("segments")


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int
    namespace: str
    mesh_ipv4: ipaddress.IPv4Address
    share: bool
    rate_cap: Rate | None
    directory: Path
    adjacencies: tuple[Adjacency, ...]
    uplink: UplinkPlan | None
    lan: LanPlan | None
    monthly_quota_mb: int = 0
    receipts: Settings = ()
    invited: bool = False  # provisioned from an invite by `testbed join`, not by `up`
    membership: Settings = ()
    admin: bool = False  # its key is one of the mesh's admins
    cert_validity_s: int = 0  # its certificate's validity; 0: the testbed's default
    control: Settings = ()  # added to its [control] section
    routing: Settings = ()  # its [routing] section
    cert_age_s: int = 0  # its certificate was issued this long ago
    wireguard: Settings = ()  # its [wireguard] section
    metrics: tuple[str, ...] | None = None  # serves Prometheus metrics to these nodes
    map: Settings = ()  # its [map] section
    bootstrap: tuple[str, ...] = ()  # nodes it dials over the internet

    @property
    def config_path(self) -> Path:
        return self.directory / "meshd.toml"

    @property
    def root(self) -> Path:
        """An invited node's scratch root: provisioning/provision --root writes here."""
        return self.directory / "root"

    @property
    def meshd_state_dir(self) -> Path:
        if self.invited:
            return self.root / "var" / "lib" / "meshd"
        return self.directory / "state"

    @property
    def socket(self) -> Path:
        return self.directory / "meshd.sock"

    @property
    def log(self) -> Path:
        return self.directory / "meshd.log"

    def adjacency(self, peer: str) -> Adjacency | None:
        for adj in self.adjacencies:
            if adj.peer == peer:
                return adj
        return None


@dataclass(frozen=True)
class Plan:
    testbed_id: str
    state_dir: Path
    topology: Topology
    nodes: tuple[NodePlan, ...]
    links: tuple[LinkPlan, ...]
    segments: tuple[SegmentPlan, ...]

    @property
    def internet_namespace(self) -> str:
        return f"{self.testbed_id}-inet"

    @property
    def switch_namespace(self) -> str | None:
        return f"{self.testbed_id}-sw" if self.segments else None

    @property
    def internet_dir(self) -> Path:
        return self.state_dir / "inet"

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def namespaces(self) -> list[str]:
        """Every namespace of this testbed, nodes first (the order ``down`` deletes them)."""
        names = [n.namespace for n in self.nodes]
        names += [n.lan.namespace for n in self.nodes if n.lan]
        routers = [n.uplink.nat for n in self.nodes if n.uplink and n.uplink.nat]
        names += list(dict.fromkeys(nat.namespace for nat in routers))
        names += list(dict.fromkeys(nat.carrier.namespace for nat in routers if nat.carrier))
        names.append(self.internet_namespace)
        if self.switch_namespace:
            names.append(self.switch_namespace)
        return names

    def stranger(self, segment: int) -> tuple[str, ipaddress.IPv4Interface]:
        """The namespace and address of a stranger (no member: no keys, no meshd) on
        segment ``segment`` (``testbed stranger``; the boundaries' tests)."""
        if not 0 <= segment < len(self.segments):
            raise KeyError(f"segment {segment}")
        address = ipaddress.IPv4Address(int(SEGMENT_BASE) + 256 * segment + STRANGER_HOST)
        return f"{self.testbed_id}-x{segment}", ipaddress.IPv4Interface(f"{address}/24")

    def link_between(self, a: str, b: str) -> LinkPlan | None:
        for link in self.links:
            if {link.a.node, link.b.node} == {a, b}:
                return link
        return None


def pair_key(a: str, b: str) -> str:
    """Canonical name of an unordered node pair ("a-b"); node names hold no '-'."""
    return "-".join(sorted((a, b)))


def namespace_pattern(testbed_id: str) -> re.Pattern[str]:
    """Every namespace a testbed with this id may have made (for cleaning up without a
    state file). Ids hold no '-', so another id's namespaces never match."""
    return re.compile(rf"{re.escape(testbed_id)}-[a-z0-9]{{1,8}}(-lan)?")


def check_id(testbed_id: str) -> str:
    if not TESTBED_ID.fullmatch(testbed_id):
        raise PlanError(f"MESHD_TESTBED_ID={testbed_id!r}: expected 1-16 characters a-z, 0-9")
    return testbed_id


def make_plan(topology: Topology, testbed_id: str, state_dir: Path) -> Plan:
    check_id(testbed_id)
    state_dir = Path(state_dir)
    if not state_dir.is_absolute():
        raise PlanError(f"MESHD_TESTBED_DIR={state_dir}: expected an absolute path")
    links = tuple(_link(k, spec) for k, spec in enumerate(topology.links))
    segments = tuple(_segment(s, members) for s, members in enumerate(topology.segments))

    # Neighbour relations in a fixed order: links in file order, then segments.
    pairs: list[tuple[Endpoint, Endpoint, str]] = []
    for link in links:
        pairs.append((link.a, link.b, f"links[{link.index}]"))
    for seg in segments:
        for x, port in enumerate(seg.ports):
            for other in seg.ports[x + 1 :]:
                pairs.append((port.endpoint, other.endpoint, f"segments[{seg.index}]"))
    ports: dict[tuple[str, str], int] = {}
    counters: dict[str, int] = {}
    for one, two, _ in pairs:
        for local, remote in ((one, two), (two, one)):
            k = counters.get(local.node, 0)
            counters[local.node] = k + 1
            ports[(local.node, remote.node)] = LISTEN_PORT_BASE + k
    adjacencies: dict[str, list[Adjacency]] = {}
    for one, two, medium in pairs:
        for local, remote in ((one, two), (two, one)):
            adjacencies.setdefault(local.node, []).append(
                Adjacency(
                    local=local,
                    remote=remote,
                    listen_port=ports[(local.node, remote.node)],
                    peer_port=ports[(remote.node, local.node)],
                    medium=medium,
                )
            )

    nodes: list[NodePlan] = []
    for i, spec in enumerate(topology.nodes):
        namespace = f"{testbed_id}-{spec.name}"
        uplink = None
        if spec.uplink and spec.behind:
            owner = next(n.uplink for n in nodes if n.name == spec.behind)
            assert owner is not None  # the topology checked: it has a home router
            placed = [n for n in topology.nodes[:i] if n.behind == spec.behind]
            uplink = replace(owner, behind=spec.behind, host=2 + len(placed), rate=None)
        elif spec.uplink:
            nat = None
            if spec.nat:
                carrier = None
                if spec.nat == "cgnat":
                    carrier = CarrierPlan(
                        f"{namespace}-cgn",
                        ipaddress.IPv4Interface(f"{CARRIER_BASE + 256 * i + 1}/24"),
                        NAT_WAN_IF,
                    )
                nat = NatPlan(
                    f"{namespace}-nat",
                    spec.nat,
                    NAT_INSIDE_IF,
                    ipaddress.IPv4Interface(f"{NAT_INSIDE_BASE + 256 * i + 1}/24"),
                    NAT_WAN_IF,
                    carrier,
                )
            uplink = UplinkPlan(
                UPLINK_IF,
                ipaddress.IPv4Interface(f"{INTERNET_NET[UPLINK_HOST_BASE + i]}/24"),
                f"n-{spec.name}",
                spec.uplink_rate,
                f"ifb-{spec.name}",
                nat,
            )
        lan = None
        if spec.lan:
            base = int(LAN_BASE) + 256 * i
            lan = LanPlan(
                f"{namespace}-lan",
                LAN_NODE_IF,
                ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 1)}/24"),
                LAN_HOST_IF,
                ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 2)}/24"),
            )
        node = NodePlan(
            name=spec.name,
            index=i,
            namespace=namespace,
            mesh_ipv4=MESH_PREFIX[i + 1],
            share=spec.share,
            rate_cap=spec.rate_cap,
            directory=state_dir / "nodes" / spec.name,
            adjacencies=tuple(adjacencies.get(spec.name, ())),
            uplink=uplink,
            lan=lan,
            monthly_quota_mb=spec.monthly_quota_mb,
            receipts=spec.receipts,
            invited=spec.invited,
            membership=spec.membership,
            admin=spec.admin,
            cert_validity_s=spec.cert_validity_s,
            cert_age_s=spec.cert_age_s,
            control=spec.control,
            routing=spec.routing,
            wireguard=spec.wireguard,
            metrics=spec.metrics,
            bootstrap=spec.bootstrap,
            map=tuple(
                (key, str(state_dir / "nodes" / spec.name / value))
                if key == "export_dir" and isinstance(value, str) and not value.startswith("/")
                else (key, value)
                for key, value in spec.map
            ),
        )
        if len(str(node.socket).encode()) > UNIX_PATH_MAX:
            raise PlanError(
                f"MESHD_TESTBED_DIR={state_dir}: too long for the control socket "
                f"{node.socket} (at most {UNIX_PATH_MAX} bytes)"
            )
        nodes.append(node)
    return Plan(testbed_id, state_dir, topology, tuple(nodes), links, segments)


def _link(k: int, spec: LinkSpec) -> LinkPlan:
    base = int(LINK_POOL.network_address) + 256 * k
    a = Endpoint(
        spec.a, f"u-{spec.b}", ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 1)}/24")
    )
    b = Endpoint(
        spec.b, f"u-{spec.a}", ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 2)}/24")
    )
    return LinkPlan(k, a, b, spec.rate, spec.loss, spec.mtu)


def _segment(s: int, spec: SegmentSpec) -> SegmentPlan:
    ports = []
    for i, name in enumerate(spec.members):
        address = ipaddress.IPv4Address(int(SEGMENT_BASE) + 256 * s + i + 1)
        endpoint = Endpoint(
            name,
            f"s{s}",
            ipaddress.IPv4Interface(f"{address}/24"),
            f"02:6d:74:00:{s:02x}:{i + 1:02x}",
        )
        ports.append(SegmentPort(endpoint, f"s{s}-{name}"))
    return SegmentPlan(s, f"seg{s}", tuple(ports))


# -- meshd configs -------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeKeys:
    """The public half of a node's identity, as the neighbours' configs need it."""

    node_id: str
    wireguard_public: str


def _toml_str(value: object) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value))


def _toml_value(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_str(v) for v in value) + "]"
    return _toml_str(value) if isinstance(value, str) else repr(value)


def render_config(plan: Plan, node: NodePlan, keys: dict[str, NodeKeys], admin_key: str) -> str:
    """The meshd config of ``node`` (meshd/config.py): its own settings, the testbed's
    admin key, and a [[bootstrap]] entry per neighbour across a point-to-point link, as an
    invite would give. Neighbours on a shared segment find each other by beacons, with no
    configuration; meshd learns everything else over the sessions."""
    lines = [
        f"# meshd config of testbed node {node.name} (generated by netns-testbed; do not edit)",
        f"version = {CONFIG_VERSION}",
        "[node]",
        f"name = {_toml_str(node.name)}",
        f"state_dir = {_toml_str(node.meshd_state_dir)}",
        f"mesh_ipv4 = {_toml_str(node.mesh_ipv4)}",
        "",
        "[mesh]",
        f"ipv4_prefix = {_toml_str(MESH_PREFIX)}",
        f"admin_keys = [{_toml_str(admin_key)}]",
        "",
        "[control]",
        f"socket = {_toml_str(node.socket)}",
        *(f"{key} = {_toml_value(value)}" for key, value in node.control),
        "",
        "[isolation]",
        f"open_tcp_ports = [{_toml_str(MESH_IPERF_PORTS)}]",
        f"open_udp_ports = [{_toml_str(MESH_IPERF_PORTS)}]",
        "",
        "[exit]",  # checked through the exit tunnel: the testbed internet's server
        f"check_target = {_toml_str(f'{SERVER_ADDRESS}:{HTTP_PORT}')}",
    ]
    if node.uplink:
        lines += [
            "",
            "[uplink]",
            f"interface = {_toml_str(node.uplink.ifname)}",
            f"health_target = {_toml_str(f'{SERVER_ADDRESS}:{HTTP_PORT}')}",
            f"share = {'true' if node.share else 'false'}",
            f"resolver = {_toml_str(INTERNET_ADDRESS)}",
        ]
        if node.uplink.rate:
            lines.append(f"rate = {_toml_str(node.uplink.rate.text)}")
        if node.rate_cap:
            lines.append(f"rate_cap = {_toml_str(node.rate_cap.text)}")
        if node.monthly_quota_mb:
            lines.append(f"monthly_quota_mb = {node.monthly_quota_mb}")
    for section, settings in (
        ("receipts", node.receipts),
        ("membership", node.membership),
        ("routing", node.routing),
        ("wireguard", node.wireguard),
        ("map", node.map),
    ):
        if settings:
            lines += ["", f"[{section}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in settings]
    if node.metrics is not None:
        allowed = (_toml_str(keys[n].node_id) for n in node.metrics if n in keys)
        lines += [
            "",
            "[metrics]",
            f"listen = {_toml_str(f'{node.mesh_ipv4}:{METRICS_PORT}')}",
            f"allow = [{', '.join(allowed)}]",
        ]
    if node.lan:
        lines += ["", "[lan]", f"interfaces = [{_toml_str(node.lan.node_ifname)}]"]
    for adj in node.adjacencies:
        if adj.is_segment or adj.peer not in keys:  # an invited node has no keys until it joins
            continue
        lines += [
            "",
            f"# over {adj.medium}: {adj.local.ifname} {adj.local.address} -> {adj.remote.address}",
            "[[bootstrap]]",
            f"name = {_toml_str(adj.peer)}",
            f"node_id = {_toml_str(keys[adj.peer].node_id)}",
            f"address = {_toml_str(f'{adj.remote.address.ip}:{QUIC_PORT}')}",
        ]
    for name in node.bootstrap:
        peer = plan.node(name)
        if peer.uplink is None or name not in keys:
            continue
        lines += [
            "",
            f"# over the internet: {peer.uplink.address.ip}",
            "[[bootstrap]]",
            f"name = {_toml_str(name)}",
            f"node_id = {_toml_str(keys[name].node_id)}",
            f"address = {_toml_str(f'{peer.uplink.address.ip}:{QUIC_PORT}')}",
        ]
    return "\n".join(lines) + "\n"
