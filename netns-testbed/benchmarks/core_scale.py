"""core.*: the pure Babel core (meshd.core.routing.babel) at community scale, no namespaces.

Random geometric graphs of 100 and 1,000 nodes: points uniform in the unit square, a link
between two nodes closer than r with n * pi * r^2 = 8 (a mean degree of about 7 once the
square's edges are counted), the seed retried until the graph is connected. Every node is a
``BabelRouter`` with meshd's parameters (``update_interval_s`` 120, ``source_gc_s`` 960, as
``meshd.daemon.control.build_control`` makes them) announcing one IPv4 /32 and one IPv6
/128; every link costs 96 and comes up at t = 0. Every packet is encoded with
``encode_packet`` (the bytes meshd puts in a BabelPacket message) and arrives a fixed hop
delay later; each arrival is followed by a drain of the receiver (``ControlPlane`` flushes
20 ms after the first of a burst, FLUSH_DELAY_S: here every packet is its own burst).

Reported (none has a target):
- ``core.converge.seconds_N`` / ``rounds_N``: from all links up until every node has a route
  to both prefixes of every other node, in simulated seconds and in hop delays;
  ``core.converge.messages_N``: packets sent until then; ``core.converge.quiet_s_N``: the
  last packet of the cold start (the second sending of new sources comes 0.5 s in);
- ``core.steady.bytes_per_node_s_N``: Babel bytes (packet header and TLVs; no QUIC, UDP or
  IP overhead) a node sends per second, averaged over nodes and over a window of whole
  update intervals that starts half an interval in, when the cold start is long over;
  ``core.steady.bytes_per_dest_link_s_N``: the same divided by destinations (N - 1) and by
  the mean degree, to set beside babeld's ~2.1 B/s per destination per link;
- ``core.extrapolated.bytes_per_node_s_5000``: the model bytes/node/s = c x (N - 1) x degree
  (a periodic full update carries every destination over every link), c fitted by least
  squares through the origin on the measured sizes, at N = 5,000 with the degree of the
  largest graph measured;
- ``core.wall_s_N``: wall-clock seconds the simulation took; ``core.memory_mb_N``: memory
  the simulation processes had written when the steady-state window opened (the routers'
  tables, nothing in flight; every prefix is one shared object here, whereas meshd keeps
  the one each Update was decoded into).

What keeps 1,000 nodes affordable (each leaves the routers' inputs and outputs unchanged):
- the simulation runs in one process per core, each with a share of the nodes (a vertical
  strip of the square). With every hop taking the same delay D, nothing sent at or after t
  arrives before t + D, so the processes run windows [t, t + D) independently and swap the
  packets that cross between windows (conservative synchronous simulation). Equal-time
  arrivals are ordered by (sender, sender's sequence), so the results do not depend on the
  number of processes (the unit test checks this);
- packets between nodes of one process are encoded (for the byte count) and hand their TLVs
  over with ``with_parser_state``; packets between processes are decoded from their bytes
  (``decode_packet_detail``). The unit test also runs with every packet decoded and gets
  the same figures;
- each prefix is one object with its hash computed once (ipaddress hashes a network anew on
  every dict lookup: a quarter of the time), and cyclic garbage collection is off while the
  routers run (they make no cycles; collections walked gigabytes of route entries);
- ``next_deadline()`` walks the whole route table, so it is not asked after every packet: an
  input makes no deadline sooner than ``min(triggered_resend_s, request_resend_s)`` ahead,
  so the deadline is asked that long after the first input of a burst, never too late;
- at 1,000 nodes the steady-state window is one update interval instead of two, and the
  packets sent in it are counted but not delivered. In the steady state the only packets
  are the periodic full updates, sent at the same instant by every node (the periodic
  timers of links that came up together stay in step), and receiving them changes nothing
  that is sent: at 100 nodes one, two and three delivered intervals and one undelivered
  one give the same bytes per interval, and so did a delivered 1,000-node interval (406 s
  of wall time, and 4 GB more memory for the one burst in flight, instead of 308 s).
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import ipaddress
import math
import multiprocessing
import os
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.results import Result
from meshd.core.proto.babel import (
    DecodedTLV,
    RouteRequest,
    SeqnoRequest,
    Update,
    decode_packet_detail,
    encode_packet,
)
from meshd.core.routing.babel import BabelParams, BabelRouter, RouteAction, with_parser_state
from meshd.core.routing.babel_tables import IPNetwork

UPDATE_INTERVAL_S = 120.0  # meshd's routing.update_interval_s default
# As meshd.daemon.control.build_control makes them from the update interval.
PARAMS = BabelParams(
    update_interval_s=UPDATE_INTERVAL_S, source_gc_s=max(180.0, 8 * UPDATE_INTERVAL_S)
)
LINK_COST = 96
HOP_DELAY_S = 0.005
MEAN_DEGREE = 8.0  # n * pi * r^2; the square's edges bring the measured mean to about 7
EXTRAPOLATE_TO = 5000
IPV4_PREFIX = ipaddress.IPv4Network("10.77.0.0/16")  # meshd's default mesh prefixes
IPV6_PREFIX = ipaddress.IPv6Network("fd6d:6573:6864::/48")
ROUTE_SAMPLE = 20  # routers whose route tables are counted at the end


# --- the graph -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Graph:
    points: tuple[tuple[float, float], ...]
    links: tuple[tuple[int, int], ...]  # (a, b) with a < b
    radius: float
    seed: int  # the one that gave a connected graph

    @property
    def n(self) -> int:
        return len(self.points)

    @property
    def mean_degree(self) -> float:
        return 2 * len(self.links) / self.n

    def neighbours(self) -> list[list[int]]:
        adjacent: list[list[int]] = [[] for _ in range(self.n)]
        for a, b in self.links:
            adjacent[a].append(b)
            adjacent[b].append(a)
        return [sorted(a) for a in adjacent]


def _geometric_links(points: list[tuple[float, float]], radius: float) -> list[tuple[int, int]]:
    """Pairs closer than ``radius``, through a grid of radius-sized cells."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(points):
        cells.setdefault((int(x / radius), int(y / radius)), []).append(i)
    r2 = radius * radius
    links = []
    for (cx, cy), members in cells.items():
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in cells.get((cx + dx, cy + dy), ()):
                    xj, yj = points[j]
                    for i in members:
                        if i < j and (points[i][0] - xj) ** 2 + (points[i][1] - yj) ** 2 < r2:
                            links.append((i, j))
    return sorted(links)


def _connected(n: int, links: list[tuple[int, int]]) -> bool:
    adjacent: list[list[int]] = [[] for _ in range(n)]
    for a, b in links:
        adjacent[a].append(b)
        adjacent[b].append(a)
    seen, stack = {0}, [0]
    while stack:
        for j in adjacent[stack.pop()]:
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return len(seen) == n


def random_geometric_graph(
    n: int, mean_degree: float = MEAN_DEGREE, seed: int = 0, tries: int = 1000
) -> Graph:
    """A connected random geometric graph: n points uniform in the unit square, linked when
    closer than r with n * pi * r^2 = mean_degree; seeds seed, seed + 1, ... until one is
    connected."""
    if n < 2:
        raise ValueError("a graph needs at least 2 nodes")
    radius = math.sqrt(mean_degree / (math.pi * n))
    for attempt in range(seed, seed + tries):
        rng = random.Random(attempt)
        points = [(rng.random(), rng.random()) for _ in range(n)]
        links = _geometric_links(points, radius)
        if _connected(n, links):
            return Graph(tuple(points), tuple(links), radius, attempt)
    raise RuntimeError(f"no connected graph of {n} nodes in {tries} seeds from {seed}")


def strips(graph: Graph, parts: int) -> list[list[int]]:
    """The nodes cut into ``parts`` vertical strips of about equal work (the links)."""
    degree = [len(a) for a in graph.neighbours()]
    order = sorted(range(graph.n), key=lambda i: graph.points[i])
    out: list[list[int]] = [[] for _ in range(parts)]
    total, acc = sum(degree), 0
    for i in order:
        out[min(parts - 1, acc * parts // total)].append(i)
        acc += degree[i]
    return [sorted(p) for p in out if p]


# --- the nodes -----------------------------------------------------------------------------


class _IPv4Prefix(ipaddress.IPv4Network):
    """A network that hashes once (ipaddress computes the hash on every dict lookup)."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class _IPv6Prefix(ipaddress.IPv6Network):
    def __init__(self, address: str) -> None:
        super().__init__(address)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def node_name(i: int) -> str:
    return f"n{i}"


def node_prefixes(i: int) -> tuple[IPNetwork, IPNetwork]:
    """A /32 and a /128 as meshd announces them: an address in the mesh IPv4 prefix, and
    the ULA prefix followed by the leading bits of the node's key (here a hash)."""
    v4 = ipaddress.IPv4Address(int(IPV4_PREFIX.network_address) + i + 1)
    key = int.from_bytes(hashlib.sha256(f"node {i}".encode()).digest(), "big")
    host_bits = 128 - IPV6_PREFIX.prefixlen
    v6 = ipaddress.IPv6Address(int(IPV6_PREFIX.network_address) | (key >> (256 - host_bits)))
    return _IPv4Prefix(f"{v4}/32"), _IPv6Prefix(f"{v6}/128")


def router_id(i: int) -> bytes:
    return hashlib.sha256(f"router {i}".encode()).digest()[:8]


# --- one process's share of the nodes ------------------------------------------------------

# Events, in one heap ordered by time; at equal times packets come before timers, and
# packets in (sender, sender's sequence) order, whichever process the sender is in.
#   packet: (at, 0, src, seq, dst, data, tlvs or None: decode the bytes)
#   timer:  (at, 1, node, seq, kind)  kind "check": ask next_deadline(); "tick": tick()
Event = tuple[Any, ...]
CrossPacket = tuple[float, int, int, int, int, bytes]  # (at, 0, src, seq, dst, data)


@dataclass(frozen=True)
class SimSettings:
    window_start: float  # the steady-state window [start, end); the cold start before it
    window_end: float
    params: BabelParams = PARAMS
    hop_delay_s: float = HOP_DELAY_S
    decode_all: bool = False  # decode every packet, not only those between processes
    deliver_in_window: bool = True  # False: packets sent in the window are counted only


@dataclass
class PartStats:
    nodes: int
    full_since: float | None = None  # since when every member has every route
    removals: int = 0  # routes removed (none expected: links never fail)
    cold_sent: dict[float, list[int]] = field(default_factory=dict)  # t -> [packets, bytes]
    window_packets: int = 0
    window_bytes: int = 0
    window_send_times: set[float] = field(default_factory=set)  # instants anything was sent
    routes_sampled: list[int] = field(default_factory=list)  # table sizes of a few members
    memory_mb: float = 0.0  # written by the process by the time the window opens


class Partition:
    """Some of the nodes, with every link of theirs; packets to nodes elsewhere go out
    through ``run``'s return value."""

    def __init__(self, graph: Graph, members: Sequence[int], settings: SimSettings) -> None:
        self._memory_before = _private_mb()
        self._memory_taken = False
        self.settings = settings
        params = settings.params
        self.now = 0.0
        self.names = [node_name(i) for i in range(graph.n)]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.prefixes = [p for i in range(graph.n) for p in node_prefixes(i)]
        self.canonical: dict[IPNetwork, IPNetwork] = {p: p for p in self.prefixes}
        self.routers: dict[int, BabelRouter] = {}
        for i in members:
            router = BabelRouter(router_id(i), 0, self.now, params)
            for prefix in self.prefixes[2 * i : 2 * i + 2]:
                router.announce(prefix)
            self.routers[i] = router
        self.events: list[Event] = []
        self.outbox: list[CrossPacket] = []
        self.sent_seq = dict.fromkeys(members, 0)
        self.timer_seq = 0
        self.tick_at: dict[int, float | None] = dict.fromkeys(members)
        self.check_at: dict[int, float | None] = dict.fromkeys(members)
        # An input makes no deadline sooner than this (see the module docstring).
        self.check_after_s = min(params.triggered_resend_s, params.request_resend_s)
        self.installed = 0
        self.full_routes = len(self.routers) * 2 * (graph.n - 1)
        self.stats = PartStats(len(self.routers))
        neighbours = graph.neighbours()
        for i in members:
            for j in neighbours[i]:
                self.routers[i].link_up(self.names[j], LINK_COST, self.now)
        for i in members:
            self._pump(i)

    # --- driving ---

    def next_time(self) -> float:
        return self.events[0][0] if self.events else math.inf

    def run(self, before: float, incoming: list[CrossPacket]) -> tuple[list[CrossPacket], float]:
        """Deliver ``incoming``, run every event earlier than ``before``; return the packets
        for other processes and the time of the next event here."""
        for packet in incoming:
            heapq.heappush(self.events, (*packet, None))
        if not self._memory_taken and before > self.settings.window_start:
            self._run_events(self.settings.window_start)
            self.stats.memory_mb = _private_mb() - self._memory_before
            self._memory_taken = True
        self._run_events(before)
        outbox, self.outbox = self.outbox, []
        return outbox, self.next_time()

    def final_stats(self) -> PartStats:
        sample = sorted(self.routers)[:: max(1, len(self.routers) // ROUTE_SAMPLE)]
        self.stats.routes_sampled = [len(self.routers[i].routes()) for i in sample]
        return self.stats

    def _run_events(self, before: float) -> None:
        events = self.events
        while events and events[0][0] < before:
            event = heapq.heappop(events)
            self.now = at = event[0]
            if event[1] == 0:
                _, _, src, _, dst, data, tlvs = event
                if tlvs is None or self.settings.decode_all:
                    decoded = self._decode(data)
                else:
                    decoded = tuple(with_parser_state(tlvs))
                self.routers[dst].receive(self.names[src], decoded, at)
                self._pump(dst)
                continue
            _, _, i, _, kind = event
            if kind == "check":
                if self.check_at[i] == at:
                    self._check(i)
            elif self.tick_at[i] == at:
                self.tick_at[i] = None
                self.routers[i].tick(at)
                self._pump(i)
                self._check(i)
                if self.tick_at[i] == at:
                    raise RuntimeError(f"n{i}: next_deadline() is still {at} after a tick")

    # --- plumbing ---

    def _decode(self, data: bytes) -> tuple[DecodedTLV, ...]:
        """The packet's TLVs from its bytes, each prefix replaced by its one object."""
        out = []
        for d in decode_packet_detail(data).tlvs:
            tlv = d.tlv
            if isinstance(tlv, Update | RouteRequest | SeqnoRequest) and tlv.prefix is not None:
                d = replace(d, tlv=replace(tlv, prefix=self.canonical[tlv.prefix]))
            out.append(d)
        return tuple(out)

    def _push_timer(self, at: float, i: int, kind: str) -> None:
        self.timer_seq += 1
        heapq.heappush(self.events, (at, 1, i, self.timer_seq, kind))

    def _pump(self, i: int) -> None:
        """Send what router i has to send, apply its route changes, and make sure its
        deadline is asked for in time."""
        router, now, stats, settings = self.routers[i], self.now, self.stats, self.settings
        in_window = settings.window_start <= now < settings.window_end
        for neighbour, tlvs in router.drain_outgoing():
            data = encode_packet(tlvs)
            if now < settings.window_start:
                cold = stats.cold_sent.setdefault(now, [0, 0])
                cold[0] += 1
                cold[1] += len(data)
            elif in_window:
                stats.window_packets += 1
                stats.window_bytes += len(data)
                stats.window_send_times.add(now)
                if not settings.deliver_in_window:
                    continue
            j = self.index[neighbour]
            self.sent_seq[i] += 1
            at = now + settings.hop_delay_s
            if j in self.routers:
                heapq.heappush(self.events, (at, 0, i, self.sent_seq[i], j, data, tlvs))
            else:
                self.outbox.append((at, 0, i, self.sent_seq[i], j, data))
        changes = router.drain_route_changes()
        if changes:
            for change in changes:
                if change.action is RouteAction.INSTALL:
                    self.installed += 1
                elif change.action is RouteAction.REMOVE:
                    self.installed -= 1
                    stats.removals += 1
            if self.installed == self.full_routes:
                if stats.full_since is None:
                    stats.full_since = now
            else:
                stats.full_since = None
        check = self.check_at[i]
        if check is None:
            self.check_at[i] = now + self.check_after_s
            self._push_timer(now + self.check_after_s, i, "check")

    def _check(self, i: int) -> None:
        self.check_at[i] = None
        deadline = self.routers[i].next_deadline()
        if deadline is None:
            self.tick_at[i] = None
            return
        deadline = max(deadline, self.now)
        self.tick_at[i] = deadline
        self._push_timer(deadline, i, "tick")


def _private_mb() -> float:
    """Memory this process wrote since it was forked (pages shared with the parent are
    not counted until written)."""
    with open("/proc/self/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith("Private_"))
    return sum(int(v.split()[0]) for v in fields.values()) / 1024


# --- running the partitions ----------------------------------------------------------------


def _worker(conn: Connection, args: tuple[Any, ...]) -> None:
    gc.disable()
    try:
        part = Partition(*args)
        conn.send(("ok", part.next_time()))
        while True:
            command = conn.recv()
            if command[0] == "run":
                conn.send(("ok", part.run(command[1], command[2])))
            elif command[0] == "stats":
                conn.send(("ok", part.final_stats()))
                return
    except EOFError:
        return  # the parent gave up
    except Exception:  # reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))


class _Remote:
    """A Partition in a forked process of its own, behind a pipe."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, args), daemon=True)
        self.process.start()
        child.close()

    def send(self, *command: Any) -> None:
        self.conn.send(command)

    def receive(self) -> Any:
        status, payload = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"simulation worker failed:\n{payload}")
        return payload

    def close(self) -> None:
        self.conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _run_partitions(
    graph: Graph, groups: list[list[int]], settings: SimSettings
) -> list[PartStats]:
    owner = {i: k for k, group in enumerate(groups) for i in group}
    remotes: list[_Remote] = []
    try:
        remotes = [_Remote((graph, g, settings)) for g in groups]
        next_times = [r.receive() for r in remotes]
        pending: list[list[CrossPacket]] = [[] for _ in groups]
        while True:
            t = min(next_times + [p[0] for box in pending for p in box])
            if t >= settings.window_end:
                break
            # Nothing sent from t on arrives before t + D: the processes run apart until then.
            horizon = min(t + settings.hop_delay_s, settings.window_end)
            for k, remote in enumerate(remotes):
                remote.send("run", horizon, pending[k])
            pending = [[] for _ in groups]
            next_times = []
            for remote in remotes:
                outbox, next_time = remote.receive()
                next_times.append(next_time)
                for packet in outbox:
                    pending[owner[packet[4]]].append(packet)
        for remote in remotes:
            remote.send("stats")
        return [r.receive() for r in remotes]
    finally:
        for remote in remotes:
            remote.close()


# --- one simulation ------------------------------------------------------------------------


@dataclass
class ScaleRun:
    """What one simulation measured."""

    nodes: int
    links: int
    mean_degree: float
    graph_seed: int
    workers: int
    hop_delay_s: float
    delivered_in_window: bool
    converged_s: float  # simulated, from links up to full routes
    converge_packets: int  # sent up to and including that instant
    converge_bytes: int
    quiet_s: float  # the last packet before the steady-state window
    window_s: float
    steady_packets: int  # sent by all nodes in the window
    steady_bytes: int
    routes_per_node: float  # route table entries (over all neighbours), a sample's mean
    memory_mb: float
    wall_s: float
    window_send_times: list[float] = field(default_factory=list)

    @property
    def converge_rounds(self) -> float:
        return self.converged_s / self.hop_delay_s

    @property
    def bytes_per_node_s(self) -> float:
        return self.steady_bytes / self.nodes / self.window_s

    @property
    def bytes_per_dest_link_s(self) -> float:
        return self.bytes_per_node_s / (self.nodes - 1) / self.mean_degree


def simulate(
    graph: Graph,
    *,
    steady_intervals: int = 2,
    workers: int = 1,
    deliver_in_window: bool = True,
    decode_all: bool = False,
    params: BabelParams = PARAMS,
    hop_delay_s: float = HOP_DELAY_S,
) -> ScaleRun:
    """Cold start on ``graph``, then ``steady_intervals`` update intervals of steady state
    (a window starting half an interval in: it holds that many periodic full updates), in
    ``workers`` processes."""
    started = time.perf_counter()
    interval = params.update_interval_s
    start = interval / 2
    settings = SimSettings(
        start,
        start + steady_intervals * interval,
        params,
        hop_delay_s,
        decode_all,
        deliver_in_window,
    )
    groups = strips(graph, max(1, min(workers, graph.n)))
    parts = _run_partitions(graph, groups, settings)
    wall = time.perf_counter() - started

    fulls = [p.full_since for p in parts]
    if any(f is None for f in fulls) or any(p.removals for p in parts):
        raise RuntimeError(f"{graph.n} nodes: not every route is there at the end")
    converged = max(f for f in fulls if f is not None)
    if converged >= start:
        raise RuntimeError(f"{graph.n} nodes: no full routes before {start:g} s")
    cold = [(t, c) for p in parts for t, c in p.cold_sent.items()]
    send_times = sorted(set().union(*(p.window_send_times for p in parts)))
    if any(abs(t / interval - round(t / interval)) > 1e-9 for t in send_times):
        # Only the periodic full updates, sent on the update interval, belong here.
        raise RuntimeError(f"{graph.n} nodes: the window holds more than periodic updates")
    routes = [r for p in parts for r in p.routes_sampled]
    return ScaleRun(
        nodes=graph.n,
        links=len(graph.links),
        mean_degree=graph.mean_degree,
        graph_seed=graph.seed,
        workers=len(groups),
        hop_delay_s=hop_delay_s,
        delivered_in_window=deliver_in_window,
        converged_s=converged,
        converge_packets=sum(c[0] for t, c in cold if t <= converged),
        converge_bytes=sum(c[1] for t, c in cold if t <= converged),
        quiet_s=max(t for t, _ in cold),
        window_s=settings.window_end - start,
        steady_packets=sum(p.window_packets for p in parts),
        steady_bytes=sum(p.window_bytes for p in parts),
        routes_per_node=sum(routes) / len(routes),
        memory_mb=sum(p.memory_mb for p in parts),
        wall_s=wall,
        window_send_times=send_times,
    )


# --- the figures ---------------------------------------------------------------------------


def fit_per_dest_link(runs: list[ScaleRun]) -> float:
    """c in bytes/node/s = c x (N - 1) x degree, least squares through the origin."""
    xs = [(r.nodes - 1) * r.mean_degree for r in runs]
    ys = [r.bytes_per_node_s for r in runs]
    return sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)


def extrapolate(runs: list[ScaleRun], nodes: int) -> float:
    """Bytes per node per second at ``nodes``, with the mean degree of the largest run."""
    degree = max(runs, key=lambda r: r.nodes).mean_degree
    return fit_per_dest_link(runs) * (nodes - 1) * degree


def results_of(runs: list[ScaleRun]) -> list[Result]:
    out: list[Result] = []
    for r in runs:
        n = r.nodes
        out += [
            Result(f"core.converge.seconds_{n}", round(r.converged_s, 3), "s"),
            Result(f"core.converge.rounds_{n}", round(r.converge_rounds, 1), "hops"),
            Result(f"core.converge.messages_{n}", r.converge_packets, "packets"),
            Result(f"core.converge.quiet_s_{n}", round(r.quiet_s, 3), "s"),
            Result(f"core.steady.bytes_per_node_s_{n}", round(r.bytes_per_node_s, 1), "B/s"),
            Result(
                f"core.steady.bytes_per_dest_link_s_{n}", round(r.bytes_per_dest_link_s, 3), "B/s"
            ),
            Result(f"core.graph.mean_degree_{n}", round(r.mean_degree, 2), "links"),
            Result(f"core.memory_mb_{n}", round(r.memory_mb), "MB"),
            Result(f"core.wall_s_{n}", round(r.wall_s, 1), "s"),
        ]
    out.append(
        Result(
            f"core.extrapolated.bytes_per_node_s_{EXTRAPOLATE_TO}",
            round(extrapolate(runs, EXTRAPOLATE_TO), 1),
            "B/s",
        )
    )
    return out


def core_scale(quick: bool) -> list[Result]:
    workers = os.cpu_count() or 1
    runs = [simulate(random_geometric_graph(100), steady_intervals=2, workers=workers)]
    if not quick:
        graph = random_geometric_graph(1000)
        runs.append(simulate(graph, steady_intervals=1, workers=workers, deliver_in_window=False))
    return results_of(runs)
