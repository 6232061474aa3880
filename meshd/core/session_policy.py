"""Which message is legal on which session, in which state: one table (pure).

Three kinds of QUIC session carry meshd's messages (meshd.core.proto.session): a neighbour's
(meshd.core.control), an exit user's with a gateway (meshd.daemon.exits) and the relay between a
bootstrap node and an invite's issuer (meshd.daemon.joins). Each starts the same way: on a
version with CAPABILITIES that comes first, once (OPENING); then the peer shows its
certificate, checked at the mesh's time (UNVERIFIED until it verifies); a neighbour
session may instead carry one JOIN_REQUEST from a node without a certificate (JOINING).
What may come in each state is this module's table, modelled on aioquic's frame handler
table and the epochs it allows each frame in; the shells only dispatch what ``check``
let through, and close the session with the ``Refusal`` it raises.

Where a session is moves only by ``advance`` through ``TRANSITIONS`` (h11's ``_state.py``
is the model): a session comes up (``UP``, or ``UP_OPENING`` on a version with
CAPABILITIES), its CAPABILITIES come, its certificate verifies (``CERTIFIED``, again on a
renewal), a node without one asks to join, it closes. A neighbour's new session that
replaces a verified one (the neighbour restarted; the handshake proved the same key) is
``REOPENING`` then ``REPLACED``: what verified stays, with its Babel link, until this
session's certificate is checked, and the policy treats it as verified. An input a state
has no transition for is our own misuse and raises ValueError. The refusals:

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
from meshd.core.membership import (
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    OwnMembership,
    VerifiedMember,
    verify_membership,
)
from meshd.core.proto import session as m

Credential = tuple[MembershipCertificate, tuple[DelegationCertificate, ...]]


class Refusal(BadInput):
    """A peer's message is refused: ``reason`` is the code its session is closed with."""


class SessionKind(StrEnum):
    NEIGHBOUR = "neighbour"
    EXIT = "exit"
    JOIN_RELAY = "relay"


class SessionState(StrEnum):
    DOWN = "down"  # no session
    OPENING = "opening"  # CAPABILITIES awaited (meshd/2 on)
    REOPENING = "reopening"  # the same, on a session that replaced a verified one
    UNVERIFIED = "unverified"  # no certificate verified yet
    REPLACED = "replaced"  # a verified neighbour's new session: its certificate comes again
    JOINING = "joining"  # a node without a certificate sent JOIN_REQUEST (neighbour only)
    VERIFIED = "verified"


class SessionInput(StrEnum):
    UP = "up"  # a session came up on a version without CAPABILITIES (meshd/1)
    UP_OPENING = "up_opening"  # one came up that starts with CAPABILITIES
    CAPABILITIES = "capabilities"
    CERTIFIED = "certified"  # its certificate verified on this session (first, or renewed)
    JOIN_REQUEST = "join_request"
    CLOSED = "closed"  # the session closed, or we dropped the peer


_S, _I = SessionState, SessionInput
_FRESH = {_I.UP: _S.UNVERIFIED, _I.UP_OPENING: _S.OPENING, _I.CLOSED: _S.DOWN}
_KNOWN = {_I.UP: _S.REPLACED, _I.UP_OPENING: _S.REOPENING, _I.CLOSED: _S.DOWN}
TRANSITIONS: dict[SessionState, dict[SessionInput, SessionState]] = {
    _S.DOWN: _FRESH,
    _S.OPENING: {**_FRESH, _I.CAPABILITIES: _S.UNVERIFIED},
    _S.REOPENING: {**_KNOWN, _I.CAPABILITIES: _S.REPLACED},
    _S.UNVERIFIED: {**_FRESH, _I.CERTIFIED: _S.VERIFIED, _I.JOIN_REQUEST: _S.JOINING},
    _S.REPLACED: {**_KNOWN, _I.CERTIFIED: _S.VERIFIED},
    _S.JOINING: _FRESH,
    _S.VERIFIED: {**_KNOWN, _I.CERTIFIED: _S.VERIFIED},
}
# What the message table sees of the states it has no column for.
_AS_CHECKED = {_S.REOPENING: _S.OPENING, _S.REPLACED: _S.VERIFIED}


def coming_up(protocol: str) -> SessionInput:
    """How a session on ``protocol`` comes up: ``UP_OPENING`` on a version that starts with
    CAPABILITIES (each side's first message, ours included), else ``UP``."""
    return SessionInput.UP_OPENING if protocol in m.WITH_CAPABILITIES else SessionInput.UP


def advance(state: SessionState, given: SessionInput) -> SessionState:
    """The state after ``given``; ValueError when ``state`` has no such transition."""
    try:
        return TRANSITIONS[state][given]
    except KeyError:
        raise ValueError(f"no transition from {state} on {given}") from None


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
        **_verified(m.MapMessage, feature=m.Feature.MAP),
        **_verified(m.ProposalMessage, feature=m.Feature.PROPOSALS),
        **_verified(m.Release, m.ReleaseFetch, m.ReleasePart, feature=m.Feature.RELEASES),
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
    that announced ``features``. ValueError on a session that is down: nothing comes
    on one, and a shell that checks there is wrong."""
    if state is SessionState.DOWN:
        raise ValueError(f"a {type(msg).__name__} checked on a session that is down")
    state = _AS_CHECKED.get(state, state)
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


def check_membership(
    msg: m.Membership | m.RenewRequest,
    own: OwnMembership,
    node_id: str,
    now: float,
) -> tuple[VerifiedMember, Credential]:
    """The peer's certificate (and delegation) verified against our mesh at ``now`` (the
    mesh's time, every session's), for the node id its session authenticated; Refusal
    with the reason otherwise."""
    try:
        cert, chain = decode_credential(msg)
        member = verify_membership(cert, chain, own.trust, now)
    except MembershipError as exc:  # malformed, or does not verify
        raise Refusal(str(exc.reason), exc.message) from None
    if member.node_id != node_id:
        raise Refusal("wrong_node_id", f"certificate for {member.node_id}")
    return member, (cert, chain)


def decode_credential(msg: m.CertificateMessage) -> Credential:
    """The certificate and chain a message carries, parsed (MembershipError if not)."""
    cert = MembershipCertificate.decode(msg.certificate)
    chain = (DelegationCertificate.decode(msg.delegation),) if msg.delegation else ()
    return cert, chain
