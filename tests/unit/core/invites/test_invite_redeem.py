"""The issuer's decision on join requests, with its SQLite store: once, and with reasons."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from meshd.adapters.invite_store import SqliteInviteStore
from meshd.core.invites import (
    BootstrapEndpoint,
    InviteReason,
    InviteToken,
    IssuedInvite,
    Issuer,
    JoinRefusal,
    allocate_ipv4,
    issue_invite,
    join_request,
    redeem,
)
from meshd.core.invites.redeem import certificate_serial
from meshd.core.membership import (
    MembershipCertificate,
    MeshTrust,
    RevocationTarget,
    revoke,
    verify_membership,
)
from meshd.core.membership.messages import NO_SIGNATURE
from tests.golden.invites import make_vectors as GEN

MESH, DELEGATION = GEN.mesh_and_delegation()
ADMINS = (GEN.node_id(GEN.ADMIN),)
NOW = GEN.T0 + 7200


def _trust() -> MeshTrust:
    return MeshTrust.from_definition(MESH, ADMINS)


def _joiner(label: str) -> tuple[SigningKey, bytes]:
    return SigningKey(GEN.seed(label)), bytes(PrivateKey(GEN.seed(label + " wg")).public_key)


@pytest.fixture
def store(tmp_path: Path) -> SqliteInviteStore:
    return SqliteInviteStore.open(tmp_path)


def _issued(store: SqliteInviteStore, issuer: Issuer, **changes: object) -> InviteToken:
    fields: dict[str, object] = {
        "name": "new house",
        "mesh_ipv4": allocate_ipv4(issuer.pool, store.taken_ipv4()),
        "bootstrap": [BootstrapEndpoint.from_address(issuer.node_id, "192.0.2.1:6697")],
        "issued_at": GEN.T0,
        "expires_at": GEN.T0 + GEN.WEEK,
        "invite_id": secrets.token_bytes(16),
        "secret": secrets.token_bytes(32),
        **changes,
    }
    token = issue_invite(issuer, **fields)  # type: ignore[arg-type]
    store.record_issued(token.invite)
    return token


def _granted(result: MembershipCertificate | JoinRefusal) -> MembershipCertificate:
    assert isinstance(result, MembershipCertificate), result
    return result


def _refused(result: MembershipCertificate | JoinRefusal) -> InviteReason:
    assert isinstance(result, JoinRefusal), result
    return result.reason


def test_an_admins_invite_is_redeemed_once_for_a_verifiable_certificate(
    store: SqliteInviteStore,
) -> None:
    issuer = Issuer(GEN.ADMIN, _trust(), None)
    token = _issued(store, issuer)
    key, wg = _joiner("joiner one")
    cert = _granted(redeem(store, issuer, token.invite, join_request(token, key, wg), NOW))
    member = verify_membership(cert, [], _trust(), NOW)
    assert (member.name, member.mesh_ipv4, member.wireguard_public) == (
        token.invite.name,  # the commitment to "new house" (a private name)
        token.invite.mesh_ipv4,
        wg,
    )
    assert token.opening is not None and token.opening.opens(member.name)
    assert cert.not_before == token.invite.issued_at
    assert cert.serial == certificate_serial(token.invite)
    record = store.lookup(token.invite.invite_id)
    assert record is not None and record.redeemed_by == member.node_id

    other_key, other_wg = _joiner("joiner two")
    second = join_request(token, other_key, other_wg)
    assert _refused(redeem(store, issuer, token.invite, second, NOW)) is (
        InviteReason.ALREADY_REDEEMED
    )
    # The first node asking again (its answer was lost) gets the same certificate...
    assert redeem(store, issuer, token.invite, join_request(token, key, wg), NOW + 5) == cert
    # ... but not for another WireGuard key.
    changed = join_request(token, key, other_wg)
    assert _refused(redeem(store, issuer, token.invite, changed, NOW)) is (
        InviteReason.ALREADY_REDEEMED
    )


def test_a_redemption_survives_reopening_the_store(tmp_path: Path) -> None:
    issuer = Issuer(GEN.ADMIN, _trust(), None)
    token = _issued(SqliteInviteStore.open(tmp_path), issuer)
    key, wg = _joiner("joiner one")
    _granted(
        redeem(
            SqliteInviteStore.open(tmp_path),
            issuer,
            token.invite,
            join_request(token, key, wg),
            NOW,
        )
    )
    other = join_request(token, *_joiner("joiner two"))
    reopened = SqliteInviteStore.open(tmp_path)
    assert _refused(redeem(reopened, issuer, token.invite, other, NOW)) is (
        InviteReason.ALREADY_REDEEMED
    )
    assert token.invite.mesh_ipv4 in reopened.taken_ipv4()


def test_a_delegate_certifies_under_its_delegation(store: SqliteInviteStore) -> None:
    issuer = Issuer(GEN.DELEGATE, _trust(), DELEGATION)
    token = _issued(store, issuer, issued_at=GEN.T0 + 3600)
    assert token.invite.mesh_ipv4 == ipaddress.IPv4Address("10.77.16.1")
    request = join_request(token, *_joiner("joiner one"))
    cert = _granted(redeem(store, issuer, token.invite, request, NOW))
    assert verify_membership(cert, [DELEGATION], _trust(), NOW).issuer == issuer.node_id


def test_refusals_have_reasons_and_leave_the_invite_redeemable(
    store: SqliteInviteStore,
) -> None:
    issuer = Issuer(GEN.ADMIN, _trust(), None)
    token = _issued(store, issuer)
    invite = token.invite
    request = join_request(token, *_joiner("joiner one"))

    expired = invite.expires_at + 3600
    assert _refused(redeem(store, issuer, invite, request, expired)) is InviteReason.EXPIRED
    altered = replace(invite, name="someone else")  # the issuer's signature no longer holds
    assert _refused(redeem(store, issuer, altered, request, NOW)) is InviteReason.BAD_SIGNATURE
    delegate = Issuer(GEN.DELEGATE, _trust(), DELEGATION)
    assert _refused(redeem(store, delegate, invite, request, NOW)) is InviteReason.NOT_ISSUER
    other = _issued(store, issuer)
    assert _refused(redeem(store, issuer, other.invite, request, NOW)) is InviteReason.BAD_PROOF
    forged = replace(request, signature=bytes(64))
    assert _refused(redeem(store, issuer, invite, forged, NOW)) is InviteReason.BAD_SIGNATURE

    revoked = _trust()
    revoked.revocations.add(
        revoke(
            GEN.ADMIN, mesh=MESH, target=RevocationTarget.node(request.node_id), revoked_at=GEN.T0
        )
    )
    assert _refused(redeem(store, Issuer(GEN.ADMIN, revoked, None), invite, request, NOW)) is (
        InviteReason.REVOKED
    )
    remade = replace(
        MESH, ipv4_prefix=ipaddress.IPv4Network("10.78.0.0/16"), signature=NO_SIGNATURE
    ).sign(GEN.ADMIN)
    moved = Issuer(GEN.ADMIN, MeshTrust.from_definition(remade, ADMINS), None)
    assert _refused(redeem(store, moved, invite, request, NOW)) is InviteReason.WRONG_MESH

    assert _granted(redeem(store, issuer, invite, request, NOW))  # none of that used it up


def test_an_invite_missing_from_the_store_is_refused(tmp_path: Path) -> None:
    issuer = Issuer(GEN.ADMIN, _trust(), None)
    (tmp_path / "issued").mkdir()
    (tmp_path / "lost").mkdir()
    token = _issued(SqliteInviteStore.open(tmp_path / "issued"), issuer)
    request = join_request(token, *_joiner("joiner one"))
    lost = SqliteInviteStore.open(tmp_path / "lost")  # the issuer's store was lost, say
    assert _refused(redeem(lost, issuer, token.invite, request, NOW)) is (
        InviteReason.UNKNOWN_INVITE
    )


class _RacingStore:
    """Both requests look the invite up before either claims it."""

    def __init__(self, inner: SqliteInviteStore) -> None:
        self.inner = inner
        self.stale: IssuedInvite | None = None

    def lookup(self, invite_id: bytes) -> IssuedInvite | None:
        if self.stale is not None:
            stale, self.stale = self.stale, None
            return stale
        return self.inner.lookup(invite_id)

    def mark_redeemed(self, invite_id: bytes, node_id: str, certificate: bytes, now: int) -> bool:
        return self.inner.mark_redeemed(invite_id, node_id, certificate, now)


def test_of_two_racing_requests_exactly_one_wins(store: SqliteInviteStore) -> None:
    issuer = Issuer(GEN.ADMIN, _trust(), None)
    token = _issued(store, issuer)
    racing = _RacingStore(store)
    first = join_request(token, *_joiner("joiner one"))
    second = join_request(token, *_joiner("joiner two"))
    racing.stale = store.lookup(token.invite.invite_id)
    _granted(redeem(racing, issuer, token.invite, first, NOW))
    redeemed = store.lookup(token.invite.invite_id)
    assert redeemed is not None and redeemed.redeemed_by == first.node_id
    racing.stale = replace(redeemed, redeemed_by=None, certificate=None)
    assert _refused(redeem(racing, issuer, token.invite, second, NOW)) is (
        InviteReason.ALREADY_REDEEMED
    )


def test_issuing_refuses_our_own_mistakes() -> None:
    trust = _trust()
    with pytest.raises(ValueError, match="not an admin"):
        Issuer(GEN.NODE, trust, None)
    with pytest.raises(ValueError, match="not for this key"):
        Issuer(GEN.NODE, trust, DELEGATION)
    issuer = Issuer(GEN.DELEGATE, trust, DELEGATION)

    def issue(mesh_ipv4: str, expires_at: int) -> InviteToken:
        return issue_invite(
            issuer,
            name="x",
            mesh_ipv4=ipaddress.IPv4Address(mesh_ipv4),
            bootstrap=[BootstrapEndpoint.from_address(issuer.node_id, "192.0.2.1:6697")],
            issued_at=GEN.T0,
            expires_at=expires_at,
            invite_id=bytes(16),
            secret=bytes(32),
        )

    with pytest.raises(ValueError, match="outside this issuer's pool"):
        issue("10.77.0.9", GEN.T0 + 60)
    with pytest.raises(ValueError, match="delegation ends"):
        issue("10.77.16.9", DELEGATION.expires_at + 1)
    assert issue("10.77.16.9", DELEGATION.expires_at).invite.issuer == issuer.node_id
    pool = ipaddress.IPv4Network("10.77.16.0/30")
    assert allocate_ipv4(pool, {ipaddress.IPv4Address("10.77.16.1")}) == (
        ipaddress.IPv4Address("10.77.16.2")
    )
    with pytest.raises(ValueError, match="no free address"):
        allocate_ipv4(pool, set(pool.hosts()))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_store_created_by_root_belongs_to_the_state_dirs_owner(tmp_path: Path) -> None:
    os.chown(tmp_path, 4242, 4343)  # as the meshd user owns /var/lib/meshd
    SqliteInviteStore.open(tmp_path).close()
    st = (tmp_path / "invites.sqlite").stat()
    assert (st.st_uid, st.st_gid) == (4242, 4343)
