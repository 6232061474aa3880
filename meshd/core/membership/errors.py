"""Why a membership record was refused: one exception, one reason code per cause."""

from __future__ import annotations

import enum

from meshd.core.errors import BadInput


class Reason(enum.StrEnum):
    MALFORMED = "malformed"  # not the canonical bytes / not valid JSON fields
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    UNKNOWN_ISSUER = "unknown_issuer"  # signer is neither an admin nor vouched for by the chain
    BAD_CHAIN = "bad_chain"  # a chain where none belongs, or more than one delegation
    REVOKED = "revoked"
    WRONG_MESH = "wrong_mesh"
    BAD_ADDRESS = "bad_address"
    DELEGATION_EXPIRED = "delegation_expired"
    DELEGATION_NOT_YET_VALID = "delegation_not_yet_valid"
    DELEGATION_SCOPE = "delegation_scope"
    SHORT_OF_QUORUM = "short_of_quorum"  # fewer admins signed than the definition requires


class MembershipError(BadInput):
    """A certificate, delegation, revocation or mesh definition from a peer or a file was
    refused. Callers log ``reason`` and drop the record or close the session."""

    reason: Reason
