from __future__ import annotations

import pytest

from meshd.core.routing.uplink_health import Health, UplinkHealth


def test_unknown_until_the_first_check_then_up() -> None:
    h = UplinkHealth(0.5, 1.5)
    assert h.state is Health.UNKNOWN and not h.working
    assert h.due(0.0) and not h.due(0.2) and h.due(0.5)
    assert h.result(True, 0.1) and h.working


def test_down_when_nothing_succeeded_for_dead_after() -> None:
    h = UplinkHealth(0.5, 1.5)
    h.due(0.0)
    h.result(True, 0.0)
    assert not h.result(False, 0.5, "timed out")
    assert not h.expire(1.4)
    assert h.expire(1.6) and h.state is Health.DOWN
    assert "timed out" in h.reason and "1.6 s" in h.reason
    assert not h.expire(5.0)  # changes once


def test_never_answering_is_down_after_dead_after_from_the_start() -> None:
    h = UplinkHealth(0.5, 1.5)
    h.due(10.0)
    assert not h.expire(11.0)
    assert h.expire(11.6) and h.state is Health.DOWN


def test_recovery_needs_successes_in_a_row() -> None:
    h = UplinkHealth(0.5, 1.5, recover_after=2)
    h.due(0.0)
    h.expire(2.0)
    assert h.state is Health.DOWN
    assert not h.result(True, 2.1)
    assert not h.result(False, 2.6)  # the streak starts over
    assert not h.result(True, 3.1)
    assert h.result(True, 3.6) and h.working


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        UplinkHealth(2.0, 1.5)
