"""RevocationSet: verified entries only, earliest per target, order-free merge and digest."""

from __future__ import annotations

import hashlib
import ipaddress
import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.core.membership import (
    MembershipError,
    Reason,
    Revocation,
    RevocationKind,
    RevocationSet,
    RevocationTarget,
    create_mesh,
    revoke,
)


def _key(label: str) -> SigningKey:
    return SigningKey(hashlib.sha256(label.encode()).digest())


def nid(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


ADMIN, ADMIN_2 = _key("meshd test admin"), _key("meshd test admin 2")
MESH = create_mesh(
    ADMIN,
    mesh_id=b"M" * 16,
    name="test",
    ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
    ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
    issued_at=0,
    other_admins=[nid(ADMIN_2)],
)
TARGETS = [
    RevocationTarget.node(nid(_key("node a"))),
    RevocationTarget.node(nid(_key("node b"))),
    RevocationTarget(RevocationKind.MEMBERSHIP, nid(ADMIN), 1),
    RevocationTarget(RevocationKind.MEMBERSHIP, nid(ADMIN), 2),
    RevocationTarget(RevocationKind.DELEGATION, nid(ADMIN), 1),
]
POOL = [
    revoke(signer, mesh=MESH, target=target, revoked_at=when)
    for target in TARGETS
    for when in (100, 200, 300)
    for signer in (ADMIN, ADMIN_2)
]


def _fresh() -> RevocationSet:
    return RevocationSet(MESH.mesh_id, MESH.admins)


def _rev(target: RevocationTarget, when: int, signer: SigningKey = ADMIN) -> Revocation:
    return revoke(signer, mesh=MESH, target=target, revoked_at=when)


def test_add_reports_whether_the_set_changed() -> None:
    s = _fresh()
    later, earlier = _rev(TARGETS[0], 200), _rev(TARGETS[0], 100)
    assert s.add(later) is True
    assert s.add(later) is False
    assert s.add(earlier) is True  # an earlier time for the same target replaces
    assert s.add(later) is False  # a later one does not
    assert s.get(TARGETS[0]) == earlier
    assert earlier in s and later not in s and "x" not in s
    assert len(s) == 1
    assert s.get(TARGETS[1]) is None


def test_ties_are_broken_by_encoding_whatever_the_order() -> None:
    a, b = _rev(TARGETS[0], 100, ADMIN), _rev(TARGETS[0], 100, ADMIN_2)
    first, second = _fresh(), _fresh()
    first.add(a)
    first.add(b)
    second.add(b)
    second.add(a)
    assert first.get(TARGETS[0]) == second.get(TARGETS[0]) == min(a, b, key=Revocation.encode)
    assert first.digest() == second.digest()


def test_in_force_from_revoked_at() -> None:
    s = _fresh()
    s.add(_rev(TARGETS[2], 500))
    assert s.in_force(TARGETS[2], 499) is None
    assert s.in_force(TARGETS[2], 499.999) is None
    assert s.in_force(TARGETS[2], 500) == _rev(TARGETS[2], 500)
    assert s.in_force(TARGETS[3], 10**9) is None


def test_only_valid_revocations_get_in() -> None:
    s = _fresh()
    good = _rev(TARGETS[0], 100)
    with pytest.raises(MembershipError) as excinfo:
        s.add(replace(good, revoked_at=50))  # signature no longer matches
    assert excinfo.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(MembershipError) as excinfo:
        s.add(replace(good, mesh_id=b"O" * 16))
    assert excinfo.value.reason is Reason.WRONG_MESH
    outsider = _key("outsider")
    forged = replace(good, issuer=nid(outsider)).sign(outsider)
    with pytest.raises(MembershipError) as excinfo:
        s.add(forged)
    assert excinfo.value.reason is Reason.UNKNOWN_ISSUER
    assert len(s) == 0


def test_misuse() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        RevocationSet(b"short", MESH.admins)
    with pytest.raises(ValueError, match="at least one admin"):
        RevocationSet(MESH.mesh_id, [])
    with pytest.raises(ValueError, match="different meshes"):
        _fresh().merge(RevocationSet(b"O" * 16, MESH.admins))


def test_digest_depends_on_mesh_and_content() -> None:
    empty, other = _fresh(), RevocationSet(b"O" * 16, MESH.admins)
    assert empty.digest() != other.digest()
    full = _fresh()
    full.add(POOL[0])
    assert full.digest() != empty.digest()
    assert len(empty.digest()) == 32


@given(st.lists(st.sampled_from(POOL), max_size=20), st.randoms(use_true_random=False))
def test_any_order_and_any_split_converge(
    revocations: list[Revocation], rng: random.Random
) -> None:
    in_order, shuffled = _fresh(), _fresh()
    for revocation in revocations:
        before = in_order.digest()
        changed = in_order.add(revocation)
        assert changed == (in_order.digest() != before)
    mixed = list(revocations)
    rng.shuffle(mixed)
    for revocation in mixed:
        shuffled.add(revocation)
    assert in_order.digest() == shuffled.digest()
    assert list(in_order) == list(shuffled)

    # split between two nodes, gossip both ways: same state as having seen everything
    left, right = _fresh(), _fresh()
    cut = rng.randrange(len(mixed) + 1)
    for revocation in mixed[:cut]:
        left.add(revocation)
    for revocation in mixed[cut:]:
        right.add(revocation)
    left.merge(right)
    right.merge(left)
    assert left.digest() == right.digest() == in_order.digest()
    assert left.merge(right) == 0  # idempotent

    # what is kept per target is the earliest
    for target in {r.target for r in revocations}:
        kept = in_order.get(target)
        assert kept is not None
        assert kept.revoked_at == min(r.revoked_at for r in revocations if r.target == target)
