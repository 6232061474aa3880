"""Settings, table entries and snapshots of the Babel routing core (RFC 8966 3.2).

The router itself is ``meshd.core.routing.babel.BabelRouter``; this module holds its plain data:
the parameters (every timer is one), the source table with feasibility distances, the route
table entries, the pending seqno requests, and the frozen snapshots and route changes it
hands out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from meshd.core.proto.babel import METRIC_INFINITY, OriginSignature, seqno_less

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NeighbourId = str  # the caller's name for a neighbour link (meshd: the neighbour's node id)

HOP_COUNT: Final = 127  # RFC 8966 3.8.2.1: hop count of the seqno requests we originate


@dataclass(frozen=True, kw_only=True)
class BabelParams:
    """Timers and thresholds. babeld's values are in the comments; meshd's defaults are
    faster because link failure is detected by liveness, not by missed hellos, and
    triggered updates do the converging: periodic updates only repair lost datagrams."""

    update_interval_s: float = 16.0  # babeld: 16 s; the Interval field of our Updates
    route_expiry_factor: float = 3.5  # RFC 8966 3.5.3 / babeld: expiry = 3.5 x interval
    triggered_resend_s: float = 0.5  # urgent updates (retractions, new source) sent twice
    request_resend_s: float = 1.0  # babeld 2 s; doubles at each resend
    request_resends: int = 3  # babeld: 3 resends
    source_gc_s: float = 180.0  # babeld: 3 min
    switch_margin: int = 32  # hysteresis: a new route must be better by more than this
    # Triggered updates for a metric change of the same source (babeld's values): a worse
    # metric by at least this much, a better one by at least improvement_threshold.
    metric_change_threshold: int = 384
    improvement_threshold: int = 1024
    max_tlvs_per_packet: int = 24  # ~40 octets per Update: about 1,000 octets per packet
    request_on_link_up: bool = True  # wildcard Route Request to a new neighbour
    # Route entries kept from one neighbour and in all: a neighbour beyond its share is
    # refused further routes (``route_limit``) and the node goes on routing for the rest.
    max_routes_per_neighbour: int = 10_000
    max_routes: int = 40_000
    # Updates whose origin no known certificate names yet (HELD), noted for hold_s and
    # asked for again once one does; beyond these counts they are refused (hold_full).
    max_held_per_neighbour: int = 1_000
    max_held: int = 4_000
    hold_s: float = 60.0

    def __post_init__(self) -> None:
        if self.update_interval_s <= 0 or self.update_interval_s * 100 > 0xFFFF:
            raise ValueError("update_interval_s must be in (0, 655.35]")
        if self.route_expiry_factor <= 1:
            raise ValueError("route_expiry_factor must be > 1")
        if self.triggered_resend_s <= 0 or self.request_resend_s <= 0:
            raise ValueError("resend delays must be > 0")
        if self.request_resends < 0:
            raise ValueError("request_resends must be >= 0")
        # A source must outlive every copy of our last advertisement of it: the neighbours
        # keep it for route_expiry_factor intervals (and as much again while retracted).
        if self.source_gc_s <= 2 * self.route_expiry_factor * self.update_interval_s:
            raise ValueError("source_gc_s must exceed twice the route expiry")
        if not 0 <= self.switch_margin < METRIC_INFINITY:
            raise ValueError("switch_margin must be in 0..65534")
        if not 0 <= self.metric_change_threshold < METRIC_INFINITY:
            raise ValueError("metric_change_threshold must be in 0..65534")
        if not 0 <= self.improvement_threshold < METRIC_INFINITY:
            raise ValueError("improvement_threshold must be in 0..65534")
        if self.max_tlvs_per_packet < 2:
            raise ValueError("max_tlvs_per_packet must be >= 2 (Router-Id + Update)")
        if not 1 <= self.max_routes_per_neighbour <= self.max_routes:
            raise ValueError("expected 1 <= max_routes_per_neighbour <= max_routes")
        if not 0 <= self.max_held_per_neighbour <= self.max_held:
            raise ValueError("expected 0 <= max_held_per_neighbour <= max_held")
        if self.hold_s <= 0:
            raise ValueError("hold_s must be > 0")

    @property
    def route_expiry_s(self) -> float:
        return self.route_expiry_factor * self.update_interval_s


def add_metric(refmetric: int, cost: int) -> int:
    """RFC 8966 3.5.2: additive metric, anything reaching 0xFFFF is infinite."""
    if refmetric >= METRIC_INFINITY or cost >= METRIC_INFINITY:
        return METRIC_INFINITY
    return min(refmetric + cost, METRIC_INFINITY)


@dataclass
class Source:
    """RFC 8966 3.2.4: a source (prefix, router-id) and its feasibility distance."""

    seqno: int
    metric: int
    last_used: float

    def is_feasible(self, seqno: int, metric: int) -> bool:
        """RFC 8966 3.5.1: feasible if the seqno is newer, or equal with a strictly
        smaller metric. (Retractions are always feasible: checked by the caller.)"""
        return seqno_less(self.seqno, seqno) or (seqno == self.seqno and metric < self.metric)

    def advertised(self, seqno: int, metric: int, now: float) -> None:
        """RFC 8966 3.7.3: sending (seqno, metric) lowers the feasibility distance."""
        if seqno_less(self.seqno, seqno):
            self.seqno, self.metric = seqno, metric
        elif seqno == self.seqno and metric < self.metric:
            self.metric = metric
        self.last_used = now


@dataclass
class Route:
    """RFC 8966 3.2.6: one route entry, indexed by (prefix, neighbour)."""

    prefix: IPNetwork
    neighbour: NeighbourId
    router_id: bytes
    seqno: int
    refmetric: int  # the metric the neighbour advertised; 0xFFFF: retracted
    cost: int  # of the link to the neighbour, copied here when it changes
    expires: float
    refresh_at: float | None = None  # ask the neighbour again if not refreshed by then

    @property
    def metric(self) -> int:
        return add_metric(self.refmetric, self.cost)


@dataclass
class PendingRequest:
    """RFC 8966 3.8.2.3: a seqno request we sent or forwarded, for duplicate suppression
    and resending until it is satisfied by an Update with a seqno at least this one."""

    seqno: int
    hop_count: int
    targets: tuple[NeighbourId, ...]
    origin: NeighbourId | None  # who asked us (forwarded), None if we asked
    resends_left: int
    resend_delay: float
    next_resend: float


class RouteAction(StrEnum):
    INSTALL = "install"
    REPLACE = "replace"  # the next hop changed
    REMOVE = "remove"


@dataclass(frozen=True)
class RouteChange:
    """For the kernel adapter. ``next_hop``/``metric`` of a removal are the old ones.
    A change of metric alone is not a RouteChange (see ``selected()``)."""

    prefix: IPNetwork
    action: RouteAction
    next_hop: NeighbourId
    metric: int


@dataclass(frozen=True)
class RouteInfo:
    """A route table entry, for ``meshd status``."""

    prefix: IPNetwork
    neighbour: NeighbourId
    router_id: bytes
    seqno: int
    refmetric: int
    metric: int
    feasible: bool
    selected: bool
    expires: float


# (prefix, router-id) -> None when the update may carry them, else the refusal's reason code
# (meshd.core.routing.origin.OriginPolicy.refusal). HELD is not a refusal: see BabelParams.
OriginCheck = Callable[[IPNetwork, bytes], str | None]
HELD: Final = "unknown_origin"
# (neighbour, prefix, router-id, seqno, the Update's OriginSignature) -> None when the update
# may carry that seqno, else why not (meshd.core.routing.origin.OriginPolicy.seqno_refusal).
SeqnoCheck = Callable[[NeighbourId, IPNetwork, bytes, int, OriginSignature | None], str | None]
UNSIGNED: Final = "unsigned"  # the neighbour is asked for the route again, with its proof
# (prefix, router-id, seqno) -> the OriginSignature to send with an Update of it, if any.
ProofSource = Callable[[IPNetwork, bytes, int], OriginSignature | None]


@dataclass(frozen=True)
class RefusedUpdate:
    """An update the origin check refused: nothing of it was stored."""

    neighbour: NeighbourId
    prefix: IPNetwork
    router_id: bytes
    reason: str


@dataclass(frozen=True)
class SelectedRoute:
    """The route in use for a prefix; ``next_hop`` None: one of our own prefixes."""

    prefix: IPNetwork
    next_hop: NeighbourId | None
    router_id: bytes
    seqno: int
    metric: int
