"""Making signed records (pure: keys, fields and times in; a signed record out).

These run on our own node with our own key, so a wrong argument is our misuse and raises
ValueError at once; nothing here is input from a peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, TypeVar

from nacl.signing import SigningKey

from meshd.core.addressing import mesh_ipv6
from meshd.core.keys import node_id_from_public
from meshd.core.membership.messages import (
    NO_SIGNATURE,
    DelegationCertificate,
    MembershipCertificate,
    MeshDefinition,
    Revocation,
    RevocationTarget,
    Scope,
    admin_order,
)

M = TypeVar("M", MeshDefinition, MembershipCertificate, DelegationCertificate, Revocation)


def _signer(signing_key: SigningKey) -> str:
    return node_id_from_public(bytes(signing_key.verify_key))


def _require_admin(signing_key: SigningKey, mesh: MeshDefinition, what: str) -> None:
    signer = _signer(signing_key)
    if signer not in mesh.admins:
        raise ValueError(f"{signer} is not an admin of mesh {mesh.mesh_id.hex()}: cannot {what}")


def _signed(cls: type[M], signing_key: SigningKey, **fields: Any) -> M:
    """A ``cls`` record of ``fields``, issued and signed by the holder of ``signing_key``."""
    return cls(**fields, issuer=_signer(signing_key), signature=NO_SIGNATURE).sign(signing_key)


def create_mesh(
    signing_key: SigningKey,
    *,
    mesh_id: bytes,
    name: str,
    ipv4_prefix: ipaddress.IPv4Network,
    ipv6_prefix: ipaddress.IPv6Network,
    issued_at: int,
    other_admins: Iterable[str] = (),
    serial: int = 1,
    threshold: int = 1,
    emergency_threshold: int = 0,
) -> MeshDefinition:
    """A mesh definition signed by ``signing_key``, which becomes one of its admins.
    ``mesh_id`` is 16 random bytes the caller draws once (``secrets.token_bytes(16)``);
    ``threshold``: how many admins must sign the definition that follows this one (and a
    revocation); ``emergency_threshold``: how many an emergency revocation needs (0: none)."""
    return _signed(
        MeshDefinition,
        signing_key,
        mesh_id=mesh_id,
        name=name,
        ipv4_prefix=ipv4_prefix,
        ipv6_prefix=ipv6_prefix,
        admins=admin_order([_signer(signing_key), *other_admins]),
        serial=serial,
        issued_at=issued_at,
        threshold=threshold,
        emergency_threshold=emergency_threshold,
    )


def issue_membership(
    signing_key: SigningKey,
    *,
    mesh: MeshDefinition,
    node_id: str,
    name: str,
    wireguard_public: bytes,
    mesh_ipv4: ipaddress.IPv4Address,
    not_before: int,
    expires_at: int,
    serial: int,
    delegation: DelegationCertificate | None = None,
) -> MembershipCertificate:
    """A membership certificate for ``node_id``, its IPv6 derived from the mesh prefix.

    Signed by an admin, or by a delegate passing its ``delegation`` (membership scope;
    ``mesh_ipv4`` from its pool). Freshness of the delegation is the verifier's check.
    """
    signer = _signer(signing_key)
    prefix = mesh.ipv4_prefix
    if mesh_ipv4 not in prefix or mesh_ipv4 in (prefix.network_address, prefix.broadcast_address):
        raise ValueError(f"{mesh_ipv4} is not a host address in the mesh prefix {prefix}")
    if delegation is None:
        _require_admin(signing_key, mesh, "issue a membership certificate without a delegation")
    else:
        if delegation.delegate != signer or delegation.mesh_id != mesh.mesh_id:
            raise ValueError("the delegation is not for this signing key and mesh")
        if Scope.MEMBERSHIP not in delegation.scope:
            raise ValueError("the delegation does not allow issuing membership certificates")
        if mesh_ipv4 not in delegation.ipv4_pool:
            raise ValueError(f"{mesh_ipv4} is outside the delegation's pool")
    return _signed(
        MembershipCertificate,
        signing_key,
        mesh_id=mesh.mesh_id,
        node_id=node_id,
        name=name,
        wireguard_public=wireguard_public,
        mesh_ipv4=mesh_ipv4,
        mesh_ipv6=mesh_ipv6(mesh.ipv6_prefix, node_id),
        not_before=not_before,
        expires_at=expires_at,
        serial=serial,
    )


def issue_delegation(
    signing_key: SigningKey,
    *,
    mesh: MeshDefinition,
    delegate: str,
    scope: Scope,
    not_before: int,
    expires_at: int,
    serial: int,
    ipv4_pool: ipaddress.IPv4Network | None = None,
) -> DelegationCertificate:
    """An admin's delegation; ``ipv4_pool`` defaults to the whole mesh prefix (fine for
    invite-only delegations; give membership delegates disjoint pools)."""
    _require_admin(signing_key, mesh, "delegate")
    pool = mesh.ipv4_prefix if ipv4_pool is None else ipv4_pool
    if not pool.subnet_of(mesh.ipv4_prefix):
        raise ValueError(f"pool {pool} is outside the mesh prefix {mesh.ipv4_prefix}")
    return _signed(
        DelegationCertificate,
        signing_key,
        mesh_id=mesh.mesh_id,
        delegate=delegate,
        scope=scope,
        ipv4_pool=pool,
        not_before=not_before,
        expires_at=expires_at,
        serial=serial,
    )


def revoke(
    signing_key: SigningKey,
    *,
    mesh: MeshDefinition,
    target: RevocationTarget,
    revoked_at: int,
    emergency: bool = False,
) -> Revocation:
    """An admin's revocation of ``target`` (RevocationTarget.node(...) or .certificate(...))
    in force from ``revoked_at``; backdate it to when a key may have leaked. ``emergency``:
    one that takes the definition's emergency threshold of signatures (a node's only)."""
    _require_admin(signing_key, mesh, "revoke")
    return _signed(
        Revocation,
        signing_key,
        mesh_id=mesh.mesh_id,
        target=target,
        revoked_at=revoked_at,
        emergency=emergency,
    )
