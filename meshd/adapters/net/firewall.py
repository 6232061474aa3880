"""meshd's own nftables table (``inet meshd``), rendered whole from what the node is doing
(pure) and applied in one atomic ``nft -f`` (replacing what a crashed meshd left).

- Isolation: from the mesh's tunnels, the node itself answers only meshd's own ports (QUIC
  sessions, probes, the exit's WireGuard), the ports its operator opened, ICMP echo and
  errors, and replies; the household LAN, the underlay and the uplink get only replies
  (and a gateway's exit users reach its uplink). Nothing from the uplink's side enters
  the mesh but replies.
- Strangers on the underlay: only this node and its household (the LAN's interfaces) send
  into the mesh. From any other interface (a shared segment, a point-to-point underlay
  link, the uplink), nothing enters the tunnels (the mesh, and the exit a household
  leaves by) but replies, and the mesh's addresses on this node answer nothing but
  replies. Forwarding that never touches the mesh (a container bridge to the uplink,
  say) is not meshd's to judge.
- NAT: whatever this node or its household sends into the mesh leaves from the mesh
  address; a gateway masquerades its exit users' traffic out of its uplink.
- Roaming devices (meshd.core.devices) are household: their interface is one of the LAN's
  here, and what they send out of the uplink is masqueraded (their pool is the node's
  own, which no router behind the uplink knows).
- DNS: a node leaving by an exit sends its own and its LAN's queries to that gateway's
  mesh address (its usual resolver may sit behind the uplink that is down), and the
  exit tunnel carries them there (a policy rule of meshd.adapters.net.exit_tunnel): no
  relay reads or answers them. The gateway passes to its resolver only the queries that
  arrive on its exit interface, where only admitted exit users have a WireGuard peer (a
  blocked user's, or one over its quota, is gone), marking each such connection with
  DNS_MARK in its conntrack mark: the forward chain lets exit users reach the resolver
  only on connections with that mark, so no other DNAT on the host (a container's
  published port) opens anything to them or to the mesh. Queries to a mesh address over
  the mesh's links get the reject any closed port gets.
- Exit policy on a gateway: exit users' traffic goes only to the uplink, and there only to
  the public internet: never to private, link-local, CGNAT, loopback, multicast or
  reserved addresses, nor the uplink's own subnets (the gateway household's router and
  everything beside it), except their DNS to the resolver the gateway passes it to.
  Outbound SMTP is refused (unless allowed). A blocked user is not in the firewall: its
  WireGuard peer goes. Exit users are told apart from mesh links by the gateway's exit
  interface (``…xg``), which the tunnels' wildcard also matches.
- Owner first: on a shaped uplink, exit users' packets go in the mesh's class
  (meshd.adapters.net.shaping).
- Metrics: the port of ``[metrics] listen`` answers, from the mesh, only the nodes and
  addresses of ``[metrics] allow`` (a node id stands for its mesh addresses while its
  certificate holds), whatever ports the operator opened.
- MSS clamping on forwarded TCP SYNs into every tunnel, so that an MTU smaller than the
  sender's path does not hang large transfers.
- Flows from this node or its household to mesh addresses get bit FLOW_MARK of their
  conntrack mark at their first packet (in the NAT chain, which sees only first packets:
  nothing per packet), so that meshd.adapters.net.conntrack reads only those (black-hole
  detection). Flows it only relays are left out: their answers may take another path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshd.adapters.net import command
from meshd.adapters.net.shaping import MESH_OTHER
from meshd.core.addressing import NOT_PUBLIC_IPV4, NOT_PUBLIC_IPV6

TABLE = "meshd"
FLOW_MARK = 0x0100_0000  # a ct mark bit: a flow to a mesh address over a mesh link
DNS_MARK = 0x0200_0000  # a ct mark bit: an exit user's query this gateway passes on


PortRange = tuple[int, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FirewallSpec:
    mesh_ipv4: ipaddress.IPv4Address
    tunnel_prefix: str  # every WireGuard interface of this node starts with it
    mesh_prefix: ipaddress.IPv4Network  # the mesh's IPv4 addresses
    open_udp: tuple[PortRange, ...] = ()  # meshd's own ports and the operator's
    open_tcp: tuple[PortRange, ...] = ()
    uplink: str = ""
    gateway_interface: str = ""  # set while sharing: exit users arrive here
    resolver: str = ""  # sharing: where exit users' DNS queries to our mesh address go
    user_interface: str = ""  # set while leaving by another node's exit
    exit_dns: str = ""  # set while leaving by an exit: the gateway's mesh address
    block_smtp: bool = True
    lan: tuple[str, ...] = ()  # the household LAN's interfaces
    mesh_class: bool = False  # the uplink is shaped: exit users' packets go in its mesh class
    mesh_prefix6: ipaddress.IPv6Network | None = None  # the mesh's IPv6 addresses
    uplink_subnets: tuple[Network, ...] = ()  # sharing: the uplink's own, as its addresses say
    metrics_port: int = 0  # [metrics] listen's port: from the mesh, only for metrics_allow
    metrics_allow: tuple[IPAddress, ...] = ()
    device_interface: str = ""  # the household's roaming devices arrive here
    device_pool: ipaddress.IPv4Network | None = None

    @property
    def household(self) -> tuple[str, ...]:
        """The interfaces of the household: its LAN's and its devices'."""
        return (*self.lan, self.device_interface) if self.device_interface else self.lan


def _ports(ranges: tuple[PortRange, ...]) -> str:
    items = sorted({f"{a}-{b}" if a != b else str(a) for a, b in ranges})
    return "{ " + ", ".join(items) + " }"


def _names(names: tuple[str, ...]) -> str:
    return "{ " + ", ".join(f'"{n}"' for n in dict.fromkeys(names)) + " }"


def _chain(name: str, kind: str, hook: str, priority: str, rules: list[str]) -> list[str]:
    head = f"type {kind} hook {hook} priority {priority}; policy accept;"
    return [f"\tchain {name} {{", f"\t\t{head}", *(f"\t\t{r}" for r in rules), "\t}"]


def _metrics(port: int, allow: tuple[IPAddress, ...]) -> list[str]:
    """The metrics port from the mesh: only for the addresses allowed (per-neighbour
    usage is nobody else's business), whatever ports the operator opened."""
    rules = []
    for family, version in (("ip", 4), ("ip6", 6)):
        if sources := sorted({str(a) for a in allow if a.version == version}):
            rules.append(
                f"tcp dport {port} {family} saddr {{ {', '.join(sources)} }} accept "
                'comment "metrics: [metrics] allow"'
            )
    rules.append(f'tcp dport {port} reject with tcp reset comment "metrics: not for the mesh"')
    return rules


def render(spec: FirewallSpec) -> str:
    tunnels = f'"{spec.tunnel_prefix}*"'
    mesh = spec.mesh_ipv4
    dns = "meta l4proto { tcp, udp } th dport 53"
    passed = f"ct mark & {DNS_MARK:#x} != 0"  # a query this gateway's DNAT passed on
    # Input: from the tunnels, meshd's own ports, the operator's open ports, ICMP echo and
    # errors, and replies; the rest is refused (a reset or an ICMP error: a clear answer).
    # Beside the tunnels, only this node and its LAN reach the mesh's addresses here.
    stranger = f"iifname != {tunnels} iifname != {_names(('lo', *spec.household))}"
    inbound = [
        f"{stranger} ip daddr {spec.mesh_prefix} ct state != {{ established, related }} drop "
        'comment "the mesh\'s addresses: not from the underlay"',
    ]
    if spec.mesh_prefix6 is not None:
        inbound.append(
            f"{stranger} ip6 daddr {spec.mesh_prefix6} ct state != {{ established, related }} drop"
        )
    inbound += [
        f'iifname != {tunnels} accept comment "only what comes from the mesh is filtered"',
        "ct state { established, related } accept",
        "ct state invalid drop",
        "icmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } "
        "accept",
        "icmpv6 type { echo-request, destination-unreachable, packet-too-big, time-exceeded, "
        "parameter-problem } accept",
    ]
    if spec.metrics_port:
        inbound += _metrics(spec.metrics_port, spec.metrics_allow)
    if spec.open_udp:
        inbound.append(f"udp dport {_ports(spec.open_udp)} accept")
    if spec.open_tcp:
        inbound.append(f"tcp dport {_ports(spec.open_tcp)} accept")
    inbound += [
        'meta l4proto tcp reject with tcp reset comment "not a service offered to the mesh"',
        "reject with icmpx admin-prohibited",
    ]
    forward = [
        f"{stranger} oifname {tunnels} ct state != {{ established, related }} drop "
        'comment "into the mesh only from this node and its household, but replies"',
        f"oifname {tunnels} tcp flags syn tcp option maxseg size set rt mtu "
        'comment "MSS clamp into tunnels"',
    ]
    prerouting: list[str] = []
    output: list[str] = []
    mark = f"ct mark set ct mark or {FLOW_MARK:#x}"
    ours = f"iifname != {tunnels} oifname {tunnels}"  # from this node or its household
    postrouting = [f'{ours} ip daddr {spec.mesh_prefix} {mark} comment "watched for progress"']
    if spec.mesh_prefix6 is not None:
        postrouting.append(f"{ours} ip6 daddr {spec.mesh_prefix6} {mark}")
    postrouting += [
        f"iifname != {tunnels} oifname {tunnels} ip saddr != {mesh} snat ip to {mesh} "
        'comment "the household and this node reach the mesh from the mesh address"',
    ]
    if spec.gateway_interface and spec.uplink:
        gw, up = spec.gateway_interface, spec.uplink
        forward.append(f'iifname "{gw}" oifname != "{up}" drop comment "uplink only"')
        if spec.resolver:
            forward.append(
                f'iifname "{gw}" ip daddr {spec.resolver} {dns} {passed} accept '
                'comment "exit users\' DNS, to the resolver this gateway passed it to"'
            )
        home = "reject with icmpx admin-prohibited"
        v4 = [*NOT_PUBLIC_IPV4, *(str(n) for n in spec.uplink_subnets if n.version == 4)]
        v6 = [*NOT_PUBLIC_IPV6, *(str(n) for n in spec.uplink_subnets if n.version == 6)]
        forward += [
            f'iifname "{gw}" ip daddr {{ {", ".join(v4)} }} {home} '
            'comment "exit users: the public internet only, not the gateway\'s home"',
            f'iifname "{gw}" ip6 daddr {{ {", ".join(v6)} }} {home}',
        ]
        if spec.block_smtp:
            forward.append(
                f'iifname "{gw}" tcp dport 25 reject with tcp reset comment "exit policy: no SMTP"'
            )
        if spec.mesh_class:
            forward.append(
                f'iifname "{gw}" oifname "{up}" meta priority set {MESH_OTHER} '
                'comment "owner first: the mesh\'s class"'
            )
        forward.append(f'iifname "{gw}" accept')
        if spec.resolver:
            prerouting.append(
                f'iifname "{gw}" ip daddr {mesh} {dns} ct mark set ct mark or {DNS_MARK:#x} '
                f"dnat ip to {spec.resolver} "
                'comment "exit users\' DNS, inside their tunnel"'
            )
        postrouting.append(
            f'iifname {tunnels} oifname "{up}" masquerade comment "exit users and their DNS"'
        )
    if spec.device_interface and spec.device_pool is not None and spec.uplink:
        postrouting.append(
            f'iifname "{spec.device_interface}" oifname "{spec.uplink}" '
            f'ip saddr {spec.device_pool} masquerade comment "roaming devices, out of the uplink"'
        )
    forward.append(
        f"iifname {tunnels} oifname != {tunnels} ct state != {{ established, related }} drop "
        'comment "from the mesh, only the mesh: the LAN, the underlay and the uplink get replies"'
    )
    if spec.user_interface and spec.exit_dns:
        # Our own resolver may sit behind the uplink that is down: ask the gateway's.
        keep = f"{{ 127.0.0.0/8, {spec.mesh_prefix} }}"
        rule = f'ip daddr != {keep} {dns} dnat ip to {spec.exit_dns} comment "DNS by our exit"'
        output.append(rule)
        if spec.household:
            prerouting.append(f"iifname {_names(spec.household)} {rule}")
    lines = [
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        *_chain("input", "filter", "input", "filter", inbound),
        *_chain("forward", "filter", "forward", "filter", forward),
        *_chain("prerouting", "nat", "prerouting", "dstnat", prerouting),
        *_chain("output", "nat", "output", "-100", output),
        *_chain("postrouting", "nat", "postrouting", "srcnat", postrouting),
        "}",
    ]
    return "\n".join(lines) + "\n"


def apply(ruleset: str) -> None:
    """Replace the table atomically; OSError (with nft's message) on failure."""
    command.run("nft", "-f", "-", stdin=ruleset)


def remove() -> None:
    command.run_ok("nft", "delete", "table", "inet", TABLE)
