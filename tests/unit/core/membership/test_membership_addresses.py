"""One holder per mesh address, one delegate per pool (issue 28, item 4): the certificate
directory refuses a certificate for an address another member holds (``address_in_use``)
and a delegation whose pool overlaps another delegate's (``pool_overlap``), and which of
two stays is decided from the records alone: every arrival order gives the same holders."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.core.membership import (
    DelegationCertificate,
    MeshTrust,
    RevocationTarget,
    issue_delegation,
    issue_membership,
    revoke,
)
from meshd.core.membership.directory import (
    ADDRESS_IN_USE,
    POOL_OVERLAP,
    Added,
    Directory,
    DirectoryError,
    Entry,
)
from meshd.core.membership.messages import SCOPE_ALL
from tests.unit.receipt_fixtures import ADMIN, CERT_DAYS, DAY, DELEGATE, MESH, T0, key, nid

NOW = T0 + DAY
OTHER_DELEGATE = key("other delegate")
MEMBERS = [key(f"member {i}") for i in range(6)]
SIGNERS = {nid(DELEGATE): DELEGATE, nid(OTHER_DELEGATE): OTHER_DELEGATE}


def directory(pinned: str | None = None) -> Directory:
    d = Directory(MeshTrust.from_definition(MESH, [nid(ADMIN)]))
    d.pinned = pinned
    return d


def delegation(
    delegate: SigningKey, pool: str, not_before: int = T0, serial: int = 100
) -> DelegationCertificate:
    return issue_delegation(
        ADMIN,
        mesh=MESH,
        delegate=nid(delegate),
        scope=SCOPE_ALL,
        ipv4_pool=ipaddress.IPv4Network(pool),
        not_before=not_before,
        expires_at=T0 + 90 * DAY,
        serial=serial,
    )


POOL_A = delegation(DELEGATE, "10.88.16.0/20")
POOL_B_OVERLAPPING = delegation(OTHER_DELEGATE, "10.88.20.0/24", not_before=T0 + 1, serial=101)
POOL_B_DISJOINT = delegation(OTHER_DELEGATE, "10.88.32.0/24", serial=102)


def entry(
    member: SigningKey,
    ipv4: str,
    *,
    not_before: int = T0,
    by: DelegationCertificate | None = None,
    serial: int = 1,
    expires_at: int | None = None,
) -> Entry:
    signer = ADMIN if by is None else SIGNERS[by.delegate]
    cert = issue_membership(
        signer,
        mesh=MESH,
        node_id=nid(member),
        name="m",
        wireguard_public=bytes(32),
        mesh_ipv4=ipaddress.IPv4Address(ipv4),
        not_before=not_before,
        expires_at=expires_at or T0 + CERT_DAYS * DAY,
        serial=serial,
        delegation=by,
    )
    return Entry(cert, (by,) if by is not None else ())


def holders(d: Directory) -> dict[str, str]:
    return {str(m.mesh_ipv4): m.node_id for m in d.members()}


def refused(d: Directory, e: Entry, now: float = NOW) -> str:
    with pytest.raises(DirectoryError) as info:
        d.add(e, now)
    return info.value.reason


def test_a_second_member_for_a_used_address_is_refused() -> None:
    d = directory()
    first = entry(MEMBERS[0], "10.88.0.5")
    d.add(first, NOW)
    assert refused(d, entry(MEMBERS[1], "10.88.0.5", not_before=T0 + 60)) == ADDRESS_IN_USE
    assert holders(d) == {"10.88.0.5": nid(MEMBERS[0])}
    assert d.prune(NOW) == []


def test_the_member_certified_first_keeps_the_address_whichever_arrives_first() -> None:
    earlier = entry(MEMBERS[0], "10.88.0.5")
    later = entry(MEMBERS[1], "10.88.0.5", not_before=T0 + 60)
    d = directory()
    d.add(later, NOW)
    assert d.add(earlier, NOW)[0] is Added.NEW
    assert holders(d) == {"10.88.0.5": nid(MEMBERS[0])}
    assert d.prune(NOW) == [nid(MEMBERS[1])]  # displaced: the plane forgets its routes
    assert nid(MEMBERS[1]) not in d


def test_an_admin_certificate_comes_before_a_delegates_even_backdated() -> None:
    """A delegate answers for its pool only: a certificate it backdates does not take an
    address an admin gave out (say inside that pool by mistake)."""
    d = directory()
    d.add(entry(MEMBERS[0], "10.88.16.9", not_before=T0 + 600), NOW)
    backdated = entry(MEMBERS[1], "10.88.16.9", not_before=T0 - DAY, by=POOL_A)
    assert refused(d, backdated) == ADDRESS_IN_USE


def test_a_tie_goes_to_the_lower_key() -> None:
    a, b = sorted(MEMBERS[:2], key=lambda k: bytes(k.verify_key))
    d = directory()
    d.add(entry(b, "10.88.0.7"), NOW)
    d.add(entry(a, "10.88.0.7"), NOW)
    assert holders(d) == {"10.88.0.7": nid(a)}


def test_a_renewal_keeps_or_moves_its_own_address() -> None:
    d = directory()
    d.add(entry(MEMBERS[0], "10.88.0.5"), NOW)
    assert d.add(entry(MEMBERS[0], "10.88.0.5", not_before=T0 + 60), NOW)[0] is Added.RENEWED
    d.add(entry(MEMBERS[0], "10.88.0.6", not_before=T0 + 120), NOW)  # re-addressed
    d.add(entry(MEMBERS[1], "10.88.0.5", not_before=T0 + 180), NOW)  # the old one is free
    assert holders(d) == {"10.88.0.6": nid(MEMBERS[0]), "10.88.0.5": nid(MEMBERS[1])}


def test_an_expired_or_revoked_holder_frees_its_address() -> None:
    d = directory()
    d.add(entry(MEMBERS[0], "10.88.0.5", expires_at=T0 + 2 * DAY), NOW)
    later = entry(MEMBERS[1], "10.88.0.5", not_before=T0 + 60)
    assert refused(d, later) == ADDRESS_IN_USE
    d.add(later, T0 + 3 * DAY)  # not pruned yet, but no longer in force
    assert holders(d) == {"10.88.0.5": nid(MEMBERS[1])}
    d = directory()
    d.add(entry(MEMBERS[2], "10.88.0.8"), NOW)
    revocation = revoke(
        ADMIN, mesh=MESH, target=RevocationTarget.node(nid(MEMBERS[2])), revoked_at=NOW
    )
    d.trust.revocations.add(revocation)
    d.add(entry(MEMBERS[3], "10.88.0.8", not_before=T0 + 60), NOW + 1)
    assert holders(d)["10.88.0.8"] == nid(MEMBERS[3])


def test_our_own_address_is_never_given_away() -> None:
    """Ours stays ours here, whatever the order says (the rest of the mesh refuses ours)."""
    ours = entry(MEMBERS[1], "10.88.0.5", not_before=T0 + 60)
    d = directory(pinned=nid(MEMBERS[1]))
    d.add(ours, NOW)
    assert refused(d, entry(MEMBERS[0], "10.88.0.5")) == ADDRESS_IN_USE
    assert holders(d) == {"10.88.0.5": nid(MEMBERS[1])}


def test_the_ipv6_address_counts_too() -> None:
    """A mesh IPv6 address comes from the node id, so two certificates share one only when
    they name one node; the directory indexes it all the same."""
    d = directory()
    e = entry(MEMBERS[0], "10.88.0.5")
    d.add(e, NOW)
    assert d._holders[e.certificate.mesh_ipv6] == nid(MEMBERS[0])


def test_a_delegation_overlapping_another_delegates_pool_is_refused() -> None:
    d = directory()
    d.add(entry(MEMBERS[0], "10.88.16.1", by=POOL_A), NOW)
    overlapping = entry(MEMBERS[1], "10.88.20.1", by=POOL_B_OVERLAPPING)
    assert refused(d, overlapping) == POOL_OVERLAP  # even at an address nobody holds
    d.add(entry(MEMBERS[2], "10.88.32.1", by=POOL_B_DISJOINT), NOW)  # disjoint: fine
    # The same delegate's renewed delegation overlaps its own pool: no conflict.
    renewed = delegation(DELEGATE, "10.88.16.0/20", not_before=T0 + 5, serial=103)
    d.add(entry(MEMBERS[3], "10.88.16.2", by=renewed), NOW)
    assert sorted(holders(d)) == ["10.88.16.1", "10.88.16.2", "10.88.32.1"]


def test_the_delegation_given_first_keeps_its_pool_whichever_arrives_first() -> None:
    d = directory()
    d.add(entry(MEMBERS[1], "10.88.20.1", by=POOL_B_OVERLAPPING), NOW)
    d.add(entry(MEMBERS[2], "10.88.20.2", by=POOL_B_OVERLAPPING), NOW)
    d.add(entry(MEMBERS[0], "10.88.16.1", by=POOL_A), NOW)
    assert holders(d) == {"10.88.16.1": nid(MEMBERS[0])}
    assert sorted(d.prune(NOW)) == sorted([nid(MEMBERS[1]), nid(MEMBERS[2])])
    assert refused(d, entry(MEMBERS[1], "10.88.20.1", by=POOL_B_OVERLAPPING)) == POOL_OVERLAP


CANDIDATES: list[tuple[SigningKey, str, int, DelegationCertificate | None]] = [
    (MEMBERS[0], "10.88.0.5", T0 + 10, None),
    (MEMBERS[1], "10.88.0.5", T0, None),
    (MEMBERS[2], "10.88.16.5", T0 - 60, POOL_A),
    (MEMBERS[3], "10.88.16.5", T0 + 5, None),
    (MEMBERS[4], "10.88.20.5", T0, POOL_B_OVERLAPPING),
    (MEMBERS[5], "10.88.16.6", T0, POOL_A),
]
ENTRIES = [entry(m, ip, not_before=nb, by=by) for m, ip, nb, by in CANDIDATES]


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(len(ENTRIES))))
def test_every_arrival_order_gives_the_same_holders(order: list[int]) -> None:
    """What every node ends with, whatever order the directory sync brought them in."""
    d = directory()
    for i in order:
        try:
            d.add(ENTRIES[i], NOW)
        except DirectoryError as exc:
            assert exc.reason in (ADDRESS_IN_USE, POOL_OVERLAP)
    assert holders(d) == {
        "10.88.0.5": nid(MEMBERS[1]),  # the earlier of two admin certificates
        "10.88.16.5": nid(MEMBERS[3]),  # the admin's, before the delegate's backdated one
        "10.88.16.6": nid(MEMBERS[5]),  # pool A's; pool B overlaps it and came later
    }
