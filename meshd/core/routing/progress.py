"""Which next hop loses a destination's traffic: passive black-hole detection (pure).

A member on the path can understate its metric to attract traffic, then drop it. Origin
signatures cannot stop that (every hop changes the metric), and probes would not find it:
WireGuard protects one hop only, so a relay sees forwarded packets in the clear and could
pass anything that looks like a probe while dropping the rest. So meshd watches the user
traffic itself, as the kernel's connection tracking counts it (meshd.adapters.net.conntrack): a
flow to a mesh address that keeps sending without an answer is not making progress. When
no flow to that destination has made progress for ``stall_s`` while one sent at least
``min_packets`` meanwhile, the next hop the node routes that destination through is
suspected; the caller then keeps the Babel routes through it for that destination out of
selection for a penalty (``BabelRouter.penalize``; only when another route is there), and
the penalty doubles each time the same next hop is suspected again, up to
``max_penalty_s``. The destination's flows then get ``settle_s`` on the next route before
another suspicion (TCP's backed-off retransmissions take a while to resume).

What counts as an answer: reply packets of the same flow, TCP only. TCP always answers (an
ACK, a reset); a TCP flow never answered for ``stall_s`` counts whatever it sent (the
kernel does not count a retransmitted SYN: a connection that cannot open shows one
packet). UDP is not watched: many UDP flows are never answered (a closed port answers by
ICMP, another flow), and a WireGuard exit tunnel's keepalives are not answered by design
(counting them suspected every next hop to a gateway within 15 s in a 50-node testbed).
Only the node's own and its household's flows are read: a flow it relays may be answered
by another path.

    watch = ProgressWatch()
    for s in watch.observe(flows, next_hops, now): router.penalize(s.destination, ...)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TCP = 6


@dataclass(frozen=True, kw_only=True)
class ProgressParams:
    stall_s: float = 2.0  # no answer to a destination for this long...
    min_packets: int = 3  # ...while one of its flows sent at least this many: suspected
    penalty_s: float = 60.0  # the first penalty; doubled at each repeat
    max_penalty_s: float = 3600.0
    forget_s: float = 3600.0  # a next hop not suspected for this long starts over
    # After a suspicion, the destination's flows get this long on the next route before
    # another is suspected (TCP's backed-off retransmissions take a while to resume).
    settle_s: float = 10.0

    def __post_init__(self) -> None:
        if self.stall_s <= 0 or self.penalty_s <= 0 or self.max_penalty_s < self.penalty_s:
            raise ValueError("expected stall_s > 0 and 0 < penalty_s <= max_penalty_s")
        if self.min_packets < 1:
            raise ValueError("min_packets must be >= 1")


@dataclass(frozen=True)
class FlowSample:
    """One tracked flow as the kernel counts it: packets sent (the original direction)
    and answered (the reply direction), since the flow began."""

    flow_id: int
    protocol: int
    destination: IPAddress
    sent: int
    answered: int


@dataclass(frozen=True)
class Suspicion:
    destination: IPNetwork  # the host route
    next_hop: str
    since: float  # when the destination stopped answering
    unanswered: int  # packets sent since then
    penalty_s: float


@dataclass
class _Flow:
    destination: IPNetwork
    sent: int
    answered: int
    stalled_since: float | None = None
    sent_at_stall: int = 0
    opening: bool = False  # TCP, never answered: its SYNs are not all counted


@dataclass
class _Strikes:
    count: int = 0
    last: float = 0.0


@dataclass
class ProgressWatch:
    params: ProgressParams = field(default_factory=ProgressParams)
    _flows: dict[int, _Flow] = field(default_factory=dict)
    _answered: dict[IPNetwork, float] = field(default_factory=dict)  # last progress seen
    _strikes: dict[tuple[IPNetwork, str], _Strikes] = field(default_factory=dict)
    _settling: dict[IPNetwork, float] = field(default_factory=dict)  # until when

    def observe(
        self, flows: Iterable[FlowSample], next_hops: Mapping[IPNetwork, str], now: float
    ) -> list[Suspicion]:
        """One reading of the flows; ``next_hops``: the neighbour each mesh destination is
        routed through now. Returns the new suspicions (each at most once a stall)."""
        seen: dict[int, _Flow] = {}
        for sample in flows:
            if sample.protocol != TCP:
                continue  # (and an answered ping is no progress: a relay may pass probes)
            destination = ipaddress.ip_network(sample.destination)
            flow = self._flows.get(sample.flow_id)
            if flow is None or flow.destination != destination:
                # First seen: what it sent and had answered before is no news now, but a
                # TCP flow never answered is stalled from here.
                flow = _Flow(destination, sample.sent, sample.answered)
                if not sample.answered:
                    flow.opening, flow.stalled_since = True, now
            else:
                self._advance(flow, sample, now)
            seen[sample.flow_id] = flow
        self._flows = seen
        suspicions: list[Suspicion] = []
        stalled: dict[IPNetwork, tuple[float, int]] = {}
        for flow in self._flows.values():
            if flow.stalled_since is None:
                continue
            unanswered = flow.sent - flow.sent_at_stall
            if now - flow.stalled_since < self.params.stall_s:
                continue
            if unanswered < self.params.min_packets and not flow.opening:
                continue
            if self._answered.get(flow.destination, -1.0) > flow.stalled_since:
                continue  # another flow to it made progress since
            since, most = stalled.get(flow.destination, (flow.stalled_since, 0))
            stalled[flow.destination] = (min(since, flow.stalled_since), max(most, unanswered))
        for destination, (since, unanswered) in stalled.items():
            hop = next_hops.get(destination)
            if hop is None or self._settling.get(destination, -1.0) > now:
                continue
            self._settling[destination] = now + self.params.settle_s
            penalty = self._strike(destination, hop, now)
            suspicions.append(Suspicion(destination, hop, since, unanswered, penalty))
            for flow in self._flows.values():  # a fresh start through the next route
                if flow.destination == destination:
                    flow.stalled_since = None
        forget = self.params.forget_s
        for destination in [d for d, t in self._answered.items() if now - t > forget]:
            del self._answered[destination]
        for destination in [d for d, t in self._settling.items() if t <= now]:
            del self._settling[destination]
        return suspicions

    def _advance(self, flow: _Flow, sample: FlowSample, now: float) -> None:
        if sample.answered > flow.answered:
            flow.stalled_since, flow.opening = None, False
            self._answered[flow.destination] = now
        elif sample.sent > flow.sent and flow.stalled_since is None:
            flow.stalled_since, flow.sent_at_stall = now, flow.sent
        flow.sent, flow.answered = sample.sent, sample.answered

    def _strike(self, destination: IPNetwork, hop: str, now: float) -> float:
        p = self.params
        strikes = self._strikes.setdefault((destination, hop), _Strikes())
        if now - strikes.last > p.forget_s:
            strikes.count = 0
        strikes.count += 1
        strikes.last = now
        for key in [k for k, s in self._strikes.items() if now - s.last > p.forget_s]:
            del self._strikes[key]
        return float(min(p.penalty_s * 2 ** (strikes.count - 1), p.max_penalty_s))
