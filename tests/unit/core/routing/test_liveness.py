from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshd.core.routing.liveness import MAX_SUSPECT_S, STREAM_READINGS, LinkState, Liveness


def test_up_on_growth_down_after_silence_up_again() -> None:
    live = Liveness(dead_after_s=2.5)
    assert live.observe(100, 0.0) is None  # first reading is only a baseline
    assert live.state is LinkState.CONNECTING
    assert live.observe(160, 0.25) is LinkState.UP
    assert live.observe(160, 2.7) is None
    assert live.observe(160, 2.76) is LinkState.DOWN
    assert live.observe(160, 10.0) is None
    assert live.observe(220, 10.25) is LinkState.UP


def test_counter_reset_is_a_baseline_not_a_sign_of_life() -> None:
    live = Liveness(dead_after_s=1.0)
    live.observe(1000, 0.0)
    assert live.observe(5, 0.1) is None
    assert live.state is LinkState.CONNECTING
    assert live.observe(65, 0.2) is LinkState.UP


def test_check_without_reading_expires() -> None:
    live = Liveness(dead_after_s=1.0)
    live.observe(0, 0.0)
    live.observe(1, 0.1)
    assert live.check(1.0) is None
    assert live.check(1.2) is LinkState.DOWN


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0.01, 3.0)), max_size=60))
def test_state_matches_silence(steps: list[tuple[int, float]]) -> None:
    """Whatever the readings, the state is UP exactly when heard within dead_after_s."""
    live = Liveness(dead_after_s=2.0)
    rx, now = 0, 0.0
    live.observe(rx, now)
    for growth, dt in steps:
        rx += growth
        now += dt
        live.observe(rx, now)
        silent = live.silent_for(now)
        if silent is None:
            assert live.state is LinkState.CONNECTING
        else:
            assert (live.state is LinkState.UP) == (silent <= 2.0)


def test_a_silent_link_is_probed_once_per_silence() -> None:
    live = Liveness(dead_after_s=1.5, probe_after_s=1.1)
    live.observe(0, 0.0)
    live.observe(60, 0.25)  # up
    assert not live.wants_probe(1.0)
    assert live.wants_probe(1.4)
    assert not live.wants_probe(1.45)  # asked already
    live.observe(120, 1.45)  # the echo came back
    assert not live.wants_probe(2.0)
    assert live.wants_probe(2.6)  # a new silence
    assert live.observe(120, 3.0) is LinkState.DOWN
    assert not live.wants_probe(3.5)  # down: asked whether it is back, every DOWN_PROBE_S
    assert live.wants_probe(3.75) and not live.wants_probe(4.5) and live.wants_probe(4.75)
    never_heard = Liveness(dead_after_s=1.5)  # a restart: is the peer there?
    assert never_heard.wants_probe(9.0) and not never_heard.wants_probe(9.5)


def test_a_late_reading_waits_for_its_probe() -> None:
    """Readings that come late (a starved poller) find a long silence: the probe goes out
    then and the link is down only if the next reading still finds nothing."""
    live = Liveness(dead_after_s=1.5, probe_after_s=1.1)
    live.observe(0, 0.0)
    live.observe(60, 0.25)  # up
    assert live.observe(60, 2.5) is None  # silent 2.25 s, but no probe was sent yet
    assert live.wants_probe(2.5)
    assert live.observe(60, 2.75) is LinkState.DOWN
    live.observe(120, 5.0)  # up again
    assert live.observe(120, 8.0) is None and live.wants_probe(8.0)
    assert live.observe(180, 8.1) is None and live.state is LinkState.UP  # answered
    assert live.check(10.0) is LinkState.DOWN  # no reading possible: the plain timer


def _busy() -> Liveness:
    """Polled every 0.25 s, as the daemon does."""
    live = Liveness(27.0, probe_after_s=26.0, answer_within_s=0.5, suspect_after_s=0.375)
    live.observe(0, 0.0, sent=0)
    live.observe(60, 0.25, sent=0)  # up
    return live


def test_a_flow_into_a_link_that_died_idle_is_down_half_a_second_after_it_began() -> None:
    live = _busy()
    assert live.observe(60, 10.0, sent=0) is None  # idle: nothing sent, nothing heard
    assert not live.wants_probe(10.0)
    assert live.observe(60, 10.25, sent=500) is None  # a flow starts
    assert not live.wants_probe(10.25)  # its own answer has a reading to come
    assert live.observe(60, 10.5, sent=900) is None  # still sending: in doubt since 10.25
    assert live.doubt_since == 10.25
    assert live.wants_probe(10.5) and not live.wants_probe(10.5)  # once per reading
    assert live.observe(60, 10.75, sent=1300) is LinkState.DOWN
    assert not live.wants_probe(11.0)


def test_a_link_is_busy_while_it_sends_streams_or_is_in_doubt_and_only_then() -> None:
    """What the daemon reads every busy poll (0.1 s) rather than every 0.25 s: a link that
    sent at its last reading, receives a stream, or is in doubt; an idle one that hears
    a keepalive is not."""
    live = Liveness(27.0, probe_after_s=26.0, answer_within_s=0.25, suspect_after_s=0.15)
    live.observe(0, 0.0, sent=0)
    live.observe(60, 0.25, sent=0)
    assert not live.busy  # up, nothing sent: a keepalive
    live.observe(60, 5.0, sent=0)
    assert not live.busy
    live.observe(60, 5.1, sent=500)  # a flow starts
    assert live.busy
    live.observe(900, 5.2, sent=900)  # answered, sending on
    assert live.busy
    live.observe(900, 5.3, sent=1300)
    live.observe(900, 5.4, sent=1700)  # silent 0.2 s: in doubt
    assert live.doubt_since is not None and live.busy
    assert live.observe(900, 5.5, sent=1700) is None and live.busy  # nothing sent: doubt
    assert live.wants_probe(5.5)
    assert live.observe(900, 5.6, sent=1700) is LinkState.DOWN  # 0.25 s after 5.3
    for t in (6.0, 6.1, 6.2, 6.3):  # another end's stream into a fresh link
        live.observe(int(t * 1000), t, sent=1700)
    assert live.state is LinkState.UP and live.busy
    live.observe(6300, 6.4, sent=1700)  # the stream stops
    assert live.doubt_since is None and live.busy  # one poll of silence: maybe a gap
    live.observe(6300, 6.5, sent=1700)
    assert live.doubt_since == 6.4 and live.busy  # in doubt since it stopped, asked
    live.observe(6400, 6.6, sent=1700)  # the echoes' answer: no stream now, no doubt
    assert live.doubt_since is None and not live.busy
    live.observe(6400, 9.0, sent=1700)
    assert not live.busy  # nothing sent, nothing streaming, no doubt


def test_periodic_sends_cost_no_echo_answered_or_not() -> None:
    """A Hello through the tunnel every 16 s, answered by nothing but the peer's own 2 s
    later: no doubt, no echo, nothing down."""
    live = _busy()
    rx, sent = 60, 0
    for t in (8.0, 24.0, 40.0, 56.0):
        sent += 90
        for dt in (0.0, 0.25, 0.5, 1.0, 1.75):
            assert live.observe(rx, t + dt, sent=sent) is None
            assert live.doubt_since is None and not live.wants_probe(t + dt)
        rx += 60  # the peer's own Hello
        assert live.observe(rx, t + 2.0, sent=sent) is None
    assert live.probed_at is None and live.state is LinkState.UP


def test_a_retried_connect_into_a_dead_link_is_down_after_its_second_try() -> None:
    live = _busy()
    live.observe(60, 10.0, sent=60)  # SYN
    for t in (10.25, 10.5, 10.75):
        assert live.observe(60, t, sent=60) is None and not live.wants_probe(t)
    assert live.observe(60, 11.0, sent=120) is None  # its retry: a flow, in doubt now
    assert live.doubt_since == 11.0 and not live.wants_probe(11.0)
    assert live.observe(60, 11.25, sent=120) is None and live.wants_probe(11.25)
    assert live.observe(60, 11.5, sent=240) is LinkState.DOWN


def test_a_reply_to_what_just_came_in_is_no_doubt() -> None:
    live = _busy()
    live.observe(120, 5.0, sent=0)  # a message came in
    assert live.observe(120, 5.25, sent=80) is None  # our ACK: silence of one poll only
    for t in (5.5, 5.75, 6.0, 6.25):  # nothing more sent: nothing to answer
        assert live.observe(120, t, sent=80) is None
        assert not live.wants_probe(t)
    assert live.state is LinkState.UP


def test_a_busy_link_that_dies_is_down_three_readings_after_the_last_answer() -> None:
    live = _busy()
    for i in range(1, 9):  # a TCP flow: data out, ACKs back
        live.observe(60 + 100 * i, 1.0 + 0.25 * i, sent=1000 * i)
    last = 1.0 + 0.25 * 8
    assert live.observe(860, last + 0.25, sent=9000) is None  # one poll: maybe its ACK
    assert not live.wants_probe(last + 0.25)
    assert live.observe(860, last + 0.5, sent=10000) is None  # doubt since the one before
    assert live.wants_probe(last + 0.5)
    assert live.observe(860, last + 0.75, sent=11000) is LinkState.DOWN


def test_an_answered_echo_ends_the_doubt_of_a_one_way_flow() -> None:
    live = _busy()
    live.observe(60, 3.0, sent=1000)
    live.observe(60, 3.25, sent=2000)  # doubt since 3.0 (sent at both, silent since 0.25)
    assert live.wants_probe(3.25)
    assert live.observe(100, 3.5, sent=3000) is None  # the echo's answer
    assert live.doubt_since is None and live.state is LinkState.UP
    assert live.observe(100, 3.75, sent=4000) is None  # sending on, one poll of silence
    assert not live.wants_probe(3.75)


def test_a_late_reading_in_doubt_probes_before_calling_down() -> None:
    live = _busy()
    live.observe(60, 5.0, sent=100)
    live.observe(60, 5.25, sent=200)  # a flow, in doubt since 5.0
    assert live.observe(60, 7.0, sent=300) is None  # late (starved): no probe went out yet
    assert live.wants_probe(7.0)
    assert live.observe(60, 7.25, sent=400) is LinkState.DOWN


def test_without_a_sent_counter_only_the_idle_rule_applies() -> None:
    live = _busy()
    for t in (1.0, 2.0, 20.0):
        assert live.observe(60, t) is None
    assert live.state is LinkState.UP
    assert live.wants_probe(26.5)
    assert live.observe(60, 27.5) is LinkState.DOWN


def test_a_stream_that_stops_is_in_doubt_without_a_send() -> None:
    """The far end of a flow cut: it sends nothing back, but what streamed in stopped."""
    live = _busy()
    for i in range(1, 5):  # a ping stream coming in, nothing sent back by the tunnel
        live.observe(60 + 100 * i, 2.0 + 0.25 * i, sent=0)
    assert live.heard_in_a_row >= STREAM_READINGS
    assert live.observe(460, 3.25, sent=0) is None
    assert not live.wants_probe(3.25)  # one poll of silence: maybe a gap
    assert live.observe(460, 3.5, sent=0) is None
    assert live.wants_probe(3.5)
    assert live.observe(460, 3.75, sent=0) is LinkState.DOWN


def test_a_stream_that_ends_costs_one_probe() -> None:
    live = _busy()
    for i in range(1, 5):
        live.observe(60 + 100 * i, 2.0 + 0.25 * i, sent=0)
    live.observe(460, 3.25, sent=0)
    assert live.observe(460, 3.5, sent=0) is None and live.wants_probe(3.5)
    assert live.observe(520, 3.75, sent=0) is None  # answered: it just ended
    for t in (4.0, 4.25, 4.5, 10.0):
        assert live.observe(520, t, sent=0) is None
        assert not live.wants_probe(t)
    assert live.state is LinkState.UP


def test_doubts_of_a_one_way_flow_back_off_until_something_comes_unasked() -> None:
    live = _busy()
    rx, sent, t = 60, 0, 1.0
    silences = []  # at each probe
    while t < 12.0:  # sending at every reading; only echoes answer
        sent += 1000
        live.observe(rx, t, sent=sent)
        if live.wants_probe(t):
            rx += 100  # the echoes come back by the next reading
            silences.append(t - live.last_heard)  # type: ignore[operator]
        assert live.state is LinkState.UP
        t += 0.25
    assert silences[1:] == [0.75, 1.5] + [MAX_SUSPECT_S] * (len(silences) - 3), silences
    rx += 500  # a reply of the flow's own
    live.observe(rx, t, sent=sent)
    assert live.suspect_s is None  # back to a reading and a half
