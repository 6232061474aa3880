"""Regenerate the invite golden vectors: ``python3 tests/golden/invites/make_vectors.py``.

The keys, the mesh and the delegation are the membership vectors' (fixed strings, and
Ed25519 signatures are deterministic), so the output never changes unless the encoding
does; tests/unit/core/invites/test_invite_golden.py checks that the files here are exactly what this
script produces.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # run as a script from anywhere

from meshd.core.invites import BootstrapEndpoint, InviteToken, Issuer, issue_invite, join_request  # noqa: E402
from meshd.core.membership import DelegationCertificate, MeshDefinition, MeshTrust  # noqa: E402
from tests.golden import vectors  # noqa: E402
from tests.golden.membership import make_vectors as membership  # noqa: E402
from tests.golden.membership.make_vectors import (  # noqa: E402
    ADMIN,
    DELEGATE,
    JOINER,
    JOINER_WG,
    NODE,
    T0,
    node_id,
    seed,
)

SECRET = seed("meshd test invite secret")
SECRET_DELEGATED = seed("meshd test delegated invite secret")
INVITE_ID = seed("meshd test invite id")[:16]
INVITE_ID_DELEGATED = seed("meshd test delegated invite id")[:16]
WEEK = 7 * 86400


def mesh_and_delegation() -> tuple[MeshDefinition, DelegationCertificate]:
    records = membership.build()
    mesh, delegation = records["mesh_definition"][1], records["delegation"][1]
    assert isinstance(mesh, MeshDefinition) and isinstance(delegation, DelegationCertificate)
    return mesh, delegation


def tokens() -> tuple[InviteToken, InviteToken]:
    """An admin's invite (two bootstrap endpoints, IPv4 and IPv6) and a delegate's."""
    mesh, delegation = mesh_and_delegation()
    trust = MeshTrust.from_definition(mesh, [node_id(ADMIN)])
    admin_invite = issue_invite(
        Issuer(ADMIN, trust, None),
        name="Haus am See",
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.9"),
        bootstrap=[
            BootstrapEndpoint.from_address(node_id(ADMIN), "192.0.2.10:6697"),
            BootstrapEndpoint.from_address(node_id(NODE), "[2001:db8::5]:6697"),
        ],
        issued_at=T0,
        expires_at=T0 + WEEK,
        invite_id=INVITE_ID,
        secret=SECRET,
        show_name=True,
    )
    delegated_invite = issue_invite(
        Issuer(DELEGATE, trust, delegation),
        name="joiner",
        mesh_ipv4=ipaddress.IPv4Address("10.77.16.7"),
        bootstrap=[BootstrapEndpoint.from_address(node_id(DELEGATE), "100.64.0.1:6697")],
        issued_at=T0 + 3600,
        expires_at=T0 + 3600 + WEEK,
        invite_id=INVITE_ID_DELEGATED,
        secret=SECRET_DELEGATED,
        show_name=True,
    )
    return admin_invite, delegated_invite


def private_token() -> InviteToken:
    """The admin's invite again, for a private name: the invite holds its commitment."""
    mesh, _ = mesh_and_delegation()
    trust = MeshTrust.from_definition(mesh, [node_id(ADMIN)])
    return issue_invite(
        Issuer(ADMIN, trust, None),
        name="Haus am See",
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.10"),
        bootstrap=[BootstrapEndpoint.from_address(node_id(ADMIN), "192.0.2.10:6697")],
        issued_at=T0,
        expires_at=T0 + WEEK,
        invite_id=bytes(range(16, 32)),
        secret=bytes(range(64, 96)),
    )


def rendered() -> dict[str, str]:
    """File name -> exact file text."""
    admin, delegated = tokens()
    private = private_token()
    request = join_request(admin, JOINER, JOINER_WG)
    token_bytes = admin.invite.encode() + admin.secret
    return {
        "invite_admin.json": vectors.render(
            "invite issued by the test admin: two bootstrap endpoints (IPv4, IPv6), one week",
            admin.invite.encode().hex(),
            admin.invite.to_json(),
        ),
        "invite_delegated.json": vectors.render(
            "invite issued by the test delegate, carrying the membership vectors' delegation",
            delegated.invite.encode().hex(),
            delegated.invite.to_json(),
        ),
        "join_request.json": vectors.render(
            "the test joiner's request for the admin's invite, proving its secret",
            request.encode().hex(),
            request.to_json(),
        ),
        "token_admin.json": vectors.render(
            "the admin's invite as a token: invite bytes then the secret, URL-safe base64",
            token_bytes.hex(),
            {"type": "invite_token", "text": admin.text(), "secret": admin.secret.hex()},
        ),
        "token_private.json": vectors.render(
            "an invite for a private name as a token: invite bytes (its name is the name's "
            "commitment, meshd.core.membership.names), the secret, the name, the name's length",
            (private.invite.encode() + private.secret + b"Haus am See" + bytes([11])).hex(),
            {
                "type": "invite_token",
                "text": private.text(),
                "secret": private.secret.hex(),
                "name": "Haus am See",
                "certified_name": private.invite.name,
            },
        ),
    }


def main() -> None:
    vectors.write(HERE, rendered())


if __name__ == "__main__":
    main()
