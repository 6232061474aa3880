"""Typed TOML configuration.

Every option has a type, a default and a one-line help (``meshd check-config --explain``
prints them). An invalid file is refused with the file, the key and what was expected.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from meshd.core.endpoints import Address, parse_endpoint
from meshd.core.proto.session import PROTOCOLS
from meshd.identity import public_from_node_id

DEFAULT_SOCKET = "/run/meshd/meshd.sock"
DEFAULT_CONFIG = "/etc/meshd/meshd.toml"
# The exit tunnels' rule preferences (meshd.net.exit_tunnel; a unit test keeps them equal):
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
    keepalive_s: int = _opt(1, "persistent keepalive on every link, seconds (liveness signal)")
    mtu: int = _opt(1420, "MTU of the link interfaces")
    listen_port_min: int = _opt(51820, "lowest UDP port of a link interface (one port per link)")
    listen_port_max: int = _opt(52819, "highest UDP port of a link interface")


@dataclass(frozen=True)
class LivenessSettings:
    poll_interval_s: float = _opt(0.25, "how often each link's receive counter is read")
    probe_after_s: float = _opt(
        1.1, "a link silent this long gets one echo through the tunnel (a late keepalive?)"
    )
    dead_after_s: float = _opt(
        1.5, "a link with no packet received for this long is down (> keepalive_s)"
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
        (), "the household LAN's interfaces: NATed to the mesh address, never reachable from it"
    )


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
    tolerance_kb: int = _opt(256, "... plus this many kilobytes (KiB) per epoch")
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
class Bootstrap:
    node_id: str = _opt("", "the peer's node id (43 characters)", required=True)
    address: Address = _opt(
        ("", 0), "the peer's underlay HOST:PORT of its QUIC control port", required=True
    )
    name: str = _opt("", "a name to show until the peer's certificate names it")


@dataclass(frozen=True)
class Config:
    path: Path
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
    isolation: IsolationSettings = field(default_factory=IsolationSettings)
    receipts: ReceiptsSettings = field(default_factory=ReceiptsSettings)
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
    "isolation": IsolationSettings,
    "receipts": ReceiptsSettings,
}


def _converter(annotation: str) -> tuple[Callable[[Any], Any], str]:
    """Map a field's annotation (a string under `from __future__ import annotations`)."""
    table: dict[str, tuple[Callable[[Any], Any], str]] = {
        "str": (_expect(str), "a string"),
        "bool": (_bool, "true or false"),
        "int": (_int, "an integer"),
        "tuple[str, ...]": (_strings, "a list of strings"),
        "float": (_float, "a number"),
        "Path": (lambda v: Path(_expect(str)(v)), "a path string"),
        "ipaddress.IPv4Address | None": (
            lambda v: ipaddress.IPv4Address(_expect(str)(v)),
            "an IPv4 address such as 10.77.0.1",
        ),
        "ipaddress.IPv4Network": (
            lambda v: ipaddress.IPv4Network(_expect(str)(v)),
            "an IPv4 prefix such as 10.77.0.0/16",
        ),
        "Rate": (lambda v: Rate.parse(_expect(str)(v)), "a rate such as 20mbit or 512kbit"),
        "Rate | None": (_optional(Rate.parse), "a rate such as 20mbit or 512kbit"),
        "Address": (lambda v: parse_endpoint(_expect(str)(v)), "HOST:PORT"),
        "Address | None": (_optional(parse_endpoint), "HOST:PORT"),
        "tuple[PortRange, ...]": (_each(parse_port_range), "a list of ports or ranges"),
        "ipaddress.IPv6Network": (
            lambda v: ipaddress.IPv6Network(_expect(str)(v)),
            "an IPv6 prefix such as fd6d:6573:6864::/48",
        ),
    }
    return table[annotation]


class _ItemError(ValueError):
    """One item of a list option is wrong: its index goes into the key."""

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(problem)
        self.index = index


def _each(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A list of strings, each ``parse``d."""

    def convert(value: Any) -> tuple[Any, ...]:
        out = []
        for i, text in enumerate(_strings(value)):
            try:
                out.append(parse(text))
            except ValueError as exc:
                raise _ItemError(i, str(exc)) from None
        return tuple(out)

    return convert


def _optional(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A string option that may be left empty (None then), else ``parse``d."""

    def convert(value: Any) -> Any:
        text = _expect(str)(value)
        return parse(text) if text else None

    return convert


def _expect(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"got {type(value).__name__}")
        return value

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    return int(_expect(int)(value))


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"got {type(value).__name__}")
    return tuple(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"got {type(value).__name__}")
    return float(value)


def _build(cls: type, table: Any, path: Path, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(path, where, f"expected a table, got {type(table).__name__}")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in known:
            raise ConfigError(path, f"{where}.{key}", f"unknown key (known: {', '.join(known)})")
        f = known[key]
        convert, expected = _converter(str(f.type))
        try:
            values[key] = convert(raw)
        except _ItemError as exc:
            raise ConfigError(path, f"{where}.{key}[{exc.index}]", str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(path, f"{where}.{key}", f"expected {expected} ({exc})") from None
        choices = f.metadata.get("choices")
        if choices and values[key] not in choices:
            raise ConfigError(path, f"{where}.{key}", f"expected one of {', '.join(choices)}")
    for f in known.values():
        if f.metadata.get("required") and f.name not in values:
            raise ConfigError(path, f"{where}.{f.name}", "missing; expected " + f.metadata["help"])
    return cls(**values)


def _check(cfg: Config) -> None:
    p = cfg.path
    if not cfg.node.name:
        raise ConfigError(p, "node.name", "missing; expected a non-empty name")
    if cfg.node.mesh_ipv4 is None:
        raise ConfigError(p, "node.mesh_ipv4", "missing; expected an IPv4 address")
    if cfg.node.mesh_ipv4 not in cfg.mesh.ipv4_prefix:
        raise ConfigError(p, "node.mesh_ipv4", f"expected an address in {cfg.mesh.ipv4_prefix}")
    if cfg.mesh.ipv6_prefix.prefixlen > 64:
        raise ConfigError(p, "mesh.ipv6_prefix", "expected a prefix of length 64 or shorter")
    wg = cfg.wireguard
    if not (1 <= len(wg.interface_prefix) <= 3 and wg.interface_prefix.isalnum()):
        raise ConfigError(p, "wireguard.interface_prefix", "expected 1 to 3 letters or digits")
    if not 1 <= wg.keepalive_s <= 65535:
        raise ConfigError(p, "wireguard.keepalive_s", "expected 1..65535 seconds")
    if not 1280 <= wg.mtu <= 9000:
        raise ConfigError(p, "wireguard.mtu", "expected 1280..9000")
    if cfg.liveness.poll_interval_s <= 0:
        raise ConfigError(p, "liveness.poll_interval_s", "expected a positive number")
    if not 0 < cfg.liveness.probe_after_s < cfg.liveness.dead_after_s:
        raise ConfigError(
            p, "liveness.probe_after_s", "expected a positive number below dead_after_s"
        )
    if cfg.liveness.dead_after_s <= wg.keepalive_s:
        raise ConfigError(
            p,
            "liveness.dead_after_s",
            f"expected more than wireguard.keepalive_s ({wg.keepalive_s})",
        )
    for i, key in enumerate(cfg.mesh.admin_keys):
        try:
            public_from_node_id(key)
        except ValueError as exc:
            raise ConfigError(p, f"mesh.admin_keys[{i}]", f"expected a node id: {exc}") from None
    if not 1 <= cfg.control.quic_port <= 65535:
        raise ConfigError(p, "control.quic_port", "expected 1..65535")
    protocols = cfg.control.protocols
    if not protocols or len(set(protocols)) != len(protocols) or set(protocols) - set(PROTOCOLS):
        raise ConfigError(
            p, "control.protocols", f"expected some of {', '.join(PROTOCOLS)}, each once"
        )
    if not 4 <= cfg.routing.update_interval_s <= 600:
        raise ConfigError(p, "routing.update_interval_s", "expected 4..600 seconds")
    if not 1 <= cfg.routing.route_protocol <= 254:
        raise ConfigError(p, "routing.route_protocol", "expected 1..254")
    if not 1 <= cfg.routing.max_routes_per_neighbour <= cfg.routing.max_routes:
        raise ConfigError(
            p, "routing.max_routes", "expected 1 <= max_routes_per_neighbour <= max_routes"
        )
    if cfg.routing.unsigned_routes not in ("refuse", "accept"):
        raise ConfigError(p, "routing.unsigned_routes", "expected 'refuse' or 'accept'")
    if not 0 <= cfg.routing.test_forge_seqnos <= 0x7FFF:
        raise ConfigError(p, "routing.test_forge_seqnos", "expected 0..32767")
    for prefix in cfg.routing.test_announce:
        try:
            ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise ConfigError(
                p, "routing.test_announce", f"expected prefixes, got {prefix!r}"
            ) from None
    if not 1 <= wg.listen_port_min <= wg.listen_port_max <= 65535:
        raise ConfigError(
            p, "wireguard.listen_port_max", "expected 1 <= listen_port_min <= listen_port_max"
        )
    if not cfg.mesh.admin_keys:
        raise ConfigError(p, "mesh.admin_keys", "missing; expected the mesh's admin node ids")
    ms = cfg.membership
    for key in ("renew_margin_s", "renew_grace_s", "clock_tolerance_s"):
        if getattr(ms, key) < 0:
            raise ConfigError(p, f"membership.{key}", "expected 0 or more seconds")
    if ms.renew_retry_s < 1:
        raise ConfigError(p, "membership.renew_retry_s", "expected at least 1 second")
    d = cfg.discovery
    if not 1 <= d.beacon_port <= 65535 or d.beacon_port == cfg.control.quic_port:
        raise ConfigError(p, "discovery.beacon_port", "expected 1..65535, not the QUIC port")
    if d.beacon_interval_s < 1:
        raise ConfigError(p, "discovery.beacon_interval_s", "expected at least 1 second")
    if d.forget_after_s < 60:
        raise ConfigError(p, "discovery.forget_after_s", "expected at least 60 seconds")
    _check_uplink(cfg)
    _check_routing_table(cfg)
    _check_receipts(cfg)
    seen_ids: set[str] = set()
    for i, b in enumerate(cfg.bootstrap):
        where = f"bootstrap[{i}]"
        try:
            public_from_node_id(b.node_id)
        except ValueError as exc:
            raise ConfigError(p, f"{where}.node_id", f"expected a node id: {exc}") from None
        if b.node_id in seen_ids:
            raise ConfigError(p, f"{where}.node_id", "expected each peer once")
        seen_ids.add(b.node_id)


def _check_uplink(cfg: Config) -> None:
    p, up, ex = cfg.path, cfg.uplink, cfg.exit
    if up.interface:
        if up.health_target is None:
            raise ConfigError(p, "uplink.health_target", "missing; expected HOST:PORT")
    elif up.share:
        raise ConfigError(p, "uplink.share", "expected uplink.interface too (what to share)")
    if not 0 < up.health_interval_s < up.health_dead_after_s:
        raise ConfigError(
            p, "uplink.health_interval_s", "expected a positive number below health_dead_after_s"
        )
    if up.rate and up.rate_cap and up.rate_cap.kbit >= up.rate.kbit:
        raise ConfigError(p, "uplink.rate_cap", "expected less than uplink.rate")
    if not 1 <= up.exit_port <= 65535:
        raise ConfigError(p, "uplink.exit_port", "expected 1..65535")
    w = cfg.wireguard
    if w.listen_port_min <= up.exit_port <= w.listen_port_max:
        raise ConfigError(p, "uplink.exit_port", "expected a port outside the link port range")
    for i, key in enumerate(up.blocked):
        try:
            public_from_node_id(key)
        except ValueError as exc:
            raise ConfigError(p, f"uplink.blocked[{i}]", f"expected a node id: {exc}") from None
    if up.monthly_quota_mb < 0:
        raise ConfigError(p, "uplink.monthly_quota_mb", "expected 0 (no quota) or more")
    if up.resolver:
        try:
            ipaddress.IPv4Address(up.resolver)
        except ValueError:
            raise ConfigError(p, "uplink.resolver", "expected an IPv4 address") from None
    if not 1 <= ex.quic_port <= 65535 or ex.quic_port == cfg.control.quic_port:
        raise ConfigError(p, "exit.quic_port", "expected 1..65535, not the control port")
    if not 1 <= ex.table <= 250:
        raise ConfigError(p, "exit.table", "expected 1..250 (two tables: this and the next)")
    if not 1 <= ex.fwmark <= 0xFFFFFFFF:
        raise ConfigError(p, "exit.fwmark", "expected a non-zero 32-bit mark")
    if not 1280 <= ex.mtu <= w.mtu - 80:
        raise ConfigError(p, "exit.mtu", f"expected 1280..{w.mtu - 80} (inside a mesh link)")


def _check_routing_table(cfg: Config) -> None:
    p, rt, ex = cfg.path, cfg.routing, cfg.exit
    if not 1 <= rt.table <= 0xFFFFFFFF or rt.table in RESERVED_TABLES:
        raise ConfigError(
            p, "routing.table", "expected 1..4294967295 but not 253..255 (the kernel's tables)"
        )
    if rt.table in (ex.table, ex.table + 1):
        raise ConfigError(
            p,
            "routing.table",
            f"expected a table other than the exits' (exit.table: {ex.table} and {ex.table + 1})",
        )
    if not EXIT_GATEWAY_RULE_PREF < rt.rule_preference < EXIT_USER_RULE_PREF:
        raise ConfigError(
            p,
            "routing.rule_preference",
            f"expected {EXIT_GATEWAY_RULE_PREF + 1}..{EXIT_USER_RULE_PREF - 1}: after the exit "
            f"gateway's rule ({EXIT_GATEWAY_RULE_PREF}), before the exit user's "
            f"({EXIT_USER_RULE_PREF})",
        )


def _check_receipts(cfg: Config) -> None:
    p, r = cfg.path, cfg.receipts
    if not 0 <= r.tolerance_percent <= 100:
        raise ConfigError(p, "receipts.tolerance_percent", "expected 0..100")
    for key in ("tolerance_kb", "claim_mb", "credit_mb"):
        if getattr(r, key) < 0:
            raise ConfigError(p, f"receipts.{key}", "expected 0 or more")
    if r.claim_interval_s <= 0:
        raise ConfigError(p, "receipts.claim_interval_s", "expected a positive number")


def parse(text: str, path: Path | str = "<config>") -> Config:
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in doc.items():
        if key in SECTIONS:
            values[key] = _build(SECTIONS[key], raw, path, key)
        elif key == "bootstrap":
            if not isinstance(raw, list):
                raise ConfigError(path, key, "expected an array of tables ([[bootstrap]])")
            values[key] = tuple(
                _build(Bootstrap, item, path, f"bootstrap[{i}]") for i, item in enumerate(raw)
            )
        else:
            known = ", ".join([*SECTIONS, "bootstrap"])
            raise ConfigError(path, key, f"unknown section (known: {known})")
    cfg = Config(path=path, **values)
    _check(cfg)
    return cfg


def load(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    return parse(text, path)


def config_path(flag: str | None = None) -> Path:
    """The config file of commands that read the node's files: the flag, else
    $MESHD_CONFIG (the testbed sets it per node), else the default."""
    return Path(flag or os.environ.get("MESHD_CONFIG") or DEFAULT_CONFIG)


def socket_path(cfg: Config | None = None) -> Path:
    """The control socket: MESHD_SOCKET wins (the testbed sets it per node)."""
    env = os.environ.get("MESHD_SOCKET")
    if env:
        return Path(env)
    return cfg.control.socket if cfg else Path(DEFAULT_SOCKET)


def _toml_value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'"{value}"'


def explain() -> str:
    """Every option with its default and help, as TOML comments."""
    lines: list[str] = []
    for section, cls in [*SECTIONS.items(), ("[bootstrap]", Bootstrap)]:
        lines.append(f"[{section}]")
        for f in fields(cls):
            default = "(required)" if f.metadata.get("required") else _toml_value(f.default)
            lines.append(f"# {f.name} = {default}  -- {f.metadata['help']}")
        lines.append("")
    return "\n".join(lines)
