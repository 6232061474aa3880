"""The config's settings: one frozen dataclass per TOML section, every option with its type,
default and one-line help (``_opt``); values that need parsing (rates, endpoints, port
ranges) are parsed once, when the file is read (meshd.config), by the parser their type
names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshd.core.endpoints import Address
from meshd.core.proto.session import PROTOCOLS

# The config's format, as a file's top-level ``version = N`` says (absent: 1, the first
# release's). Since the first release keys were only added, so version 1 still reads as it
# was written; a rename bumps it and adds its step to meshd.config.CONFIG_STEPS.
CONFIG_VERSION = 1
DEFAULT_SOCKET = "/run/meshd/meshd.sock"
DEFAULT_CONFIG = "/etc/meshd/meshd.toml"
# The exit tunnels' rule preferences (meshd.adapters.net.exit_tunnel; a unit test keeps them equal):
# the gateway's `iif <uplink>` must win over the mesh rule, the mesh rule over the user's.
EXIT_GATEWAY_RULE_PREF = 1000
EXIT_USER_RULE_PREF = 1100
# The kernel's own tables: default, main, local.
RESERVED_TABLES = (253, 254, 255)


class ConfigError(Exception):
    """One problem in a config file: where it is and what was expected."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


def _opt(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


_RATE_UNITS = {"kbit": 1, "mbit": 1000, "gbit": 1000_000}


def parse_rate_kbit(text: str) -> int:
    """``20mbit`` -> 20000 (kbit/s, as tc counts); ValueError when it is not a rate."""
    for unit, factor in _RATE_UNITS.items():
        if text.endswith(unit):
            try:
                value = float(text[: -len(unit)])
            except ValueError:
                break
            if value > 0:
                return max(1, round(value * factor))
    raise ValueError(f"expected a rate such as 20mbit or 512kbit, got {text!r}")


def parse_port_range(text: str) -> PortRange:
    """``22`` -> (22, 22), ``5201-5210`` -> (5201, 5210); ValueError otherwise."""
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"expected a port or a range such as 5201-5210, got {text!r}") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"expected ports 1..65535, low to high, got {text!r}")
    return first, last


PortRange = tuple[int, int]


@dataclass(frozen=True)
class Rate:
    """A rate as the config spells it (``20mbit``) and as tc counts it (kbit/s): parsed
    once, when the file is read."""

    text: str
    kbit: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        return cls(text, parse_rate_kbit(text))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class NodeSettings:
    name: str = _opt("", "human name of this node, shown to operators")
    state_dir: Path = _opt(Path("/var/lib/meshd"), "directory holding keys and state")
    mesh_ipv4: ipaddress.IPv4Address | None = _opt(
        None, "this node's mesh IPv4 address (held on lo)"
    )


@dataclass(frozen=True)
class MeshSettings:
    ipv4_prefix: ipaddress.IPv4Network = _opt(
        ipaddress.IPv4Network("10.77.0.0/16"), "the mesh's IPv4 prefix"
    )
    ipv6_prefix: ipaddress.IPv6Network = _opt(
        ipaddress.IPv6Network("fd6d:6573:6864::/48"),
        "the mesh's ULA prefix; node addresses are this plus bits of the node id",
    )
    admin_keys: tuple[str, ...] = _opt(
        (),
        "node ids of the mesh's admin keys (required): the node needs its membership "
        "certificate signed under them (membership.cert, mesh.cert in state_dir) and "
        "checks its neighbours' against them",
    )


@dataclass(frozen=True)
class MembershipSettings:
    renew_margin_s: int = _opt(
        0,
        "ask neighbours for a fresh certificate this long before it expires; 0: once a third "
        "of its validity is left",
    )
    renew_retry_s: float = _opt(
        10.0, "seconds between renewal requests (each to the next verified neighbour)"
    )
    renew_grace_s: int = _opt(
        7 * 86400, "as an issuer: still renew a certificate this long after it expired"
    )
    clock_tolerance_s: int = _opt(
        300,
        "certificates are checked with this tolerance, and the clock is corrected by the "
        "median of the neighbours' clocks only when that is further off than this",
    )
    test_clock_offset_s: int = _opt(
        0, "tests only: pretend the system clock is off by this many seconds (a Pi without RTC)"
    )


@dataclass(frozen=True)
class ControlSettings:
    socket: Path = _opt(
        Path(DEFAULT_SOCKET), "Unix socket of the local control API (MESHD_SOCKET overrides)"
    )
    quic_port: int = _opt(6697, "UDP port of the QUIC control sessions with neighbours")
    protocols: tuple[str, ...] = _opt(
        PROTOCOLS,
        "protocol versions (QUIC ALPN ids) offered and accepted, newest first; fewer only to"
        " play an older node in tests, or to refuse neighbours too old",
    )


@dataclass(frozen=True)
class WireGuardSettings:
    backend: str = _opt(
        "auto", "kernel, userspace (wireguard-go) or auto", choices=("auto", "kernel", "userspace")
    )
    interface_prefix: str = _opt("mw", "first characters of every link interface (<= 3)")
    keepalive_s: int = _opt(
        25,
        "persistent keepalive on every link, seconds: an idle link's sign of life and what"
        " holds a NAT mapping (a link in use is watched by what comes back, [liveness])",
    )
    mtu: int = _opt(1420, "MTU of the link interfaces")
    listen_port_min: int = _opt(51820, "lowest UDP port of a link interface (one port per link)")
    listen_port_max: int = _opt(52819, "highest UDP port of a link interface")
    issuer_link_share: float = _opt(
        0.25,
        "share of the link port range the links of one delegate's members may hold here"
        " (beyond it they are refused, issuer_link_limit; an admin's members are not bounded)",
    )

    @property
    def issuer_link_limit(self) -> int:
        """How many links one delegate's members may hold here (at least one)."""
        ports = self.listen_port_max - self.listen_port_min + 1
        return max(1, int(ports * self.issuer_link_share))


@dataclass(frozen=True)
class LivenessSettings:
    poll_interval_s: float = _opt(0.25, "how often each link's counters are read")
    busy_poll_interval_s: float = _opt(
        0.1, "how often they are read while a link carries traffic or is in doubt"
    )
    answer_within_s: float = _opt(
        0.2,
        "a link we sent data into that has received nothing back for this long is down"
        " (asked with echoes through the tunnel first; at least two busy polls)",
    )
    probe_after_s: float = _opt(
        26.0, "an idle link silent this long gets one echo through the tunnel (> keepalive_s)"
    )
    dead_after_s: float = _opt(
        27.0, "an idle link with no packet received for this long is down (> probe_after_s)"
    )


@dataclass(frozen=True)
class RoutingSettings:
    # 176 is named by no iproute2 rt_protos file (188, say, prints as "ospf").
    route_protocol: int = _opt(176, "rtnetlink protocol number marking meshd's routes")
    table: int = _opt(
        176, "routing table of meshd's routes, looked up only for the mesh's two prefixes"
    )
    rule_preference: int = _opt(
        1050,
        "preference of the rules sending the mesh prefixes to that table: after the exit "
        "gateway's (1000), before the exit user's (1100)",
    )
    metric: int = _opt(100, "kernel metric of the routes meshd installs")
    max_routes_per_neighbour: int = _opt(
        10_000, "route entries kept from one neighbour (two per member: 5,000 members)"
    )
    max_routes: int = _opt(40_000, "route entries kept in all, from every neighbour")
    test_announce: tuple[str, ...] = _opt(
        (),
        "TESTS ONLY: prefixes this node announces in Babel beside its own addresses, to "
        "play a hostile member (its neighbours must refuse them)",
    )
    unsigned_routes: str = _opt(
        "refuse",
        "'refuse': a seqno is taken only with its originator's signature, and a route whose "
        "owner no certificate names yet is held (DESIGN.md, routing). 'accept', only while "
        "meshd/1 nodes remain in the mesh: their routes, which carry no signature, are "
        "taken too (a route once seen signed never is unsigned again)",
    )
    test_forge_seqnos: int = _opt(
        0,
        "TESTS ONLY: add this to the seqno of every route this node relays, keeping the "
        "originator's signature, to play a member that invents newer seqnos",
    )
    test_understate_metrics: bool = _opt(
        False,
        "TESTS ONLY: advertise every route this node relays at metric 0, to play a member "
        "that attracts traffic it then drops (a black hole)",
    )
    update_interval_s: float = _opt(
        120.0,
        "seconds between Babel's periodic full updates (babeld: 16 s over lossy UDP; meshd "
        "sends Babel on reliable QUIC streams, where they only refresh)",
    )


@dataclass(frozen=True)
class DiscoverySettings:
    beacons: bool = _opt(True, "send and hear signed beacons on shared LAN segments")
    beacon_port: int = _opt(6698, "UDP port of the beacons")
    beacon_interval_s: float = _opt(
        60.0, "seconds between periodic beacons (a newcomer's burst is answered at once)"
    )
    beacon_interfaces: tuple[str, ...] = _opt(
        (), "interfaces to beacon on; empty: every up interface with an IPv4 broadcast address"
    )
    share_endpoints: bool = _opt(True, "tell neighbours the addresses of our other neighbours")
    forget_after_s: float = _opt(
        600.0, "a neighbour unheard of for this long loses its link (bootstrap peers are kept)"
    )


@dataclass(frozen=True)
class UplinkSettings:
    interface: str = _opt(
        "", "this household's own internet uplink; empty: none (always leave by a gateway)"
    )
    health_target: Address | None = _opt(
        None,
        "HOST:PORT that a TCP connection through the uplink (only) must reach while it works",
    )
    health_interval_s: float = _opt(0.5, "seconds between uplink health checks")
    health_dead_after_s: float = _opt(
        1.5, "the uplink is down when no check has succeeded for this long"
    )
    rate: Rate | None = _opt(
        None, "the line's upload rate (such as 50mbit); set, the owner's traffic goes first"
    )
    share: bool = _opt(False, "offer the uplink to the mesh as a gateway while it works")
    rate_cap: Rate | None = _opt(
        None, "the most the mesh gets of the uplink, each way (such as 20mbit)"
    )
    accepts_new: bool = _opt(True, "take neighbours who are not using this gateway yet")
    exit_port: int = _opt(52820, "UDP port of the gateway's WireGuard exit interface")
    block_smtp: bool = _opt(True, "exit policy: no outbound SMTP (TCP port 25) for the mesh")
    blocked: tuple[str, ...] = _opt((), "node ids that may not use this gateway")
    monthly_quota_mb: int = _opt(
        0, "each neighbour's exit traffic per calendar month (UTC), both ways, in MB; 0: none"
    )
    resolver: str = _opt(
        "",
        "DNS resolver the gateway's exit users' queries go to; empty: the first one of "
        "/run/systemd/resolve/resolv.conf or /etc/resolv.conf that is not a loopback address",
    )


@dataclass(frozen=True)
class ExitSettings:
    quic_port: int = _opt(
        6699, "UDP port of exit sessions, on mesh addresses (the same on every node)"
    )
    table: int = _opt(
        177, "first of two routing tables meshd owns for exit traffic (this one and the next)"
    )
    fwmark: int = _opt(0x4D58, "mark of the exit tunnel's own packets (kept out of the tunnel)")
    mtu: int = _opt(1340, "MTU of the exit tunnel (inside a mesh link)")
    check_target: Address | None = _opt(
        None,
        "HOST:PORT that a TCP connection through the exit tunnel must reach while we leave "
        "by a gateway (else it counts as refusing us); empty: uplink.health_target; "
        "neither: the exit is not checked",
    )


@dataclass(frozen=True)
class IsolationSettings:
    open_tcp_ports: tuple[PortRange, ...] = _opt(
        (), "TCP ports (such as 22 or 5201-5210) of this node's own services the mesh may reach"
    )
    open_udp_ports: tuple[PortRange, ...] = _opt(
        (), "UDP ports of this node's own services the mesh may reach (meshd's are always open)"
    )


@dataclass(frozen=True)
class LanSettings:
    interfaces: tuple[str, ...] = _opt(
        (),
        "the household LAN's interfaces: NATed to the mesh address, never reachable from it; "
        "only these (and the node itself) may send through the node into the mesh or an exit",
    )


@dataclass(frozen=True)
class DevicesSettings:
    pool: ipaddress.IPv4Network = _opt(
        ipaddress.IPv4Network("10.254.0.0/24"),
        "addresses of the household's roaming devices (meshd device add); the node holds the "
        "first; must not overlap the LAN or the mesh",
    )
    listen_port: int = _opt(52821, "UDP port the devices' WireGuard interface listens on")
    endpoint: str = _opt(
        "",
        "HOST:PORT devices are told to reach this node at (a public name or address, a "
        "forwarded port); empty: the uplink's address and listen_port",
    )
    dns: tuple[str, ...] = _opt((), "DNS servers written into the devices' configs")


@dataclass(frozen=True)
class ReceiptsSettings:
    sign: bool = _opt(
        True, "sign receipts for what neighbours relay for us (a node that does not is throttled)"
    )
    tolerance_percent: float = _opt(
        2.0,
        "sign a neighbour's claim up to this share above our own count (the two ends count at "
        "different moments, and a lossy link drops what the sender counted)",
    )
    tolerance_kb: int = _opt(
        256, "... plus this many kilobytes (KiB), once over the pair's whole history"
    )
    epoch_interval_s: float = _opt(
        3600.0,
        "take a neighbour's new epoch (it restarted its counting) at most this often; "
        "sooner, its claims are refused",
    )
    claim_interval_s: float = _opt(10.0, "seconds between claims to a neighbour we relay for")
    claim_mb: int = _opt(16, "claim at once when this many MiB were relayed since the last claim")
    credit_mb: int = _opt(
        8, "MiB relayed for a neighbour on credit before it must sign (grows with its receipts)"
    )
    throttle_rate: Rate = _opt(
        Rate.parse("1mbit"),
        "each way, what a neighbour beyond its credit gets relayed (it is never cut off)",
    )


@dataclass(frozen=True)
class MetricsSettings:
    listen: Address | None = _opt(
        None,
        "HOST:PORT to serve Prometheus metrics on: 127.0.0.1:9478 for this host only, this "
        "node's mesh_ipv4 for the nodes of `allow`; empty: off",
    )
    allow: tuple[str, ...] = _opt(
        (),
        "node ids or addresses that may scrape the metrics over the mesh (a node id: its "
        "mesh addresses, while its certificate holds)",
    )
    on_uplink: bool = _opt(
        False,
        "allow `listen` on every address (0.0.0.0, ::) or one of the uplink's, where the "
        "uplink's side reaches it",
    )


@dataclass(frozen=True)
class MapSettings:
    publish: bool = _opt(
        True,
        "show this node on the community map: its id, whether it is online and a gateway, "
        "and its links with their quality; nothing about its traffic",
    )
    name: str = _opt("", "the name shown on the map; empty: none (a short form of the id)")
    contact: str = _opt("", "how to reach this node's operator, shown on the map; empty: none")
    location: str = _opt(
        "", "LATITUDE,LONGITUDE in degrees (53.0793,8.8017), shown on the map; empty: none"
    )
    refresh_s: float = _opt(
        300.0, "how often this node's map record is sent again (it is shown offline after 3)"
    )
    export_dir: str = _opt(
        "",
        "write meshviewer.json and nodelist.json here every export_interval_s, for a web "
        "server to serve; empty: only `meshd map export DIR` writes them",
    )
    export_interval_s: float = _opt(60.0, "how often export_dir's files are written")


@dataclass(frozen=True)
class UpdateSettings:
    stage: str = _opt(
        "normal",
        "when this node takes a new release its neighbours pass on (signed by the mesh's "
        "admins): early, normal or late (each a release's stage interval after the one "
        "before), or manual (only by `meshd update apply`); it fetches it in any case",
    )


@dataclass(frozen=True)
class Bootstrap:
    node_id: str = _opt("", "the peer's node id (43 characters)", required=True)
    address: Address = _opt(
        ("", 0), "the peer's underlay HOST:PORT of its QUIC control port", required=True
    )
    name: str = _opt("", "a name to show until the peer's certificate names it")


@dataclass(frozen=True)
class Config:
    path: Path
    version: int = CONFIG_VERSION  # the version the file was written for
    node: NodeSettings = field(default_factory=NodeSettings)
    mesh: MeshSettings = field(default_factory=MeshSettings)
    membership: MembershipSettings = field(default_factory=MembershipSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    wireguard: WireGuardSettings = field(default_factory=WireGuardSettings)
    liveness: LivenessSettings = field(default_factory=LivenessSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    exit: ExitSettings = field(default_factory=ExitSettings)
    lan: LanSettings = field(default_factory=LanSettings)
    devices: DevicesSettings = field(default_factory=DevicesSettings)
    isolation: IsolationSettings = field(default_factory=IsolationSettings)
    receipts: ReceiptsSettings = field(default_factory=ReceiptsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    map: MapSettings = field(default_factory=MapSettings)
    update: UpdateSettings = field(default_factory=UpdateSettings)
    bootstrap: tuple[Bootstrap, ...] = ()


SECTIONS: dict[str, type] = {
    "node": NodeSettings,
    "mesh": MeshSettings,
    "membership": MembershipSettings,
    "control": ControlSettings,
    "wireguard": WireGuardSettings,
    "liveness": LivenessSettings,
    "routing": RoutingSettings,
    "discovery": DiscoverySettings,
    "uplink": UplinkSettings,
    "exit": ExitSettings,
    "lan": LanSettings,
    "devices": DevicesSettings,
    "isolation": IsolationSettings,
    "receipts": ReceiptsSettings,
    "metrics": MetricsSettings,
    "map": MapSettings,
    "update": UpdateSettings,
}
