"""The checks through an exit tunnel (meshd.core.routing.exit_check): when a gateway fails
us, and when one lost check does not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshd.core.routing.exit_check import (
    EXIT_CHECK_FAILURES,
    EXIT_CHECK_INTERVAL_S,
    MAX_OUT,
    NO_CHECKS,
    SILENT_S,
    ExitCheck,
)


def test_the_first_check_waits_an_interval_after_the_grant_then_one_each_interval() -> None:
    check = ExitCheck.granted("g", 10.0)
    assert not check.due(10.0) and not check.due(10.0 + EXIT_CHECK_INTERVAL_S - 0.01)
    assert check.due(10.0 + EXIT_CHECK_INTERVAL_S)
    assert not check.due(10.0 + EXIT_CHECK_INTERVAL_S + 0.25)
    assert check.due(10.0 + 2 * EXIT_CHECK_INTERVAL_S)
    assert check.out == 2


def test_failures_in_a_row_fail_the_gateway_and_one_lost_check_does_not() -> None:
    check = ExitCheck.granted("g", 0.0)
    assert not check.result(False, "no answer")  # one lost probe
    assert not check.result(True, "connected")
    assert not check.result(False, "no answer")
    assert check.failed_in_a_row == 1 and check.failed == 2 and check.checks == 3
    assert EXIT_CHECK_FAILURES == 2
    assert check.result(False, "no answer")
    assert check.last == "no answer"


def test_checks_running_at_once_are_bounded() -> None:
    check = ExitCheck.granted("g", 0.0)
    started = sum(check.due(t * EXIT_CHECK_INTERVAL_S) for t in range(1, 20))
    assert started == MAX_OUT  # none answered: no more start
    check.lost()
    assert check.due(100.0)


@given(st.lists(st.booleans(), max_size=60))
def test_the_verdict_is_failures_in_a_row(outcomes: list[bool]) -> None:
    check = ExitCheck.granted("g", 0.0)
    run = 0
    for ok in outcomes:
        run = 0 if ok else run + 1
        assert check.result(ok, "") == (run >= EXIT_CHECK_FAILURES)


def _proven(now: float) -> ExitCheck:
    """A gateway whose first check passed at ``now``."""
    check = ExitCheck.granted("g", now - EXIT_CHECK_INTERVAL_S)
    assert check.due(now)
    assert not check.result(True, "connected")
    return check


def test_an_idle_exit_or_one_that_answers_is_not_checked() -> None:
    check = _proven(1.0)
    for i in range(400):  # 100 s: readings every 0.25 s, both ways growing, or none
        t = 1.0 + i * 0.25
        check.traffic(i if i < 200 else 200, i if i < 200 else 200, t)
        assert not check.due(t)


def test_traffic_unanswered_for_the_silence_puts_the_gateway_in_doubt_at_once() -> None:
    check = _proven(1.0)
    check.traffic(10, 10, 2.0)
    check.traffic(12, 10, 2.1)  # sent, nothing heard yet
    check.traffic(13, 10, 2.2)
    assert SILENT_S > 2.2 - 2.1 and not check.due(2.2)
    check.traffic(14, 10, 2.35)
    assert SILENT_S <= 2.35 - 2.1 and check.due(2.35)  # at once, not an interval later
    # In doubt, a check each interval until one passes.
    assert not check.due(2.35 + EXIT_CHECK_INTERVAL_S / 2)
    assert check.due(2.35 + EXIT_CHECK_INTERVAL_S)
    assert not check.result(False, "no answer")
    assert not check.result(True, "connected")
    assert not check.due(10.0)


def test_an_answer_within_the_silence_is_no_doubt() -> None:
    check = _proven(1.0)
    check.traffic(10, 10, 2.0)
    check.traffic(12, 10, 2.1)
    check.traffic(13, 11, 2.2)  # answered
    check.traffic(14, 11, 2.35)  # a new packet: its own silence starts here
    assert not check.due(2.35)
    check.traffic(14, 11, 2.45)
    assert not check.due(2.45)
    check.traffic(14, 11, 2.6)
    assert check.due(2.6)


def test_the_first_reading_is_where_counting_starts() -> None:
    check = _proven(1.0)
    check.traffic(1_000, 5, 2.0)  # whatever the interface counted before this exit
    check.traffic(1_000, 5, 9.0)
    assert not check.due(9.0)


def test_a_check_that_fails_after_a_later_one_passed_starts_no_streak() -> None:
    check = ExitCheck.granted("g", 0.0)
    assert check.due(0.5) and check.due(1.0)  # checks 1 and 2 overlap
    assert not check.result(True, "connected", 2)
    assert not check.result(False, "no answer", 1)  # lost in a blip, answered late
    assert check.failed == 1 and check.failed_in_a_row == 0
    # The next doubt needs two failures of its own.
    check.traffic(1, 1, 5.0)
    check.traffic(2, 1, 5.25)
    check.traffic(3, 1, 5.75)
    assert check.due(5.75)
    assert not check.result(False, "no answer", 3)
    assert check.due(6.25)
    assert check.result(False, "no answer", 4)


def test_status_has_the_same_keys_before_and_after_a_grant() -> None:
    shown = ExitCheck.granted("g", 0.0).status()
    assert shown.keys() == NO_CHECKS.keys()
    assert shown["gateway"] == "g" and shown["checks"] == 0
