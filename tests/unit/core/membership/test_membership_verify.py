"""verify_membership / verify_delegation / MeshTrust: every reason code, exact boundaries."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.core.addressing import mesh_ipv6
from meshd.core.membership import (
    SCOPE_ALL,
    Cosigned,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    MeshTrust,
    Reason,
    Revocation,
    RevocationSet,
    RevocationTarget,
    Scope,
    create_mesh,
    issue_delegation,
    issue_membership,
    revoke,
    verify_delegation,
    verify_membership,
)
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.membership.rotation import check_successor, rotate_mesh


def _key(label: str) -> SigningKey:
    return SigningKey(hashlib.sha256(label.encode()).digest())


def nid(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


ADMIN = _key("meshd test admin")
ADMIN_2 = _key("meshd test admin 2")
OUTSIDER = _key("meshd test outsider")
DELEGATE = _key("meshd test delegate")
NODE = _key("meshd test node")
JOINER = _key("meshd test joiner")
T0 = 1_767_225_600
DAY = 86400
SKEW = 300
PREFIX4 = ipaddress.IPv4Network("10.77.0.0/16")
PREFIX6 = ipaddress.IPv6Network("fd6d:6573:6864::/48")
POOL = ipaddress.IPv4Network("10.77.16.0/20")


def _mesh(signer: SigningKey = ADMIN, mesh_id: bytes = b"M" * 16) -> MeshDefinition:
    return create_mesh(
        signer,
        mesh_id=mesh_id,
        name="test",
        ipv4_prefix=PREFIX4,
        ipv6_prefix=PREFIX6,
        issued_at=T0,
        other_admins=[nid(ADMIN_2)] if signer is ADMIN else [nid(ADMIN)],
    )


MESH = _mesh()
OTHER_MESH = _mesh(mesh_id=b"O" * 16)


@dataclass
class World:
    trust: MeshTrust
    cert: MembershipCertificate  # admin-issued, NODE, [T0, T0 + 10 days)
    delegation: DelegationCertificate  # ADMIN -> DELEGATE, all scopes, [T0, T0 + 5 days)
    delegated: MembershipCertificate  # DELEGATE -> JOINER, [T0, T0 + 30 days)


def _cert(
    signer: SigningKey = ADMIN, mesh: MeshDefinition = MESH, **kw: Any
) -> MembershipCertificate:
    args: dict[str, Any] = {
        "mesh": mesh,
        "node_id": nid(NODE),
        "name": "node",
        "wireguard_public": bytes(32),
        "mesh_ipv4": ipaddress.IPv4Address("10.77.0.5"),
        "not_before": T0,
        "expires_at": T0 + 10 * DAY,
        "serial": 1,
    }
    args.update(kw)
    return issue_membership(signer, **args)


def _delegation(
    signer: SigningKey = ADMIN, mesh: MeshDefinition = MESH, **kw: Any
) -> DelegationCertificate:
    args: dict[str, Any] = {
        "mesh": mesh,
        "delegate": nid(DELEGATE),
        "scope": SCOPE_ALL,
        "ipv4_pool": POOL,
        "not_before": T0,
        "expires_at": T0 + 5 * DAY,
        "serial": 7,
    }
    args.update(kw)
    return issue_delegation(signer, **args)


def _raw_cert(signer: SigningKey, **changes: Any) -> MembershipCertificate:
    """A certificate the issuing helpers would refuse to make, signed all the same."""
    base = _cert()
    return replace(base, issuer=nid(signer), signature=NO_SIGNATURE, **changes).sign(signer)


def _world() -> World:
    delegation = _delegation()
    return World(
        trust=MeshTrust.from_definition(MESH, [nid(ADMIN)]),
        cert=_cert(),
        delegation=delegation,
        delegated=_cert(
            DELEGATE,
            node_id=nid(JOINER),
            name="joiner",
            mesh_ipv4=ipaddress.IPv4Address("10.77.16.7"),
            expires_at=T0 + 30 * DAY,
            delegation=delegation,
        ),
    )


NOW = T0 + DAY


# --- the happy paths ------------------------------------------------------------------


def test_admin_issued_certificate_verifies() -> None:
    w = _world()
    member = verify_membership(w.cert, [], w.trust, NOW)
    assert member.node_id == nid(NODE)
    assert member.mesh_ipv6 == mesh_ipv6(PREFIX6, nid(NODE))
    assert member.mesh_ipv4 == ipaddress.IPv4Address("10.77.0.5")
    assert (member.valid_until, member.issuer, member.delegation) == (
        T0 + 10 * DAY,
        nid(ADMIN),
        None,
    )
    assert member.certificate is w.cert


def test_second_admin_and_delegated_certificates_verify() -> None:
    w = _world()
    assert verify_membership(_cert(ADMIN_2), (), w.trust, NOW).issuer == nid(ADMIN_2)
    member = verify_membership(w.delegated, [w.delegation], w.trust, NOW)
    assert member.issuer == nid(DELEGATE)
    assert member.delegation == w.delegation
    assert member.valid_until == T0 + 5 * DAY  # the delegation ends first


def test_invite_only_delegation_verifies_for_invites() -> None:
    w = _world()
    invite_only = _delegation(scope=Scope.INVITE, ipv4_pool=None)
    assert invite_only.ipv4_pool == PREFIX4
    assert verify_delegation(invite_only, w.trust, NOW, Scope.INVITE) == invite_only
    assert verify_delegation(w.delegation, w.trust, NOW, SCOPE_ALL) == w.delegation


# --- one case (at least) per reason code ----------------------------------------------

Case = Callable[[World], object]


def _revoked(target: Callable[[World], RevocationTarget], check: Case) -> Case:
    def run(w: World) -> object:
        w.trust.revocations.add(revoke(ADMIN_2, mesh=MESH, target=target(w), revoked_at=T0))
        return check(w)

    return run


def _member(
    cert: Callable[[World], MembershipCertificate],
    chain: Callable[[World], list[DelegationCertificate]] = lambda w: [],
) -> Case:
    return lambda w: verify_membership(cert(w), chain(w), w.trust, NOW)


def _delegated_with(
    delegation: Callable[[World], DelegationCertificate], **cert_changes: Any
) -> Case:
    def run(w: World) -> object:
        d = delegation(w)
        cert = w.delegated
        if cert_changes:
            cert = replace(cert, signature=NO_SIGNATURE, **cert_changes).sign(DELEGATE)
        return verify_membership(cert, [d], w.trust, NOW)

    return run


CASES: list[tuple[Reason, str, Case]] = [
    (Reason.MALFORMED, "garbage bytes", lambda w: MembershipCertificate.decode(b"\x02\x01\x01")),
    (Reason.BAD_SIGNATURE, "tampered certificate", _member(lambda w: replace(w.cert, serial=9))),
    (
        Reason.BAD_SIGNATURE,
        "tampered delegation",
        _delegated_with(lambda w: replace(w.delegation, scope=Scope.MEMBERSHIP)),
    ),
    (
        Reason.BAD_SIGNATURE,
        "mesh definition with a forged signature",
        lambda w: MeshTrust.from_definition(replace(MESH, serial=2), [nid(ADMIN)]),
    ),
    (Reason.EXPIRED, "expired", _member(lambda w: _cert(not_before=T0 - 10 * DAY, expires_at=T0))),
    (Reason.NOT_YET_VALID, "not yet valid", _member(lambda w: _cert(not_before=NOW + DAY))),
    (Reason.UNKNOWN_ISSUER, "signed by an outsider", _member(lambda w: _raw_cert(OUTSIDER))),
    (
        Reason.UNKNOWN_ISSUER,
        "delegation for someone else",
        _member(lambda w: _raw_cert(OUTSIDER), lambda w: [w.delegation]),
    ),
    (
        Reason.UNKNOWN_ISSUER,
        "delegation signed by an outsider",
        _delegated_with(
            lambda w: replace(w.delegation, issuer=nid(OUTSIDER), signature=NO_SIGNATURE).sign(
                OUTSIDER
            )
        ),
    ),
    (
        Reason.UNKNOWN_ISSUER,
        "mesh definition not signed by a pinned admin",
        lambda w: MeshTrust.from_definition(_mesh(ADMIN_2), [nid(ADMIN)]),
    ),
    (
        Reason.UNKNOWN_ISSUER,
        "revocation signed by a delegate",
        lambda w: w.trust.revocations.add(
            Revocation(
                mesh_id=MESH.mesh_id,
                target=RevocationTarget.node(nid(NODE)),
                revoked_at=T0,
                issuer=nid(DELEGATE),
                signature=NO_SIGNATURE,
            ).sign(DELEGATE)
        ),
    ),
    (
        Reason.BAD_CHAIN,
        "admin certificate with a chain",
        _member(lambda w: w.cert, lambda w: [w.delegation]),
    ),
    (
        Reason.BAD_CHAIN,
        "two delegations",
        _member(lambda w: w.delegated, lambda w: [w.delegation, w.delegation]),
    ),
    (
        Reason.REVOKED,
        "node revoked",
        _revoked(lambda w: RevocationTarget.node(nid(NODE)), _member(lambda w: w.cert)),
    ),
    (
        Reason.REVOKED,
        "certificate revoked",
        _revoked(lambda w: RevocationTarget.certificate(w.cert), _member(lambda w: w.cert)),
    ),
    (
        Reason.REVOKED,
        "delegation revoked",
        _revoked(
            lambda w: RevocationTarget.certificate(w.delegation),
            _member(lambda w: w.delegated, lambda w: [w.delegation]),
        ),
    ),
    (
        Reason.REVOKED,
        "delegate's node id revoked",
        _revoked(
            lambda w: RevocationTarget.node(nid(DELEGATE)),
            _member(lambda w: w.delegated, lambda w: [w.delegation]),
        ),
    ),
    (
        Reason.REVOKED,
        "delegated certificate revoked",
        _revoked(
            lambda w: RevocationTarget.certificate(w.delegated),
            _member(lambda w: w.delegated, lambda w: [w.delegation]),
        ),
    ),
    (Reason.WRONG_MESH, "certificate of another mesh", _member(lambda w: _cert(mesh=OTHER_MESH))),
    (
        Reason.WRONG_MESH,
        "delegation of another mesh",
        _delegated_with(lambda w: _delegation(mesh=OTHER_MESH)),
    ),
    (
        Reason.WRONG_MESH,
        "revocation of another mesh",
        lambda w: w.trust.revocations.add(
            revoke(ADMIN, mesh=OTHER_MESH, target=RevocationTarget.node(nid(NODE)), revoked_at=T0)
        ),
    ),
    (
        Reason.BAD_ADDRESS,
        "IPv4 outside the prefix",
        _member(lambda w: _raw_cert(ADMIN, mesh_ipv4=ipaddress.IPv4Address("10.78.0.5"))),
    ),
    (
        Reason.BAD_ADDRESS,
        "IPv4 is the network address",
        _member(lambda w: _raw_cert(ADMIN, mesh_ipv4=ipaddress.IPv4Address("10.77.0.0"))),
    ),
    (
        Reason.BAD_ADDRESS,
        "IPv4 is the broadcast address",
        _member(lambda w: _raw_cert(ADMIN, mesh_ipv4=ipaddress.IPv4Address("10.77.255.255"))),
    ),
    (
        Reason.BAD_ADDRESS,
        "IPv6 not derived from the node id",
        _member(lambda w: _raw_cert(ADMIN, mesh_ipv6=mesh_ipv6(PREFIX6, nid(JOINER)))),
    ),
    (
        Reason.BAD_ADDRESS,
        "IPv4 outside the delegate's pool",
        _delegated_with(lambda w: w.delegation, mesh_ipv4=ipaddress.IPv4Address("10.77.0.9")),
    ),
    (
        Reason.BAD_ADDRESS,
        "delegation pool outside the mesh",
        _delegated_with(
            lambda w: replace(
                w.delegation, ipv4_pool=ipaddress.IPv4Network("10.0.0.0/8"), signature=NO_SIGNATURE
            ).sign(ADMIN)
        ),
    ),
    (
        Reason.DELEGATION_EXPIRED,
        "delegation expired",
        _delegated_with(lambda w: _delegation(not_before=T0 - 10 * DAY, expires_at=T0)),
    ),
    (
        Reason.DELEGATION_NOT_YET_VALID,
        "delegation not yet valid",
        _delegated_with(lambda w: _delegation(not_before=NOW + DAY, expires_at=NOW + 9 * DAY)),
    ),
    (
        Reason.DELEGATION_SCOPE,
        "invite-only delegation used for a certificate",
        _delegated_with(lambda w: _delegation(scope=Scope.INVITE)),
    ),
    (
        Reason.DELEGATION_SCOPE,
        "membership-only delegation used for invites",
        lambda w: verify_delegation(
            _delegation(scope=Scope.MEMBERSHIP), w.trust, NOW, Scope.INVITE
        ),
    ),
    (
        Reason.SHORT_OF_QUORUM,
        "one admin's signature where the definition wants two",
        lambda w: check_successor(
            replace(MESH, threshold=2).sign(ADMIN),
            Cosigned(rotate_mesh(ADMIN, replace(MESH, threshold=2), issued_at=T0 + 1)),
        ),
    ),
]


@pytest.mark.parametrize(
    ("reason", "case"), [(r, c) for r, _, c in CASES], ids=[f"{r}: {d}" for r, d, _ in CASES]
)
def test_refusal_carries_its_reason_code(reason: Reason, case: Case) -> None:
    with pytest.raises(MembershipError) as excinfo:
        case(_world())
    assert excinfo.value.reason is reason
    assert str(excinfo.value).startswith(f"{reason}: ")


def test_every_reason_code_has_a_case() -> None:
    assert {reason for reason, _, _ in CASES} == set(Reason)


# --- exact boundaries -----------------------------------------------------------------

START, END = T0, T0 + 10 * DAY  # the default certificate's window


@pytest.mark.parametrize(
    ("now", "skew", "reason"),
    [
        (START - SKEW - 1, SKEW, Reason.NOT_YET_VALID),
        (START - SKEW - 0.001, SKEW, Reason.NOT_YET_VALID),
        (START - SKEW, SKEW, None),
        (END + SKEW - 1, SKEW, None),
        (END + SKEW - 0.001, SKEW, None),
        (END + SKEW, SKEW, Reason.EXPIRED),
        (START - 1, 0, Reason.NOT_YET_VALID),
        (START, 0, None),
        (END - 1, 0, None),
        (END, 0, Reason.EXPIRED),
    ],
)
def test_certificate_window_with_skew_at_exact_boundaries(
    now: float, skew: int, reason: Reason | None
) -> None:
    w = _world()
    if reason is None:
        verify_membership(w.cert, [], w.trust, now, skew_s=skew)
    else:
        with pytest.raises(MembershipError) as excinfo:
            verify_membership(w.cert, [], w.trust, now, skew_s=skew)
        assert excinfo.value.reason is reason


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (T0 - SKEW - 1, Reason.DELEGATION_NOT_YET_VALID),
        (T0 - SKEW, None),
        (T0 + 5 * DAY + SKEW - 1, None),
        (T0 + 5 * DAY + SKEW, Reason.DELEGATION_EXPIRED),
    ],
)
def test_delegation_window_with_skew_at_exact_boundaries(now: int, reason: Reason | None) -> None:
    w = _world()
    if reason is None:
        verify_membership(w.delegated, [w.delegation], w.trust, now)
    else:
        with pytest.raises(MembershipError) as excinfo:
            verify_membership(w.delegated, [w.delegation], w.trust, now)
        assert excinfo.value.reason is reason


def test_revocation_takes_effect_at_revoked_at_without_skew() -> None:
    w = _world()
    revoked_at = NOW + 100
    w.trust.revocations.add(
        revoke(ADMIN, mesh=MESH, target=RevocationTarget.node(nid(NODE)), revoked_at=revoked_at)
    )
    verify_membership(w.cert, [], w.trust, revoked_at - 1)
    with pytest.raises(MembershipError, match="revoked: .*node .* revoked at"):
        verify_membership(w.cert, [], w.trust, revoked_at)
    # other members are unaffected
    verify_membership(w.delegated, [w.delegation], w.trust, revoked_at)


def test_negative_skew_is_misuse() -> None:
    w = _world()
    with pytest.raises(ValueError, match="skew_s"):
        verify_membership(w.cert, [], w.trust, NOW, skew_s=-1)


# --- trust and issuing misuse ---------------------------------------------------------


def test_trust_needs_a_revocation_set_of_the_same_definition() -> None:
    with pytest.raises(ValueError, match="another mesh definition"):
        MeshTrust.from_definition(
            MESH, [nid(ADMIN)], RevocationSet(OTHER_MESH.mesh_id, MESH.admins)
        )
    with pytest.raises(ValueError, match="another mesh definition"):
        MeshTrust(MESH, RevocationSet(MESH.mesh_id, [nid(ADMIN)]))
    shared = RevocationSet(MESH.mesh_id, MESH.admins)
    trust = MeshTrust.from_definition(MESH, [nid(ADMIN_2), nid(ADMIN)], shared)
    assert trust.revocations is shared and trust.mesh_id == MESH.mesh_id


def test_create_mesh_makes_the_signer_an_admin() -> None:
    assert nid(ADMIN) in MESH.admins and nid(ADMIN_2) in MESH.admins
    assert MESH.issuer == nid(ADMIN)
    MESH.verify_signature()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: _cert(OUTSIDER), "not an admin"),
        (lambda: _cert(mesh_ipv4=ipaddress.IPv4Address("10.78.0.1")), "not a host address"),
        (lambda: _cert(mesh_ipv4=ipaddress.IPv4Address("10.77.0.0")), "not a host address"),
        (
            lambda: _cert(DELEGATE, delegation=_delegation(delegate=nid(NODE))),
            "not for this signing key",
        ),
        (
            lambda: _cert(DELEGATE, delegation=_delegation(mesh=OTHER_MESH)),
            "not for this signing key",
        ),
        (lambda: _cert(DELEGATE, delegation=_delegation(scope=Scope.INVITE)), "does not allow"),
        (lambda: _cert(DELEGATE, delegation=_delegation()), "outside the delegation's pool"),
        (lambda: _delegation(OUTSIDER), "cannot delegate"),
        (
            lambda: _delegation(ipv4_pool=ipaddress.IPv4Network("10.0.0.0/8")),
            "outside the mesh prefix",
        ),
        (
            lambda: revoke(
                DELEGATE, mesh=MESH, target=RevocationTarget.node(nid(NODE)), revoked_at=0
            ),
            "cannot revoke",
        ),
    ],
)
def test_issuing_helpers_refuse_misuse(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
