"""The certificate directory: only what verifies goes in, renewals replace, expired and
revoked certificates go out, two directories reconcile to the same set by digest,
fingerprints and only the missing entries, and the file round-trips."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.core.membership import MeshTrust, RevocationTarget, issue_membership, revoke
from meshd.core.membership.directory import (
    FILE_MAGIC,
    Added,
    Directory,
    DirectoryError,
    Entry,
    entries_of,
)
from tests.unit.receipt_fixtures import (
    ADMIN,
    CERT_DAYS,
    CONSUMER,
    CONSUMER_CERT,
    DAY,
    DELEGATION,
    LATE_CERT,
    MESH,
    OTHER_MESH,
    PROVIDER_CERT,
    T0,
    certify,
    key,
    nid,
)

NOW = T0 + DAY
ENTRIES = [Entry(PROVIDER_CERT), Entry(CONSUMER_CERT), Entry(LATE_CERT, (DELEGATION,))]


def directory(*entries: Entry, max_entries: int = 100) -> Directory:
    d = Directory(MeshTrust.from_definition(MESH, [nid(ADMIN)]), max_entries)
    for entry in entries:
        d.add(entry, NOW)
    return d


def test_entries_that_verify_go_in_once() -> None:
    d = directory()
    outcomes = [d.add(e, NOW) for e in ENTRIES]
    assert [added for added, _ in outcomes] == [Added.NEW] * 3
    assert {m.node_id for m in d.members()} == {e.node_id for e in ENTRIES}
    assert [m.mesh_ipv4 for _, m in outcomes if m] == [
        PROVIDER_CERT.mesh_ipv4,
        CONSUMER_CERT.mesh_ipv4,
        LATE_CERT.mesh_ipv4,
    ]
    assert d.add(ENTRIES[0], NOW) == (Added.KNOWN, None)
    assert len(d) == 3 and PROVIDER_CERT.node_id in d


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (Entry(LATE_CERT), "unknown_issuer"),  # a delegate's certificate without its chain
        (Entry(certify(key("other"), "10.89.0.9", 9, OTHER_MESH)), "wrong_mesh"),
        (Entry(replace(CONSUMER_CERT, name="forged")), "bad_signature"),
    ],
)
def test_what_does_not_verify_is_refused_with_its_reason(entry: Entry, reason: str) -> None:
    d = directory()
    with pytest.raises(DirectoryError) as excinfo:
        d.add(entry, NOW)
    assert excinfo.value.reason == reason and len(d) == 0


def test_a_renewal_replaces_and_an_older_certificate_does_not() -> None:
    renewed = issue_membership(
        ADMIN,
        mesh=MESH,
        node_id=CONSUMER_CERT.node_id,
        name=CONSUMER_CERT.name,
        wireguard_public=CONSUMER_CERT.wireguard_public,
        mesh_ipv4=CONSUMER_CERT.mesh_ipv4,
        not_before=T0 + DAY,
        expires_at=T0 + 60 * DAY,
        serial=20,
    )
    d = directory(Entry(CONSUMER_CERT))
    assert d.add(Entry(renewed), NOW)[0] is Added.RENEWED
    assert d.add(Entry(CONSUMER_CERT), NOW) == (Added.KNOWN, None)
    assert [e.fingerprint for e in d.missing_from([])] == [Entry(renewed).fingerprint]


def test_expired_and_revoked_entries_are_pruned() -> None:
    d = directory(*ENTRIES)
    assert d.prune(NOW) == []
    d.trust.revocations.add(
        revoke(ADMIN, mesh=MESH, target=RevocationTarget.node(nid(CONSUMER)), revoked_at=NOW)
    )
    assert d.prune(NOW + 1) == [CONSUMER_CERT.node_id]
    assert sorted(d.prune(T0 + (CERT_DAYS + 1) * DAY)) == sorted(
        [PROVIDER_CERT.node_id, LATE_CERT.node_id]
    )
    assert len(d) == 0


def test_a_full_directory_refuses_new_members_but_takes_renewals() -> None:
    d = directory(ENTRIES[0], max_entries=1)
    with pytest.raises(DirectoryError) as excinfo:
        d.add(ENTRIES[1], NOW)
    assert excinfo.value.reason == "directory_full"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(range(3)), max_size=3), st.lists(st.sampled_from(range(3))))
def test_two_directories_reconcile_to_the_same_set(mine: list[int], theirs: list[int]) -> None:
    a = directory(*(ENTRIES[i] for i in mine))
    b = directory(*(ENTRIES[i] for i in theirs))
    same = {ENTRIES[i].fingerprint for i in mine} == {ENTRIES[i].fingerprint for i in theirs}
    assert (a.digest() == b.digest()) == same
    # Each sends its fingerprints; each answers with what the other lacks.
    to_b, to_a = a.missing_from(b.fingerprints()), b.missing_from(a.fingerprints())
    for entry in entries_of([e.encoded for e in to_b]):
        b.add(entry, NOW)
    for entry in entries_of([e.encoded for e in to_a]):
        a.add(entry, NOW)
    assert a.digest() == b.digest() and len(a) == len(set(mine) | set(theirs))


def test_the_file_round_trips_and_leaves_out_what_no_longer_verifies() -> None:
    d = directory(*ENTRIES)
    data = d.encode()
    again = directory()
    assert again.load(data, NOW) == [] and again.digest() == d.digest()
    later = directory()
    refused = later.load(data, T0 + (CERT_DAYS + 1) * DAY)
    assert len(later) == 0 and {r.reason for r in refused} == {"expired"}
    with pytest.raises(DirectoryError):
        directory().load(b"something else", NOW)
    truncated = directory()
    assert [r.reason for r in truncated.load(data[:-5], NOW)] == ["malformed"]
    assert len(truncated) == 2


@settings(max_examples=200)
@given(st.binary(max_size=600), st.integers(0, 2**32))
def test_garbage_entries_never_raise_anything_but_directory_errors(
    garbage: bytes, seed: int
) -> None:
    data = bytearray(ENTRIES[2].encoded)
    rng = random.Random(seed)
    for _ in range(rng.randrange(4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    for candidate in (garbage, bytes(data), FILE_MAGIC + garbage):
        with contextlib.suppress(DirectoryError):
            Entry.decode(candidate)
        with contextlib.suppress(DirectoryError):
            directory().load(candidate, NOW)
