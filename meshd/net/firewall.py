"""meshd's own nftables table (``inet meshd``), rendered whole from what the node is doing
(pure) and applied in one atomic ``nft -f`` (replacing what a crashed meshd left).

- NAT: a gateway masquerades its exit users' traffic out of its uplink; a node leaving by
  an exit tunnel sends its own and its household LAN's traffic from its mesh address.
- Exit policy on a gateway: exit users' traffic goes only to the uplink, outbound SMTP is
  refused (unless allowed). A blocked user is not in the firewall: its WireGuard peer goes.
- Owner first: on a shaped uplink, exit users' packets go in the mesh's class
  (meshd.net.shaping).
- The household LAN: nothing from the mesh reaches it but replies to its own connections.
- MSS clamping on forwarded TCP SYNs into every tunnel, so that an MTU smaller than the
  sender's path does not hang large transfers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshd.net import command
from meshd.net.shaping import MESH_CLASS

TABLE = "meshd"


@dataclass(frozen=True)
class FirewallSpec:
    mesh_ipv4: ipaddress.IPv4Address
    tunnel_prefix: str  # every WireGuard interface of this node starts with it
    uplink: str = ""
    gateway_interface: str = ""  # set while sharing: exit users arrive here
    user_interface: str = ""  # set while leaving by another node's exit
    block_smtp: bool = True
    lan: tuple[str, ...] = ()  # the household LAN's interfaces
    mesh_class: bool = False  # the uplink is shaped: exit users' packets go in its mesh class


def render(spec: FirewallSpec) -> str:
    nat: list[str] = []
    forward: list[str] = [
        f'oifname "{spec.tunnel_prefix}*" tcp flags syn tcp option maxseg size set rt mtu '
        'comment "MSS clamp into tunnels"',
    ]
    if spec.lan:
        lans = ", ".join(f'"{i}"' for i in spec.lan)
        forward.append(
            f'iifname "{spec.tunnel_prefix}*" oifname {{ {lans} }} '
            "ct state != { established, related } drop "
            'comment "the household LAN is not reachable from the mesh"'
        )
    if spec.user_interface:
        nat.append(
            f'oifname "{spec.user_interface}" ip saddr != {spec.mesh_ipv4} '
            f'snat ip to {spec.mesh_ipv4} comment "leave the mesh from our mesh address"'
        )
    if spec.gateway_interface and spec.uplink:
        gw = spec.gateway_interface
        forward.append(f'iifname "{gw}" oifname != "{spec.uplink}" drop comment "uplink only"')
        if spec.block_smtp:
            forward.append(
                f'iifname "{gw}" tcp dport 25 reject with tcp reset comment "exit policy: no SMTP"'
            )
        if spec.mesh_class:
            forward.append(
                f'iifname "{gw}" oifname "{spec.uplink}" meta priority set {MESH_CLASS} '
                'comment "owner first: the mesh\'s class"'
            )
        nat.append(f'iifname "{gw}" oifname "{spec.uplink}" masquerade comment "exit users"')
    lines = [
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        *(f"\t\t{rule}" for rule in forward),
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        *(f"\t\t{rule}" for rule in nat),
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def apply(ruleset: str) -> None:
    """Replace the table atomically; OSError (with nft's message) on failure."""
    command.run("nft", "-f", "-", stdin=ruleset)


def remove() -> None:
    command.run_ok("nft", "delete", "table", "inet", TABLE)
