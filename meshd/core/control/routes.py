"""What the control plane adds to Babel (pure): whose routes are whose, and next hops that
lose traffic.

Origins (meshd.core.routing.origin): every member's addresses are its own, under the
router-id its key hashes to; Babel stores only updates that pass, and carries each seqno's
signature on (ours for our own routes, the originator's as verified for the rest; none to
a meshd/1 neighbour, which would not know the sub-TLV). Black holes
(meshd.core.routing.progress): a next hop whose destination's flows get no answer is kept
out of that destination's routes for a penalty, when another route is there."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nacl.signing import SigningKey

from meshd.core.control.peer import Peer
from meshd.core.journal import Journal
from meshd.core.keys import public_from_node_id
from meshd.core.membership import OwnMembership, VerifiedMember
from meshd.core.membership.clock import MeshClock
from meshd.core.proto.babel import TLV, OriginSignature, RouterId, Update, encode_packet, seqno_add
from meshd.core.routing.babel import BabelRouter, RefusedUpdate
from meshd.core.routing.origin import OriginPolicy, OriginSigner, Owner
from meshd.core.routing.progress import FlowSample, IPNetwork, ProgressWatch, Suspicion

ROUTE_REFUSALS_LOGGED_EVERY = 1000  # a refused route is logged at the first, then each 1000th
NameOf = Callable[[str], str | None]  # a neighbour's name by node id (None: not known)


def router_id(node_id_bytes: bytes) -> bytes:
    """Babel router-id: 8 bytes of the node's key hash (RFC 8966 4.1.2: any unique id)."""
    return hashlib.sha256(node_id_bytes).digest()[:8]


def owner_of(member: VerifiedMember) -> Owner:
    """What routing needs of a member's certificate: its router-id and its addresses."""
    key = public_from_node_id(member.node_id)
    return Owner(member.node_id, router_id(key), (member.mesh_ipv4, member.mesh_ipv6), key)


def forged(tlvs: list[TLV], own: bytes, add: int, understate: bool = False) -> list[TLV]:
    """TESTS ONLY (routing.test_forge_seqnos, test_understate_metrics): the relayed routes
    with newer seqnos than their originators gave them (their signatures kept), or at
    metric 0."""
    out: list[TLV] = []
    origin = None
    for tlv in tlvs:
        if isinstance(tlv, RouterId):
            origin = tlv.router_id
        elif isinstance(tlv, Update) and origin != own and not tlv.retraction:
            metric = 0 if understate else tlv.metric
            tlv = replace(tlv, seqno=seqno_add(tlv.seqno, add), metric=metric)
        out.append(tlv)
    return out


def _without_proof(tlv: TLV) -> TLV:
    """An Update as meshd/1 sends it: without its OriginSignature."""
    if isinstance(tlv, Update) and tlv.sub_tlvs:
        kept = tuple(s for s in tlv.sub_tlvs if not isinstance(s, OriginSignature))
        return replace(tlv, sub_tlvs=kept)
    return tlv


class Routes:
    def __init__(
        self,
        router: BabelRouter,
        own: OwnMembership,
        clock: MeshClock,
        journal: Journal,
        *,
        signing_key: SigningKey | None = None,
        accept_unsigned: bool = False,
        forge_seqnos: int = 0,
        understate_metrics: bool = False,
    ) -> None:
        self.router, self.clock, self.journal = router, clock, journal
        # Whose routes are whose: Babel stores only what passes.
        definition = own.trust.definition
        self.origins = OriginPolicy(
            definition.ipv4_prefix, definition.ipv6_prefix, accept_unsigned=accept_unsigned
        )
        self.origins.learn(owner_of(own.member))
        # Our seqnos, signed with our identity key (none given: our updates carry no proof,
        # as a unit test's control plane that never routes).
        self.signer = (
            OriginSigner(signing_key, router.router_id) if signing_key is not None else None
        )
        self.forge_seqnos = forge_seqnos  # config routing.test_forge_seqnos: tests only
        self.understate_metrics = understate_metrics  # routing.test_understate_metrics
        # Next hops that lose a destination's traffic, and what was suspected of each:
        # (destination, neighbour) -> the suspicion.
        self.progress = ProgressWatch()
        self.black_holes: dict[tuple[IPNetwork, str], Suspicion] = {}
        self._router_ids: dict[str, bytes] = {}  # neighbour node id -> its router-id
        router.check_origins(self.origins.refusal, self._seqno_refusal, self._proof)

    def learn(self, member: VerifiedMember) -> None:
        """A certificate verified: its addresses are its own from now on (routes to them
        that another origin announced go at Babel's next revalidation)."""
        self.origins.learn(owner_of(member))

    def forget(self, node_id: str) -> None:
        self.origins.forget(node_id)

    def packet(self, tlvs: list[TLV], signed: bool) -> bytes:
        """Babel's output for one neighbour as it goes on the wire (``signed``: it
        announced SIGNED_ROUTES; else meshd/1's format)."""
        if not signed:
            tlvs = [_without_proof(t) for t in tlvs]
        if self.forge_seqnos or self.understate_metrics:
            own = self.router.router_id
            tlvs = forged(tlvs, own, self.forge_seqnos, self.understate_metrics)
        return encode_packet(tlvs)

    def _seqno_refusal(
        self,
        neighbour: str,
        prefix: IPNetwork,
        origin: bytes,
        seqno: int,
        proof: OriginSignature | None,
    ) -> str | None:
        """Babel's seqno check (meshd.core.routing.origin): judged by our mesh clock; a
        neighbour's own routes need no proof (its session is its certificate)."""
        own_id = self._router_ids.get(neighbour)
        if own_id is None:
            own_id = self._router_ids[neighbour] = router_id(public_from_node_id(neighbour))
        return self.origins.seqno_refusal(
            prefix, origin, seqno, proof, self.clock.now(), from_originator=origin == own_id
        )

    def _proof(self, prefix: IPNetwork, origin: bytes, seqno: int) -> OriginSignature | None:
        """What to send with an Update of (prefix, origin, seqno): our signature for our
        own routes, else the originator's as we verified it."""
        if origin == self.router.router_id:
            return self.signer.proof(prefix, seqno, self.clock.now()) if self.signer else None
        return self.origins.proof(prefix, origin, seqno)

    def refused(self, refused: RefusedUpdate, peer: Peer) -> None:
        """A route update the origin check refused: counted for the neighbour, and said
        at the first of each reason (a flood is counted, not logged line by line)."""
        count = peer.count_refusal(refused.reason)
        if count == 1 or count % ROUTE_REFUSALS_LOGGED_EVERY == 0:
            self.journal(
                "route.refused",
                logging.WARNING,
                peer=peer.name,
                reason=refused.reason,
                prefix=str(refused.prefix),
                router_id=refused.router_id.hex(),
                count=count,
            )

    def observe(self, flows: list[FlowSample], now: float, name_of: NameOf) -> bool:
        """A reading of the flows to mesh addresses: a next hop that loses a destination's
        traffic is kept out of its routes for a penalty, when another route is there.
        Whether any was (then the routes change: flush at once)."""
        next_hops = {
            prefix: chosen.next_hop
            for prefix, chosen in self.router.selected().items()
            if chosen.next_hop is not None
        }
        penalized = {(p, n) for p, n, _ in self.router.penalties()}
        for key in [k for k in self.black_holes if k not in penalized]:
            del self.black_holes[key]
        penalized_now = False
        for suspicion in self.progress.observe(flows, next_hops, now):
            until = now + suspicion.penalty_s
            if not self.router.penalize(suspicion.destination, suspicion.next_hop, until, now):
                continue  # no other way there: the destination itself may be down
            self.black_holes[(suspicion.destination, suspicion.next_hop)] = suspicion
            self.journal(
                "route.black_hole",
                logging.WARNING,
                peer=name_of(suspicion.next_hop) or suspicion.next_hop[:8],
                destination=str(suspicion.destination),
                reason="no_progress",
                unanswered=suspicion.unanswered,
                penalty_s=round(suspicion.penalty_s),
            )
            penalized_now = True
        return penalized_now

    def black_hole_status(self, now: float, name_of: NameOf) -> list[dict[str, Any]]:
        """``meshd status``'s ``black_holes``: the next hops kept out of a destination's
        routes now because its traffic got no answer through them."""
        out = []
        for prefix, neighbour, until in self.router.penalties():
            suspicion = self.black_holes.get((prefix, neighbour))
            out.append(
                {
                    "destination": str(prefix),
                    "via": neighbour,
                    "name": name_of(neighbour) or "",
                    "reason": "no_progress",
                    "unanswered": suspicion.unanswered if suspicion else 0,
                    "for_s": round(until - now, 1),
                }
            )
        return out

    def status(self) -> dict[str, Any]:
        """``meshd status``'s ``origins``: route updates held for an unknown origin, and
        the origin signatures made and checked."""
        return {
            "unsigned_routes": "accept" if self.origins.accept_unsigned else "refuse",
            "held": self.router.held(),
            "signed": self.signer.signed if self.signer is not None else 0,
            "verified": self.origins.verified,
        }
