"""The state of the Babel core and the rules that act on it (RFC 8966 3.5-3.8): selection,
triggered updates, feasibility distances, expiry, seqno requests. ``BabelRouter`` in
``meshd.core.routing.babel`` adds the inputs and outputs on top; read that module first."""

from __future__ import annotations

from meshd.core.proto.babel import (
    METRIC_INFINITY,
    TLV,
    OriginSignature,
    RouteRequest,
    SeqnoRequest,
    Update,
    seqno_add,
)
from meshd.core.routing.babel_requests import SeqnoRequests, ae_of
from meshd.core.routing.babel_tables import (
    HELD,
    HOP_COUNT,
    BabelParams,
    IPNetwork,
    NeighbourId,
    OriginCheck,
    ProofSource,
    RefusedUpdate,
    Route,
    RouteAction,
    RouteChange,
    SeqnoCheck,
    Source,
)


class RouterState:
    """Tables and the rules shared by every input; no public API of its own."""

    def __init__(
        self, router_id: bytes, seqno: int, now: float, params: BabelParams | None = None
    ) -> None:
        if not isinstance(router_id, bytes) or len(router_id) != 8:
            raise ValueError(f"router_id must be 8 bytes, not {router_id!r}")
        seqno_add(seqno, 0)  # range check
        self.router_id = router_id
        self.params = params or BabelParams()
        self._seqno = seqno
        self._raise_to: int | None = None  # the highest seqno asked for, held back
        self._raised_at = float("-inf")  # when a request last raised our seqno
        self._now = now
        self._own: dict[IPNetwork, None] = {}
        self._links: dict[NeighbourId, int] = {}  # neighbour -> link cost
        self._periodic: dict[NeighbourId, float] = {}  # next full update
        self._routes: dict[IPNetwork, dict[NeighbourId, Route]] = {}
        self._route_count: dict[NeighbourId, int] = {}  # entries in _routes, per neighbour
        self._sources: dict[tuple[IPNetwork, bytes], Source] = {}
        self._selected: dict[IPNetwork, NeighbourId] = {}
        self._installed: dict[IPNetwork, tuple[NeighbourId, int]] = {}  # as drained
        self._touched: dict[IPNetwork, None] = {}  # prefixes reselected since the drain
        # What we last sent for a prefix (router-id, seqno, metric): retractions reuse it
        # and triggered updates are decided against it.
        self._advertised: dict[IPNetwork, tuple[bytes, int, int]] = {}
        self._requests = SeqnoRequests(self.params)
        self._resend: dict[IPNetwork, float] = {}  # urgent updates to send a second time
        self._queued: dict[NeighbourId, dict[IPNetwork, bool]] = {}  # prefix -> forced
        self._queued_requests: dict[NeighbourId, list[TLV]] = {}
        # Which (prefix, router-id) an update may carry (meshd.core.routing.origin); None: any.
        self._origin: OriginCheck | None = None
        self._refused: list[RefusedUpdate] = []  # since the last drain
        # Origin-signed seqnos (meshd.core.routing.origin): which seqnos an update may carry,
        # the proofs we send, the last proof each neighbour got from us per prefix (sent
        # again only when it changes), and when we last asked a neighbour for one.
        self._seqno_check: SeqnoCheck | None = None
        self._proofs: ProofSource | None = None
        self._proof_sent: dict[NeighbourId, dict[IPNetwork, OriginSignature]] = {}
        self._proof_asked: dict[tuple[NeighbourId, IPNetwork], float] = {}
        # Next hops kept out of selection for a prefix until then (meshd.core.routing.progress).
        self._penalized: dict[tuple[IPNetwork, NeighbourId], float] = {}
        # Updates of an origin no known certificate names yet: (router-id, until when).
        self._held: dict[tuple[NeighbourId, IPNetwork], tuple[bytes, float]] = {}
        self._held_count: dict[NeighbourId, int] = {}

    # --- the route table ------------------------------------------------------------------

    def _room_for(self, neighbour: NeighbourId) -> bool:
        """Another entry from ``neighbour`` fits the limits (BabelParams)."""
        return (
            self._route_count.get(neighbour, 0) < self.params.max_routes_per_neighbour
            and sum(self._route_count.values()) < self.params.max_routes
        )

    def _add_route(self, route: Route) -> None:
        self._routes.setdefault(route.prefix, {})[route.neighbour] = route
        self._route_count[route.neighbour] = self._route_count.get(route.neighbour, 0) + 1

    def _drop_route(self, by_neighbour: dict[NeighbourId, Route], neighbour: NeighbourId) -> None:
        """Remove one entry (the caller removes the prefix once it has none left)."""
        del by_neighbour[neighbour]
        left = self._route_count[neighbour] - 1
        if left:
            self._route_count[neighbour] = left
        else:
            del self._route_count[neighbour]

    # --- selection ----------------------------------------------------------------------

    def _feasible(self, route: Route) -> bool:
        source = self._sources.get((route.prefix, route.router_id))
        return source is None or source.is_feasible(route.seqno, route.refmetric)

    def _reselect(self, prefix: IPNetwork, now: float) -> None:
        """RFC 8966 3.6: route selection among feasible routes, with hysteresis; then
        triggered updates (3.7.2) and seqno requests (3.8.2.2) as needed."""
        if prefix in self._own:
            self._selected.pop(prefix, None)
            self._sync_installed(prefix)
            return
        by_neighbour = self._routes.get(prefix, {})
        candidates = [
            r
            for r in by_neighbour.values()
            if r.metric < METRIC_INFINITY
            and self._feasible(r)
            and (prefix, r.neighbour) not in self._penalized
        ]
        had = self._selected.get(prefix)
        current = by_neighbour.get(had) if had is not None else None
        new: Route | None = None
        if candidates:
            best = min(candidates, key=lambda r: (r.metric, r.neighbour))
            new = best
            if (
                current is not None
                and any(c is current for c in candidates)
                and best.metric + self.params.switch_margin >= current.metric
            ):
                new = current  # hysteresis: not clearly better
        if new is None:
            self._selected.pop(prefix, None)
            if had is not None:
                self._trigger(prefix, urgent=True)  # 3.7.2: retraction, sent twice
                # 3.8.2.2: only unfeasible routes remain: ask their sources for new seqnos.
                by_source: dict[bytes, list[NeighbourId]] = {}
                for r in by_neighbour.values():
                    if r.refmetric < METRIC_INFINITY and r.metric < METRIC_INFINITY:
                        by_source.setdefault(r.router_id, []).append(r.neighbour)
                for router_id, neighbours in by_source.items():
                    self._request_seqno(prefix, router_id, tuple(neighbours), now)
        else:
            self._selected[prefix] = new.neighbour
            advertised = self._advertised.get(prefix)
            if advertised is None or advertised[2] == METRIC_INFINITY:
                self._trigger(prefix, urgent=False)
            elif advertised[0] != new.router_id:
                self._trigger(prefix, urgent=True)  # a new source: sent twice, as babeld
            elif advertised[1] != new.seqno:
                self._trigger(prefix, urgent=False)  # a newer seqno: it may answer requests
            else:
                if had is not None and had != new.neighbour and had in self._links:
                    # Split horizon kept the route from the old next hop: it hears it now.
                    self._queued.setdefault(had, {}).setdefault(prefix, False)
                # As babeld's send_triggered_update: a route getting worse is said at once
                # unless the change is trivial; one getting better only if by a lot, since
                # advertising a transient improvement lowers the feasibility distance and
                # makes the neighbours' routes unfeasible when it passes. The periodic
                # update says the rest.
                diff = new.metric - advertised[2]
                if (
                    diff >= self.params.metric_change_threshold
                    or -diff >= self.params.improvement_threshold
                ):
                    self._trigger(prefix, urgent=False)
        self._sync_installed(prefix)

    def _sync_installed(self, prefix: IPNetwork) -> None:
        """The selection for ``prefix`` may have changed: compared with what the kernel was
        told at the next ``drain_route_changes`` (a burst that ends where it began, or a
        next hop that changes twice, is then one change or none)."""
        self._touched[prefix] = None

    def _route_changes(self) -> list[RouteChange]:
        changes: list[RouteChange] = []
        for prefix in self._touched:
            old = self._installed.get(prefix)
            neighbour = self._selected.get(prefix)
            if neighbour is None:
                if old is not None:
                    del self._installed[prefix]
                    changes.append(RouteChange(prefix, RouteAction.REMOVE, *old))
                continue
            metric = self._routes[prefix][neighbour].metric
            self._installed[prefix] = (neighbour, metric)
            if old is None:
                changes.append(RouteChange(prefix, RouteAction.INSTALL, neighbour, metric))
            elif old[0] != neighbour:
                changes.append(RouteChange(prefix, RouteAction.REPLACE, neighbour, metric))
        self._touched.clear()
        return changes

    # --- timers -------------------------------------------------------------------------

    def _expire_routes(self, now: float) -> None:
        # RFC 8966 3.5.3: an expired route is retracted, then flushed one expiry later.
        for prefix, by_neighbour in list(self._routes.items()):
            changed = False
            for neighbour, route in list(by_neighbour.items()):
                if route.refresh_at is not None and route.refresh_at <= now:
                    route.refresh_at = None
                    if self._selected.get(prefix) == neighbour:
                        request = RouteRequest(ae=ae_of(prefix), prefix=prefix)
                        self._queued_requests.setdefault(neighbour, []).append(request)
                if route.expires > now:
                    continue
                changed = True
                if route.refmetric < METRIC_INFINITY:
                    route.refmetric = METRIC_INFINITY
                    route.expires = now + self.params.route_expiry_s
                else:
                    self._drop_route(by_neighbour, neighbour)
            if not by_neighbour:
                del self._routes[prefix]
            if changed:
                self._reselect(prefix, now)

    def _collect_sources(self, now: float) -> None:
        # RFC 8966 3.2.4: sources unused for a while are forgotten; stored routes of that
        # source may be feasible again.
        # As babeld, a source that a stored route still refers to is kept: that route is
        # made feasible by a seqno request, not by forgetting.
        for key, source in list(self._sources.items()):
            prefix, router_id = key
            if source.last_used + self.params.source_gc_s > now or any(
                r.router_id == router_id for r in self._routes.get(prefix, {}).values()
            ):
                continue
            del self._sources[key]
        for prefix in list(self._advertised):
            if not (
                prefix in self._routes
                or prefix in self._own
                or prefix in self._resend
                or any(k[0] == prefix for k in self._sources)
                or any(prefix in queued for queued in self._queued.values())
            ):
                del self._advertised[prefix]

    # --- seqno requests ---------------------------------------------------------------

    def _request_seqno(
        self, prefix: IPNetwork, router_id: bytes, targets: tuple[NeighbourId, ...], now: float
    ) -> None:
        source = self._sources.get((prefix, router_id))
        if source is None:
            return  # nothing makes the routes unfeasible
        seqno = seqno_add(source.seqno, 1)
        request = self._requests.start(prefix, router_id, seqno, HOP_COUNT, targets, None, now)
        if request is not None:
            self._send_request(request, targets)

    def _send_request(self, request: SeqnoRequest, targets: tuple[NeighbourId, ...]) -> None:
        for neighbour in targets:
            if self._links.get(neighbour, METRIC_INFINITY) < METRIC_INFINITY:
                self._queued_requests.setdefault(neighbour, []).append(request)

    # --- sending ----------------------------------------------------------------------

    def _trigger(self, prefix: IPNetwork, *, urgent: bool) -> None:
        """RFC 8966 3.7.2: a triggered update to every neighbour; urgent ones again later."""
        for neighbour in self._links:
            self._queued.setdefault(neighbour, {}).setdefault(prefix, False)
        if urgent:
            self._resend[prefix] = self._now + self.params.triggered_resend_s

    def _queue_full_update(self, neighbour: NeighbourId) -> None:
        queued = self._queued.setdefault(neighbour, {})
        for prefix in [*self._own, *self._selected]:
            queued.setdefault(prefix, False)

    def _make_update(
        self, prefix: IPNetwork, neighbour: NeighbourId, forced: bool
    ) -> tuple[bytes, TLV] | None:
        """The Update to send ``neighbour`` for ``prefix`` now, updating the feasibility
        distance (RFC 8966 3.7.3) and what we advertised; None if there is nothing to say."""
        interval = round(self.params.update_interval_s * 100)
        if prefix in self._own:
            router_id, seqno, metric = self.router_id, self._seqno, 0
        elif prefix in self._selected:
            route = self._routes[prefix][self._selected[prefix]]
            if route.neighbour == neighbour and not forced:
                return None  # RFC 8966 3.7.4: split horizon
            router_id, seqno, metric = route.router_id, route.seqno, route.metric
        else:
            advertised = self._advertised.get(prefix)
            if advertised is None and not forced:
                return None  # never advertised: nothing to retract
            router_id, seqno, _ = advertised or (self.router_id, self._seqno, 0)
            self._advertised[prefix] = (router_id, seqno, METRIC_INFINITY)
            update = Update(
                ae=ae_of(prefix), prefix=prefix, interval=interval, seqno=seqno, metric=0xFFFF
            )
            return router_id, update
        if router_id != self.router_id:
            key = (prefix, router_id)
            source = self._sources.get(key)
            if source is None:
                self._sources[key] = Source(seqno, metric, self._now)
            else:
                source.advertised(seqno, metric, self._now)
        self._advertised[prefix] = (router_id, seqno, metric)
        update = Update(
            ae=ae_of(prefix),
            prefix=prefix,
            interval=interval,
            seqno=seqno,
            metric=metric,
            sub_tlvs=self._proof_to_send(prefix, router_id, seqno, neighbour, forced),
        )
        return router_id, update

    def _proof_to_send(
        self, prefix: IPNetwork, router_id: bytes, seqno: int, neighbour: NeighbourId, forced: bool
    ) -> tuple[OriginSignature, ...]:
        """The seqno's proof, unless this neighbour has had it already (a forced update,
        the answer to a request, carries it again)."""
        proof = self._proofs(prefix, router_id, seqno) if self._proofs is not None else None
        if proof is None:
            return ()
        sent = self._proof_sent.setdefault(neighbour, {})
        if not forced and sent.get(prefix) == proof:
            return ()
        sent[prefix] = proof
        return (proof,)

    # --- held updates and proofs ---------------------------------------------------------

    def _hold(self, neighbour: NeighbourId, prefix: IPNetwork, router_id: bytes) -> None:
        key = (neighbour, prefix)
        if key not in self._held:
            count, p = self._held_count.get(neighbour, 0), self.params
            if count >= p.max_held_per_neighbour or len(self._held) >= p.max_held:
                self._refused.append(RefusedUpdate(neighbour, prefix, router_id, "hold_full"))
                return
            self._held_count[neighbour] = count + 1
        self._held[key] = (router_id, self._now + self.params.hold_s)

    def _unhold(self, key: tuple[NeighbourId, IPNetwork]) -> None:
        del self._held[key]
        left = self._held_count[key[0]] - 1
        if left:
            self._held_count[key[0]] = left
        else:
            del self._held_count[key[0]]

    def _release_held(self, now: float, *, learned: bool) -> None:
        """Held updates whose origin is known now (``learned``: certificates came) are
        asked for again (a unicast Route Request: the answer is forced and carries its
        proof); expired ones are refused."""
        if self._origin is None:
            return
        for key, (router_id, until) in list(self._held.items()):
            if not learned and until > now:
                continue
            neighbour, prefix = key
            reason = self._origin(prefix, router_id)
            if reason == HELD and until > now:
                continue
            self._unhold(key)
            if reason is None:
                self._ask_route(neighbour, prefix)
            else:
                self._refused.append(RefusedUpdate(neighbour, prefix, router_id, reason))

    def _ask_route(self, neighbour: NeighbourId, prefix: IPNetwork) -> None:
        if neighbour in self._links:
            request = RouteRequest(ae=ae_of(prefix), prefix=prefix)
            self._queued_requests.setdefault(neighbour, []).append(request)

    def _ask_proof(self, neighbour: NeighbourId, prefix: IPNetwork, now: float) -> None:
        """An update without the proof its seqno needs: ask for the route again, at most
        once an update interval (a neighbour that never sends one is not asked forever)."""
        key = (neighbour, prefix)
        asked = self._proof_asked.get(key)
        if asked is not None and asked + self.params.update_interval_s > now:
            return
        self._proof_asked[key] = now
        self._ask_route(neighbour, prefix)

    def _forget_neighbour(self, neighbour: NeighbourId) -> None:
        """What the held updates and proofs remember of a neighbour whose link went down."""
        self._proof_sent.pop(neighbour, None)
        for key in [k for k in self._proof_asked if k[0] == neighbour]:
            del self._proof_asked[key]
        for key in [k for k in self._held if k[0] == neighbour]:
            self._unhold(key)

    def _expire_asked(self, now: float) -> None:
        interval = self.params.update_interval_s
        for key in [k for k, t in self._proof_asked.items() if t + interval <= now]:
            del self._proof_asked[key]

    # --- helpers ------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)

    def _check_link(self, neighbour: NeighbourId) -> None:
        if neighbour not in self._links:
            raise ValueError(f"no link to {neighbour!r}")

    @staticmethod
    def _clamp_cost(cost: int) -> int:
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            raise ValueError(f"cost must be an int >= 0, not {cost!r}")
        return min(max(cost, 1), METRIC_INFINITY)
