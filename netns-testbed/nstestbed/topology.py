"""Topology files: TOML in, a validated ``Topology`` out (pure; DESIGN.md, netns-testbed).

    [nodes.a]
    uplink = true           # wired to the testbed's "internet" namespace
    uplink_rate = "50mbit"  # optional, tbf both ways, on the internet side of the uplink
    nat = "masquerade"      # optional: the uplink sits behind a home router (its own
                            # namespace) that masquerades (keeping ports where it can;
                            # "random": a new random port per destination, as a hard
                            # NAT does; "ranged": one outer port per inner port, but
                            # meshd's 10000 higher; "forwarded": as masquerade, with
                            # meshd's ports forwarded to the node; "cgnat": as
                            # masquerade, behind a carrier's NAT that masquerades again,
                            # through 100.96.<i>/24 of 100.64.0.0/10); nothing else from
                            # the internet reaches the node but replies
    behind = "c"            # optional: the uplink sits on c's home network, behind c's
                            # router (c has a nat), beside c (no hairpin NAT there)
    bootstrap = ["a"]       # optional: nodes it dials over the internet, at their uplink's
                            # address (each with an uplink and no NAT): islands joined
    share = true            # offers that uplink to the mesh (read by meshd, not the testbed)
    rate_cap = "20mbit"     # optional, the most the mesh gets of it (read by meshd)
    monthly_quota_mb = 100  # optional, each neighbour's exit bytes a month (read by meshd)
    receipts = { sign = false }  # optional, written as the node's [receipts] (meshd's keys)
    membership = { renew_margin_s = 20 }  # optional, written as the node's [membership]
    routing = { unsigned_routes = "accept" }  # optional, written as the node's [routing]
    wireguard = { listen_port_max = 51821 }  # optional, written as the node's [wireguard]
    map = { name = "Bakery" }  # optional, written as the node's [map] (the community map;
                            # a relative export_dir is in the node's testbed directory)
    control = { protocols = ["meshd/1"] }  # optional, added to the node's [control] (not
                            # socket: the testbed's); here it plays a node of an older version
    admin = true            # optional, the node's key is one of the mesh's admins too
    cert_validity_s = 60    # optional, its membership certificate's validity (default 30 days)
    cert_age_s = 86400      # optional, its certificate (and the mesh's definition) issued this
                            # long ago (default 0): a mesh with a past, for the clock's tests
    lan = true              # a household LAN host namespace behind the node
    metrics = ["b"]         # optional: Prometheus metrics on its mesh address, port 9478,
                            # for these nodes ([metrics] allow; [] for none but itself)
    invited = true          # a fresh box: namespace and links only, no keys, certificate or
                            # config; `testbed join NODE --invite TOKEN` provisions and starts it
    threshold = 2           # optional, top level: how many of the mesh's admins (the
                            # testbed's key and every node with admin = true) must sign a
                            # change of the mesh definition or a revocation (default 1)
    emergency_threshold = 1 # optional, top level: how many suffice for an emergency
                            # revocation of a node (default 0: none)
    [[links]]               # point-to-point underlay link
    between = ["a", "b"]
    rate = "100mbit"        # optional, tbf on both ends
    loss = 0                # optional percent, dropped by nftables per direction
    mtu = 1500              # optional underlay MTU
    [[segments]]            # shared underlay segment (a bridge)
    members = ["a", "b", "c"]

Every problem becomes one ``TopologyError`` naming the file and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_NAME = re.compile(r"[a-z0-9]{1,8}")
# Namespaces <id>-inet and <id>-sw exist beside the nodes' <id>-<node>.
RESERVED_NAMES = frozenset({"inet", "sw"})
MAX_NODES = 200  # 198.51.100.<10+i> and 172.20.<i>.0/24 must fit
MAX_LINKS = 4000  # 100.64.0.0 + 256*k must stay below 100.127.0.0 (segments)
MAX_SEGMENTS = 256  # 100.127.<s>.0/24
MAX_SEGMENT_MEMBERS = 250
MTU_RANGE = (576, 9000)

_RATE = re.compile(r"(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)")
_RATE_FACTOR = {
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
    "tbps": 8 * 10**12,
}
MIN_RATE_BITS = 8_000


class TopologyError(Exception):
    """One problem in a topology file: where it is and what was expected."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


@dataclass(frozen=True)
class Rate:
    """A tc rate such as ``50mbit``; ``bits_per_s`` sizes the tbf burst."""

    text: str
    bits_per_s: int


def parse_rate(text: str) -> Rate:
    """Parse a tc-style rate (``50mbit``, ``1gbit``, ``500kbps``); raise ValueError."""
    normal = text.strip().lower()
    m = _RATE.fullmatch(normal)
    if not m:
        raise ValueError(
            f'{text!r} is not a rate such as "50mbit" (units: {", ".join(_RATE_FACTOR)})'
        )
    bits = int(float(m.group(1)) * _RATE_FACTOR[m.group(2)])
    if bits < MIN_RATE_BITS:
        raise ValueError(f"{text!r} is below the minimum of 8kbit")
    return Rate(normal, bits)


# A meshd setting a topology may give a node: one value, or a list of strings.
SettingValue = bool | int | float | str | tuple[str, ...]
Settings = tuple[tuple[str, SettingValue], ...]
# The testbed's own keys of a section, which a topology may not set.
TESTBED_KEYS = {"control": frozenset({"socket"})}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    uplink: bool = False
    uplink_rate: Rate | None = None
    share: bool = False
    lan: bool = False
    rate_cap: Rate | None = None
    monthly_quota_mb: int = 0
    receipts: Settings = ()
    invited: bool = False  # joins by invite (`testbed join`), not made a member by `up`
    membership: Settings = ()
    admin: bool = False  # an admin of the mesh (its key in the mesh definition)
    cert_validity_s: int = 0  # 0: the testbed's default
    control: Settings = ()  # added to its [control] section
    routing: Settings = ()  # its [routing] section
    cert_age_s: int = 0  # its certificate was issued this long ago
    wireguard: Settings = ()  # its [wireguard] section
    metrics: tuple[str, ...] | None = None  # serves metrics to these nodes; None: off
    map: Settings = ()  # its [map] section
    nat: str = ""  # its uplink is behind a NAT of this kind; "": none
    bootstrap: tuple[str, ...] = ()  # nodes it dials over the internet
    behind: str = ""  # its uplink is on this node's home network, behind its router


NAT_KINDS = ("masquerade", "random", "forwarded", "cgnat", "ranged")


@dataclass(frozen=True)
class LinkSpec:
    """A point-to-point underlay link; ``a`` and ``b`` in the file's order."""

    a: str
    b: str
    rate: Rate | None = None
    loss: float = 0.0
    mtu: int | None = None


@dataclass(frozen=True)
class SegmentSpec:
    members: tuple[str, ...]


@dataclass(frozen=True)
class Topology:
    path: str
    nodes: tuple[NodeSpec, ...]  # in the file's order: that order numbers addresses
    links: tuple[LinkSpec, ...] = ()
    segments: tuple[SegmentSpec, ...] = ()
    threshold: int = 1  # admins that must sign a change of the mesh definition
    emergency_threshold: int = 0  # admins that suffice for an emergency revocation (0: none)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


# -- reading -----------------------------------------------------------------------------


def load(path: Path | str) -> Topology:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(path, "", f"cannot read: {exc.strerror}") from None
    return parse(text, path)


def parse(text: str, path: Path | str = "<topology>") -> Topology:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(path, "", f"not valid TOML: {exc}") from None
    _known_keys(path, "", doc, {"nodes", "links", "segments", "threshold", "emergency_threshold"})
    nodes = _nodes(path, doc.get("nodes"))
    names = {n.name for n in nodes}
    links = _links(path, doc.get("links", []), names)
    segments = _segments(path, doc.get("segments", []), names)
    _check_pairs(path, links, segments)
    threshold = doc.get("threshold", 1)
    admins = 1 + sum(n.admin for n in nodes)  # the testbed's key and the admin nodes'
    if not isinstance(threshold, int) or isinstance(threshold, bool):
        raise TopologyError(path, "threshold", "must be an integer")
    if not 1 <= threshold <= admins:
        raise TopologyError(path, "threshold", f"must be 1 to {admins} (the mesh's admins)")
    emergency = doc.get("emergency_threshold", 0)
    if not isinstance(emergency, int) or isinstance(emergency, bool):
        raise TopologyError(path, "emergency_threshold", "must be an integer")
    if not 0 <= emergency <= threshold:
        raise TopologyError(path, "emergency_threshold", f"must be 0 to {threshold} (threshold)")
    return Topology(str(path), nodes, links, segments, threshold, emergency)


def _known_keys(path: Path | str, where: str, table: dict[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            name = f"{where}.{key}" if where else key
            raise TopologyError(path, name, f"unknown key (known: {', '.join(sorted(known))})")


def _table(path: Path | str, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TopologyError(path, where, f"expected a table, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), "an array" if isinstance(value, list) else "a table"
    )


def _bool(path: Path | str, where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TopologyError(path, where, f"expected true or false, got {_kind(value)}")
    return value


def _rate(path: Path | str, where: str, value: Any) -> Rate:
    if not isinstance(value, str):
        raise TopologyError(path, where, f'expected a rate such as "50mbit", got {_kind(value)}')
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise TopologyError(path, where, f"expected {exc}") from None


def _nodes(path: Path | str, raw: Any) -> tuple[NodeSpec, ...]:
    if raw is None:
        raise TopologyError(path, "nodes", "missing; expected at least one [nodes.NAME] table")
    table = _table(path, "nodes", raw)
    if not table:
        raise TopologyError(path, "nodes", "expected at least one [nodes.NAME] table")
    if len(table) > MAX_NODES:
        raise TopologyError(path, "nodes", f"expected at most {MAX_NODES} nodes")
    nodes = []
    for name, body in table.items():
        where = f"nodes.{name}"
        if not NODE_NAME.fullmatch(name):
            raise TopologyError(path, where, "expected a node name of 1-8 characters a-z, 0-9")
        if name in RESERVED_NAMES:
            raise TopologyError(path, where, f"the name {name!r} is reserved by the testbed")
        body = _table(path, where, body)
        _known_keys(
            path,
            where,
            body,
            {
                "uplink",
                "uplink_rate",
                "share",
                "lan",
                "rate_cap",
                "monthly_quota_mb",
                "receipts",
                "invited",
                "membership",
                "admin",
                "cert_validity_s",
                "cert_age_s",
                "control",
                "routing",
                "wireguard",
                "metrics",
                "map",
                "nat",
                "bootstrap",
                "behind",
            },
        )
        uplink = _bool(path, f"{where}.uplink", body.get("uplink", False))
        rate = None
        if "uplink_rate" in body:
            rate = _rate(path, f"{where}.uplink_rate", body["uplink_rate"])
            if not uplink:
                raise TopologyError(path, f"{where}.uplink_rate", "needs uplink = true")
        share = _bool(path, f"{where}.share", body.get("share", False))
        if share and not uplink:
            raise TopologyError(path, f"{where}.share", "needs uplink = true (nothing to share)")
        lan = _bool(path, f"{where}.lan", body.get("lan", False))
        cap = None
        if "rate_cap" in body:
            cap = _rate(path, f"{where}.rate_cap", body["rate_cap"])
            if not share:
                raise TopologyError(path, f"{where}.rate_cap", "needs share = true")
        quota = body.get("monthly_quota_mb", 0)
        if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
            raise TopologyError(path, f"{where}.monthly_quota_mb", "expected 0 or more (MB)")
        if quota and not share:
            raise TopologyError(path, f"{where}.monthly_quota_mb", "needs share = true")
        settings, membership, control, routing, wireguard, map_settings = (
            _settings(path, where, body, key)
            for key in ("receipts", "membership", "control", "routing", "wireguard", "map")
        )
        invited = _bool(path, f"{where}.invited", body.get("invited", False))
        admin = _bool(path, f"{where}.admin", body.get("admin", False))
        validity = body.get("cert_validity_s", 0)
        if isinstance(validity, bool) or not isinstance(validity, int) or validity < 0:
            raise TopologyError(path, f"{where}.cert_validity_s", "expected 0 or more seconds")
        for key, given in (
            ("receipts", settings),
            ("membership", membership),
            ("admin", admin),
            ("control", control),
            ("routing", routing),
            ("wireguard", wireguard),
            ("map", map_settings),
        ):
            if invited and given:
                raise TopologyError(path, f"{where}.{key}", "an invited node's config is its own")
        metrics = None
        if "metrics" in body:
            metrics = body["metrics"]
            if not isinstance(metrics, list) or not set(metrics) <= set(table):
                raise TopologyError(path, f"{where}.metrics", "expected a list of node names")
            if invited:
                raise TopologyError(path, f"{where}.metrics", "an invited node's config is its own")
            metrics = tuple(metrics)
        age = body.get("cert_age_s", 0)
        if isinstance(age, bool) or not isinstance(age, int) or age < 0:
            raise TopologyError(path, f"{where}.cert_age_s", "expected 0 or more seconds")
        if invited and (validity or age):
            key = "cert_validity_s" if validity else "cert_age_s"
            raise TopologyError(path, f"{where}.{key}", "its issuer decides")
        nat = body.get("nat", "")
        if nat and nat not in NAT_KINDS:
            raise TopologyError(path, f"{where}.nat", f"expected one of: {', '.join(NAT_KINDS)}")
        if nat and not uplink:
            raise TopologyError(path, f"{where}.nat", "needs uplink = true (what is behind it)")
        behind = body.get("behind", "")
        if behind and (not isinstance(behind, str) or behind not in set(table) - {name}):
            raise TopologyError(path, f"{where}.behind", "expected another node's name")
        if behind and (not uplink or nat or rate):
            raise TopologyError(
                path, f"{where}.behind", "needs uplink = true, and no nat or uplink_rate of its own"
            )
        dials = body.get("bootstrap", [])
        if not isinstance(dials, list) or not set(dials) <= set(table) - {name}:
            raise TopologyError(path, f"{where}.bootstrap", "expected a list of other nodes' names")
        if dials and not uplink:
            raise TopologyError(path, f"{where}.bootstrap", "needs uplink = true (its way there)")
        if dials and invited:
            raise TopologyError(path, f"{where}.bootstrap", "an invited node's config is its own")
        nodes.append(
            NodeSpec(
                name,
                uplink,
                rate,
                share,
                lan,
                cap,
                quota,
                settings,
                invited,
                membership,
                admin,
                validity,
                control,
                routing,
                age,
                wireguard,
                metrics,
                map_settings,
                nat,
                tuple(dials),
                behind,
            )
        )
    for node in nodes:
        owner = next((n for n in nodes if n.name == node.behind), None)
        if owner is not None and (not owner.nat or owner.behind):
            raise TopologyError(
                path, f"nodes.{node.name}.behind", f"{owner.name} has no home router (a nat)"
            )
        for i, target in enumerate(node.bootstrap):
            peer = next(n for n in nodes if n.name == target)
            if not peer.uplink or peer.nat or peer.behind:
                raise TopologyError(
                    path,
                    f"nodes.{node.name}.bootstrap[{i}]",
                    f"{target} has no uplink the internet reaches (uplink = true, no nat)",
                )
    return tuple(nodes)


def _settings(path: Path | str, where: str, body: dict[str, Any], key: str) -> Settings:
    """A node's table of meshd settings, written into its config's section of that name."""
    table = _table(path, f"{where}.{key}", body.get(key, {}))
    out: list[tuple[str, SettingValue]] = []
    for name, value in table.items():
        if name in TESTBED_KEYS.get(key, ()):
            raise TopologyError(path, f"{where}.{key}.{name}", "set by the testbed")
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = tuple(value)
        elif not isinstance(value, bool | int | float | str):
            raise TopologyError(
                path, f"{where}.{key}.{name}", "expected a single value or a list of strings"
            )
        out.append((name, value))
    return tuple(sorted(out))


def _array_of_tables(path: Path | str, key: str, raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise TopologyError(path, key, f"expected an array of tables ([[{key}]])")
    return raw


def _members(
    path: Path | str, where: str, raw: Any, names: set[str], exactly: int | None
) -> tuple[str, ...]:
    want = f"an array of {exactly} node names" if exactly else "an array of node names"
    if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
        raise TopologyError(path, where, f"expected {want}")
    if exactly is not None and len(raw) != exactly:
        raise TopologyError(path, where, f"expected {want}, got {len(raw)}")
    if exactly is None and not 2 <= len(raw) <= MAX_SEGMENT_MEMBERS:
        raise TopologyError(path, where, f"expected 2 to {MAX_SEGMENT_MEMBERS} node names")
    for m in raw:
        if m not in names:
            raise TopologyError(path, where, f"unknown node {m!r} (no [nodes.{m}])")
    if len(set(raw)) != len(raw):
        raise TopologyError(path, where, "expected each node once")
    return tuple(raw)


def _links(path: Path | str, raw: Any, names: set[str]) -> tuple[LinkSpec, ...]:
    links = []
    for i, body in enumerate(_array_of_tables(path, "links", raw)):
        where = f"links[{i}]"
        _known_keys(path, where, body, {"between", "rate", "loss", "mtu"})
        if "between" not in body:
            raise TopologyError(path, f"{where}.between", "missing; expected two node names")
        a, b = _members(path, f"{where}.between", body["between"], names, exactly=2)
        rate = _rate(path, f"{where}.rate", body["rate"]) if "rate" in body else None
        loss = body.get("loss", 0)
        if isinstance(loss, bool) or not isinstance(loss, int | float) or not 0 <= loss <= 100:
            raise TopologyError(path, f"{where}.loss", "expected a percentage from 0 to 100")
        mtu = body.get("mtu")
        if mtu is not None and (
            isinstance(mtu, bool)
            or not isinstance(mtu, int)
            or not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]
        ):
            raise TopologyError(
                path, f"{where}.mtu", f"expected an integer from {MTU_RANGE[0]} to {MTU_RANGE[1]}"
            )
        links.append(LinkSpec(a, b, rate, float(loss), mtu))
    if len(links) > MAX_LINKS:
        raise TopologyError(path, "links", f"expected at most {MAX_LINKS} links")
    return tuple(links)


def _segments(path: Path | str, raw: Any, names: set[str]) -> tuple[SegmentSpec, ...]:
    segments = []
    for i, body in enumerate(_array_of_tables(path, "segments", raw)):
        where = f"segments[{i}]"
        _known_keys(path, where, body, {"members"})
        if "members" not in body:
            raise TopologyError(path, f"{where}.members", "missing; expected node names")
        segments.append(
            SegmentSpec(_members(path, f"{where}.members", body["members"], names, None))
        )
    if len(segments) > MAX_SEGMENTS:
        raise TopologyError(path, "segments", f"expected at most {MAX_SEGMENTS} segments")
    return tuple(segments)


def _check_pairs(
    path: Path | str, links: tuple[LinkSpec, ...], segments: tuple[SegmentSpec, ...]
) -> None:
    """Two nodes share at most one underlay medium: meshd runs one WireGuard link (and the
    testbed one set of cut rules) per neighbour, and link interfaces are named u-<peer>."""
    seen: dict[frozenset[str], str] = {}
    for i, link in enumerate(links):
        pair = frozenset((link.a, link.b))
        if pair in seen:
            raise TopologyError(
                path, f"links[{i}].between", f"{link.a} and {link.b} already share {seen[pair]}"
            )
        seen[pair] = f"links[{i}]"
    for s, seg in enumerate(segments):
        for x, member in enumerate(seg.members):
            for other in seg.members[x + 1 :]:
                pair = frozenset((member, other))
                if pair in seen:
                    raise TopologyError(
                        path,
                        f"segments[{s}].members",
                        f"{member} and {other} already share {seen[pair]}",
                    )
                seen[pair] = f"segments[{s}]"
