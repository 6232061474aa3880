"""Joining, the pure parts around ``redeem``: what a bootstrap node checks before it
forwards a request, what the joining node checks in the answer, which refusals are final.

The bootstrap node checks what needs no store (the invite's signature, issuer and time
against its own mesh; the request's proof and signature; that the request is the session's
own node's), so an altered or expired token is refused by the first node it reaches and
never travels through the mesh. The issuer checks all of it again in ``redeem``: it
trusts no bootstrap node.

The joining node trusts the invite it holds, nothing else: a grant is accepted only when
the mesh definition is signed by one of the admin keys it pinned (its config's, written
from the invite), for the invite's mesh and prefixes, and the certificate verifies under
it for exactly this node's keys, the invited name and address, from the invite's issuer.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshd.core.invites.errors import InviteError, InviteReason
from meshd.core.invites.invite import Invite
from meshd.core.invites.request import JoinRequest, decode_join_request
from meshd.core.invites.token import InviteToken, decode_invite, verify_invite
from meshd.core.membership import (
    DEFAULT_SKEW_S,
    Cosigned,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    MeshTrust,
    VerifiedMember,
    verify_membership,
)

# Refusals that a relay (a bootstrap node) gives of its own: another bootstrap node may
# do better, so the joining node tries the next one. Every InviteReason is final.
ISSUER_UNREACHABLE = "issuer_unreachable"  # the bootstrap node got no answer from it
JOIN_UNAVAILABLE = "join_unavailable"  # the bootstrap node cannot take joins now
STORE_FAILED = "store_failed"  # the issuer could not read or write its invite store
WRONG_NODE_ID = "wrong_node_id"  # the request is not for the session's own key
TRANSIENT = frozenset({ISSUER_UNREACHABLE, JOIN_UNAVAILABLE, STORE_FAILED})


def is_final(reason: str) -> bool:
    """Whether a refusal ends the join (the token will never do), or another bootstrap
    node (or a later try) may still grant it."""
    return reason not in TRANSIENT


def check_forwardable(
    invite_bytes: bytes,
    request_bytes: bytes,
    session_node_id: str,
    trust: MeshTrust,
    now: float,
    skew_s: int = DEFAULT_SKEW_S,
) -> tuple[Invite, JoinRequest]:
    """A join request as a bootstrap node receives it, checked as far as it can be without
    the issuer's store; InviteError with the first reason found."""
    invite = decode_invite(invite_bytes)
    request = decode_join_request(request_bytes)
    if request.node_id != session_node_id:
        raise InviteError(
            InviteReason.BAD_PROOF, f"the request is for {request.node_id}, not this session's key"
        )
    verify_invite(invite, now, admins=trust.admins, mesh_id=trust.mesh_id, skew_s=skew_s)
    request.check(invite)
    return invite, request


@dataclass(frozen=True)
class Joined:
    """A grant that passed ``accept_grant``: what the node stores to be a member."""

    definition: Cosigned[MeshDefinition]  # with other admins' signatures, as the issuer had it
    certificate: MembershipCertificate
    delegation: DelegationCertificate | None  # the issuer's, when a delegate issued it
    member: VerifiedMember


def _bad(message: str) -> InviteError:
    return InviteError(InviteReason.BAD_ANSWER, message)


def accept_grant(
    token: InviteToken,
    request: JoinRequest,
    admin_keys: tuple[str, ...],
    definition_bytes: bytes,
    certificate_bytes: bytes,
    delegation_bytes: bytes,
    now: float,
    skew_s: int = DEFAULT_SKEW_S,
) -> Joined:
    """The issuer's answer to ``request``, checked against the token and the admin keys
    the node pins; InviteError(bad_answer) naming the first thing that does not fit."""
    invite = token.invite
    try:
        signed = Cosigned.decode(definition_bytes, MeshDefinition)
        definition = signed.record
        trust = MeshTrust.from_definition(definition, admin_keys)
        certificate = MembershipCertificate.decode(certificate_bytes)
        delegation = DelegationCertificate.decode(delegation_bytes) if delegation_bytes else None
    except MembershipError as exc:
        raise _bad(f"{exc.reason}: {exc.message}") from None
    if (definition.mesh_id, definition.ipv4_prefix, definition.ipv6_prefix) != (
        invite.mesh_id,
        invite.ipv4_prefix,
        invite.ipv6_prefix,
    ):
        raise _bad("the mesh definition is not the invite's mesh")
    chain = (
        (delegation,) if delegation is not None and certificate.issuer not in trust.admins else ()
    )
    try:
        member = verify_membership(certificate, chain, trust, now, skew_s)
    except MembershipError as exc:
        raise _bad(f"the certificate does not verify ({exc.reason}: {exc.message})") from None
    wanted = (
        request.node_id,
        request.wireguard_public,
        invite.name,
        invite.mesh_ipv4,
        invite.issuer,
    )
    got = (
        member.node_id,
        member.wireguard_public,
        member.name,
        member.mesh_ipv4,
        certificate.issuer,
    )
    for what, want, have in zip(
        ("node id", "WireGuard key", "name", "mesh address", "issuer"), wanted, got, strict=True
    ):
        if want != have:
            raise _bad(f"the certificate's {what} is {have!r}, expected {want!r}")
    return Joined(signed, certificate, delegation if chain else None, member)
