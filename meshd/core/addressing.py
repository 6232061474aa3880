"""Addresses and names derived from node ids (pure)."""

from __future__ import annotations

import hashlib
import ipaddress

from meshd.core.keys import public_from_node_id

IFNAME_MAX = 15  # IFNAMSIZ - 1

# Everything but the public internet: what exit users never reach through a gateway
# (meshd.adapters.net.firewall), and where a shared endpoint is no internet address to
# dial over an uplink (meshd.core.control.neighbours).
NOT_PUBLIC_IPV4 = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # CGNAT (RFC 6598)
    "127.0.0.0/8",
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # RFC 1918
    "192.168.0.0/16",  # RFC 1918
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
)
NOT_PUBLIC_IPV6 = ("::1/128", "fc00::/7", "fe80::/10", "ff00::/8")  # loopback, ULA, link, multicast
_NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in (*NOT_PUBLIC_IPV4, *NOT_PUBLIC_IPV6))


def internet_address(host: str) -> bool:
    """An address of the public internet (where a node with an uplink may reach it)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not any(ip in net for net in _NOT_PUBLIC if net.version == ip.version)


def mesh_ipv6(prefix: ipaddress.IPv6Network, node_id: str) -> ipaddress.IPv6Address:
    """The mesh ULA prefix followed by the leading bits of the node's public key."""
    host_bits = 128 - prefix.prefixlen
    key = int.from_bytes(public_from_node_id(node_id), "big")
    host = key >> (256 - host_bits)
    return ipaddress.IPv6Address(int(prefix.network_address) | host)


def link_local(node_id: str) -> ipaddress.IPv6Address:
    """fe80::/64 with the first 64 bits of the node's public key as interface id."""
    iid = int.from_bytes(public_from_node_id(node_id)[:8], "big")
    return ipaddress.IPv6Address((0xFE80 << 112) | iid)


def short_tag(node_id: str) -> str:
    """Six hex digits naming a node inside interface names."""
    return hashlib.sha256(node_id.encode()).hexdigest()[:6]


def link_interface_name(prefix: str, own_id: str, peer_id: str) -> str:
    """One WireGuard interface per neighbour: unique machine-wide (wireguard-go's UAPI
    sockets share one directory across namespaces), so both node ids are in the name."""
    name = f"{prefix}{short_tag(own_id)}{short_tag(peer_id)}"
    if len(name) > IFNAME_MAX:
        raise ValueError(f"interface name {name!r} is longer than {IFNAME_MAX} characters")
    return name


def own_interface_prefix(prefix: str, own_id: str) -> str:
    """Every interface this node makes starts with this; used to adopt them after a crash."""
    return f"{prefix}{short_tag(own_id)}"
