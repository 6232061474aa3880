"""Why an invite or a join request was refused: one exception, one reason code per cause."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meshd.core.errors import BadInput


class InviteReason(enum.StrEnum):
    MALFORMED = "malformed"  # not an invite token / not the canonical bytes
    BAD_SIGNATURE = "bad_signature"  # the issuer's (or the joining node's) signature
    BAD_SECRET = "bad_secret"  # the token's secret is not the one the invite commits to
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"  # issued in the future: one of the two clocks is wrong
    WRONG_MESH = "wrong_mesh"
    UNTRUSTED_ISSUER = "untrusted_issuer"  # neither an admin nor holding a fit delegation
    REVOKED = "revoked"
    BAD_PROOF = "bad_proof"  # the join request does not prove the secret for this invite
    NOT_ISSUER = "not_issuer"  # only the issuer redeems: forward the request to it
    UNKNOWN_INVITE = "unknown_invite"  # not in the issuer's store (e.g. the store was lost)
    ALREADY_REDEEMED = "already_redeemed"
    BAD_ANSWER = "bad_answer"  # the joining node's check: the grant does not fit its request


class InviteError(BadInput):
    """An invite token or join request from a person or a peer was refused. Callers show
    the message, or answer the joining node with a JoinRefusal; never fatal to the daemon."""

    reason: InviteReason


@dataclass(frozen=True)
class JoinRefusal:
    """The issuer's answer to a join request it does not grant."""

    reason: InviteReason
    message: str
