"""The Babel route-selection core (RFC 8966 section 3), sans-IO.

Every neighbour link is a point-to-point interface carried by a QUIC session; hellos, IHUs
and link costs are computed elsewhere and arrive as ``link_up`` / ``link_cost`` /
``link_down``. Inputs are method calls with the time; outputs are drained:

    router = BabelRouter(router_id, seqno=persisted, now=now)
    router.announce(ipaddress.ip_network("10.7.0.3/32"))
    router.link_up("nodeB", cost=96, now=now)
    router.receive("nodeB", decode_packet_detail(data).tlvs, now)  # DecodedTLVs
    for neighbour, tlvs in router.drain_outgoing(): send(neighbour, encode_packet(tlvs))
    for change in router.drain_route_changes(): kernel.apply(change)
    persist(router.seqno); wake up at router.next_deadline() and call router.tick(now)

``receive`` takes TLVs with their parser state (``decode_packet_detail(...).tlvs``, or
``with_parser_state(tlvs)`` for TLVs that never went through bytes): an Update's source is
the packet's router-id. Next Hop TLVs are ignored: on a point-to-point link the next hop is
always the neighbour. Each list from ``drain_outgoing`` is one packet: Router-Id TLVs come
before the Updates they apply to, and none holds more than ``max_tlvs_per_packet`` TLVs
(``compress_prefixes`` may shorten it further).

Choices (see the RFC sections cited in place):
- Split horizon (3.7.4): a route is not advertised to the neighbour it goes through; safe
  here because every link is point-to-point and symmetric. Retractions go to everyone.
- Hysteresis: the selected route is kept while it stays feasible unless another one is
  better by more than ``switch_margin`` (a margin, not babeld's smoothed metric).
- A link cost below 1 is taken as 1: with cost 0 our own selected route would fail the
  feasibility condition against the distance we advertised.
- A seqno request for our own router-id with a newer seqno sets our seqno to the requested
  one (not +1): a node that lost its seqno is then feasible again after one round trip
  instead of being shunned until the sources are collected. At most once a
  ``SEQNO_RAISE_S``: each new seqno is signed and persisted, so a neighbour flooding seqno
  requests for us raises it once a second (the highest asked for waits, ``tick``), not as
  often as it sends them.
- Unfeasible updates are stored (never selected): they give seqno requests a target and
  become usable when a newer seqno arrives. An unfeasible update of the selected route is
  not ignored, though 3.5.3 allows it: the route is deselected. Ignoring it looped in the
  soak benchmark (54 packets expired in transit in 10 minutes of cuts and restarts, none
  without it); a likely path is a next hop that restarted, lost its feasibility distances
  and took our route back through us (answers to seqno requests pass split horizon). A
  source a stored route refers to is never collected (as babeld).
- RouteChange is about next hops: a change of metric alone is only seen in ``selected()``.
- Not RFC 8966: an update is stored only when the origin check passes it (``check_origins``:
  a mesh host route under the router-id its certificate names, meshd.core.routing.origin) and
  the neighbour is within its share of route entries (``BabelParams.max_routes*``); what is
  refused is drained as RefusedUpdate (``drain_refused``) for the caller to count, and a
  stored route the check refuses later goes on ``revalidate``. An update of an origin no
  certificate names yet (HELD) is noted, bounded, and asked for again (a unicast Route
  Request) once ``revalidate`` finds its owner; unresolved, it is refused after hold_s.
- Not RFC 8966 either: origin-signed seqnos. A non-retraction is stored only when its seqno
  passes ``seqnos`` (its OriginSignature sub-TLV, meshd.core.routing.origin); we send each
  seqno's proof from ``proofs`` to a neighbour once (again after its wildcard request, or
  in a forced answer), and ask a neighbour for a route again when we could not pass it on
  with a proof (``unsigned``, or taken from its originator without one).
- Updates may be carried unordered (QUIC datagrams): loop freedom does not depend on order,
  but an update overtaken by a retraction brings back a stale route until it expires
  (3.5 update intervals). An ordered stream for Updates avoids that black hole.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshd.core.proto.babel import (
    AE_IPV4,
    AE_IPV6,
    AE_WILDCARD,
    METRIC_INFINITY,
    TLV,
    DecodedTLV,
    OriginSignature,
    RouteRequest,
    SeqnoRequest,
    Update,
    seqno_less,
)
from meshd.core.routing.babel_output import packetize, with_parser_state
from meshd.core.routing.babel_state import RouterState
from meshd.core.routing.babel_tables import (
    HELD,
    UNSIGNED,
    BabelParams,
    IPNetwork,
    NeighbourId,
    OriginCheck,
    ProofSource,
    RefusedUpdate,
    Route,
    RouteAction,
    RouteChange,
    RouteInfo,
    SelectedRoute,
    SeqnoCheck,
)

SEQNO_RAISE_S = 1.0  # the least time between two raises of our seqno that others asked for

__all__ = [
    "BabelParams",
    "BabelRouter",
    "NeighbourId",
    "RefusedUpdate",
    "RouteAction",
    "RouteChange",
    "RouteInfo",
    "SelectedRoute",
    "with_parser_state",
]


class BabelRouter(RouterState):
    """One node's Babel routing: ``BabelRouter(router_id, seqno, now, params)``, with the
    8-octet router-id and the seqno persisted from the last run (any value if lost)."""

    # --- inputs -----------------------------------------------------------------------

    @property
    def seqno(self) -> int:
        """Our own seqno (RFC 8966 3.2.1): persist it whenever it changes."""
        return self._seqno

    def announce(self, prefix: IPNetwork) -> None:
        """Originate ``prefix`` (metric 0, our router-id)."""
        if prefix in self._own:
            return
        self._own[prefix] = None
        self._reselect(prefix, self._now)  # our own route wins over any learned one
        self._trigger(prefix, urgent=True)  # a new source for the prefix

    def withdraw(self, prefix: IPNetwork) -> None:
        """Stop originating ``prefix``: retract it unless a route from elsewhere remains."""
        if prefix not in self._own:
            raise ValueError(f"{prefix} is not announced")
        del self._own[prefix]
        self._reselect(prefix, self._now)
        if prefix not in self._selected:
            self._trigger(prefix, urgent=True)

    def link_up(self, neighbour: NeighbourId, cost: int, now: float) -> None:
        if neighbour in self._links:
            raise ValueError(f"link to {neighbour!r} is already up")
        self._advance(now)
        self._links[neighbour] = self._clamp_cost(cost)
        self._periodic[neighbour] = now + self.params.update_interval_s
        self._queue_full_update(neighbour)
        if self.params.request_on_link_up:
            # RFC 8966 3.8.1.1: a wildcard request asks for the neighbour's whole table.
            self._queued_requests.setdefault(neighbour, []).append(
                RouteRequest(ae=AE_WILDCARD, prefix=None)
            )

    def link_cost(self, neighbour: NeighbourId, cost: int, now: float) -> None:
        self._check_link(neighbour)
        self._advance(now)
        cost = self._clamp_cost(cost)
        if self._links[neighbour] == cost:
            return
        self._links[neighbour] = cost
        for prefix, by_neighbour in list(self._routes.items()):
            route = by_neighbour.get(neighbour)
            if route is not None:
                route.cost = cost
                self._reselect(prefix, now)

    def link_down(self, neighbour: NeighbourId, now: float) -> None:
        """The link is gone: its routes go at once (retracted or replaced)."""
        self._check_link(neighbour)
        self._advance(now)
        del self._links[neighbour]
        del self._periodic[neighbour]
        self._queued.pop(neighbour, None)
        self._queued_requests.pop(neighbour, None)
        self._forget_neighbour(neighbour)
        for key in [k for k in self._penalized if k[1] == neighbour]:
            del self._penalized[key]
        for prefix, by_neighbour in list(self._routes.items()):
            if neighbour in by_neighbour:
                self._drop_route(by_neighbour, neighbour)
                if not by_neighbour:
                    del self._routes[prefix]
                self._reselect(prefix, now)

    def receive(self, neighbour: NeighbourId, tlvs: Iterable[DecodedTLV], now: float) -> None:
        """Act on one packet from ``neighbour`` (TLVs with their parser state). Packets
        from a neighbour whose link is not up are ignored (a race with link_down)."""
        if neighbour not in self._links:
            return
        self._advance(now)
        for decoded in tlvs:
            tlv = decoded.tlv
            if isinstance(tlv, Update):
                self._on_update(neighbour, tlv, decoded.state.router_id, now)
            elif isinstance(tlv, RouteRequest):
                self._on_route_request(neighbour, tlv)
            elif isinstance(tlv, SeqnoRequest):
                self._on_seqno_request(neighbour, tlv, now)
            # Hello, IHU, Ack are the link layer's; Next Hop is implied on p2p links.

    def _raise_seqno(self, now: float) -> None:
        """Take the highest seqno asked for since the last raise, if that was
        ``SEQNO_RAISE_S`` ago (else ``tick`` does, then)."""
        if self._raise_to is None or now < self._raised_at + SEQNO_RAISE_S:
            return
        if seqno_less(self._seqno, self._raise_to):
            self._seqno = self._raise_to
            self._raised_at = now
            for own in self._own:
                self._trigger(own, urgent=False)
        self._raise_to = None

    def tick(self, now: float) -> None:
        """Run the timers that are due: periodic updates, second sends of urgent updates,
        route expiry, request resends, source collection, a seqno raise held back."""
        self._advance(now)
        self._raise_seqno(now)
        p = self.params
        for neighbour, due in list(self._periodic.items()):
            if due <= now:
                self._queue_full_update(neighbour)  # RFC 8966 3.7.1: periodic updates
                late = due + p.update_interval_s <= now  # tick called late: do not burst
                self._periodic[neighbour] = (now if late else due) + p.update_interval_s
        for prefix, due in list(self._resend.items()):
            if due <= now:
                del self._resend[prefix]
                self._trigger(prefix, urgent=False)
        self._expire_routes(now)
        for request, targets in self._requests.due(now):
            self._send_request(request, targets)
        self._collect_sources(now)
        self._release_held(now, learned=False)
        self._expire_asked(now)
        for key, until in list(self._penalized.items()):
            if until <= now:
                del self._penalized[key]
                self._reselect(key[0], now)

    # --- outputs ----------------------------------------------------------------------

    def drain_outgoing(self) -> list[tuple[NeighbourId, list[TLV]]]:
        """Packets to send, each a list of TLVs for one neighbour."""
        out: list[tuple[NeighbourId, list[TLV]]] = []
        for neighbour in list(self._links):
            requests = self._queued_requests.pop(neighbour, [])
            prefixes = self._queued.pop(neighbour, {})
            updates: list[tuple[bytes, TLV]] = []
            for prefix, forced in prefixes.items():
                made = self._make_update(prefix, neighbour, forced)
                if made is not None:
                    updates.append(made)
            # Grouped by source, so that one Router-Id TLV serves all of a node's prefixes.
            updates.sort(key=lambda item: item[0])
            items: list[tuple[bytes | None, TLV]] = [(None, r) for r in requests]
            items += updates
            out.extend(
                (neighbour, packet) for packet in packetize(items, self.params.max_tlvs_per_packet)
            )
        self._queued.clear()
        self._queued_requests.clear()
        return out

    def drain_refused(self) -> list[RefusedUpdate]:
        """The updates the origin check refused since the last drain (and the stored
        routes it refused on ``revalidate``)."""
        refused, self._refused = self._refused, []
        return refused

    def check_origins(
        self,
        check: OriginCheck,
        seqnos: SeqnoCheck | None = None,
        proofs: ProofSource | None = None,
    ) -> None:
        """From now on, store only the updates ``check`` passes, and whose seqno ``seqnos``
        passes; send each seqno's proof from ``proofs`` (meshd.core.routing.origin)."""
        self._origin, self._seqno_check, self._proofs = check, seqnos, proofs

    def penalize(self, prefix: IPNetwork, neighbour: NeighbourId, until: float, now: float) -> bool:
        """Keep the routes to ``prefix`` through ``neighbour`` out of selection until
        ``until`` (it lost the traffic: meshd.core.routing.progress), when another route to it
        is stored and not kept out itself; False (nothing done) when there is none: a
        destination that answers through no next hop is not cut off. With no feasible one left the
        sources are asked for a new seqno, as for a lost route."""
        self._check_link(neighbour)
        self._advance(now)
        others = [
            r
            for n, r in self._routes.get(prefix, {}).items()
            if n != neighbour
            and r.refmetric < METRIC_INFINITY
            and (prefix, n) not in self._penalized
        ]
        if not others or until <= now:
            return False
        self._penalized[(prefix, neighbour)] = until
        self._reselect(prefix, now)
        return True

    def penalties(self) -> list[tuple[IPNetwork, NeighbourId, float]]:
        """(prefix, next hop, until) kept out of selection now."""
        return [(p, n, until) for (p, n), until in self._penalized.items()]

    def held(self) -> int:
        """Updates held until the certificate of their origin is known."""
        return len(self._held)

    def revalidate(self, now: float) -> None:
        """Apply the origin check again to every stored route (it learned or forgot a
        certificate): a route it now refuses goes, as if retracted and expired."""
        if self._origin is None:
            return
        self._advance(now)
        for prefix, by_neighbour in list(self._routes.items()):
            dropped = False
            for neighbour, route in list(by_neighbour.items()):
                reason = self._origin(prefix, route.router_id)
                if reason is not None:
                    self._drop_route(by_neighbour, neighbour)
                    self._refused.append(RefusedUpdate(neighbour, prefix, route.router_id, reason))
                    dropped = True
            if not by_neighbour:
                del self._routes[prefix]
            if dropped:
                self._reselect(prefix, now)
        self._release_held(now, learned=True)

    def drain_route_changes(self) -> list[RouteChange]:
        """What the kernel must change since the last drain, one change per prefix."""
        return self._route_changes()

    def next_deadline(self) -> float | None:
        deadlines = list(self._periodic.values())
        deadlines += self._resend.values()
        deadlines += self._penalized.values()
        if self._raise_to is not None:
            deadlines.append(self._raised_at + SEQNO_RAISE_S)
        request_deadline = self._requests.deadline()
        if request_deadline is not None:
            deadlines.append(request_deadline)
        for by_neighbour in self._routes.values():
            for r in by_neighbour.values():
                deadlines.append(r.expires)
                if r.refresh_at is not None:
                    deadlines.append(r.refresh_at)
        if self._sources:
            referenced = {
                (r.prefix, r.router_id) for rs in self._routes.values() for r in rs.values()
            }
            deadlines += (
                s.last_used + self.params.source_gc_s
                for key, s in self._sources.items()
                if key not in referenced
            )
        return min(deadlines, default=None)

    def routes(self) -> list[RouteInfo]:
        return [
            RouteInfo(
                prefix=r.prefix,
                neighbour=r.neighbour,
                router_id=r.router_id,
                seqno=r.seqno,
                refmetric=r.refmetric,
                metric=r.metric,
                feasible=self._feasible(r),
                selected=self._selected.get(r.prefix) == r.neighbour,
                expires=r.expires,
            )
            for rs in self._routes.values()
            for r in rs.values()
        ]

    def selected(self) -> dict[IPNetwork, SelectedRoute]:
        out = {p: SelectedRoute(p, None, self.router_id, self._seqno, 0) for p in self._own}
        for prefix, neighbour in self._selected.items():
            r = self._routes[prefix][neighbour]
            out[prefix] = SelectedRoute(prefix, neighbour, r.router_id, r.seqno, r.metric)
        return out

    # --- receiving ----------------------------------------------------------------------

    def _on_update(
        self, neighbour: NeighbourId, tlv: Update, router_id: bytes | None, now: float
    ) -> None:
        if tlv.ae == AE_WILDCARD:
            if tlv.retraction:  # RFC 8966 4.6.9: AE 0 retracts every route of the sender
                for known, by_neighbour in list(self._routes.items()):
                    entry = by_neighbour.get(neighbour)
                    if entry is not None and entry.refmetric != METRIC_INFINITY:
                        entry.refmetric = METRIC_INFINITY
                        self._reselect(known, now)
            return
        prefix = tlv.prefix
        if prefix is None or tlv.ae not in (AE_IPV4, AE_IPV6):
            return  # link-local prefixes are not routed
        if router_id is None or router_id == self.router_id:
            return  # RFC 8966 4.6.9: no router-id, ignore; our own routes come back: ignore
        if self._origin is not None and (reason := self._origin(prefix, router_id)) is not None:
            # Not this origin's to announce (meshd.core.routing.origin): nothing is stored, and a
            # retraction of it changes nothing either (no route of it was ever kept). An
            # origin not known yet is held instead: asked for again once it is.
            if tlv.retraction:
                pass
            elif reason == HELD:
                self._hold(neighbour, prefix, router_id)
            else:
                self._refused.append(RefusedUpdate(neighbour, prefix, router_id, reason))
            return
        if not tlv.retraction and self._seqno_check is not None:
            proof = next((s for s in tlv.sub_tlvs if isinstance(s, OriginSignature)), None)
            reason = self._seqno_check(neighbour, prefix, router_id, tlv.seqno, proof)
            if reason is not None:  # a seqno its origin did not sign: nothing is stored
                self._refused.append(RefusedUpdate(neighbour, prefix, router_id, reason))
                if reason == UNSIGNED:
                    self._ask_proof(neighbour, prefix, now)
                return
        by_neighbour = self._routes.get(prefix, {})
        route = by_neighbour.get(neighbour)
        interval = tlv.interval / 100 if tlv.interval else self.params.update_interval_s
        expires = now + self.params.route_expiry_factor * interval
        # As babeld, a selected route that missed two updates is asked for again (a unicast
        # Route Request, RFC 8966 3.8.1.1) before it expires: one lost datagram too many
        # would otherwise drop a working route.
        refresh_at = expires - 1.5 * interval
        if route is None:
            if tlv.retraction:
                return  # RFC 8966 3.5.3: a retraction for no route is ignored
            if not self._room_for(neighbour):
                self._refused.append(RefusedUpdate(neighbour, prefix, router_id, "route_limit"))
                return
            # Unfeasible updates are kept (never selected) so that a seqno request can be
            # sent and they can be used once they become feasible (3.5.3 allows ignoring).
            route = Route(
                prefix, neighbour, router_id, tlv.seqno, tlv.metric, self._links[neighbour], 0
            )
            self._add_route(route)
        else:
            # RFC 8966 3.5.3: update the entry. An unfeasible update of the selected route
            # is not ignored: the route becomes unfeasible and is deselected.
            route.router_id, route.seqno, route.refmetric = router_id, tlv.seqno, tlv.metric
        if not tlv.retraction:
            route.expires = expires  # a retraction keeps the route until it expires
            route.refresh_at = refresh_at
            self._requests.satisfy(prefix, router_id, tlv.seqno)
        self._reselect(prefix, now)
        if (
            not tlv.retraction
            and self._selected.get(prefix) == neighbour
            and self._proofs is not None
            and self._proofs(prefix, router_id, tlv.seqno) is None
        ):
            # The route we pass on, taken without a proof we could send with it (from its
            # originator, or one lost on the way): ask for it, or our neighbours cannot
            # take the route from us. (A route we only keep needs none.)
            self._ask_proof(neighbour, prefix, now)
        if not tlv.retraction and prefix not in self._selected and not self._feasible(route):
            # RFC 8966 3.8.2.1: an unfeasible update and no route: ask the source for a
            # newer seqno through this neighbour.
            self._request_seqno(prefix, router_id, (neighbour,), now)

    def _on_route_request(self, neighbour: NeighbourId, tlv: RouteRequest) -> None:
        # RFC 8966 3.8.1.1: wildcard -> full table; else that prefix (or a retraction).
        if tlv.ae == AE_WILDCARD or tlv.prefix is None:
            # A neighbour asking for everything is new or starting over (its link came up):
            # what we sent it before may never have been taken, proofs included.
            self._proof_sent.pop(neighbour, None)
            self._queue_full_update(neighbour)
        else:
            self._queued.setdefault(neighbour, {})[tlv.prefix] = True

    def _on_seqno_request(self, neighbour: NeighbourId, tlv: SeqnoRequest, now: float) -> None:
        prefix = tlv.prefix
        if prefix in self._own:
            if tlv.router_id == self.router_id and seqno_less(self._seqno, tlv.seqno):
                # RFC 8966 3.8.1.2: the source increases its seqno and sends an update.
                pending = self._raise_to
                if pending is None or seqno_less(pending, tlv.seqno):
                    self._raise_to = tlv.seqno
                self._raise_seqno(now)
            else:
                self._queued.setdefault(neighbour, {})[prefix] = True
            return
        selected = self._selected.get(prefix)
        if selected is None:
            return  # RFC 8966 3.8.1.2: no route (or a retracted one): ignore
        route = self._routes[prefix][selected]
        if route.router_id != tlv.router_id or not seqno_less(route.seqno, tlv.seqno):
            self._queued.setdefault(neighbour, {})[prefix] = True  # we can answer it
            return
        if tlv.hop_count < 2:
            return
        # Forward to the next hop of a feasible route that is not the requester.
        feasible = [
            r
            for r in self._routes[prefix].values()
            if r.neighbour != neighbour and r.metric < METRIC_INFINITY and self._feasible(r)
        ]
        if not feasible:
            return
        feasible.sort(key=lambda r: (r.neighbour != selected, r.metric))
        targets = (feasible[0].neighbour,)
        request = self._requests.start(
            prefix, tlv.router_id, tlv.seqno, tlv.hop_count - 1, targets, neighbour, now
        )
        if request is not None:  # else a duplicate (RFC 8966 3.8.2.3)
            self._send_request(request, targets)
