"""The checks through an exit tunnel (meshd.core.routing.exit_check): when a gateway fails
us, and when one lost check does not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshd.core.routing.exit_check import (
    EXIT_CHECK_FAILURES,
    EXIT_CHECK_INTERVAL_S,
    MAX_OUT,
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
