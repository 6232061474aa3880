"""The issuer's decision on a join request (pure; the store is passed in).

The issuer's store is the single truth about which invites it issued and which were
redeemed (meshd.adapters.invite_store keeps it in SQLite). ``redeem`` checks everything it can
first, issues the certificate, and only then claims the invite in the store, atomically:
of two requests for one invite, exactly one wins. The same node asking again (its answer
was lost) gets the same certificate back; anyone else is refused ``already_redeemed``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from meshd.core.invites.errors import InviteError, InviteReason, JoinRefusal
from meshd.core.invites.invite import Invite
from meshd.core.invites.issue import Issuer
from meshd.core.invites.request import JoinRequest
from meshd.core.invites.token import verify_invite
from meshd.core.membership import (
    DEFAULT_SKEW_S,
    SCOPE_ALL,
    MembershipCertificate,
    MembershipError,
    RevocationTarget,
    issue_membership,
    verify_delegation,
)

MEMBERSHIP_LIFETIME_S = 30 * 86400  # renewal before expiry is the daemon's (issue 7, part 3)


@dataclass(frozen=True)
class IssuedInvite:
    """What the issuer's store knows of one invite it issued."""

    invite_id: bytes
    name: str
    mesh_ipv4: ipaddress.IPv4Address
    expires_at: int
    redeemed_by: str | None = None  # node id
    certificate: bytes | None = None  # the certificate it got, canonical bytes


class InviteStore(Protocol):
    def lookup(self, invite_id: bytes) -> IssuedInvite | None: ...

    def mark_redeemed(self, invite_id: bytes, node_id: str, certificate: bytes, now: int) -> bool:
        """Record the redemption unless the invite is redeemed already: True if recorded.
        Atomic: of two concurrent calls for one invite, one returns False."""
        ...


def certificate_serial(invite: Invite) -> int:
    """The certificate's serial, from the random invite id: unique per issuer without a
    counter to keep, and it names the invite a certificate came from."""
    return int.from_bytes(invite.invite_id[:8], "big")


def _check_fits_mesh(invite: Invite, issuer: Issuer) -> None:
    """The joining node will pin the invite's admin keys and prefixes: the mesh definition
    it receives must still match them."""
    definition = issuer.trust.definition
    if definition.issuer not in invite.admins or (invite.ipv4_prefix, invite.ipv6_prefix) != (
        definition.ipv4_prefix,
        definition.ipv6_prefix,
    ):
        raise InviteError(
            InviteReason.WRONG_MESH, "the mesh definition changed since the invite was issued"
        )


def _check_not_revoked(request: JoinRequest, issuer: Issuer, now: float, skew_s: int) -> None:
    trust = issuer.trust
    if trust.revocations.in_force(RevocationTarget.node(request.node_id), now) is not None:
        raise InviteError(InviteReason.REVOKED, f"node {request.node_id} is revoked")
    if issuer.delegation is not None:
        try:
            verify_delegation(issuer.delegation, trust, now, SCOPE_ALL, skew_s)
        except MembershipError as exc:
            raise InviteError(InviteReason.UNTRUSTED_ISSUER, str(exc)) from None


def _again(record: IssuedInvite, request: JoinRequest) -> MembershipCertificate:
    if record.redeemed_by == request.node_id and record.certificate is not None:
        certificate = MembershipCertificate.decode(record.certificate)
        if certificate.wireguard_public == request.wireguard_public:
            return certificate
    raise InviteError(
        InviteReason.ALREADY_REDEEMED, f"invite {record.invite_id.hex()} was redeemed already"
    )


def _redeem(
    store: InviteStore,
    issuer: Issuer,
    invite: Invite,
    request: JoinRequest,
    now: float,
    lifetime_s: int,
    skew_s: int,
) -> MembershipCertificate:
    if invite.issuer != issuer.node_id:
        raise InviteError(
            InviteReason.NOT_ISSUER, f"issued by {invite.issuer}: only its issuer redeems it"
        )
    trust = issuer.trust
    verify_invite(invite, now, admins=trust.admins, mesh_id=trust.mesh_id, skew_s=skew_s)
    _check_fits_mesh(invite, issuer)
    request.check(invite)
    _check_not_revoked(request, issuer, now, skew_s)
    record = store.lookup(invite.invite_id)
    if record is None:
        raise InviteError(
            InviteReason.UNKNOWN_INVITE, f"invite {invite.invite_id.hex()} is not in the store"
        )
    if record.redeemed_by is not None:
        return _again(record, request)
    certificate = issue_membership(
        issuer.signing_key,
        mesh=trust.definition,
        node_id=request.node_id,
        name=invite.name,
        wireguard_public=request.wireguard_public,
        mesh_ipv4=invite.mesh_ipv4,
        # From the invite's time, not ours: the new node's clock already accepted that.
        not_before=invite.issued_at,
        expires_at=int(now) + lifetime_s,
        serial=certificate_serial(invite),
        delegation=issuer.delegation,
    )
    if store.mark_redeemed(invite.invite_id, request.node_id, certificate.encode(), int(now)):
        return certificate
    # Another request won the race: the same node's retry gets what it got.
    return _again(store.lookup(invite.invite_id) or record, request)


def redeem(
    store: InviteStore,
    issuer: Issuer,
    invite: Invite,
    request: JoinRequest,
    now: float,
    *,
    lifetime_s: int = MEMBERSHIP_LIFETIME_S,
    skew_s: int = DEFAULT_SKEW_S,
) -> MembershipCertificate | JoinRefusal:
    """The membership certificate for the node that sent ``request`` for ``invite``, or
    the reason it is refused. Checks, in order: this node issued the invite; the invite
    (mesh, signature, issuer, time); the mesh still matches it; the request's proof and
    signature; revocations; the store (known, not redeemed by another node)."""
    try:
        return _redeem(store, issuer, invite, request, now, lifetime_s, skew_s)
    except InviteError as exc:
        return JoinRefusal(exc.reason, exc.message)
