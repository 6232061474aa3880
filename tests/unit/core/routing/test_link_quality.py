"""LinkQuality: two instances wired together in memory through the real Babel codec, with
simulated delay, loss and unrelated clocks (one of them wrapping the 32-bit microsecond
timestamps during the run)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshd.core.proto.babel import (
    AE_WILDCARD,
    IHU,
    METRIC_INFINITY,
    Hello,
    HelloTimestamp,
    IHUTimestamp,
    PadN,
    Update,
    decode_packet,
    decode_packet_detail,
    encode_packet,
)
from meshd.core.routing.link_quality import (
    COST_CAP,
    LinkQuality,
    LinkQualityParams,
    etx_cost,
    rtt_penalty,
    timestamp_us,
)

WRAPS_SOON = 4294.9  # 2^32 us is 4294.967296 s: this clock's timestamps wrap at once


@dataclass
class Node:
    quality: LinkQuality
    offset: float  # this node's monotonic clock = simulated time + offset
    changes: list[tuple[float, int]] = field(default_factory=list)  # (time, reported cost)
    samples: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Link:
    """Two nodes, one packet queue; ``delay(i)`` and ``lost(i)`` decide the fate of a
    packet sent by node i (0 = a, 1 = b)."""

    def __init__(
        self,
        params: LinkQualityParams | None = None,
        *,
        delay: Callable[[int], float] = lambda i: 0.0005,
        lost: Callable[[int], bool] = lambda i: False,
        offsets: tuple[float, float] = (0.0, WRAPS_SOON),
        seqnos: tuple[int, int] = (0, 0xFFF0),
    ) -> None:
        self.nodes = [
            Node(LinkQuality(params, now=offset, initial_seqno=seqno), offset)
            for offset, seqno in zip(offsets, seqnos, strict=True)
        ]
        self.delay, self.lost = delay, lost
        self.time = 0.0
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.counter = 0
        self.sizes: set[int] = set()

    @property
    def a(self) -> LinkQuality:
        return self.nodes[0].quality

    @property
    def b(self) -> LinkQuality:
        return self.nodes[1].quality

    def run(self, seconds: float, each: Callable[[Link], None] | None = None) -> None:
        end = self.time + seconds
        while True:
            sends = [n.quality.next_send_at - n.offset for n in self.nodes]
            sender = min(range(2), key=lambda i: sends[i])
            at_send = sends[sender]
            at_delivery = self.queue[0][0] if self.queue else float("inf")
            self.time = max(self.time, min(at_send, at_delivery))
            if self.time > end:
                self.time = end
                return
            if at_delivery <= at_send:
                _, _, receiver, data = heapq.heappop(self.queue)
                node = self.nodes[receiver]
                result = node.quality.receive(decode_packet(data), self.time + node.offset)
                if result.rtt_sample_ms is not None:
                    node.samples.append(result.rtt_sample_ms)
                node.notes.extend(result.notes)
                if result.cost_changed:
                    node.changes.append((self.time, node.quality.reported_cost))
            else:
                node = self.nodes[sender]
                now = self.time + node.offset
                data = encode_packet(node.quality.build(now))
                self.sizes.add(len(data))
                if node.quality.check(now):
                    node.changes.append((self.time, node.quality.reported_cost))
                if not self.lost(sender):
                    self.counter += 1
                    heapq.heappush(
                        self.queue, (self.time + self.delay(sender), self.counter, 1 - sender, data)
                    )
            if each is not None:
                each(self)


def check_invariants(link: Link) -> None:
    for node in link.nodes:
        q = node.quality
        assert 96 <= q.cost() <= COST_CAP
        assert 96 <= q.reported_cost <= COST_CAP
        assert q.loss is None or 0.0 <= q.loss <= 1.0
        assert q.rtt_ms is None or q.rtt_ms >= 0
        assert 1 <= q.rxcost <= METRIC_INFINITY


# --- the probe packet --------------------------------------------------------------------


def test_first_probe_is_a_timestamped_unicast_hello_then_ihus_echo_the_peer() -> None:
    a = LinkQuality(now=10.0, initial_seqno=7)
    assert a.next_send_at == 10.0  # the first probe goes at once
    (hello,) = a.build(10.0)
    assert isinstance(hello, Hello) and hello.unicast
    assert (hello.seqno, hello.interval) == (8, 800)
    assert hello.timestamp == timestamp_us(10.0) == 10_000_000
    assert a.next_send_at == 18.0

    b = LinkQuality(now=50.0)
    b.next_send_at = 58.0  # as if b's first probe went out already
    assert b.receive([hello], 50.25).notes == ()
    assert b.next_send_at == 50.25  # a new peer gets its IHU at once
    hello_b, ihu = b.build(50.25)
    assert isinstance(hello_b, Hello) and isinstance(ihu, IHU)
    assert (ihu.ae, ihu.address, ihu.interval) == (AE_WILDCARD, None, 800)
    assert ihu.rxcost == 96  # heard 1 of 1; too few for a loss figure: the base
    assert ihu.timestamp == IHUTimestamp(origin=10_000_000, receive=timestamp_us(50.25))
    data = encode_packet([hello_b, ihu])
    assert len(data) == 36

    result = a.receive(decode_packet_detail(data).tlvs, 10.5)  # DecodedTLVs work too
    # 0.5 s since a's Hello left, of which b held it 0 s: the RTT is all wire.
    assert result.rtt_sample_ms == pytest.approx(500, abs=0.01)
    assert a.rtt_ms == pytest.approx(1000, abs=0.02)  # babeld: the first sample counts double
    assert a.txcost == 96


def test_timestamps_wrap_modulo_2_32() -> None:
    assert timestamp_us(4294.967296) == 0
    assert timestamp_us(4294.967297) == 1


# --- RTT ---------------------------------------------------------------------------------


def test_40ms_one_way_delay_gives_80ms_rtt_and_its_penalty() -> None:
    link = Link(delay=lambda i: 0.040)
    link.run(400)  # ~50 probes each way
    penalty = int(96 * (80 - 10) / (120 - 10))  # RFC 9616 4, linear from 10 to 120 ms
    assert penalty == 61
    for node in link.nodes:
        q = node.quality
        assert q.rtt_ms == pytest.approx(80, abs=0.5)
        assert all(s == pytest.approx(80, abs=0.01) for s in node.samples)
        assert q.loss == 0.0 and q.rxcost == 96 and q.txcost == 96
        assert q.cost() == 96 + penalty
        assert abs(q.reported_cost - q.cost()) < 16
    assert link.sizes == {18, 36}  # the very first probe has no IHU yet


def test_rtt_penalty_shape() -> None:
    params = LinkQualityParams()
    assert [rtt_penalty(ms, params) for ms in (None, 0, 10, 65, 120, 5000)] == [
        0,
        0,
        0,
        48,
        96,
        96,
    ]


def test_rtt_is_measured_whatever_the_peer_waits_before_echoing() -> None:
    # b sends 3 s after a, so every echo waited ~3 s at b; the RTT must not include it.
    link = Link(delay=lambda i: 0.005, offsets=(0.0, 1234.5))
    link.nodes[1].quality.next_send_at = 1234.5 + 3.0
    link.run(200)
    assert link.a.rtt_ms == pytest.approx(10, abs=0.2)
    assert link.b.rtt_ms == pytest.approx(10, abs=0.2)
    assert link.a.cost() == link.b.cost() == 96  # 10 ms: no penalty yet


def test_absurd_negative_and_foreign_rtt_samples_are_ignored() -> None:
    a = LinkQuality(now=0.0)
    (hello_a,) = a.build(0.0)
    assert isinstance(hello_a, Hello) and hello_a.timestamp is not None
    stamp = hello_a.timestamp

    def probe(origin: int, receive: int, transmit: int | None) -> list[object]:
        subs = () if transmit is None else (HelloTimestamp(transmit),)
        return [
            Hello(seqno=1, interval=800, unicast=True, sub_tlvs=subs),
            IHU(
                ae=0,
                address=None,
                rxcost=96,
                interval=800,
                sub_tlvs=(IHUTimestamp(origin, receive),),
            ),
        ]

    # Not one of our timestamps.
    assert a.receive(probe(stamp + 1, 5, 6), 0.1).notes == ("rtt_unknown_origin",)
    # No Hello timestamp in the packet: RFC 9616 needs it.
    assert "rtt_no_hello_timestamp" in a.receive(probe(stamp, 5, None), 0.1).notes
    # The peer claims it held our Hello for 1 s, but only 0.1 s passed.
    assert "rtt_negative" in a.receive(probe(stamp, 0, 1_000_000), 0.1).notes
    # A negative hold (transmit before receive) is huge modulo 2^32.
    assert "rtt_bad_waiting" in a.receive(probe(stamp, 1_000, 0), 0.1).notes
    # 20 s round trip: absurd.
    assert "rtt_absurd" in a.receive(probe(stamp, 0, 0), 20.0).notes
    assert a.rtt_ms is None
    assert a.receive(probe(stamp, 0, 0), 0.03).rtt_sample_ms == pytest.approx(30)


def test_rtt_is_forgotten_when_no_sample_arrives_for_a_long_time() -> None:
    params = LinkQualityParams(rtt_validity_s=60)
    link = Link(params, delay=lambda i: 0.1)
    link.run(100)
    assert link.a.rtt_ms == pytest.approx(200, abs=30)
    assert link.a.cost() > 96 + 80
    link.lost = lambda i: i == 0  # a's Hellos never arrive: no echo comes back to a
    link.run(120)
    assert link.a.rtt_ms is None  # and so no penalty: the loss says it all
    assert "rtt_repeated_echo" in link.nodes[0].notes  # b kept echoing a's last Hello
    assert link.a.txcost is not None and link.a.txcost >= 500  # b hears almost nothing


# --- loss --------------------------------------------------------------------------------


def test_30_percent_loss_is_estimated_and_costs_more() -> None:
    rng = random.Random(30)
    losses: list[float] = []

    def sample(link: Link) -> None:
        if link.b.loss is not None:
            losses.append(link.b.loss)

    link = Link(lost=lambda i: i == 0 and rng.random() < 0.3)  # a -> b loses 30%
    link.run(8 * 600, each=sample)
    b = link.b
    total = b.hellos_received + b.hellos_missed
    assert total >= 590
    assert b.hellos_missed / total == pytest.approx(0.3, abs=0.04)
    assert sum(losses) / len(losses) == pytest.approx(0.3, abs=0.04)
    assert link.a.loss == 0.0  # b -> a is clean
    # ETX: 96 / 0.7 = 137 on average; b measures it, a learns it from b's IHUs.
    assert 96 < b.cost() <= 96 * 16
    assert link.a.cost() > 96
    assert link.nodes[0].changes and link.nodes[1].changes


def test_loss_both_ways_multiplies() -> None:
    assert etx_cost(96, 96, 96) == 96
    assert etx_cost(137, 96, 96) == 137
    assert etx_cost(137, 137, 96) == 196  # 96 / (0.7 * 0.7)
    assert etx_cost(None, None, 96) == 96
    assert etx_cost(METRIC_INFINITY, 96, 96) == COST_CAP
    assert etx_cost(10, 20, 96) == 96  # never below the base


def test_a_recovered_link_gets_its_cost_back() -> None:
    rng = random.Random(7)
    bad = [True]
    link = Link(lost=lambda i: bad[0] and rng.random() < 0.5)
    link.run(8 * 100)
    assert link.a.reported_cost > 150 and link.b.reported_cost > 150
    bad[0] = False
    link.run(8 * 20)  # 16 clean intervals flush the history
    for node in link.nodes:
        assert node.quality.loss == 0.0
        assert node.quality.cost() == 96
        assert node.quality.reported_cost < 96 + 16
        assert node.changes[-1][1] == node.quality.reported_cost


def test_a_long_silence_caps_the_cost_and_the_link_comes_back() -> None:
    cut = [False]
    link = Link(lost=lambda i: cut[0])
    link.run(100)
    assert link.a.cost() == 96
    cut[0] = True
    link.run(8 * 20)
    for node in link.nodes:
        assert node.quality.loss == 1.0
        assert node.quality.rxcost == METRIC_INFINITY
        assert node.quality.reported_cost == COST_CAP
    cut[0] = False
    link.run(8 * 20)
    for node in link.nodes:
        assert node.quality.loss == 0.0 and node.quality.reported_cost == 96
        assert "seqno_jump" not in node.notes  # silences were counted, not seqno gaps


def test_seqno_gaps_count_as_losses_but_a_jump_or_a_restart_does_not() -> None:
    params = LinkQualityParams(hello_interval_s=1.0)
    q = LinkQuality(params, now=0.0)

    def hello(seqno: int, at: float) -> tuple[str, ...]:
        return q.receive([Hello(seqno=seqno, interval=100, unicast=True)], at).notes

    for i in range(4):
        assert hello(100 + i, float(i)) == ()
    assert q.loss == 0.0
    assert hello(105, 4.0) == ()  # 104 lost
    assert (q.hellos_received, q.hellos_missed) == (5, 1)
    assert hello(105, 4.1) == ("duplicate_hello",)
    assert hello(104, 4.2) == ("late_hello",)
    assert (q.hellos_received, q.hellos_missed) == (5, 1)
    assert hello(5000, 5.0) == ("seqno_jump",)  # not 4894 losses
    assert (q.hellos_received, q.hellos_missed) == (6, 1)
    assert hello(3, 6.0) == ("seqno_reset",)  # the peer restarted from a low seqno
    assert hello(4, 7.0) == ()
    assert (q.hellos_received, q.hellos_missed) == (8, 1)
    assert q.loss == pytest.approx(1 / 9)


def test_a_restarted_peer_is_followed_without_inventing_losses() -> None:
    link = Link(delay=lambda i: 0.004)
    link.run(200)
    params = link.b.params
    restarted_at = link.time
    link.nodes[1] = Node(
        LinkQuality(params, now=restarted_at + 5, initial_seqno=40_000), link.nodes[1].offset
    )
    link.nodes[1].quality.next_send_at = restarted_at + link.nodes[1].offset
    link.run(200)
    assert link.a.loss == 0.0
    assert link.a.cost() == link.b.cost() == 96


def test_a_peer_that_pauses_and_resumes_is_not_taken_for_a_late_one() -> None:
    params = LinkQualityParams(hello_interval_s=1.0)
    q = LinkQuality(params, now=0.0)
    for i in range(5):
        q.receive([Hello(seqno=i, interval=100, unicast=True)], float(i))
    q.check(10.0)  # five intervals of silence: counted as missed
    assert q.hellos_missed == 5
    notes = q.receive([Hello(seqno=5, interval=100, unicast=True)], 10.1).notes
    assert notes == ()  # heard, although the silence moved the expected seqno past it
    assert q.hellos_received == 6


def test_never_hearing_the_peer_costs_the_cap_after_a_grace() -> None:
    q = LinkQuality(LinkQualityParams(hello_interval_s=1.0), now=0.0)
    assert not q.check(3.9) and q.cost() == 96
    assert q.check(4.0) and q.reported_cost == COST_CAP


# --- hysteresis --------------------------------------------------------------------------


def test_jitter_does_not_retrigger_babel() -> None:
    rng = random.Random(3)
    costs: set[int] = set()

    def watch(link: Link) -> None:
        if link.time > 200:
            costs.add(link.a.cost())

    link = Link(delay=lambda i: rng.uniform(0.032, 0.048))
    link.run(100)
    before = len(link.nodes[0].changes)
    link.run(8 * 300, each=watch)
    assert len(costs) > 3  # the cost did move with the jitter...
    assert len(link.nodes[0].changes) == before  # ...but never enough to tell Babel
    assert 96 + 50 < link.a.reported_cost < 96 + 75


def test_a_real_change_is_reported() -> None:
    delay = [0.004]
    link = Link(delay=lambda i: delay[0])
    link.run(200)
    assert link.a.reported_cost == 96
    delay[0] = 0.100  # 200 ms RTT: the full penalty
    link.run(200)
    assert link.a.cost() == 96 + 96
    assert 192 - 24 < link.a.reported_cost <= 192  # within the margin: 1/8 of ~180
    assert [c for _, c in link.nodes[0].changes][-1] == link.a.reported_cost


# --- garbage -----------------------------------------------------------------------------


def test_garbage_and_wrong_types_are_ignored() -> None:
    q = LinkQuality(now=0.0)
    junk: list[object] = [
        None,
        42,
        "hello",
        b"\x2a\x02",
        object(),
        PadN(length=3),
        Update(ae=0, prefix=None, interval=400, seqno=1, metric=0xFFFF),
        Hello(seqno=9, interval=400),  # multicast: another seqno space
        IHU(ae=0, address=None, rxcost=0, interval=0),  # no timestamp: no RTT
    ]
    result = q.receive(junk, 1.0)
    assert result.notes.count("not_a_tlv") == 5
    assert "multicast_hello" in result.notes
    assert q.loss is None and q.rtt_ms is None and q.hellos_received == 0
    assert q.txcost == 0 and q.cost() == 96  # an rxcost below the base counts as the base
    two = [Hello(seqno=1, interval=400, unicast=True)] * 2 + [
        IHU(ae=0, address=None, rxcost=0xFFFF, interval=400)
    ] * 2
    assert q.receive(two, 2.0).notes == ("extra_hello", "extra_ihu")
    assert q.cost() == COST_CAP  # the peer hears nothing of us


def test_misuse_raises() -> None:
    with pytest.raises(ValueError):
        LinkQuality(now=float("nan"))
    with pytest.raises(ValueError):
        LinkQuality(now=0.0, initial_seqno=70_000)
    q = LinkQuality(now=0.0)
    with pytest.raises(ValueError):
        q.build("now")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.receive(None, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field_name, value",
    [
        ("hello_interval_s", 0),
        ("hello_interval_s", 1000),
        ("base_cost", 0),
        ("base_cost", 0xFFFF),
        ("rtt_max_ms", 5.0),
        ("rtt_decay", 0),
        ("rtt_decay", 257),
        ("max_rtt_penalty", -1),
        ("min_hellos_for_loss", 17),
        ("hysteresis_ratio", 2.0),
        ("hello_interval_s", True),
        ("base_cost", 96.5),
    ],
)
def test_params_are_validated(field_name: str, value: object) -> None:
    with pytest.raises(ValueError):
        LinkQualityParams(**{field_name: value})  # type: ignore[arg-type]


def test_params_defaults() -> None:
    p = LinkQualityParams()
    assert (p.hello_interval_s, p.interval_cs, p.base_cost) == (8.0, 800, 96)
    assert (p.rtt_min_ms, p.rtt_max_ms, p.max_rtt_penalty, p.rtt_decay) == (10, 120, 96, 42)
    assert LinkQualityParams(hello_interval_s=0.05).interval_cs == 5


# --- properties --------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    delays=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=40),
    losses=st.lists(st.booleans(), min_size=1, max_size=40),
    interval=st.sampled_from([0.05, 1.0, 8.0, 60.0]),
    offsets=st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)),
    seqnos=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    duration=st.floats(1.0, 2000.0),
)
def test_cost_stays_in_range_and_nothing_raises(
    delays: list[float],
    losses: list[bool],
    interval: float,
    offsets: tuple[float, float],
    seqnos: tuple[int, int],
    duration: float,
) -> None:
    sent = [0]

    def pick(values: list[float] | list[bool]) -> Callable[[int], float | bool]:
        def choose(i: int) -> float | bool:
            sent[0] += 1
            return values[sent[0] % len(values)]

        return choose

    link = Link(
        LinkQualityParams(hello_interval_s=interval),
        delay=pick(delays),
        lost=pick(losses),  # type: ignore[arg-type]
        offsets=offsets,
        seqnos=seqnos,
    )
    link.run(min(duration, interval * 400), each=check_invariants)
    check_invariants(link)


@FAST
@given(
    st.lists(
        st.one_of(
            st.builds(
                Hello,
                seqno=st.integers(0, 0xFFFF),
                interval=st.integers(0, 0xFFFF),
                unicast=st.booleans(),
                sub_tlvs=st.one_of(
                    st.just(()),
                    st.builds(lambda t: (HelloTimestamp(t),), st.integers(0, 2**32 - 1)),
                ),
            ),
            st.builds(
                IHU,
                ae=st.just(0),
                address=st.none(),
                rxcost=st.integers(0, 0xFFFF),
                interval=st.integers(0, 0xFFFF),
                sub_tlvs=st.one_of(
                    st.just(()),
                    st.builds(
                        lambda o, r: (IHUTimestamp(o, r),),
                        st.integers(0, 2**32 - 1),
                        st.integers(0, 2**32 - 1),
                    ),
                ),
            ),
            st.none(),
            st.integers(),
        ),
        max_size=6,
    ).map(tuple),
    st.lists(st.floats(0.0, 100.0), min_size=1, max_size=30),
)
def test_arbitrary_peer_packets_never_raise(packet: tuple[object, ...], gaps: list[float]) -> None:
    q = LinkQuality(LinkQualityParams(hello_interval_s=1.0), now=0.0)
    now = 0.0
    for gap in gaps:
        now += gap
        q.build(now)
        q.receive(packet, now)
        q.check(now)
        assert 96 <= q.cost() <= COST_CAP
        assert q.loss is None or 0 <= q.loss <= 1
