"""Certificate renewal (pure): when a node asks for a fresh certificate, what an issuer
accepts and issues, and what the node accepts back. ``now`` is Unix seconds.

An expired certificate is the top cause of unattended nodes dropping off a mesh (Nebula,
Tailscale), so a node asks well before: once less than a third of its validity is left, or
a configured margin. An issuer (an admin, or a delegate whose pool holds the address)
renews a certificate that verifies now, or that expired less than ``grace_s`` ago and is
otherwise sound, and is not revoked: the same node id, name, WireGuard key and addresses,
a new window of the same length (a delegate's ends with its delegation). Nothing else may
change: a renewal is not a way to move a node or change its keys.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from nacl.signing import SigningKey

from meshd.core.errors import BadInput
from meshd.core.keys import node_id_from_public
from meshd.core.membership.errors import MembershipError, Reason
from meshd.core.membership.issue import issue_membership
from meshd.core.membership.messages import (
    DelegationCertificate,
    MembershipCertificate,
    RevocationTarget,
    Scope,
)
from meshd.core.membership.verify import (
    DEFAULT_SKEW_S,
    MeshTrust,
    VerifiedMember,
    check_not_revoked,
    verify_delegation,
    verify_membership,
)

DEFAULT_GRACE_S = 7 * 86400  # an issuer still renews a certificate this long after expiry
RENEW_SHARE = 3  # ask once less than 1/RENEW_SHARE of the validity is left


class RenewalReason(enum.StrEnum):
    CANNOT_ISSUE = "cannot_issue"  # this issuer may not sign that address (now)
    BAD_RENEWAL = "bad_renewal"  # the fresh certificate is not the old one renewed


class RenewalError(BadInput):
    """A renewal refused for a reason of its own (the certificate itself verified; its
    MembershipError reasons are raised as they are)."""

    reason: RenewalReason


def renew_at(cert: MembershipCertificate, margin_s: int = 0) -> int:
    """When a node starts asking for a fresh ``cert``: ``margin_s`` before it expires, or
    with a third of its validity left when no margin is set (0)."""
    if margin_s < 0:
        raise ValueError(f"margin_s must not be negative, got {margin_s}")
    lifetime = cert.expires_at - cert.not_before
    margin = min(margin_s, lifetime) if margin_s else lifetime // RENEW_SHARE
    return cert.expires_at - margin


@dataclass(frozen=True)
class RenewalIssuer:
    """A node that can renew certificates: an admin (no delegation), or a delegate with a
    membership delegation, for the addresses of its pool."""

    signing_key: SigningKey
    trust: MeshTrust
    delegation: DelegationCertificate | None

    def __repr__(self) -> str:  # never print a private key
        return f"RenewalIssuer(node_id={self.node_id!r})"

    @property
    def node_id(self) -> str:
        return node_id_from_public(bytes(self.signing_key.verify_key))

    def covers(self, cert: MembershipCertificate) -> bool:
        """Whether this issuer may sign ``cert``'s address at all (before any time check)."""
        if self.node_id in self.trust.admins:
            return True
        return (
            self.delegation is not None
            and self.delegation.delegate == self.node_id
            and Scope.MEMBERSHIP in self.delegation.scope
            and cert.mesh_ipv4 in self.delegation.ipv4_pool
        )


def check_renewable(
    cert: MembershipCertificate,
    chain: Sequence[DelegationCertificate],
    trust: MeshTrust,
    now: float,
    grace_s: int = DEFAULT_GRACE_S,
    skew_s: int = DEFAULT_SKEW_S,
) -> VerifiedMember:
    """``cert`` as an issuer sees a renewal request for it: valid now, or expired less than
    ``grace_s`` ago and valid just before it expired (signature, chain, addresses), and in
    either case not revoked now. MembershipError with the first reason otherwise."""
    try:
        return verify_membership(cert, chain, trust, now, skew_s)
    except MembershipError as exc:
        late = exc.reason in (Reason.EXPIRED, Reason.DELEGATION_EXPIRED)
        if not late or now >= cert.expires_at + skew_s + grace_s:
            raise
    # Judged as it stood in its last second, then against today's revocations.
    member = verify_membership(cert, chain, trust, cert.expires_at - 1, skew_s)
    targets = [RevocationTarget.node(cert.node_id), RevocationTarget.certificate(cert)]
    targets += [RevocationTarget.certificate(d) for d in chain]
    check_not_revoked("certificate", targets, trust, now)
    return member


def renew(
    issuer: RenewalIssuer,
    cert: MembershipCertificate,
    chain: Sequence[DelegationCertificate],
    now: float,
    serial: int,
    grace_s: int = DEFAULT_GRACE_S,
    skew_s: int = DEFAULT_SKEW_S,
) -> MembershipCertificate:
    """``cert`` issued again by ``issuer`` from ``now`` for as long as it was valid before.
    ``serial`` is a random u64 the caller draws (unique per issuer without a counter).
    MembershipError when the certificate does not qualify, RenewalError when this issuer
    does not."""
    if not issuer.covers(cert):
        raise RenewalError(
            RenewalReason.CANNOT_ISSUE, f"{issuer.node_id} may not issue for {cert.mesh_ipv4}"
        )
    member = check_renewable(cert, chain, issuer.trust, now, grace_s, skew_s)
    start = int(now)
    expires_at = start + (cert.expires_at - cert.not_before)
    if issuer.delegation is not None:
        verify_delegation(issuer.delegation, issuer.trust, now, Scope.MEMBERSHIP, skew_s)
        expires_at = min(expires_at, issuer.delegation.expires_at)
        if expires_at <= start:
            raise RenewalError(
                RenewalReason.CANNOT_ISSUE, f"the issuer's delegation ends at {expires_at}"
            )
    return issue_membership(
        issuer.signing_key,
        mesh=issuer.trust.definition,
        node_id=member.node_id,
        name=member.name,
        wireguard_public=member.wireguard_public,
        mesh_ipv4=member.mesh_ipv4,
        not_before=start,
        expires_at=expires_at,
        serial=serial,
        delegation=issuer.delegation,
    )


def accept_renewal(
    current: MembershipCertificate,
    fresh: MembershipCertificate,
    chain: Sequence[DelegationCertificate],
    trust: MeshTrust,
    now: float,
    skew_s: int = DEFAULT_SKEW_S,
) -> VerifiedMember:
    """The fresh certificate a node was granted: it verifies now, certifies exactly what
    ``current`` did, and lasts longer. MembershipError if it does not verify,
    RenewalError(bad_renewal) naming what differs."""
    member = verify_membership(fresh, chain, trust, now, skew_s)
    for what in ("node_id", "name", "wireguard_public", "mesh_ipv4", "mesh_ipv6"):
        if getattr(fresh, what) != getattr(current, what):
            raise RenewalError(RenewalReason.BAD_RENEWAL, f"the renewed certificate changes {what}")
    if fresh.expires_at <= current.expires_at:
        raise RenewalError(
            RenewalReason.BAD_RENEWAL,
            f"the renewed certificate ends at {fresh.expires_at}, not after {current.expires_at}",
        )
    return member
