"""Which message is legal on which session, in which state: one table (pure).

Three kinds of QUIC session carry meshd's messages (meshd.core.proto.session): a neighbour's
(meshd.mesh), an exit user's with a gateway (meshd.exits) and the relay between a
bootstrap node and an invite's issuer (meshd.join). Each starts the same way: on a
version with CAPABILITIES that comes first, once (OPENING); then the peer shows its
certificate, checked at the mesh's time (UNVERIFIED until it verifies); a neighbour
session may instead carry one JOIN_REQUEST from a node without a certificate (JOINING).
What may come in each state is this module's table, modelled on aioquic's frame handler
table and the epochs it allows each frame in; the shells only dispatch what ``check``
let through, and close the session with the ``Refusal`` it raises:

- ``no_capabilities``: anything but CAPABILITIES first on a version that has it;
- ``not_verified``: before the peer's certificate verified, anything not allowed before
  it (a kind the session never carries too: the certificate comes first);
- ``unexpected_kind``: from a verified peer, a kind this session never carries, or not in
  this state, or whose feature the peer did not announce; CAPABILITIES but first.

    check(SessionKind.EXIT, SessionState.VERIFIED, msg, features)  # or raises Refusal
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from meshd.core.errors import BadInput
from meshd.core.proto import session as m


class Refusal(BadInput):
    """A peer's message is refused: ``reason`` is the code its session is closed with."""


class SessionKind(StrEnum):
    NEIGHBOUR = "neighbour"
    EXIT = "exit"
    JOIN_RELAY = "relay"


class SessionState(StrEnum):
    OPENING = "opening"  # CAPABILITIES awaited (meshd/2 on)
    UNVERIFIED = "unverified"  # no certificate verified yet
    JOINING = "joining"  # a node without a certificate sent JOIN_REQUEST (neighbour only)
    VERIFIED = "verified"


@dataclass(frozen=True)
class Rule:
    states: frozenset[SessionState]
    feature: m.Feature | None = None  # sent only to peers that announced it


_AFTER_OPENING = frozenset({SessionState.UNVERIFIED, SessionState.JOINING, SessionState.VERIFIED})
_CERTIFYING = frozenset({SessionState.UNVERIFIED, SessionState.VERIFIED})  # again: renewed
_VERIFIED = frozenset({SessionState.VERIFIED})


def _verified(*kinds: type, feature: m.Feature | None = None) -> dict[type, Rule]:
    return dict.fromkeys(kinds, Rule(_VERIFIED, feature))


TABLE: dict[SessionKind, dict[type, Rule]] = {
    SessionKind.NEIGHBOUR: {
        m.Clock: Rule(_AFTER_OPENING),  # before the certificate: it is checked at that time
        m.MeshDefinitionMessage: Rule(_AFTER_OPENING),  # signed: anyone may pass it on
        m.Membership: Rule(_CERTIFYING),
        m.JoinRequestMessage: Rule(frozenset({SessionState.UNVERIFIED})),
        **_verified(m.BabelPacket, m.Link, m.Endpoints, m.Revocations, m.Gateway),
        **_verified(m.Claim, m.ReceiptMessage, m.ReceiptAck),
        **_verified(m.RenewRequest, m.RenewGranted, m.RenewRefused),
        **_verified(
            m.DirectoryDigest,
            m.DirectoryFingerprints,
            m.DirectoryEntries,
            feature=m.Feature.DIRECTORY,
        ),
        **_verified(m.Name, feature=m.Feature.PRIVATE_NAMES),
    },
    SessionKind.EXIT: {
        m.Membership: Rule(_CERTIFYING),
        **_verified(m.ExitRequest, m.ExitGrant, m.ExitRefused),
    },
    SessionKind.JOIN_RELAY: {
        m.Membership: Rule(_CERTIFYING),
        **_verified(m.JoinRequestMessage, m.JoinGranted, m.JoinRefused),
        **_verified(m.RenewRequest, m.RenewGranted, m.RenewRefused),
    },
}


def check(
    kind: SessionKind, state: SessionState, msg: m.SessionMessage, features: Collection[str]
) -> None:
    """Refusal unless ``msg`` may come on a ``kind`` session in ``state`` from a peer
    that announced ``features``."""
    name = type(msg).__name__
    if state is SessionState.OPENING:
        if not isinstance(msg, m.Capabilities):
            raise Refusal("no_capabilities", f"{name} before CAPABILITIES")
        return
    if isinstance(msg, m.Capabilities):
        raise Refusal("unexpected_kind", "CAPABILITIES again, or on a version without it")
    rule = TABLE[kind].get(type(msg))
    if rule is not None and state in rule.states:
        if rule.feature is not None and rule.feature not in features:
            raise Refusal("unexpected_kind", f"{name} without the feature {rule.feature}")
        return
    if state is not SessionState.VERIFIED and (
        rule is None or SessionState.VERIFIED in rule.states
    ):
        # Membership first: nothing else before the certificate, whatever it is.
        raise Refusal("not_verified", f"{name} before the certificate")
    raise Refusal("unexpected_kind", f"{name} on a {kind} session that is {state}")
