"""Is this certificate a member of our mesh, now? (pure; ``now`` is Unix seconds)

Trust starts from the admin key(s) a node is configured with (its invite carries them): the
MeshDefinition must be signed by one of those. The definition then names every admin and
the mesh's prefixes. A membership certificate is trusted when it is signed by an admin, or
by a delegate whose delegation (signed by an admin, in scope, in time) comes with it:
cert <- delegation <- admin; delegates cannot delegate further.

Validity windows are [not_before, expires_at) widened by ``skew_s`` on both ends:
refused when ``now < not_before - skew_s`` or ``now >= expires_at + skew_s``. Revocations
are not widened: one is in force from ``now >= revoked_at``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshd.core.addressing import mesh_ipv6
from meshd.core.membership.cosigned import Cosigned
from meshd.core.membership.errors import MembershipError, Reason
from meshd.core.membership.messages import (
    DelegationCertificate,
    MembershipCertificate,
    MeshDefinition,
    RevocationTarget,
    Scope,
)
from meshd.core.membership.revocations import RevocationSet

DEFAULT_SKEW_S = 300


@dataclass(frozen=True)
class MeshTrust:
    """What a node trusts: a verified mesh definition and the revocations it knows.

    Build it with ``from_definition``, which checks the definition against the pinned
    admin keys; ``revocations`` is the node's live (mutable, gossiped) set.
    """

    definition: MeshDefinition
    revocations: RevocationSet
    # Other admins' signatures on the definition, as adopted (a threshold above 1 needs
    # them): what this node passes on with it (``signed_definition``).
    cosignatures: tuple[tuple[str, bytes], ...] = ()

    def __post_init__(self) -> None:
        d, r = self.definition, self.revocations
        judged = (r.mesh_id, r.admins, r.threshold, r.emergency)
        if judged != (d.mesh_id, frozenset(d.admins), d.threshold, d.emergency_threshold):
            raise ValueError("the revocation set belongs to another mesh definition")

    @classmethod
    def from_definition(
        cls,
        definition: MeshDefinition,
        anchors: Iterable[str],
        revocations: RevocationSet | None = None,
        cosignatures: tuple[tuple[str, bytes], ...] = (),
    ) -> MeshTrust:
        """Trust ``definition`` if it is signed by one of ``anchors`` (pinned admin node
        ids) and the signature verifies. ``cosignatures`` (other admins', as stored with
        it) are kept to pass on, not judged: the pinned key vouches for the definition."""
        anchors = frozenset(anchors)
        if definition.issuer not in anchors:
            raise MembershipError(
                Reason.UNKNOWN_ISSUER,
                f"mesh definition signed by {definition.issuer}, not a pinned admin key",
            )
        definition.verify_signature()
        if revocations is None:
            revocations = RevocationSet.of(definition)
        return cls(definition, revocations, cosignatures)

    @property
    def mesh_id(self) -> bytes:
        return self.definition.mesh_id

    @property
    def signed_definition(self) -> Cosigned[MeshDefinition]:
        return Cosigned(self.definition, self.cosignatures)

    @property
    def admins(self) -> tuple[str, ...]:
        return self.definition.admins


@dataclass(frozen=True)
class VerifiedMember:
    """A certificate that passed ``verify_membership``, with what callers need from it."""

    node_id: str
    name: str
    wireguard_public: bytes
    mesh_ipv4: ipaddress.IPv4Address
    mesh_ipv6: ipaddress.IPv6Address
    valid_until: int  # earliest expires_at along the chain (re-check before then)
    issuer: str
    delegation: DelegationCertificate | None
    certificate: MembershipCertificate


@dataclass(frozen=True)
class OwnMembership:
    """This node's own membership as loaded and checked (meshd.adapters.trust reads the files)."""

    trust: MeshTrust
    certificate: MembershipCertificate
    chain: tuple[DelegationCertificate, ...]  # the certificate's issuing delegation, if any
    delegation: DelegationCertificate | None  # what this node may issue (invites)
    member: VerifiedMember


def _check_mesh(what: str, mesh_id: bytes, trust: MeshTrust) -> None:
    if mesh_id != trust.mesh_id:
        raise MembershipError(
            Reason.WRONG_MESH, f"{what} is for mesh {mesh_id.hex()}, not {trust.mesh_id.hex()}"
        )


def _check_window(
    what: str,
    not_before: int,
    expires_at: int,
    now: float,
    skew_s: int,
    early: Reason,
    late: Reason,
) -> None:
    if now < not_before - skew_s:
        raise MembershipError(early, f"{what} is valid from {not_before}, now is {now}")
    if now >= expires_at + skew_s:
        raise MembershipError(late, f"{what} expired at {expires_at}, now is {now}")


def check_not_revoked(
    what: str, targets: Iterable[RevocationTarget], trust: MeshTrust, now: float
) -> None:
    for target in targets:
        revocation = trust.revocations.in_force(target, now)
        if revocation is not None:
            raise MembershipError(
                Reason.REVOKED, f"{what}: {target.describe()} revoked at {revocation.revoked_at}"
            )


def _check_skew(skew_s: int) -> None:
    if skew_s < 0:
        raise ValueError(f"skew_s must not be negative, got {skew_s}")


def verify_delegation(
    delegation: DelegationCertificate,
    trust: MeshTrust,
    now: float,
    scope: Scope,
    skew_s: int = DEFAULT_SKEW_S,
) -> DelegationCertificate:
    """Check a delegation for ``scope`` (e.g. Scope.INVITE when checking an invite)."""
    _check_skew(skew_s)
    _check_mesh("delegation", delegation.mesh_id, trust)
    delegation.verify_signature()
    if delegation.issuer not in trust.admins:
        raise MembershipError(
            Reason.UNKNOWN_ISSUER, f"delegation signed by {delegation.issuer}, not an admin"
        )
    _check_window(
        "delegation",
        delegation.not_before,
        delegation.expires_at,
        now,
        skew_s,
        Reason.DELEGATION_NOT_YET_VALID,
        Reason.DELEGATION_EXPIRED,
    )
    if int(scope) & ~int(delegation.scope):
        raise MembershipError(
            Reason.DELEGATION_SCOPE,
            f"delegation allows {delegation.scope!r}, {scope!r} is needed",
        )
    if not delegation.ipv4_pool.subnet_of(trust.definition.ipv4_prefix):
        raise MembershipError(
            Reason.BAD_ADDRESS,
            f"delegation pool {delegation.ipv4_pool} is outside {trust.definition.ipv4_prefix}",
        )
    check_not_revoked(
        "delegation",
        (RevocationTarget.certificate(delegation), RevocationTarget.node(delegation.delegate)),
        trust,
        now,
    )
    return delegation


def _resolve_issuer(
    cert: MembershipCertificate,
    chain: Sequence[DelegationCertificate],
    trust: MeshTrust,
    now: float,
    skew_s: int,
) -> DelegationCertificate | None:
    if cert.issuer in trust.admins:
        if chain:
            raise MembershipError(Reason.BAD_CHAIN, "certificate issued by an admin has a chain")
        return None
    if not chain:
        raise MembershipError(
            Reason.UNKNOWN_ISSUER, f"certificate signed by {cert.issuer}, not an admin"
        )
    if len(chain) > 1:
        raise MembershipError(
            Reason.BAD_CHAIN, f"chain has {len(chain)} delegations, at most 1 is allowed"
        )
    delegation = chain[0]
    if delegation.delegate != cert.issuer:
        raise MembershipError(
            Reason.UNKNOWN_ISSUER,
            f"certificate signed by {cert.issuer}, delegation is for {delegation.delegate}",
        )
    return verify_delegation(delegation, trust, now, Scope.MEMBERSHIP, skew_s)


def _check_addresses(
    cert: MembershipCertificate, trust: MeshTrust, delegation: DelegationCertificate | None
) -> None:
    prefix = trust.definition.ipv4_prefix
    if cert.mesh_ipv4 not in prefix or cert.mesh_ipv4 in (
        prefix.network_address,
        prefix.broadcast_address,
    ):
        raise MembershipError(
            Reason.BAD_ADDRESS, f"mesh IPv4 {cert.mesh_ipv4} is not a host address in {prefix}"
        )
    if delegation is not None and cert.mesh_ipv4 not in delegation.ipv4_pool:
        raise MembershipError(
            Reason.BAD_ADDRESS,
            f"mesh IPv4 {cert.mesh_ipv4} is outside the issuer's pool {delegation.ipv4_pool}",
        )
    expected = mesh_ipv6(trust.definition.ipv6_prefix, cert.node_id)
    if cert.mesh_ipv6 != expected:
        raise MembershipError(
            Reason.BAD_ADDRESS, f"mesh IPv6 {cert.mesh_ipv6}, the node id gives {expected}"
        )


def verify_membership(
    cert: MembershipCertificate,
    chain: Sequence[DelegationCertificate],
    trust: MeshTrust,
    now: float,
    skew_s: int = DEFAULT_SKEW_S,
) -> VerifiedMember:
    """Check ``cert`` (and its chain: empty, or the issuer's delegation) at ``now``.

    Checks run in this order, the first failure raising MembershipError: mesh id,
    signature, issuer (admin, or chain -> delegation checks), validity window, addresses,
    revocations of the node and of the certificate.
    """
    _check_skew(skew_s)
    _check_mesh("certificate", cert.mesh_id, trust)
    cert.verify_signature()
    delegation = _resolve_issuer(cert, chain, trust, now, skew_s)
    _check_window(
        "certificate",
        cert.not_before,
        cert.expires_at,
        now,
        skew_s,
        Reason.NOT_YET_VALID,
        Reason.EXPIRED,
    )
    _check_addresses(cert, trust, delegation)
    check_not_revoked(
        "certificate",
        (RevocationTarget.node(cert.node_id), RevocationTarget.certificate(cert)),
        trust,
        now,
    )
    valid_until = cert.expires_at
    if delegation is not None:
        valid_until = min(valid_until, delegation.expires_at)
    return VerifiedMember(
        node_id=cert.node_id,
        name=cert.name,
        wireguard_public=cert.wireguard_public,
        mesh_ipv4=cert.mesh_ipv4,
        mesh_ipv6=cert.mesh_ipv6,
        valid_until=valid_until,
        issuer=cert.issuer,
        delegation=delegation,
        certificate=cert,
    )
