"""Releases learned from neighbours and fetched from them (meshd.core.releases): what is
taken from whom, one part at a time, and what is refused with which reason."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.membership.cosigned import Cosigned
from meshd.core.proto.release import ReleaseError
from meshd.core.proto.session import MAX_RELEASE_PART, ReleaseFetch, ReleasePart
from meshd.core.releases import ANSWER_WITHIN_S, ASK_EVERY_S, Releases
from tests.golden.release.make_vectors import ADMIN, MESH_ID, signed

ARTIFACT = bytes(range(256)) * 300  # 76,800 octets: three parts, the last short
A, B = "a" * 43, "b" * 43


def releases() -> Releases:
    return Releases(MESH_ID, lambda: (node_id_from_public(bytes(ADMIN.verify_key)),))


def fetch_all(core: Releases, holders: set[str], now: float = 0.0) -> float:
    """Ask and answer until every octet is in; the time it took."""
    while (asked := core.ask(now, holders)) is not None:
        holder, msg = asked
        data = ARTIFACT[msg.offset : msg.offset + msg.length]
        assert core.part(holder, ReleasePart(msg.serial, msg.offset, data)) is None
        now += ASK_EVERY_S
    return now


def test_a_newer_release_is_fetched_part_by_part_from_its_holder_and_then_held() -> None:
    core = releases()
    manifest = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    assert core.heard(A, manifest.encode()) == (None, True)
    asked = core.ask(0.0, {A, B})
    assert asked == (A, ReleaseFetch(7, 0, MAX_RELEASE_PART))
    assert core.ask(0.1, {A, B}) is None  # one part at a time
    assert core.part(A, ReleasePart(7, 0, ARTIFACT[:MAX_RELEASE_PART])) is None
    assert core.ask(0.1, {A, B}) is None  # two a second at most
    took = fetch_all(core, {A, B}, ASK_EVERY_S)
    assert core.fetching is not None and core.fetching.complete
    assert took == 3 * ASK_EVERY_S
    assert core.fetched(matches=True) == manifest
    assert core.held == manifest and core.fetching is None
    # Held now: served, clipped to the artifact; heard again, nothing new.
    assert core.serve(ReleaseFetch(7, 65_536, MAX_RELEASE_PART)) == (65_536, 76_800 - 65_536)
    assert core.serve(ReleaseFetch(6, 0, 10)) == "release_not_held"
    assert core.serve(ReleaseFetch(7, 76_800, 10)) == "release_not_held"
    assert core.heard(B, manifest.encode()) == (None, False)


def test_what_no_admin_signed_or_another_mesh_made_is_refused_by_reason() -> None:
    core = releases()
    good = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    stranger = signed(SigningKey(bytes(32)), MESH_ID, 8, ARTIFACT)
    cases = {
        b"\x30nonsense": "release_malformed",
        signed(ADMIN, bytes(16), 8, ARTIFACT).encode(): "release_other_mesh",
        stranger.encode(): "release_not_admin",
        replace(good, serial=8).encode(): "release_bad_signature",
    }
    for data, reason in cases.items():
        assert core.heard(A, data) == (reason, False)
    assert core.fetching is None and core.held is None
    core.heard(A, good.encode())
    conflicting = replace(good, artifact_name="other.whl").sign(ADMIN)
    assert core.heard(B, conflicting.encode()) == ("release_conflict", False)
    older = signed(ADMIN, MESH_ID, 6, ARTIFACT)
    assert core.heard(B, older.encode()) == (None, False)  # not fetched, not refused


def test_a_refusal_says_why_in_words_and_a_release_of_serial_0_is_taken() -> None:
    core = releases()
    stranger = signed(SigningKey(bytes(32)), MESH_ID, 8, ARTIFACT)
    with pytest.raises(ReleaseError, match="release 8: signed by .*, no admin") as refused:
        core.check(stranger.encode())
    assert refused.value.code == "release_not_admin"
    with pytest.raises(ReleaseError, match="malformed") as refused:
        core.check(b"\x30nonsense")
    assert refused.value.code == "release_malformed"
    first = signed(ADMIN, MESH_ID, 0, ARTIFACT)
    assert core.check(first.encode()) == first
    assert core.heard(A, first.encode()) == (None, True)


def test_where_the_mesh_asks_for_two_admins_a_release_needs_both() -> None:
    other = SigningKey(bytes(range(1, 33)))
    admins = tuple(node_id_from_public(bytes(k.verify_key)) for k in (ADMIN, other))
    core = Releases(MESH_ID, lambda: admins, lambda: 2)
    alone = Cosigned(signed(ADMIN, MESH_ID, 7, ARTIFACT))
    assert core.heard(A, alone.encode()) == ("release_short_of_quorum", False)
    forged = Cosigned(alone.record, ((admins[1], bytes(64)),))
    assert core.heard(A, forged.encode()) == ("release_bad_signature", False)
    both = alone.cosign(other)
    assert core.heard(A, both.encode()) == (None, True)
    assert core.fetching is not None and core.fetching.encoded == both.encode()
    fetch_all(core, {A})
    core.fetched(matches=True)
    assert core.held_encoded == both.encode()  # passed on with its signatures


def test_only_the_part_asked_for_from_whom_it_was_asked_is_taken() -> None:
    core = releases()
    assert core.part(A, ReleasePart(7, 0, b"x")) == "release_unasked"
    core.heard(A, signed(ADMIN, MESH_ID, 7, ARTIFACT).encode())
    holder, msg = core.ask(0.0, {A}) or ("", ReleaseFetch(0, 0, 1))
    data = ARTIFACT[: msg.length]
    for who, part in [
        (B, ReleasePart(7, 0, data)),  # not asked of B
        (A, ReleasePart(7, 1, data)),  # not where asked
        (A, ReleasePart(7, 0, data[:-1])),  # shorter than asked
        (A, ReleasePart(6, 0, data)),  # another release
    ]:
        assert core.part(who, part) == "release_unasked"
    assert core.part(A, ReleasePart(7, 0, data)) is None
    assert core.part(A, ReleasePart(7, 0, data)) == "release_unasked"  # answered already


def test_a_silent_holder_is_passed_over_and_a_bad_artifact_fetched_again_elsewhere() -> None:
    core = releases()
    manifest = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    core.heard(A, manifest.encode())
    core.heard(B, manifest.encode())
    assert core.ask(0.0, {A, B}) is not None  # of A, which never answers
    assert core.ask(ANSWER_WITHIN_S - 0.1, {A, B}) is None
    asked = core.ask(ANSWER_WITHIN_S, {A, B})
    assert asked is not None and asked[0] == B and asked[1].offset == 0
    core.part(B, ReleasePart(7, 0, ARTIFACT[:MAX_RELEASE_PART]))
    fetch_all(core, {B}, ANSWER_WITHIN_S + 1)
    assert core.fetching is not None and core.fetching.served_by == {B}
    assert core.fetched(matches=False) is None  # B's artifact does not match
    assert core.fetching.received == 0 and not core.fetching.served_by
    asked = core.ask(100.0, {A, B})
    assert asked is not None and asked[0] == A  # from the start, of A first now
    assert core.ask(200.0, set()) is None  # no holder up: nothing asked


def test_a_release_published_here_is_held_and_ends_an_older_fetch() -> None:
    core = releases()
    core.heard(A, signed(ADMIN, MESH_ID, 7, ARTIFACT).encode())
    newer = signed(ADMIN, MESH_ID, 8, ARTIFACT + b"!")
    core.hold(newer, newer.encode())
    assert core.held == newer and core.fetching is None and core.newest_serial == 8
    assert hashlib.sha256(ARTIFACT + b"!").digest() == newer.artifact_sha256


def test_a_fetch_goes_on_after_a_restart_from_its_last_whole_part() -> None:
    """What was on disk is kept up to the last whole part before it; the rest, and at
    least the artifact's last part, is asked again once a neighbour offers the release."""
    manifest = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    for on_disk, goes_on_at in (
        (0, 0),
        (MAX_RELEASE_PART + 100, MAX_RELEASE_PART),  # a part half written
        (2 * MAX_RELEASE_PART, 2 * MAX_RELEASE_PART),
        (len(ARTIFACT), 2 * MAX_RELEASE_PART),  # all in, not checked: the last part again
        (10 * len(ARTIFACT), 2 * MAX_RELEASE_PART),
    ):
        core = releases()
        assert core.resume(manifest.encode(), on_disk) == manifest
        assert core.fetching is not None and core.fetching.received == goes_on_at
        assert core.ask(0.0, {A}) is None  # no holder known yet
        assert core.heard(A, manifest.encode()) == (None, False)  # the same release
        asked = core.ask(0.0, {A})
        assert asked is not None and asked[1].offset == goes_on_at
        part = ARTIFACT[goes_on_at : goes_on_at + asked[1].length]
        assert core.part(A, ReleasePart(7, goes_on_at, part)) is None
        fetch_all(core, {A}, ASK_EVERY_S)
        assert core.fetching.complete and core.fetching.served_by == {"", A}


def test_a_fetch_is_not_taken_again_when_no_longer_wanted() -> None:
    manifest = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    core = releases()
    core.hold(manifest, manifest.encode())
    assert core.resume(manifest.encode(), 100) is None  # held already
    assert core.resume(signed(ADMIN, MESH_ID, 6, ARTIFACT).encode(), 100) is None  # older
    other = signed(SigningKey(bytes(32)), MESH_ID, 8, ARTIFACT)
    assert core.resume(other.encode(), 100) is None  # no admin of this mesh signed it
    assert core.resume(b"\x30garbage", 100) is None
    assert core.fetching is None
