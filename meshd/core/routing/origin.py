"""Which routes a Babel update may carry: route origin validation (pure).

Babel believes what a neighbour announces; a community mesh cannot. Every mesh address is
in a membership certificate an admin signed, and each certificate binds its addresses to
one router-id (the hash of the member's key, ``meshd.core.control.routes.router_id``): that
is meshd's RPKI. An update is accepted only when

- its prefix is a mesh host route: a /32 inside the mesh's IPv4 prefix or a /128 inside
  its IPv6 prefix. Never a default or any shorter prefix, a LAN, an underlay address or
  anything outside the mesh (``prefix_not_host``, ``prefix_outside_mesh``);
- the certificate we know for that address names the update's router-id as its owner
  (``wrong_origin``), and the certificate we know for that router-id holds that address
  (``not_its_address``).

Certificates are learned as they verify (``learn``; the certificate directory brings every
member's) and forgotten when revoked (``forget``). An update for an address and a router-id
that no known certificate mentions is held (``unknown_origin``: the Babel core keeps a
bounded note of it and asks again once the directory knows the owner), unless the node
accepts unsigned routes (``accept_unsigned``, for a mesh that still has meshd/1 nodes,
which have no directory): then it passes, as before origin checks existed.

Origin-signed seqnos. A seqno newer than everyone else's makes every other route to that
prefix unfeasible (RFC 8966 3.5.1), so whoever can invent one wins the traffic. The
originator signs (router-id, prefix, seqno, time) with its identity key (``OriginSigner``,
once per seqno and again every ``RESIGN_AFTER_S``, never per periodic update); the
signature travels in the Update as an OriginSignature sub-TLV, and relays forward it. A
receiver (``seqno_refusal``) verifies a signature once, keeps the newest one per (prefix,
router-id), and accepts an update without one only for a seqno no newer than one it has
verified, or from the originator itself (its session is its certificate). Refused:
``unsigned``, ``bad_signature``, ``stale_signature`` (older than ``MAX_AGE_S`` or more than
``MAX_AHEAD_S`` ahead of our mesh clock: an old signature replayed after the 16-bit seqno
wrapped).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from meshd.core.proto.babel import OriginSignature, seqno_less

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OriginRefusal(StrEnum):
    """Why an update was refused; the reason codes a neighbour's ``refusals`` count."""

    PREFIX_NOT_HOST = "prefix_not_host"
    PREFIX_OUTSIDE_MESH = "prefix_outside_mesh"
    WRONG_ORIGIN = "wrong_origin"
    NOT_ITS_ADDRESS = "not_its_address"
    UNKNOWN_ORIGIN = "unknown_origin"  # no certificate names either yet: held, not counted
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    STALE_SIGNATURE = "stale_signature"


SIGNATURE_CONTEXT: Final = b"meshd origin v1\x00"
MAX_AGE_S: Final = 24 * 3600
MAX_AHEAD_S: Final = 3600
RESIGN_AFTER_S: Final = 6 * 3600
PROOFS_KEPT: Final = 4  # verified seqnos kept per (prefix, router-id)


def signed_message(router_id: bytes, prefix: IPNetwork, seqno: int, time: int) -> bytes:
    """What an OriginSignature signs: context | router-id (8) | IP version (1) | prefix
    length (1) | address (4 or 16) | seqno (2) | time (4), integers big-endian."""
    return b"".join(
        (
            SIGNATURE_CONTEXT,
            router_id,
            bytes((prefix.version, prefix.prefixlen)),
            prefix.network_address.packed,
            seqno.to_bytes(2, "big"),
            time.to_bytes(4, "big"),
        )
    )


class OriginSigner:
    """Our own proofs: one signature per (prefix, seqno), renewed every RESIGN_AFTER_S (or
    when the mesh clock moved by that much, as a Pi's stale clock does once corrected)."""

    def __init__(self, signing_key: SigningKey, router_id: bytes) -> None:
        self._key, self.router_id = signing_key, router_id
        self._made: dict[IPNetwork, tuple[int, OriginSignature]] = {}
        self.signed = 0  # signatures made, for status

    def proof(self, prefix: IPNetwork, seqno: int, now: float) -> OriginSignature:
        made = self._made.get(prefix)
        if made is not None and made[0] == seqno and abs(now - made[1].time) < RESIGN_AFTER_S:
            return made[1]
        time = int(now) & 0xFFFF_FFFF
        message = signed_message(self.router_id, prefix, seqno, time)
        proof = OriginSignature(time, self._key.sign(message).signature)
        self._made[prefix] = (seqno, proof)
        self.signed += 1
        return proof


@dataclass(frozen=True)
class Owner:
    """What one certificate says routing needs: the router-id and the addresses it owns."""

    node_id: str
    router_id: bytes
    addresses: tuple[IPAddress, ...]
    key: bytes = b""  # the Ed25519 identity key its seqnos are signed with


def host_route(address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(f"{address}/{address.max_prefixlen}")


class OriginPolicy:
    def __init__(
        self,
        ipv4_prefix: ipaddress.IPv4Network,
        ipv6_prefix: ipaddress.IPv6Network,
        *,
        accept_unsigned: bool = False,
    ):
        self.ipv4_prefix, self.ipv6_prefix = ipv4_prefix, ipv6_prefix
        self.accept_unsigned = accept_unsigned
        self._by_node: dict[str, Owner] = {}
        self._by_router_id: dict[bytes, Owner] = {}
        self._by_prefix: dict[IPNetwork, Owner] = {}
        # The verified proofs of the newest seqnos per (prefix, router-id), newest first: a
        # relay may still be using an older one, and passes its proof on.
        self._proved: dict[tuple[IPNetwork, bytes], list[tuple[int, OriginSignature]]] = {}
        self.verified = 0  # signatures checked, for status

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
            self._proved.pop((host_route(address), owner.router_id), None)

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
        if owner is None and claimant is None and not self.accept_unsigned:
            return OriginRefusal.UNKNOWN_ORIGIN
        return None

    def seqno_refusal(
        self,
        prefix: IPNetwork,
        router_id: bytes,
        seqno: int,
        proof: OriginSignature | None,
        now: float,
        *,
        from_originator: bool = False,
    ) -> OriginRefusal | None:
        """None when an update that passed ``refusal`` may carry ``seqno``, else why not.
        ``from_originator``: the neighbour it came from is the router-id's own node."""
        key = (prefix, router_id)
        proved = self._proved.get(key, [])
        if proof is not None and (seqno, proof) in proved:
            return None  # verified already
        if proof is None:
            if proved and not seqno_less(proved[0][0], seqno):
                return None  # no newer than a seqno the originator signed
            if from_originator or (not proved and self.accept_unsigned):
                return None  # (a pair that was seen signed is never taken unsigned again)
            return OriginRefusal.UNSIGNED
        owner = self._by_router_id.get(router_id)
        if owner is None or not owner.key:
            return None if self.accept_unsigned else OriginRefusal.UNKNOWN_ORIGIN
        if not now - MAX_AGE_S <= proof.time <= now + MAX_AHEAD_S:
            return OriginRefusal.STALE_SIGNATURE
        self.verified += 1
        try:
            VerifyKey(owner.key).verify(
                signed_message(router_id, prefix, seqno, proof.time), proof.signature
            )
        except BadSignatureError:
            return OriginRefusal.BAD_SIGNATURE
        self._remember(key, seqno, proof)
        return None

    def _remember(self, key: tuple[IPNetwork, bytes], seqno: int, proof: OriginSignature) -> None:
        """Keep a verified proof: the newest PROOFS_KEPT seqnos, each with its newest time."""
        proved = [p for p in self._proved.get(key, []) if p[0] != seqno or p[1].time > proof.time]
        if not any(p[0] == seqno for p in proved):
            at = next((i for i, p in enumerate(proved) if seqno_less(p[0], seqno)), len(proved))
            proved.insert(at, (seqno, proof))
        self._proved[key] = proved[:PROOFS_KEPT]

    def proof(self, prefix: IPNetwork, router_id: bytes, seqno: int) -> OriginSignature | None:
        """The verified proof of that seqno, to send with our own updates of the route."""
        return next((p for s, p in self._proved.get((prefix, router_id), []) if s == seqno), None)
