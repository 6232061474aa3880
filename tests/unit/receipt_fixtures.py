"""A small mesh with fixed test keys for the receipts tests: an admin, a delegate and three
members (one certified through the delegate), and helpers that sign receipts and build
exports. Pure values, built at import; times are fixed, never the clock."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence

from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.core.membership import (
    SCOPE_ALL,
    DelegationCertificate,
    MembershipCertificate,
    MeshDefinition,
    Revocation,
    create_mesh,
    issue_delegation,
    issue_membership,
)
from meshd.core.receipts import Receipt, export_lines


def key(label: str) -> SigningKey:
    return SigningKey(hashlib.sha256(f"meshd receipts test {label}".encode()).digest())


def nid(signing_key: SigningKey) -> str:
    return node_id_from_public(bytes(signing_key.verify_key))


ADMIN = key("admin")
DELEGATE = key("delegate")
PROVIDER = key("provider")
CONSUMER = key("consumer")
LATE = key("late joiner")  # certified by the delegate
STRANGER = key("stranger")  # holds no certificate at all
T0 = 1_767_225_600
DAY = 86400
CERT_DAYS = 30  # every certificate: [T0, T0 + 30 days)

MESH = create_mesh(
    ADMIN,
    mesh_id=hashlib.sha256(b"receipts test mesh").digest()[:16],
    name="Receipts Test",
    ipv4_prefix=ipaddress.IPv4Network("10.88.0.0/16"),
    ipv6_prefix=ipaddress.IPv6Network("fd88::/48"),
    issued_at=T0,
)
OTHER_MESH = create_mesh(
    ADMIN,
    mesh_id=hashlib.sha256(b"another mesh").digest()[:16],
    name="Another",
    ipv4_prefix=ipaddress.IPv4Network("10.89.0.0/16"),
    ipv6_prefix=ipaddress.IPv6Network("fd89::/48"),
    issued_at=T0,
)
DELEGATION = issue_delegation(
    ADMIN,
    mesh=MESH,
    delegate=nid(DELEGATE),
    scope=SCOPE_ALL,
    ipv4_pool=ipaddress.IPv4Network("10.88.16.0/20"),
    not_before=T0,
    expires_at=T0 + 90 * DAY,
    serial=100,
)


def certify(
    member: SigningKey, ipv4: str, serial: int, mesh: MeshDefinition = MESH
) -> MembershipCertificate:
    return issue_membership(
        ADMIN,
        mesh=mesh,
        node_id=nid(member),
        name=f"member {serial}",
        wireguard_public=bytes(32),
        mesh_ipv4=ipaddress.IPv4Address(ipv4),
        not_before=T0,
        expires_at=T0 + CERT_DAYS * DAY,
        serial=serial,
    )


PROVIDER_CERT = certify(PROVIDER, "10.88.0.1", 1)
CONSUMER_CERT = certify(CONSUMER, "10.88.0.2", 2)
LATE_CERT = issue_membership(
    DELEGATE,
    mesh=MESH,
    node_id=nid(LATE),
    name="late",
    wireguard_public=bytes(32),
    mesh_ipv4=ipaddress.IPv4Address("10.88.16.3"),
    not_before=T0,
    expires_at=T0 + CERT_DAYS * DAY,
    serial=1,
    delegation=DELEGATION,
)
CERTIFICATES = (PROVIDER_CERT, CONSUMER_CERT, LATE_CERT)


def receipt(
    seq: int,
    relayed_for: int = 0,
    relayed_to: int = 0,
    *,
    provider: SigningKey = PROVIDER,
    consumer: SigningKey = CONSUMER,
    epoch: int = 1,
    at: int = T0 + DAY,
    mesh_id: bytes = MESH.mesh_id,
) -> Receipt:
    """A receipt signed by ``consumer``, valid over [at, at + 30]."""
    return Receipt(
        mesh_id=mesh_id,
        provider=nid(provider),
        consumer=nid(consumer),
        epoch=epoch,
        seq=seq,
        relayed_for_bytes=relayed_for,
        relayed_to_bytes=relayed_to,
        not_before=at,
        not_after=at + 30,
    ).sign(consumer)


def export(
    receipts: Sequence[Receipt],
    *,
    mesh: MeshDefinition = MESH,
    certificates: Sequence[MembershipCertificate] = CERTIFICATES,
    delegations: Sequence[DelegationCertificate] = (DELEGATION,),
    revocations: Sequence[Revocation] = (),
) -> list[str]:
    return list(export_lines(mesh, certificates, delegations, revocations, receipts))
