"""Regenerate the membership golden vectors: ``python3 tests/golden/membership/make_vectors.py``.

Every key is derived from a fixed string and Ed25519 signatures are deterministic, so the
output never changes unless the encoding does;
tests/unit/core/membership/test_membership_golden.py checks that the files here are exactly
what this script produces.
"""

from __future__ import annotations

import hashlib
import ipaddress
import sys
from pathlib import Path

from nacl.public import PrivateKey
from nacl.signing import SigningKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # run as a script from anywhere

from meshd.adapters.identity import node_id_from_public  # noqa: E402
from meshd.core.membership import (  # noqa: E402
    SCOPE_ALL,
    Cosigned,
    MeshDefinition,
    Message,
    RevocationTarget,
    create_mesh,
    issue_delegation,
    issue_membership,
    revoke,
)
from meshd.core.membership.proposals import Proposal  # noqa: E402
from meshd.core.membership.rotation import rotate_mesh  # noqa: E402
from tests.golden import vectors  # noqa: E402


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


ADMIN = SigningKey(seed("meshd test admin"))
ADMIN_2 = SigningKey(seed("meshd test admin 2"))
DELEGATE = SigningKey(seed("meshd test delegate"))
NODE = SigningKey(seed("meshd test node"))
JOINER = SigningKey(seed("meshd test joiner"))
NODE_WG = bytes(PrivateKey(seed("meshd test node wireguard")).public_key)
JOINER_WG = bytes(PrivateKey(seed("meshd test joiner wireguard")).public_key)
MESH_ID = seed("meshd test mesh id")[:16]
IPV4_PREFIX = ipaddress.IPv4Network("10.77.0.0/16")
IPV6_PREFIX = ipaddress.IPv6Network("fd6d:6573:6864::/48")
DELEGATE_POOL = ipaddress.IPv4Network("10.77.16.0/20")
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
YEAR = 365 * 86400


def node_id(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


def build() -> dict[str, tuple[str, Message | Cosigned[MeshDefinition]]]:
    """File stem -> (description, message)."""
    mesh = create_mesh(
        ADMIN,
        mesh_id=MESH_ID,
        name="Test Mesh",
        ipv4_prefix=IPV4_PREFIX,
        ipv6_prefix=IPV6_PREFIX,
        issued_at=T0,
        other_admins=[node_id(ADMIN_2)],
    )
    member = issue_membership(
        ADMIN,
        mesh=mesh,
        node_id=node_id(NODE),
        name="Bäckerei Nord",
        wireguard_public=NODE_WG,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.5"),
        not_before=T0,
        expires_at=T0 + YEAR,
        serial=1,
    )
    delegation = issue_delegation(
        ADMIN,
        mesh=mesh,
        delegate=node_id(DELEGATE),
        scope=SCOPE_ALL,
        ipv4_pool=DELEGATE_POOL,
        not_before=T0,
        expires_at=T0 + 90 * 86400,
        serial=2,
    )
    delegated = issue_membership(
        DELEGATE,
        mesh=mesh,
        node_id=node_id(JOINER),
        name="joiner",
        wireguard_public=JOINER_WG,
        mesh_ipv4=ipaddress.IPv4Address("10.77.16.7"),
        not_before=T0 + 3600,
        expires_at=T0 + 30 * 86400,
        serial=1,
        delegation=delegation,
    )
    quorum = rotate_mesh(ADMIN, mesh, threshold=2, emergency_threshold=1, issued_at=T0 + 86400)
    with_node = rotate_mesh(ADMIN, quorum, add=[node_id(NODE)], issued_at=T0 + 2 * 86400)
    return {
        "mesh_definition": (
            "mesh definition with two admins, signed by the first test admin",
            mesh,
        ),
        "mesh_definition_quorum": (
            "serial 2 of the mesh: both admins must sign the next change or a revocation "
            "(threshold 2), one an emergency revocation (emergency_threshold 1); encoding "
            "version 2",
            quorum,
        ),
        "cosigned_definition": (
            "serial 3 (the test node an admin too), issued by the first test admin and "
            "co-signed by the second, as serial 2 requires",
            Cosigned(with_node).cosign(ADMIN_2),
        ),
        "membership_admin": (
            "membership certificate issued directly by the test admin (UTF-8 name)",
            member,
        ),
        "delegation": (
            "delegation from the test admin to the test delegate: invites and membership, "
            "pool 10.77.16.0/20",
            delegation,
        ),
        "membership_delegated": (
            "membership certificate issued by the test delegate under the delegation vector",
            delegated,
        ),
        "revocation_node": (
            "admin revokes the test node's node id",
            revoke(
                ADMIN_2,
                mesh=mesh,
                target=RevocationTarget.node(node_id(NODE)),
                revoked_at=T0 + 86400,
            ),
        ),
        "revocation_membership": (
            "admin revokes the delegated membership certificate by (issuer, serial)",
            revoke(
                ADMIN,
                mesh=mesh,
                target=RevocationTarget.certificate(delegated),
                revoked_at=T0 + 2 * 86400,
            ),
        ),
        "revocation_emergency": (
            "under serial 2, one admin's emergency revocation of the test node (encoding "
            "version 2)",
            revoke(
                ADMIN_2,
                mesh=quorum,
                target=RevocationTarget.node(node_id(NODE)),
                revoked_at=T0 + 4 * 86400,
                emergency=True,
            ),
        ),
        "proposal_revocation": (
            "under serial 2, the first test admin's proposal to revoke the test node, which "
            "the second withdrew from (one withdrawal signature)",
            Proposal(
                Cosigned(
                    revoke(
                        ADMIN,
                        mesh=quorum,
                        target=RevocationTarget.node(node_id(NODE)),
                        revoked_at=T0 + 5 * 86400,
                    )
                )
            ).withdraw(ADMIN_2),
        ),
        "revocation_delegation": (
            "admin revokes the delegation by (issuer, serial)",
            revoke(
                ADMIN,
                mesh=mesh,
                target=RevocationTarget.certificate(delegation),
                revoked_at=T0 + 3 * 86400,
            ),
        ),
    }


def render(description: str, message: Message | Cosigned[MeshDefinition] | Proposal) -> str:
    return vectors.render(description, message.encode().hex(), message.to_json())


def rendered() -> dict[str, str]:
    """File name -> exact file text."""
    return {f"{stem}.json": render(*entry) for stem, entry in build().items()}


def main() -> None:
    vectors.write(HERE, rendered())


if __name__ == "__main__":
    main()
