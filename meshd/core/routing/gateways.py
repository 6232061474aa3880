"""Which gateway to leave the mesh by (pure: adverts, metrics and ``now`` in; a choice and
its reasons out).

Every sharing node floods a signed GatewayAdvert (meshd.core.proto.gateway). A node without a
working uplink of its own keeps the newest advert of each gateway (``offer`` says whether
one was new, which is when to pass it on) and picks, among the gateways it can use, the
one with the lowest Babel metric to the gateway's mesh address:

- usable: advert not expired, AVAILABLE (its uplink is healthy), a route to it, and either
  ACCEPTS_NEW or it is the gateway we use already (a full gateway keeps its users);
- hysteresis: the current gateway is kept while usable unless another one is better by
  more than ``switch_margin`` (a jittery RTT must not move a household's connections);
- ties go to the smaller node id, so that every node decides the same way.

Each candidate carries the reason it was or was not chosen, in words for `meshd status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshd.core.proto.babel import METRIC_INFINITY
from meshd.core.proto.gateway import GatewayAdvert

SWITCH_MARGIN = 96  # one hop's worth of metric


@dataclass(frozen=True)
class Candidate:
    node_id: str
    metric: int | None  # None: no route to the gateway
    usable: bool
    reason: str


@dataclass(frozen=True)
class Choice:
    selected: str | None
    candidates: tuple[Candidate, ...]
    changed: bool  # the selection differs from the previous one


@dataclass
class GatewayTable:
    switch_margin: int = SWITCH_MARGIN
    adverts: dict[str, GatewayAdvert] = field(default_factory=dict)
    selected: str | None = None

    def offer(self, advert: GatewayAdvert, now_wall: float) -> bool:
        """Keep ``advert`` if it is newer than what we hold for its gateway and not expired;
        True when kept (pass it on to the other neighbours then)."""
        if advert.expires_at <= now_wall:
            return False
        held = self.adverts.get(advert.node_id)
        if held is not None and advert.seqno <= held.seqno:
            return False
        self.adverts[advert.node_id] = advert
        return True

    def expire(self, now_wall: float) -> list[str]:
        """Forget adverts past their lifetime; the gateways forgotten."""
        gone = [g for g, a in self.adverts.items() if a.expires_at <= now_wall]
        for g in gone:
            del self.adverts[g]
        return gone

    def choose(
        self, metrics: dict[str, int], now_wall: float, refused: dict[str, str] | None = None
    ) -> Choice:
        """Pick a gateway given the Babel metric to each gateway's mesh address (by
        gateway node id; missing or infinite: unreachable), leaving out those that
        ``refused`` us lately (gateway -> their reason)."""
        refused = refused or {}
        self.expire(now_wall)
        candidates = []
        for node_id, advert in sorted(self.adverts.items()):
            metric = metrics.get(node_id)
            if metric is not None and metric >= METRIC_INFINITY:
                metric = None
            reason = ""
            if not advert.available:
                reason = "withdrawn: its uplink is down"
            elif node_id in refused:
                reason = f"refused us: {refused[node_id]}"
            elif metric is None:
                reason = "no route to it"
            elif not advert.accepts_new and node_id != self.selected:
                reason = "not taking new users"
            candidates.append(Candidate(node_id, metric, not reason, reason))
        usable = [c for c in candidates if c.usable]
        best = min(usable, key=lambda c: (c.metric, c.node_id), default=None)
        current = next((c for c in usable if c.node_id == self.selected), None)
        choice = best
        if current is not None and best is not None and current is not best:
            assert current.metric is not None and best.metric is not None
            if current.metric - best.metric <= self.switch_margin:
                choice = current  # not enough better to move everyone's connections
        previous, self.selected = self.selected, choice.node_id if choice else None
        explained = tuple(_explain(c, choice, best, self.switch_margin) for c in candidates)
        return Choice(self.selected, explained, self.selected != previous)


def _explain(
    c: Candidate, choice: Candidate | None, best: Candidate | None, margin: int
) -> Candidate:
    if not c.usable:
        return c
    assert choice is not None and c.metric is not None and choice.metric is not None
    if c is choice:
        why = f"selected: the lowest metric, {c.metric}"
        if best is not None and best is not c:
            why = (
                f"selected: kept at metric {c.metric}; {best.node_id[:8]} at {best.metric} "
                f"is not better by more than {margin}"
            )
        return Candidate(c.node_id, c.metric, True, why)
    if c.metric == choice.metric:
        return Candidate(c.node_id, c.metric, True, "same metric: the smaller node id is chosen")
    return Candidate(c.node_id, c.metric, True, f"metric {c.metric}, not {choice.metric}")
