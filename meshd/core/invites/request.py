"""The join request: the joining node's new keys, proving the invite's secret (pure).

Canonical bytes (type tag JOIN_REQUEST, version 1), 241 bytes::

    field  name              kind       bytes
      1    invite_hash       fixed(32)  SHA-256 of the invite's canonical bytes
      2    wireguard_public  fixed(32)  the new node's WireGuard key
      3    issuer            fixed(32)  the new node's identity key (its node id): it
                                        issues this request, and the certificate names it
      4    invite_proof      fixed(64)  Ed25519 by the invite's one-time key (the token's
                                        secret) over PROOF_DOMAIN + fields 1..3
      5    signature         fixed(64)  Ed25519 by the new identity key over
                                        DOMAIN + fields 1..4

The proof binds the secret to this invite and to these keys: a bootstrap node that
forwards the request learns nothing it could redeem for keys of its own, and a copy of the
request can only ever earn a certificate for the keys inside it. The second signature
shows that the requester holds the identity key it wants certified.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Annotated, ClassVar

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from meshd.core.invites.errors import InviteError, InviteReason
from meshd.core.invites.invite import Invite, hex_bytes
from meshd.core.invites.token import InviteToken
from meshd.core.keys import node_id_from_public
from meshd.core.membership import MembershipError
from meshd.core.membership.canonical import MessageType
from meshd.core.membership.messages import (
    NO_SIGNATURE,
    NODE_ID,
    SIGNATURE,
    WIREGUARD_KEY,
    SignedMessage,
)

PROOF_DOMAIN = b"meshd-join-proof-v1\0"


def invite_hash(invite: Invite) -> bytes:
    return hashlib.sha256(invite.encode()).digest()


@dataclass(frozen=True)
class JoinRequest(SignedMessage):
    TYPE: ClassVar[MessageType] = MessageType.JOIN_REQUEST
    DOMAIN: ClassVar[bytes] = b"meshd-join-request-v1\0"
    JSON_TYPE: ClassVar[str] = "join_request"

    invite_hash: Annotated[bytes, hex_bytes(32)]
    wireguard_public: Annotated[bytes, WIREGUARD_KEY]
    issuer: Annotated[str, NODE_ID]
    invite_proof: Annotated[bytes, SIGNATURE]
    signature: Annotated[bytes, SIGNATURE]

    @property
    def node_id(self) -> str:
        return self.issuer

    def proof_bytes(self) -> bytes:
        """What the invite key signs: the proof domain, then fields 1..3 as encoded."""
        return PROOF_DOMAIN + self._canonical(self.FIELDS[:3])

    def check(self, invite: Invite) -> JoinRequest:
        """Is this a request for ``invite``, proving its secret, signed by the new key?
        InviteError (bad_proof, bad_signature) if not."""
        if self.invite_hash != invite_hash(invite):
            raise InviteError(InviteReason.BAD_PROOF, "the request is for another invite")
        try:
            VerifyKey(invite.invite_key).verify(self.proof_bytes(), self.invite_proof)
        except CryptoError:
            raise InviteError(
                InviteReason.BAD_PROOF, "the proof was not made with the invite's secret"
            ) from None
        try:
            self.verify_signature()
        except MembershipError as exc:
            raise InviteError(InviteReason.BAD_SIGNATURE, exc.message) from None
        return self


def join_request(
    token: InviteToken, identity_key: SigningKey, wireguard_public: bytes
) -> JoinRequest:
    """The request the joining node sends, for its new keys (it holds the token)."""
    unsigned = JoinRequest(
        invite_hash=invite_hash(token.invite),
        wireguard_public=wireguard_public,
        issuer=node_id_from_public(bytes(identity_key.verify_key)),
        invite_proof=NO_SIGNATURE,
        signature=NO_SIGNATURE,
    )
    proof = bytes(token.signing_key.sign(unsigned.proof_bytes()).signature)
    return replace(unsigned, invite_proof=proof).sign(identity_key)


def decode_join_request(data: bytes) -> JoinRequest:
    """A join request from a peer's bytes; InviteError(malformed) if they are not one.
    Its proof and signature are checked against the invite by ``JoinRequest.check``."""
    try:
        return JoinRequest.decode(data)
    except MembershipError as exc:
        raise InviteError(InviteReason.MALFORMED, exc.message) from None
