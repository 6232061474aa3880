"""Link cost from the RTT and loss of probes sent over the WireGuard path (pure, sans-IO).

Each neighbour link is one point-to-point WireGuard interface. Whether the link is up is
decided elsewhere (``liveness.py``: WireGuard keepalives and the peer's receive counter);
this module only measures how good an up link is, with Babel Hello and IHU TLVs sent in
unicast over the tunnel, as babeld does on a tunnel interface:

- loss: every probe carries a unicast Hello with its own seqno; the receiver keeps the
  16-entry history of babeld (``reach``, RFC 8966 3.4.1 / A.1) and counts missed Hellos
  from seqno gaps and from silences longer than the announced interval;
- RTT: RFC 9616. The Hello carries the sender's transmit time; the IHU of the next probe
  echoes it (``origin``) with the time it arrived (``receive``). The sender of the first
  Hello, receiving that IHU in a packet whose Hello carries its transmit time, gets
  ``rtt = (now - origin) - (transmit - receive)`` (section 3.2 and 4), smoothed like
  babeld's ``neigh->rtt``.

Usage, one instance per neighbour link (``now`` from a monotonic clock, in seconds)::

    quality = LinkQuality(now=now, initial_seqno=random_u16)
    router.link_up(peer, quality.reported_cost, now)
    ...at quality.next_send_at:      send(encode_packet(quality.build(now)))
                                     if quality.check(now): router.link_cost(...)
    ...on a packet from the peer:    result = quality.receive(decode_packet(data), now)
                                     if result.cost_changed: router.link_cost(
                                         peer, quality.reported_cost, now)

The cost (``cost()``) is RFC 8966 A.2.2's ETX over a base of 96 plus RFC 9616's delay
penalty; ``reported_cost`` only follows it when it moved by a meaningful margin, so that
jitter does not re-trigger Babel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from meshd.core.proto.babel import (
    AE_WILDCARD,
    IHU,
    METRIC_INFINITY,
    TLV,
    DecodedTLV,
    Hello,
    HelloTimestamp,
    IHUTimestamp,
)

HISTORY: Final = 16  # Hellos remembered, the width of babeld's ``reach``
COST_CAP: Final = METRIC_INFINITY - 1  # 0xFFFE: the worst cost of a link that is still up
TIMESTAMP_MODULUS: Final = 1 << 32  # RFC 9616 3.1: microseconds modulo 2^32
SEQNO_MODULUS: Final = 1 << 16
LATE_WINDOW: Final = 4  # a Hello at most this much older than the last one is late, not a reset
_SILENCE_GRACE: Final = 0.7  # babeld: a Hello counts as missed 1.7 intervals after the last
_REACH_MASK: Final = (1 << HISTORY) - 1


def _check_number(name: str, value: object, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high if high is not None else 'inf'}]")


def _check_now(now: object) -> None:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError(f"now must be a finite number of seconds, not {now!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], not {value!r}")


@dataclass(frozen=True)
class LinkQualityParams:
    """Settings of the probes and of the cost; every one has a default (babeld's where it
    has one) and is checked when built."""

    # Probes only measure quality (liveness is WireGuard's), so they can be rare: one
    # 36-octet packet each way every 8 s is ~20 B/s per link with the tunnel's overhead.
    hello_interval_s: float = 8.0
    # RFC 8966 A.2.1: the cost of a wired / tunnel link, the floor of every cost here.
    base_cost: int = 96
    # RFC 9616 4 / babeld's tunnel defaults: no penalty below rtt_min, max_rtt_penalty
    # above rtt_max, linear in between.
    rtt_min_ms: float = 10.0
    rtt_max_ms: float = 120.0
    max_rtt_penalty: int = 96
    # babeld ``rtt-decay``: weight of a new sample in the running average, in 1/256.
    rtt_decay: int = 42
    # babeld: the first sample counts double, to be conservative with a new neighbour.
    first_rtt_factor: float = 2.0
    # babeld ``valid_rtt``: a smoothed RTT with no sample for this long is forgotten.
    rtt_validity_s: float = 180.0
    # A sample above this is absurd (a stalled process, a clock jump): dropped.
    max_rtt_sample_ms: float = 10_000.0
    # babeld: waiting times beyond 10 minutes are not trusted (and 2^32 us wrap at ~71 min).
    max_waiting_s: float = 600.0
    # Loss is None until the history holds this many Hellos (heard or missed).
    min_hellos_for_loss: int = 4
    # babeld: the peer's rxcost (our txcost) expires after 4 IHU intervals...
    ihu_hold_intervals: float = 4.0
    # ...or after this long, whatever the interval says.
    ihu_hold_max_s: float = 180.0
    # A peer never heard from is "unknown" (base cost) for this many of our intervals,
    # then unreachable over the tunnel (COST_CAP): UDP does not cross the data path.
    unheard_grace_intervals: float = 4.0
    # reported_cost follows cost() only when it moved by max(min, ratio * reported).
    hysteresis_min: int = 16
    hysteresis_ratio: float = 0.125

    def __post_init__(self) -> None:
        _check_number("hello_interval_s", self.hello_interval_s, 0.01, 0xFFFF / 100)
        _check_int("base_cost", self.base_cost, 1, COST_CAP)
        _check_number("rtt_min_ms", self.rtt_min_ms, 0.0, 1e6)
        _check_number("rtt_max_ms", self.rtt_max_ms, 0.0, 1e6)
        if self.rtt_max_ms <= self.rtt_min_ms:
            raise ValueError("rtt_max_ms must be above rtt_min_ms")
        _check_int("max_rtt_penalty", self.max_rtt_penalty, 0, COST_CAP)
        _check_int("rtt_decay", self.rtt_decay, 1, 256)
        _check_number("first_rtt_factor", self.first_rtt_factor, 1.0, 16.0)
        _check_number("rtt_validity_s", self.rtt_validity_s, 0.001, None)
        _check_number("max_rtt_sample_ms", self.max_rtt_sample_ms, 0.001, None)
        _check_number("max_waiting_s", self.max_waiting_s, 0.001, 3600.0)
        _check_int("min_hellos_for_loss", self.min_hellos_for_loss, 1, HISTORY)
        _check_number("ihu_hold_intervals", self.ihu_hold_intervals, 1.0, None)
        _check_number("ihu_hold_max_s", self.ihu_hold_max_s, 0.001, None)
        _check_number("unheard_grace_intervals", self.unheard_grace_intervals, 1.0, None)
        _check_int("hysteresis_min", self.hysteresis_min, 0, COST_CAP)
        _check_number("hysteresis_ratio", self.hysteresis_ratio, 0.0, 1.0)

    @property
    def interval_cs(self) -> int:
        """The Hello / IHU interval field (RFC 8966 4.6.5: centiseconds)."""
        return max(1, min(0xFFFF, round(self.hello_interval_s * 100)))


@dataclass(frozen=True)
class ReceiveResult:
    """What one packet from the peer did.

    ``notes`` are reason codes for what was ignored or noticed: ``not_a_tlv``,
    ``multicast_hello``, ``extra_hello``, ``extra_ihu``, ``duplicate_hello``, ``late_hello``,
    ``seqno_reset`` (the peer's seqno went far back: it restarted), ``seqno_jump`` (far
    ahead: resynchronised without counting losses), ``rtt_no_hello_timestamp``,
    ``rtt_unknown_origin``, ``rtt_repeated_echo``, ``rtt_bad_waiting``, ``rtt_negative``,
    ``rtt_absurd``.
    """

    cost_changed: bool
    rtt_sample_ms: float | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkQualitySnapshot:
    """For ``meshd status`` and logs: the measurement as of the last receive/check."""

    rtt_ms: float | None
    loss: float | None
    rxcost: int
    txcost: int | None
    cost: int
    reported_cost: int
    hellos_received: int
    hellos_missed: int


def timestamp_us(now: float) -> int:
    """RFC 9616 3.1: a timestamp is microseconds modulo 2^32 of a local clock."""
    return int(now * 1_000_000) % TIMESTAMP_MODULUS


def rtt_penalty(rtt_ms: float | None, params: LinkQualityParams) -> int:
    """RFC 9616 4 (babeld ``neighbour_rttcost``): 0 up to rtt_min, linear up to
    max_rtt_penalty at rtt_max, constant above; 0 while the RTT is unknown."""
    if rtt_ms is None or rtt_ms <= params.rtt_min_ms:
        return 0
    if rtt_ms >= params.rtt_max_ms:
        return params.max_rtt_penalty
    span = params.rtt_max_ms - params.rtt_min_ms
    return int(params.max_rtt_penalty * (rtt_ms - params.rtt_min_ms) / span)


def etx_cost(rxcost: int | None, txcost: int | None, base: int) -> int:
    """RFC 8966 A.2.2 (ETX) with K = base instead of 256.

    rxcost = K / beta is what we advertise (beta: the fraction of the peer's Hellos we
    hear); txcost = K / alpha is the peer's rxcost, from its IHU. The expected number of
    transmissions of a packet and its acknowledgement is 1 / (alpha * beta), so the cost is
    ``max(txcost, K) * max(rxcost, K) / K``: exactly K on a clean link, 2K with half the
    packets lost one way (babeld's ``neighbour_cost`` does the same with K = 256 on lossy
    links).
    None means "not measured yet" and counts as K; METRIC_INFINITY (or more) means nothing
    gets through that way and gives COST_CAP.
    """
    rx = base if rxcost is None else rxcost
    tx = base if txcost is None else txcost
    if rx >= METRIC_INFINITY or tx >= METRIC_INFINITY:
        return COST_CAP
    return min(COST_CAP, (max(rx, base) * max(tx, base) + base // 2) // base)


class LinkQuality:
    """Probe state and link cost for one neighbour link. ``now`` is a monotonic clock in
    seconds; it is passed in, never read. Misuse (a bad ``now``) raises; anything a peer
    sends is ignored with a reason code, never raised."""

    def __init__(
        self,
        params: LinkQualityParams | None = None,
        *,
        now: float,
        initial_seqno: int = 0,
    ) -> None:
        """``initial_seqno``: give a random one, so that a restarted node's Hellos are not
        taken for late ones by a peer that remembers its old seqnos."""
        self.params = params if params is not None else LinkQualityParams()
        _check_now(now)
        _check_int("initial_seqno", initial_seqno, 0, 0xFFFF)
        self._created_at = float(now)
        self._seqno = initial_seqno
        self.next_send_at: float = float(now)  # the first probe goes at once
        # Our recent Hello timestamps -> when sent (None once echoed: one sample each).
        self._sent: dict[int, float | None] = {}

        # Hellos heard from the peer (babeld ``struct neighbour`` / ``hello_history``).
        self._reach = 0  # bit 15: the newest Hello; 1 heard, 0 missed
        self._history_len = 0  # how many bits of reach mean something
        self._expected_seqno: int | None = None  # last seqno accounted for (heard or missed)
        self._last_rx_seqno: int | None = None  # last seqno actually heard
        self._peer_interval_s: float | None = None
        self._accounted_at: float | None = None  # babeld ``hello_time``
        self._peer_hello_ts: int | None = None  # for the IHU's origin
        self._peer_hello_rx_at: float | None = None
        self._resync = False  # the next Hello starts the seqno tracking afresh
        self.hellos_received = 0
        self.hellos_missed = 0

        # What the peer hears of us (its IHU).
        self._txcost: int | None = None
        self._txcost_at: float | None = None
        self._ihu_interval_s: float | None = None

        self._rtt_ms: float | None = None
        self._rtt_at: float | None = None
        self._never_heard_expired = False

        self._reported_cost = self.cost()

    # --- outputs ------------------------------------------------------------------------

    @property
    def rtt_ms(self) -> float | None:
        """Smoothed RTT over the tunnel; None until measured or after rtt_validity_s."""
        return self._rtt_ms

    @property
    def loss(self) -> float | None:
        """Fraction of the peer's Hellos we missed over the last 16 intervals (the peer ->
        us direction; the other one is in ``txcost``); None until min_hellos_for_loss."""
        if self._history_len < self.params.min_hellos_for_loss:
            return None
        return 1.0 - self._heard_in_history() / self._history_len

    @property
    def rxcost(self) -> int:
        """RFC 8966 A.2.2: base / beta, what our IHU tells the peer. METRIC_INFINITY when
        no Hello was ever heard or none of the remembered ones; base until loss is known."""
        if self._last_rx_seqno is None:
            return METRIC_INFINITY
        heard = self._heard_in_history()
        if heard == 0:
            return METRIC_INFINITY
        if self._history_len < self.params.min_hellos_for_loss:
            return self.params.base_cost
        base = self.params.base_cost
        # round(base * len / heard) in integers; at worst 16 * base.
        return min(COST_CAP, (2 * base * self._history_len + heard) // (2 * heard))

    @property
    def txcost(self) -> int | None:
        """The peer's rxcost from its last IHU (base / alpha); None until one arrives or
        once it expired."""
        return self._txcost

    def cost(self) -> int:
        """ETX (``etx_cost``) plus the RFC 9616 delay penalty, in [base_cost, COST_CAP].

        Our receive side counts as unknown (base) until the first Hello, and as nothing
        heard (COST_CAP) once unheard_grace_intervals passed without one.
        """
        if self._last_rx_seqno is None:
            rx: int | None = METRIC_INFINITY if self._never_heard_expired else None
        else:
            rx = self.rxcost
        base_part = etx_cost(rx, self._txcost, self.params.base_cost)
        return min(COST_CAP, base_part + rtt_penalty(self._rtt_ms, self.params))

    @property
    def reported_cost(self) -> int:
        """The cost to give Babel: cost() as of the last time it moved by the margin."""
        return self._reported_cost

    def snapshot(self) -> LinkQualitySnapshot:
        return LinkQualitySnapshot(
            rtt_ms=self._rtt_ms,
            loss=self.loss,
            rxcost=self.rxcost,
            txcost=self._txcost,
            cost=self.cost(),
            reported_cost=self._reported_cost,
            hellos_received=self.hellos_received,
            hellos_missed=self.hellos_missed,
        )

    # --- sending ------------------------------------------------------------------------

    def build(self, now: float) -> list[TLV]:
        """The TLVs of the probe to send at ``now`` (a unicast Hello, and an IHU once a
        Hello was heard); moves next_send_at one interval on. Encode them at once: the
        Hello's timestamp is ``now``."""
        _check_now(now)
        self._seqno = (self._seqno + 1) % SEQNO_MODULUS
        interval = self.params.interval_cs
        stamp = timestamp_us(now)
        self._sent[stamp] = now
        while len(self._sent) > HISTORY:  # only the last few can still be echoed
            del self._sent[next(iter(self._sent))]
        tlvs: list[TLV] = [
            Hello(
                seqno=self._seqno,
                interval=interval,
                unicast=True,
                sub_tlvs=(HelloTimestamp(stamp),),
            )
        ]
        if self._last_rx_seqno is not None:
            # RFC 9616 3.2: echo the last Hello's timestamp and when it arrived, unless
            # that is too old for the peer to trust the difference.
            subs: tuple[IHUTimestamp, ...] = ()
            if (
                self._peer_hello_ts is not None
                and self._peer_hello_rx_at is not None
                and 0 <= now - self._peer_hello_rx_at <= self.params.max_waiting_s
            ):
                subs = (IHUTimestamp(self._peer_hello_ts, timestamp_us(self._peer_hello_rx_at)),)
            tlvs.append(
                IHU(
                    ae=AE_WILDCARD,  # point-to-point: the IHU is about whoever hears it
                    address=None,
                    rxcost=self.rxcost,
                    interval=interval,
                    sub_tlvs=subs,
                )
            )
        self.next_send_at = now + self.params.hello_interval_s
        return tlvs

    # --- receiving ----------------------------------------------------------------------

    def receive(self, tlvs: Iterable[object], now: float) -> ReceiveResult:
        """Process the TLVs of one packet from the peer (``decode_packet`` output, or
        ``DecodedTLV``s). Anything that is not a Hello or IHU is ignored."""
        _check_now(now)
        notes: list[str] = []
        hello: Hello | None = None
        ihu: IHU | None = None
        for item in tlvs:
            tlv = item.tlv if isinstance(item, DecodedTLV) else item
            if isinstance(tlv, Hello):
                if not tlv.unicast:
                    notes.append("multicast_hello")  # another seqno space: not ours
                elif hello is not None:
                    notes.append("extra_hello")  # babeld never sends two: not a measure
                else:
                    hello = tlv
            elif isinstance(tlv, IHU):
                if ihu is None:
                    ihu = tlv
                else:
                    notes.append("extra_ihu")
            elif not isinstance(tlv, TLV):
                notes.append("not_a_tlv")
        self._expire(now)
        if hello is not None:
            self._hello(hello, now, notes)
        sample: float | None = None
        if ihu is not None:
            self._ihu(ihu, now)
            sample = self._rtt_sample(ihu, hello, now, notes)
        return ReceiveResult(self._gate(), sample, tuple(notes))

    def check(self, now: float) -> bool:
        """Account for time passing (missed Hellos, an expired IHU or RTT); True when
        reported_cost changed. Call it at least once per interval, e.g. with build()."""
        _check_now(now)
        self._expire(now)
        return self._gate()

    # --- internals ----------------------------------------------------------------------

    def _heard_in_history(self) -> int:
        meaningful = self._reach >> (HISTORY - self._history_len) if self._history_len else 0
        return int(meaningful).bit_count()

    def _record(self, heard: bool, count: int = 1) -> None:
        """Shift ``count`` entries into the history, newest at bit 15."""
        for _ in range(min(count, HISTORY)):
            self._reach = (self._reach >> 1) | ((1 << (HISTORY - 1)) if heard else 0)
        self._history_len = min(HISTORY, self._history_len + count)
        if heard:
            self.hellos_received += count
        else:
            self.hellos_missed += count

    def _expire(self, now: float) -> None:
        # babeld ``update_neighbour(neigh, -1, 0)``: a Hello not heard 1.7 intervals after
        # the last one is missed; the expected seqno moves on so that the next Hello does
        # not count it twice.
        interval = self._peer_interval_s
        if interval and self._accounted_at is not None and self._expected_seqno is not None:
            elapsed = now - self._accounted_at
            missed = math.floor((elapsed - _SILENCE_GRACE * interval) / interval)
            if missed > 0:
                self._record(False, missed)
                self._accounted_at += missed * interval
                self._expected_seqno = (self._expected_seqno + missed) % SEQNO_MODULUS
                if self._reach == 0:
                    # Nothing heard for 16 intervals: the old seqno says nothing any more.
                    self._resync = True
        if (
            self._last_rx_seqno is None
            and now - self._created_at
            >= self.params.unheard_grace_intervals * self.params.hello_interval_s
        ):
            self._never_heard_expired = True
        if self._txcost_at is not None:
            hold = self.params.ihu_hold_max_s
            if self._ihu_interval_s:
                hold = min(hold, self.params.ihu_hold_intervals * self._ihu_interval_s)
            if now - self._txcost_at > hold:
                self._txcost = self._txcost_at = None
        if self._rtt_at is not None and now - self._rtt_at > self.params.rtt_validity_s:
            self._rtt_ms = self._rtt_at = None

    def _hello(self, hello: Hello, now: float, notes: list[str]) -> None:
        seqno = hello.seqno
        fresh = self._last_rx_seqno is None or self._resync
        if not fresh and self._last_rx_seqno is not None and self._expected_seqno is not None:
            ahead_of_heard = (seqno - self._last_rx_seqno) % SEQNO_MODULUS
            if ahead_of_heard == 0:
                notes.append("duplicate_hello")
                return
            if ahead_of_heard >= SEQNO_MODULUS // 2:  # RFC 8966 3.2.1: older
                if SEQNO_MODULUS - ahead_of_heard <= LATE_WINDOW:
                    notes.append("late_hello")  # reordered or buffered: already counted
                    return
                notes.append("seqno_reset")  # babeld: "rebooted and lost its seqno"
                fresh = True
            else:
                ahead = (seqno - self._expected_seqno) % SEQNO_MODULUS
                if ahead >= SEQNO_MODULUS // 2:
                    # Behind what silences made us expect but newer than the last one
                    # heard: the peer paused or slowed down; the misses stay counted.
                    pass
                elif ahead - 1 > HISTORY:
                    # More missed than the history holds and than silence explained:
                    # a jump, not losses (the next silence or gap will count real ones).
                    notes.append("seqno_jump")
                elif ahead > 1:
                    self._record(False, ahead - 1)
        if fresh:
            self._resync = False
            self.next_send_at = min(self.next_send_at, now)  # give it an IHU at once
        self._record(True)
        self._last_rx_seqno = self._expected_seqno = seqno
        self._accounted_at = now
        if hello.interval > 0:  # 0: an unscheduled Hello, the schedule is unchanged
            self._peer_interval_s = hello.interval / 100
        stamp = hello.timestamp
        self._peer_hello_ts = stamp
        self._peer_hello_rx_at = now if stamp is not None else None

    def _ihu(self, ihu: IHU, now: float) -> None:
        # RFC 8966 3.4.2: the IHU's rxcost is our txcost. On a point-to-point link every
        # IHU the peer sends is about us, whatever address it names.
        self._txcost = ihu.rxcost
        self._txcost_at = now
        self._ihu_interval_s = ihu.interval / 100 if ihu.interval > 0 else None

    def _rtt_sample(
        self, ihu: IHU, hello: Hello | None, now: float, notes: list[str]
    ) -> float | None:
        echo = ihu.timestamp
        if echo is None:
            return None
        # RFC 9616 3.2: the sample needs the transmit time of this very packet.
        transmit = hello.timestamp if hello is not None else None
        if transmit is None:
            notes.append("rtt_no_hello_timestamp")
            return None
        if echo.origin not in self._sent:
            notes.append("rtt_unknown_origin")  # not one of our recent Hellos
            return None
        sent_at = self._sent[echo.origin]
        if sent_at is None:
            # The peer heard nothing newer from us: an old echo again. Its sample was
            # taken; repeating it would keep an RTT alive that nothing measures any more.
            notes.append("rtt_repeated_echo")
            return None
        local_waiting = now - sent_at
        remote_waiting = ((transmit - echo.receive) % TIMESTAMP_MODULUS) / 1_000_000
        # babeld's sanity window; a negative remote wait shows up here modulo 2^32.
        limit = self.params.max_waiting_s
        if not (0 <= local_waiting <= limit and remote_waiting <= limit):
            notes.append("rtt_bad_waiting")
            return None
        sample_ms = (local_waiting - remote_waiting) * 1000
        if sample_ms < 0:
            notes.append("rtt_negative")  # clock drift on a near-zero RTT, or a lie
            return None
        if sample_ms > self.params.max_rtt_sample_ms:
            notes.append("rtt_absurd")
            return None
        self._sent[echo.origin] = None
        if self._rtt_ms is None:
            self._rtt_ms = sample_ms * self.params.first_rtt_factor
        else:
            decay = self.params.rtt_decay
            self._rtt_ms = (decay * sample_ms + (256 - decay) * self._rtt_ms) / 256
        self._rtt_at = now
        return sample_ms

    def _gate(self) -> bool:
        """Hysteresis: follow cost() only on a meaningful move, or into / out of the cap."""
        cost, reported = self.cost(), self._reported_cost
        if cost == reported:
            return False
        margin = max(self.params.hysteresis_min, math.ceil(reported * self.params.hysteresis_ratio))
        if abs(cost - reported) >= margin or COST_CAP in (cost, reported):
            self._reported_cost = cost
            return True
        return False
