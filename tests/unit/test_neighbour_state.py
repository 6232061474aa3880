"""What status shows of a neighbour (meshd.mesh.Peer.state): one derivation, from its
session and the node's reading of its tunnel."""

from __future__ import annotations

import pytest

from meshd.core.session_policy import SessionState
from meshd.mesh import Peer


def peer(**fields: object) -> Peer:
    return Peer("n" * 43, "n", "mw0", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "liveness", "shown"),
    [
        ({}, None, "connecting"),  # nothing yet
        ({"last_refusal": "expired"}, None, "down"),  # refused, no session
        ({"last_refusal": "expired", "session_up": True}, None, "connecting"),
        ({"routing": True, "session_up": True}, "up", "up"),
        ({"session_up": True}, "up", "connecting"),  # a tunnel, no Babel link yet
        ({"routing": True, "session_up": True}, "down", "down"),  # the tunnel went silent
        ({"session_up": True}, "connecting", "connecting"),  # never heard through it
        ({"routing": True, "session_up": True}, None, "connecting"),  # no tunnel
        ({"last_refusal": "revoked"}, "up", "down"),
    ],
)
def test_state(fields: dict[str, object], liveness: str | None, shown: str) -> None:
    assert peer(**fields).state(liveness) == shown


def test_session_state() -> None:
    assert peer(awaiting_capabilities=True).session_state is SessionState.OPENING
    assert peer(joining=True).session_state is SessionState.JOINING
    assert peer().session_state is SessionState.UNVERIFIED
