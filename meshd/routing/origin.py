"""Which routes a Babel update may carry: route origin validation (pure).

Babel believes what a neighbour announces; a community mesh cannot. Every mesh address is
in a membership certificate an admin signed, and each certificate binds its addresses to
one router-id (the hash of the member's key, ``meshd.mesh.router_id``): that is meshd's
RPKI. An update is accepted only when

- its prefix is a mesh host route: a /32 inside the mesh's IPv4 prefix or a /128 inside
  its IPv6 prefix. Never a default or any shorter prefix, a LAN, an underlay address or
  anything outside the mesh (``prefix_not_host``, ``prefix_outside_mesh``);
- the certificate we know for that address names the update's router-id as its owner
  (``wrong_origin``), and the certificate we know for that router-id holds that address
  (``not_its_address``).

Certificates are learned as they verify (``learn``) and forgotten when revoked
(``forget``). An address and a router-id that no known certificate mentions pass for now:
only the certificate directory (every member's certificate, mesh-wide) can close that gap,
and until it exists a far member's routes must keep working.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OriginRefusal(StrEnum):
    """Why an update was refused; the reason codes a neighbour's ``refusals`` count."""

    PREFIX_NOT_HOST = "prefix_not_host"
    PREFIX_OUTSIDE_MESH = "prefix_outside_mesh"
    WRONG_ORIGIN = "wrong_origin"
    NOT_ITS_ADDRESS = "not_its_address"


@dataclass(frozen=True)
class Owner:
    """What one certificate says routing needs: the router-id and the addresses it owns."""

    node_id: str
    router_id: bytes
    addresses: tuple[IPAddress, ...]


def host_route(address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(f"{address}/{address.max_prefixlen}")


class OriginPolicy:
    def __init__(self, ipv4_prefix: ipaddress.IPv4Network, ipv6_prefix: ipaddress.IPv6Network):
        self.ipv4_prefix, self.ipv6_prefix = ipv4_prefix, ipv6_prefix
        self._by_node: dict[str, Owner] = {}
        self._by_router_id: dict[bytes, Owner] = {}
        self._by_prefix: dict[IPNetwork, Owner] = {}

    def learn(self, owner: Owner) -> None:
        """A certificate that verified; it replaces what that node's earlier one said."""
        self.forget(owner.node_id)
        for address in owner.addresses:
            if address not in self.ipv4_prefix and address not in self.ipv6_prefix:
                raise ValueError(f"{address} is outside the mesh prefixes")
        self._by_node[owner.node_id] = owner
        self._by_router_id[owner.router_id] = owner
        for address in owner.addresses:
            self._by_prefix[host_route(address)] = owner

    def forget(self, node_id: str) -> None:
        """The node is revoked (or its certificate is replaced)."""
        owner = self._by_node.pop(node_id, None)
        if owner is None:
            return
        if self._by_router_id.get(owner.router_id) is owner:
            del self._by_router_id[owner.router_id]
        for address in owner.addresses:
            if self._by_prefix.get(host_route(address)) is owner:
                del self._by_prefix[host_route(address)]

    def refusal(self, prefix: IPNetwork, router_id: bytes) -> OriginRefusal | None:
        """None when ``router_id`` may originate ``prefix``, else why not."""
        if prefix.prefixlen != prefix.max_prefixlen:
            return OriginRefusal.PREFIX_NOT_HOST
        mesh = self.ipv4_prefix if prefix.version == 4 else self.ipv6_prefix
        if prefix.network_address not in mesh:  # a host route: its one address
            return OriginRefusal.PREFIX_OUTSIDE_MESH
        owner = self._by_prefix.get(prefix)
        if owner is not None and owner.router_id != router_id:
            return OriginRefusal.WRONG_ORIGIN
        claimant = self._by_router_id.get(router_id)
        if claimant is not None and prefix.network_address not in claimant.addresses:
            return OriginRefusal.NOT_ITS_ADDRESS
        return None
