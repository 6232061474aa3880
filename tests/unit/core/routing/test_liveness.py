from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshd.core.routing.liveness import LinkState, Liveness


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
    assert not live.wants_probe(3.5)  # down: nothing to confirm
    assert not Liveness(dead_after_s=1.5).wants_probe(9.0)


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
