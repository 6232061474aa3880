"""A neighbour's state (meshd.core.control.peer.Peer): what status shows of it, one
derivation from its session and the node's reading of its tunnel; and where its session
is, moved only by the session policy's transition table."""

from __future__ import annotations

import pytest

from meshd.core.control.peer import Peer
from meshd.core.session_policy import SessionInput, SessionState

UP = SessionState.UNVERIFIED  # a session, its certificate not yet verified


def peer(**fields: object) -> Peer:
    return Peer("n" * 43, "n", "mw0", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "liveness", "shown"),
    [
        ({}, None, "connecting"),  # nothing yet
        ({"last_refusal": "expired"}, None, "down"),  # refused, no session
        ({"last_refusal": "expired", "session_state": UP}, None, "connecting"),
        ({"routing": True, "session_state": UP}, "up", "up"),
        ({"session_state": UP}, "up", "connecting"),  # a tunnel, no Babel link yet
        ({"routing": True, "session_state": UP}, "down", "down"),  # the tunnel went silent
        ({"session_state": UP}, "connecting", "connecting"),  # never heard through it
        ({"routing": True, "session_state": UP}, None, "connecting"),  # no tunnel
        ({"last_refusal": "revoked"}, "up", "down"),
    ],
)
def test_state(fields: dict[str, object], liveness: str | None, shown: str) -> None:
    assert peer(**fields).state(liveness) == shown


def test_a_session_moves_through_the_table() -> None:
    p = peer()
    assert not p.session_up
    p.advance(SessionInput.UP_OPENING)
    assert p.session_state is SessionState.OPENING
    p.advance(SessionInput.CAPABILITIES)
    p.advance(SessionInput.JOIN_REQUEST)
    assert p.joining and p.session_up and not p.is_neighbour
    p.advance(SessionInput.CLOSED)
    assert p.session_state is SessionState.DOWN


def test_a_verified_neighbours_new_session_stays_verified_until_it_shows_its_certificate() -> None:
    p = peer(session_state=SessionState.VERIFIED)
    p.advance(SessionInput.UP_OPENING)
    assert p.session_state is SessionState.REOPENING
    p.advance(SessionInput.CAPABILITIES)
    assert p.session_state is SessionState.REPLACED
    p.advance(SessionInput.CERTIFIED)
    assert p.session_state is SessionState.VERIFIED


def test_an_input_the_state_has_no_transition_for_is_our_misuse() -> None:
    with pytest.raises(ValueError, match="no transition"):
        peer().advance(SessionInput.CERTIFIED)  # no session, nothing to certify
    with pytest.raises(ValueError, match="no transition"):
        peer(session_state=SessionState.VERIFIED).advance(SessionInput.JOIN_REQUEST)
