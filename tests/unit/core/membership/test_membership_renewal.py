"""Renewal and the mesh's time, the pure cores: when a node asks, what an issuer accepts and
refuses, what a node accepts back, and how neighbours' clocks correct a stale one."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.core.membership import (
    SCOPE_ALL,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshTrust,
    Reason,
    RevocationTarget,
    Scope,
    create_mesh,
    issue_delegation,
    issue_membership,
    revoke,
    verify_membership,
)
from meshd.core.membership.clock import HOLD_S, MAX_AGE_S, MAX_REPORTS, ClockConsensus, MeshClock
from meshd.core.membership.renewal import (
    RenewalError,
    RenewalIssuer,
    RenewalReason,
    accept_renewal,
    check_renewable,
    renew,
    renew_at,
)


def _key(label: str) -> SigningKey:
    return SigningKey(hashlib.sha256(label.encode()).digest())


def nid(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


ADMIN, DELEGATE, OTHER, NODE = (
    _key(f"renewal {n}") for n in ("admin", "delegate", "other", "node")
)
T0, DAY, HOUR = 1_767_225_600, 86400, 3600
MESH = create_mesh(
    ADMIN,
    mesh_id=b"R" * 16,
    name="renewal",
    ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
    ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
    issued_at=T0,
)


def trust() -> MeshTrust:
    return MeshTrust.from_definition(MESH, [nid(ADMIN)])


def delegation(
    key: SigningKey = DELEGATE, pool: str = "10.77.16.0/20", scope: Scope = SCOPE_ALL
) -> DelegationCertificate:
    return issue_delegation(
        ADMIN,
        mesh=MESH,
        delegate=nid(key),
        scope=scope,
        ipv4_pool=ipaddress.IPv4Network(pool),
        not_before=T0,
        expires_at=T0 + 90 * DAY,
        serial=5,
    )


def cert(
    address: str = "10.77.16.7", expires_at: int = T0 + 30 * DAY, by_delegate: bool = True
) -> MembershipCertificate:
    return issue_membership(
        DELEGATE if by_delegate else ADMIN,
        mesh=MESH,
        node_id=nid(NODE),
        name="node",
        wireguard_public=b"W" * 32,
        mesh_ipv4=ipaddress.IPv4Address(address),
        not_before=T0,
        expires_at=expires_at,
        serial=1,
        delegation=delegation() if by_delegate else None,
    )


ADMIN_ISSUER = RenewalIssuer(ADMIN, trust(), None)
DELEGATE_ISSUER = RenewalIssuer(DELEGATE, trust(), delegation())


# ---- when to ask ---------------------------------------------------------------------


def test_a_node_asks_with_a_third_of_its_validity_left_or_a_margin() -> None:
    c = cert()
    assert renew_at(c) == T0 + 20 * DAY
    assert renew_at(c, margin_s=DAY) == T0 + 29 * DAY
    assert renew_at(c, margin_s=365 * DAY) == T0  # a margin beyond the window: at once
    with pytest.raises(ValueError):
        renew_at(c, margin_s=-1)


@given(st.integers(1, 10**9), st.integers(0, 10**9))
def test_renew_at_lies_inside_the_window(lifetime: int, margin: int) -> None:
    c = replace(cert(), expires_at=T0 + lifetime)
    assert c.not_before <= renew_at(c, margin) <= c.expires_at


# ---- what an issuer renews -----------------------------------------------------------


def test_the_delegate_renews_the_same_identity_with_a_new_window() -> None:
    now = T0 + 25 * DAY
    fresh = renew(DELEGATE_ISSUER, cert(), (delegation(),), now, serial=99)
    for field in ("node_id", "name", "wireguard_public", "mesh_ipv4", "mesh_ipv6"):
        assert getattr(fresh, field) == getattr(cert(), field)
    assert (fresh.not_before, fresh.expires_at, fresh.serial) == (now, now + 30 * DAY, 99)
    verify_membership(fresh, (delegation(),), trust(), now + 29 * DAY)


def test_an_admin_renews_any_address_and_a_delegates_window_ends_with_its_delegation() -> None:
    fresh = renew(ADMIN_ISSUER, cert(), (delegation(),), T0 + 25 * DAY, serial=1)
    assert fresh.issuer == nid(ADMIN) and fresh.expires_at == T0 + 55 * DAY
    long = cert(expires_at=T0 + 85 * DAY)
    late = renew(DELEGATE_ISSUER, long, (delegation(),), T0 + 80 * DAY, serial=2)
    assert late.expires_at == T0 + 90 * DAY  # capped by the delegation


def test_an_expired_certificate_is_renewed_within_the_grace_period_only() -> None:
    c = cert(expires_at=T0 + DAY)
    after = T0 + DAY + 300 + HOUR  # beyond the skew
    with pytest.raises(MembershipError) as expired:
        verify_membership(c, (delegation(),), trust(), after)
    assert expired.value.reason is Reason.EXPIRED
    fresh = renew(DELEGATE_ISSUER, c, (delegation(),), after, serial=3, grace_s=2 * HOUR)
    assert fresh.not_before == after
    with pytest.raises(MembershipError) as too_late:
        renew(DELEGATE_ISSUER, c, (delegation(),), after + 2 * HOUR, serial=4, grace_s=2 * HOUR)
    assert too_late.value.reason is Reason.EXPIRED


def test_a_revoked_node_or_certificate_is_refused_even_after_it_expired() -> None:
    c = cert(expires_at=T0 + DAY)
    for target in (RevocationTarget.node(nid(NODE)), RevocationTarget.certificate(c)):
        t = trust()
        t.revocations.add(revoke(ADMIN, mesh=MESH, target=target, revoked_at=T0 + 2 * DAY))
        issuer = RenewalIssuer(DELEGATE, t, delegation())
        with pytest.raises(MembershipError) as refused:
            renew(issuer, c, (delegation(),), T0 + 2 * DAY + 10, serial=5)
        assert refused.value.reason is Reason.REVOKED


def test_a_forged_or_foreign_certificate_is_refused() -> None:
    forged = replace(cert(), name="someone else")
    with pytest.raises(MembershipError) as bad:
        check_renewable(forged, (delegation(),), trust(), T0 + DAY)
    assert bad.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(MembershipError) as chainless:
        check_renewable(cert(), (), trust(), T0 + DAY)
    assert chainless.value.reason is Reason.UNKNOWN_ISSUER


def test_an_issuer_renews_only_addresses_it_may_sign() -> None:
    outside = cert(address="10.77.0.9", by_delegate=False)
    with pytest.raises(RenewalError) as refused:
        renew(DELEGATE_ISSUER, outside, (), T0 + DAY, serial=6)
    assert refused.value.reason is RenewalReason.CANNOT_ISSUE
    invites_only = RenewalIssuer(DELEGATE, trust(), delegation(scope=Scope.INVITE))
    assert not invites_only.covers(cert())
    nobody = RenewalIssuer(OTHER, trust(), None)
    assert not nobody.covers(cert())
    assert "signing_key" not in repr(DELEGATE_ISSUER)


# ---- what the node accepts back ------------------------------------------------------


def test_the_node_accepts_only_its_own_certificate_lasting_longer() -> None:
    now = T0 + 25 * DAY
    current = cert()
    fresh = renew(DELEGATE_ISSUER, current, (delegation(),), now, serial=7)
    member = accept_renewal(current, fresh, (delegation(),), trust(), now)
    assert member.valid_until == fresh.expires_at
    moved = issue_membership(
        ADMIN,
        mesh=MESH,
        node_id=nid(NODE),
        name="node",
        wireguard_public=b"W" * 32,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.3"),
        not_before=now,
        expires_at=now + 30 * DAY,
        serial=8,
    )
    with pytest.raises(RenewalError, match="mesh_ipv4"):
        accept_renewal(current, moved, (), trust(), now)
    shorter = renew(DELEGATE_ISSUER, current, (delegation(),), T0 + DAY, serial=9)
    with pytest.raises(RenewalError) as not_longer:
        accept_renewal(fresh, shorter, (delegation(),), trust(), now)
    assert not_longer.value.reason is RenewalReason.BAD_RENEWAL


# ---- the mesh's time -----------------------------------------------------------------


def test_one_liar_among_honest_neighbours_moves_nothing() -> None:
    clock = ClockConsensus(tolerance_s=300)
    for peer, offset in (("a", 1.0), ("b", -2.0), ("liar", -130_000.0)):
        clock.report(peer, offset)
    assert clock.target(0.0, sessions=3, own_vote=True) == 0.0
    assert clock.target(0.0, sessions=3, own_vote=False) == 0.0  # within the tolerance


def test_a_lone_neighbour_moves_a_clock_only_when_our_certificate_contradicts_it() -> None:
    clock = ClockConsensus(tolerance_s=300)
    clock.report("only", -130_000.0)
    assert clock.target(0.0, sessions=1, own_vote=True) == 0.0  # the middle nearer ours
    assert clock.target(0.0, sessions=1, own_vote=False) == -130_000.0  # a Pi without RTC
    clock.report("second", -130_002.0)
    assert clock.target(0.0, sessions=2, own_vote=True) == -130_000.0  # two outvote us


def test_without_a_quorum_the_correction_holds() -> None:
    clock = ClockConsensus(tolerance_s=300)
    clock.report("a", 9e6)
    assert clock.target(0.0, sessions=5, own_vote=False) is None  # 1 of 3 needed
    assert not clock.update(0.0, sessions=5, own_vote=False) and clock.correction_s == 0
    clock.report("b", 9e6)
    assert not clock.update(0.0, sessions=5, own_vote=False)
    clock.report("c", 9e6 + 4)
    assert clock.update(0.0, sessions=5, own_vote=False) and clock.correction_s == 9e6


def test_after_its_first_change_the_correction_changes_once_per_hold() -> None:
    clock = ClockConsensus(tolerance_s=300)
    clock.report("a", 9e6)
    assert clock.update(10.0, sessions=1, own_vote=False)  # the first: at once
    clock.report("a", 8e6)
    assert not clock.update(10.0 + HOLD_S - 1, sessions=1, own_vote=False)
    assert clock.correction_s == 9e6
    assert clock.update(10.0 + HOLD_S, sessions=1, own_vote=False)
    assert clock.correction_s == 8e6


def test_a_gone_peer_counts_until_its_offset_ages_out() -> None:
    clock = ClockConsensus(tolerance_s=300)
    clock.report("a", 9e6)
    clock.gone("a", at=100.0)
    assert clock.target(100.0 + MAX_AGE_S, sessions=0, own_vote=False) == 9e6
    assert clock.target(100.0 + MAX_AGE_S + 1, sessions=0, own_vote=False) is None
    assert clock.reports == {}


def test_the_mesh_clock_never_reads_below_its_floor() -> None:
    clock = MeshClock(lambda: 1_000.0, tolerance_s=300, floor=5_000.0)
    assert clock.now() == 5_000.0
    assert not clock.raise_floor(4_000.0) and clock.raise_floor(6_000.0)
    clock.own_validity = (0.0, 10_000.0)  # our clock votes: a lone liar cannot move it
    clock.report("liar", -500.0, at=0.0, sessions=1)
    assert clock.consensus.correction_s == 0 and clock.now() == 6_000.0


@given(st.lists(st.tuples(st.text(max_size=3), st.floats(-1e9, 1e9)), max_size=200))
def test_the_consensus_stays_bounded_and_between_its_reports(
    reports: list[tuple[str, float]],
) -> None:
    clock = ClockConsensus(tolerance_s=0)
    for peer, offset in reports:
        clock.report(peer, offset)
    assert len(clock.reports) <= MAX_REPORTS
    target = clock.target(0.0, sessions=1, own_vote=False)
    if clock.reports:
        offsets = [r.offset_s for r in clock.reports.values()]
        assert target is not None and min(offsets) <= target <= max(offsets)


def test_a_negative_tolerance_is_our_misuse() -> None:
    with pytest.raises(ValueError):
        ClockConsensus(tolerance_s=-1)
