"""The session policy (meshd.core.session_policy): one table says which message may come
on which kind of session in which state; the control plane (meshd.core.control), exits.py
and join.py only dispatch what it lets through."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.core.proto import session as m
from meshd.core.session_policy import (
    TABLE,
    TRANSITIONS,
    Refusal,
    SessionInput,
    SessionKind,
    SessionState,
    advance,
    check,
)

NEIGHBOUR, EXIT, RELAY = SessionKind.NEIGHBOUR, SessionKind.EXIT, SessionKind.JOIN_RELAY
OPENING, UNVERIFIED = SessionState.OPENING, SessionState.UNVERIFIED
JOINING, VERIFIED = SessionState.JOINING, SessionState.VERIFIED
ALL = tuple(m.FEATURES)

CLOCK = m.Clock(1)
MEMBERSHIP = m.Membership(b"c")
LINK = m.Link(51820)
NAME = m.Name(bytes(16), "n")
DIGEST = m.DirectoryDigest(0, bytes(32))
EXIT_REQUEST = m.ExitRequest()
JOIN = m.JoinRequestMessage(b"i", b"r")
CAPS = m.Capabilities(frozenset({"capabilities"}))


def reason(
    kind: SessionKind,
    state: SessionState,
    msg: m.SessionMessage,
    features: Collection[str] = ALL,
) -> str:
    try:
        check(kind, state, msg, features)
    except Refusal as exc:
        return exc.reason
    return "ok"


@pytest.mark.parametrize("kind", list(SessionKind))
def test_capabilities_come_first_and_once(kind: SessionKind) -> None:
    assert reason(kind, OPENING, CAPS) == "ok"
    assert reason(kind, OPENING, MEMBERSHIP) == "no_capabilities"
    assert reason(kind, VERIFIED, CAPS) == "unexpected_kind"
    assert reason(kind, UNVERIFIED, CAPS) == "unexpected_kind"


@pytest.mark.parametrize("kind", list(SessionKind))
def test_the_certificate_first_on_every_kind_and_again_when_renewed(kind: SessionKind) -> None:
    assert reason(kind, UNVERIFIED, MEMBERSHIP) == "ok"
    assert reason(kind, VERIFIED, MEMBERSHIP) == "ok"
    verified_only = [t for t, rule in TABLE[kind].items() if rule.states == {VERIFIED}]
    assert verified_only
    for kind_of_message in verified_only:  # only its type is looked at
        msg: Any = object.__new__(kind_of_message)
        assert reason(kind, UNVERIFIED, msg) == "not_verified", kind_of_message
        assert reason(kind, VERIFIED, msg) == "ok", kind_of_message


def test_a_neighbour_session() -> None:
    assert reason(NEIGHBOUR, UNVERIFIED, CLOCK) == "ok"  # before the certificate
    assert reason(NEIGHBOUR, UNVERIFIED, LINK) == "not_verified"
    assert reason(NEIGHBOUR, VERIFIED, LINK) == "ok"
    assert reason(NEIGHBOUR, VERIFIED, EXIT_REQUEST) == "unexpected_kind"
    assert reason(NEIGHBOUR, UNVERIFIED, EXIT_REQUEST) == "not_verified"  # certificate first
    # A node without a certificate: one JOIN_REQUEST, then nothing of a member's.
    assert reason(NEIGHBOUR, UNVERIFIED, JOIN) == "ok"
    assert reason(NEIGHBOUR, JOINING, JOIN) == "unexpected_kind"
    assert reason(NEIGHBOUR, VERIFIED, JOIN) == "unexpected_kind"
    assert reason(NEIGHBOUR, JOINING, MEMBERSHIP) == "not_verified"
    assert reason(NEIGHBOUR, JOINING, LINK) == "not_verified"


def test_a_kind_tied_to_a_feature_needs_the_peer_to_have_announced_it() -> None:
    for msg in (
        NAME,
        DIGEST,
        m.MapMessage(b"r"),
        m.Release(b"\x30"),
        m.ReleaseFetch(1, 0, 1),
        m.ProposalMessage(b"\x41"),
    ):
        assert reason(NEIGHBOUR, VERIFIED, msg) == "ok"
        assert reason(NEIGHBOUR, VERIFIED, msg, features=()) == "unexpected_kind"
        assert reason(NEIGHBOUR, UNVERIFIED, msg) == "not_verified"


def test_an_exit_session_carries_the_certificate_and_the_exit_kinds_only() -> None:
    assert reason(EXIT, UNVERIFIED, EXIT_REQUEST) == "not_verified"
    assert reason(EXIT, UNVERIFIED, LINK) == "not_verified"
    assert reason(EXIT, VERIFIED, EXIT_REQUEST) == "ok"
    for msg in (CLOCK, LINK, JOIN, NAME, m.BabelPacket(b"")):
        assert reason(EXIT, VERIFIED, msg) == "unexpected_kind", msg


def test_a_relay_session_carries_the_certificate_and_the_join_and_renew_kinds_only() -> None:
    assert reason(RELAY, UNVERIFIED, JOIN) == "not_verified"
    assert reason(RELAY, VERIFIED, JOIN) == "ok"
    assert reason(RELAY, VERIFIED, m.RenewRefused("A" * 43, "expired")) == "ok"
    for msg in (CLOCK, LINK, EXIT_REQUEST, NAME):
        assert reason(RELAY, VERIFIED, msg) == "unexpected_kind", msg


def test_every_session_message_kind_is_legal_somewhere() -> None:
    legal = {t for rules in TABLE.values() for t in rules} | {m.Capabilities}
    assert legal == set(get_args(m.SessionMessage))


def test_a_replaced_session_is_checked_as_verified_and_a_reopening_one_as_opening() -> None:
    link = m.Link(52000)
    check(NEIGHBOUR, SessionState.REPLACED, link, ())
    with pytest.raises(Refusal, match="before CAPABILITIES"):
        check(NEIGHBOUR, SessionState.REOPENING, link, ())


def test_nothing_is_checked_on_a_session_that_is_down() -> None:
    with pytest.raises(ValueError, match="down"):
        check(NEIGHBOUR, SessionState.DOWN, m.Link(52000), ())


# ---- the transition table, every state against every input (h2 does the same) ----------


@pytest.mark.parametrize("state", list(SessionState))
@pytest.mark.parametrize("step", list(SessionInput))
def test_every_state_and_input_is_a_transition_or_our_misuse(
    state: SessionState, step: SessionInput
) -> None:
    if step in TRANSITIONS[state]:
        assert advance(state, step) in SessionState
    else:
        with pytest.raises(ValueError, match="no transition"):
            advance(state, step)
    if step is SessionInput.CLOSED:
        assert advance(state, step) is SessionState.DOWN  # from anywhere


@settings(max_examples=500)
@given(st.lists(st.sampled_from(list(SessionInput)), max_size=30))
def test_a_session_is_verified_only_by_its_certificate(inputs: list[SessionInput]) -> None:
    """Whatever a peer makes happen: a session counts as verified (for the message table)
    only after a certificate verified on it or on the session it replaced, with no close
    between; join-only only from a fresh unverified session."""
    state, certified = SessionState.DOWN, False
    for step in inputs:
        if step not in TRANSITIONS[state]:
            continue  # the shells never feed it (the message table refuses first)
        before, state = state, advance(state, step)
        if step is SessionInput.CERTIFIED:
            certified = True
        elif step is SessionInput.CLOSED or (
            step in (SessionInput.UP, SessionInput.UP_OPENING) and not certified
        ):
            certified = False
        if state is SessionState.JOINING:
            assert before is SessionState.UNVERIFIED and not certified
        if state in (SessionState.VERIFIED, SessionState.REPLACED, SessionState.REOPENING):
            assert certified
        if state is SessionState.DOWN:
            certified = False
