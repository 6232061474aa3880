"""Impairments (cuts, loss, rates, uplinks down) and the nftables/tc settings that make
them (pure).

Drops happen where packets *arrive* (prerouting, priority raw), never on the sending side:
a packet dropped in the sender's output hook makes ``sendmsg`` fail with EPERM, which
would tell meshd the link is gone, while a fading radio link is silent. So "cut A B" puts a
rule in A's namespace dropping what arrives from B and one in B's dropping what arrives
from A. On a p2p link everything arriving on ``u-<peer>`` comes from the peer; on a segment
the peer is told apart by its (planned) MAC address, which also covers its IPv6 link-local
traffic. ARP is not IP and passes, so neighbour entries stay valid and the interfaces stay
up. Every change re-renders a node's whole ``inet testbed`` table in one atomic ``nft -f``.

Rates are tbf root qdiscs: on both veth ends of a p2p link, and for an uplink only in the
internet namespace (its bridge port and an ifb), since meshd puts its own qdisc on ``upl``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nstestbed.plan import (
    LINK_PORTS,
    NAT_INSIDE_IF,
    QUIC_PORT,
    Adjacency,
    CarrierPlan,
    NatPlan,
    NodePlan,
    Plan,
    pair_key,
)
from nstestbed.topology import Rate, parse_rate

TABLE = "testbed"
LOSS_SCALE = 10000  # numgen range: loss is applied in steps of 0.01 %
TBF_LATENCY = "50ms"


@dataclass(frozen=True)
class Impairments:
    """What is currently done to the underlay. Pair keys come from ``plan.pair_key``."""

    cut: frozenset[str] = frozenset()
    loss: dict[str, float] = field(default_factory=dict)  # percent per direction
    rate: dict[str, str] = field(default_factory=dict)  # p2p links only
    uplink_down: frozenset[str] = frozenset()

    @classmethod
    def initial(cls, plan: Plan) -> Impairments:
        """The topology's own ``loss`` and ``rate`` of each link."""
        return cls(
            loss={link.key: link.loss for link in plan.links if link.loss > 0},
            rate={link.key: link.rate.text for link in plan.links if link.rate},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cut": sorted(self.cut),
            "loss": dict(sorted(self.loss.items())),
            "rate": dict(sorted(self.rate.items())),
            "uplink_down": sorted(self.uplink_down),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Impairments:
        return cls(
            cut=frozenset(doc.get("cut", ())),
            loss={k: float(v) for k, v in doc.get("loss", {}).items()},
            rate=dict(doc.get("rate", {})),
            uplink_down=frozenset(doc.get("uplink_down", ())),
        )

    def with_cut(self, key: str, cut: bool) -> Impairments:
        return dataclasses.replace(self, cut=self.cut | {key} if cut else self.cut - {key})

    def with_loss(self, key: str, percent: float) -> Impairments:
        loss = {k: v for k, v in self.loss.items() if k != key}
        if percent > 0:
            loss[key] = percent
        return dataclasses.replace(self, loss=loss)

    def with_rate(self, key: str, rate: Rate | None) -> Impairments:
        rates = {k: v for k, v in self.rate.items() if k != key}
        if rate is not None:
            rates[key] = rate.text
        return dataclasses.replace(self, rate=rates)

    def with_uplink(self, node: str, up: bool) -> Impairments:
        down = self.uplink_down - {node} if up else self.uplink_down | {node}
        return dataclasses.replace(self, uplink_down=down)

    def describe(self) -> list[str]:
        out = [f"cut {k}" for k in sorted(self.cut)]
        out += [f"loss {k} {v:g}%" for k, v in sorted(self.loss.items())]
        out += [f"rate {k} {v}" for k, v in sorted(self.rate.items())]
        out += [f"uplink {n} down" for n in sorted(self.uplink_down)]
        return out


def _from_peer(adj: Adjacency) -> str:
    """Match what arrives at ``adj.local`` from ``adj.remote`` over their shared medium."""
    if adj.is_segment:
        return f'iifname "{adj.local.ifname}" ether saddr {adj.remote.mac}'
    return f'iifname "{adj.local.ifname}"'


def _loss_rule(match: str, percent: float, comment: str) -> str:
    threshold = round(percent * LOSS_SCALE / 100)
    if threshold >= LOSS_SCALE:
        return f'{match} drop comment "{comment}"'
    return f'{match} numgen random mod {LOSS_SCALE} < {threshold} drop comment "{comment}"'


def node_ruleset(node: NodePlan, imp: Impairments) -> str:
    """The whole ``inet testbed`` table of one node, replacing any previous one atomically."""
    drops: list[str] = []
    for adj in node.adjacencies:
        key = pair_key(adj.local.node, adj.peer)
        if key in imp.cut:
            drops.append(f'{_from_peer(adj)} drop comment "cut {adj.peer}"')
        elif imp.loss.get(key, 0) > 0:
            pct = imp.loss[key]
            drops.append(_loss_rule(_from_peer(adj), pct, f"loss {adj.peer} {pct:g}%"))
    if node.uplink and node.name in imp.uplink_down:
        drops.append(f'iifname "{node.uplink.ifname}" drop comment "uplink down"')
    lines = [
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        *(f"\t\t{rule}" for rule in drops),
        "\t}",
    ]
    if node.uplink and node.lan:
        # The household's own router NAT: the LAN reaches the internet over the node's own
        # uplink. Only the LAN prefix, so meshd's handling of relayed traffic is untouched.
        lines += [
            "\tchain postrouting {",
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
            f'\t\tip saddr {node.lan.node_address.network} oifname "{node.uplink.ifname}" '
            'masquerade comment "household router"',
            "\t}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


RANGE_SHIFT = 10000  # a ``ranged`` NAT's outer port for meshd's inner port p: p + 10000
_MESHD_PORTS = (QUIC_PORT, *range(LINK_PORTS[0], LINK_PORTS[1] + 1))


def nat_ruleset(nat: NatPlan) -> str:
    """A home router's table: what the inside sends leaves masqueraded (``masquerade``:
    keeping its port where free, so one inner port has one outer port whatever the
    destination; ``ranged``: the same, but meshd's ports into another range; ``random``: a
    random port per connection, as a hard NAT has); from the
    outside, only replies, but where meshd's ports are forwarded to the node
    (``forwarded``). What the outside sends unasked is dropped in the filter hooks,
    before its conntrack entry is confirmed, as a home router's firewall does: an entry
    for it would take the port a punched mapping needs (its replies would leave from
    another one)."""
    how = {
        "masquerade": "masquerade",
        "forwarded": "masquerade",
        "cgnat": "masquerade",
        "random": "masquerade random,fully-random",
        "ranged": "",  # below
    }[nat.kind]
    inside, wan = nat.inside_ifname, nat.wan_ifname
    if nat.kind == "ranged":
        # One outer port per inner port whatever the destination (an endpoint-independent
        # mapping), but not the same port: meshd's come out RANGE_SHIFT higher, so a peer
        # that takes the port a node says it listens on (a link's) misses it.
        pairs = ", ".join(f"{p} : {p + RANGE_SHIFT}" for p in _MESHD_PORTS)
        ports = f"{{ {QUIC_PORT}, {LINK_PORTS[0]}-{LINK_PORTS[1]} }}"
        how = f"udp sport {ports} masquerade to :udp sport map {{ {pairs} }}"
        how += f'\n\t\toifname "{wan}" masquerade'
    forwarded = prerouting = ""
    if nat.kind == "forwarded":
        # The household forwarded meshd's ports to its node, as a router's port forwarding
        # does: its QUIC port and its WireGuard links' range reach it from anywhere.
        node = nat.inside_address.ip + 1
        ports = f"{{ {QUIC_PORT}, {LINK_PORTS[0]}-{LINK_PORTS[1]} }}"
        prerouting = f"""
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		iifname "{wan}" udp dport {ports} dnat ip to {node}
	}}"""
        forwarded = f'\n\t\tiifname "{wan}" oifname "{inside}" ct status dnat accept'
    return _masquerading(inside, wan, how, forwarded, prerouting)


def _masquerading(inside: str, wan: str, how: str, forwarded: str, prerouting: str) -> str:
    return f"""table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
	chain input {{
		type filter hook input priority filter; policy drop;
		iifname {{ "lo", "{inside}" }} accept
		ct state {{ established, related }} accept
	}}
	chain forward {{
		type filter hook forward priority filter; policy drop;
		iifname "{inside}" oifname "{wan}" accept
		iifname "{wan}" oifname "{inside}" ct state {{ established, related }} accept{forwarded}
	}}{prerouting}
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		oifname "{wan}" {how}
	}}
}}
"""


def carrier_ruleset(carrier: CarrierPlan) -> str:
    """A carrier's NAT (CGNAT): what its customer's router sends leaves masqueraded again
    (keeping ports where free, as the router does); from the outside only replies."""
    return _masquerading(NAT_INSIDE_IF, carrier.wan_ifname, "masquerade", "", "")


def internet_ruleset(plan: Plan, imp: Impairments) -> str:
    """The internet side of "uplink NODE down": drop the node's IP packets at its bridge
    port, so they vanish without an error at the sender."""
    drops = [
        f'iifname "{n.uplink.internet_port}" meta protocol {{ ip, ip6 }} drop '
        f'comment "uplink {n.name} down"'
        for n in plan.nodes
        if n.uplink and n.name in imp.uplink_down
    ]
    lines = [
        f"table bridge {TABLE} {{}}",
        f"delete table bridge {TABLE}",
        f"table bridge {TABLE} {{",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority -300; policy accept;",
        *(f"\t\t{rule}" for rule in drops),
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def shaped_interfaces(plan: Plan, imp: Impairments) -> dict[tuple[str, str], Rate | None]:
    """Every shapeable interface, (namespace, ifname) -> its rate, None for unshaped.

    A link is shaped on both veth ends. An uplink is shaped only in the internet namespace,
    as an ISP's line is: meshd puts its own root qdisc on ``upl``, which would replace ours.
    Its bridge port's egress carries what the node receives, its ifb what the node sends
    (``upload_redirects``)."""
    out: dict[tuple[str, str], Rate | None] = {}
    for link in plan.links:
        text = imp.rate.get(link.key)
        rate = parse_rate(text) if text else None
        out[(plan.node(link.a.node).namespace, link.a.ifname)] = rate
        out[(plan.node(link.b.node).namespace, link.b.ifname)] = rate
    for node in plan.nodes:
        if node.uplink:
            out[(plan.internet_namespace, node.uplink.internet_port)] = node.uplink.rate
            if node.uplink.rate:
                out[(plan.internet_namespace, node.uplink.ifb)] = node.uplink.rate
    return out


def upload_redirects(plan: Plan) -> list[tuple[str, str]]:
    """(bridge port, ifb) of every uplink with a rate. What a node sends arrives at its
    port's ingress, where tc can only police (drop), not queue as a line does; redirected
    to an ifb it meets a tbf like the download direction."""
    return [
        (node.uplink.internet_port, node.uplink.ifb)
        for node in plan.nodes
        if node.uplink and node.uplink.rate
    ]


def redirect_args(ifb: str) -> list[str]:
    """tc filter parameters (on an ingress qdisc) sending everything to ``ifb``: u32
    matching any packet, as the kernels we run on may lack matchall and flower."""
    match_all = ["protocol", "all", "u32", "match", "u32", "0", "0"]
    return ["parent", "ffff:", *match_all, "action", "mirred", "egress", "redirect", "dev", ifb]


def tbf_args(rate: Rate) -> list[str]:
    """tc tbf parameters: a bucket of about 4 ms of traffic (at least a few full frames,
    so the configured rate is reached), queueing at most 50 ms."""
    burst = max(4 * 1514, rate.bits_per_s // 8 // 250)
    return ["tbf", "rate", rate.text, "burst", str(burst), "latency", TBF_LATENCY]
