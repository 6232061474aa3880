"""verify_export: every way an export can be wrong is one refused line with its reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.adapters.signatures import SHARED_FROM, on_threads
from meshd.core.membership import (
    MembershipError,
    MeshTrust,
    RevocationTarget,
    revoke,
    verify_membership,
)
from meshd.core.receipts import (
    Receipt,
    ReceiptError,
    ReceiptReason,
    SignerMembership,
    verify_export,
)
from tests.unit.receipt_fixtures import (
    ADMIN,
    CERT_DAYS,
    CONSUMER,
    CONSUMER_CERT,
    DAY,
    DELEGATE,
    LATE,
    MESH,
    OTHER_MESH,
    STRANGER,
    T0,
    certify,
    export,
    nid,
    receipt,
)

ADMIN_KEYS = [nid(ADMIN)]
HEADER = 5  # mesh definition, delegation, three certificates: the receipts start on line 6


def _chain() -> list[Receipt]:
    return [receipt(1, 0, 0), receipt(2, 100, 50), receipt(3, 300, 90)]


def _reasons(lines: list[str], admin_keys: list[str] = ADMIN_KEYS) -> list[tuple[int | None, str]]:
    report = verify_export(lines, admin_keys)
    return [(r.line, str(r.reason)) for r in report.rejections]


def test_a_good_export_verifies_with_membership() -> None:
    lines = export([*_chain(), receipt(1, 4096, consumer=LATE, provider=CONSUMER)])
    report = verify_export(lines, ADMIN_KEYS)
    assert report.ok and report.membership_checked
    assert [line for line, _ in report.receipts] == [6, 7, 8, 9]
    assert report.mesh_id == MESH.mesh_id


def test_without_an_admin_key_membership_is_not_checked() -> None:
    report = verify_export(export([receipt(1, consumer=STRANGER)]), [])
    assert report.ok and not report.membership_checked


# --- the tampering list -------------------------------------------------------


def test_a_changed_field_is_a_bad_signature() -> None:
    lines = export(_chain())
    obj = json.loads(lines[HEADER + 1])
    obj["relayed_for_bytes"] += 1
    lines[HEADER + 1] = json.dumps(obj)
    assert _reasons(lines) == [(7, "bad_signature")]


def test_reordered_receipts_are_refused() -> None:
    lines = export(_chain())
    lines[HEADER + 1], lines[HEADER + 2] = lines[HEADER + 2], lines[HEADER + 1]
    assert _reasons(lines) == [(8, "seq_not_increasing")]


def test_a_replayed_old_receipt_is_refused() -> None:
    lines = export(_chain())
    lines.append(lines[HEADER])
    assert _reasons(lines) == [(9, "seq_not_increasing")]


def test_a_receipt_of_another_mesh_is_refused() -> None:
    lines = export([receipt(1), receipt(2, 5, mesh_id=OTHER_MESH.mesh_id)])
    assert _reasons(lines) == [(7, "wrong_mesh")]


def test_a_long_export_checked_on_several_threads_says_the_same_as_on_one() -> None:
    """Past SHARED_FROM receipts meshd.adapters.signatures shares the signatures among
    threads: every verdict, and the order of what is kept, is the one thread's."""
    chain = [receipt(seq, seq * 10, seq) for seq in range(1, SHARED_FROM * 2)]
    lines = export(chain)
    for seq in (1, 77, SHARED_FROM, SHARED_FROM * 2 - 1):  # first, middle, runs' edges, last
        obj = json.loads(lines[HEADER + seq - 1])
        obj["relayed_to_bytes"] += 1
        lines[HEADER + seq - 1] = json.dumps(obj)
    lines[HEADER + 100] = export([receipt(101, 1010, 101, mesh_id=OTHER_MESH.mesh_id)])[-1]
    one = verify_export(lines, ADMIN_KEYS)
    assert [(r.line, str(r.reason)) for r in one.rejections] == [
        (HEADER + 1, "bad_signature"),
        (HEADER + 77, "bad_signature"),
        (HEADER + 101, "wrong_mesh"),
        (HEADER + SHARED_FROM, "bad_signature"),
        (HEADER + SHARED_FROM * 2 - 1, "bad_signature"),
    ]
    assert len(one.receipts) == len(chain) - 5
    for threads in (2, 3, 8):
        assert verify_export(lines, ADMIN_KEYS, signatures=on_threads(threads)) == one


def test_a_receipt_signed_by_a_non_member_is_refused() -> None:
    stranger_elsewhere = certify(STRANGER, "10.89.0.9", 9, mesh=OTHER_MESH)
    lines = export(
        [receipt(1, consumer=STRANGER)],
        certificates=[CONSUMER_CERT, stranger_elsewhere],
    )
    assert _reasons(lines) == [(4, "wrong_mesh"), (5, "no_certificate")]
    # Without the admin key nobody can tell: signatures and order alone pass.
    assert _reasons(lines, []) == [(4, "wrong_mesh")]


def test_a_revoked_signer_is_refused_from_the_revocation_on() -> None:
    revoked_at = T0 + 2 * DAY + 10
    revocation = revoke(
        ADMIN, mesh=MESH, target=RevocationTarget.node(nid(CONSUMER)), revoked_at=revoked_at
    )
    before, across = receipt(1, at=T0 + DAY), receipt(2, at=revoked_at - 20)
    report = verify_export(export([before, across], revocations=[revocation]), ADMIN_KEYS)
    assert [(r.line, r.reason) for r in report.rejections] == [(8, ReceiptReason.NOT_A_MEMBER)]
    assert "revoked" in report.rejections[0].message


def test_a_receipt_after_the_certificate_expired_is_refused() -> None:
    late = receipt(1, at=T0 + CERT_DAYS * DAY + 3600)
    report = verify_export(export([late]), ADMIN_KEYS)
    assert [r.reason for r in report.rejections] == [ReceiptReason.NOT_A_MEMBER]
    assert "expired" in report.rejections[0].message


def test_a_delegated_certificate_needs_its_delegation_in_the_export() -> None:
    lines = export([receipt(1, consumer=LATE)], delegations=[])
    assert _reasons(lines) == [(5, "not_a_member")]


def test_duplicates_conflicts_and_shrinking_totals() -> None:
    chain = _chain()
    forked = receipt(2, 101, 50)
    shrunk = receipt(4, 299, 90)
    lines = export([chain[0], chain[1], chain[1], forked, chain[2], shrunk])
    report = verify_export(lines, ADMIN_KEYS)
    assert report.duplicates == 1
    assert [(r.line, r.reason) for r in report.rejections] == [
        (9, ReceiptReason.CONFLICT),
        (11, ReceiptReason.TOTALS_DECREASED),
    ]


# --- the mesh definition and the membership lines --------------------------------------


def test_no_mesh_definition_is_a_problem_of_the_whole_file() -> None:
    lines = export([receipt(1)])[1:]
    assert _reasons(lines) == [(None, "no_mesh_definition")]


def test_a_mesh_definition_not_signed_by_the_admin_key() -> None:
    report = verify_export(export([receipt(1)]), [nid(STRANGER)])
    assert [(r.line, r.reason) for r in report.rejections] == [(1, ReceiptReason.UNTRUSTED_MESH)]
    assert not report.membership_checked


def test_repeated_mesh_definitions_must_be_the_same() -> None:
    lines = export([receipt(1)])
    other = export([], mesh=OTHER_MESH)[0]
    assert _reasons([lines[0], *lines]) == []
    assert _reasons([*lines, other]) == [(7, "conflicting_mesh_definition")]


def test_an_export_of_another_mesh_than_expected() -> None:
    report = verify_export(export([receipt(1)]), ADMIN_KEYS, expected_mesh_id=bytes(16))
    assert {r.reason for r in report.rejections} == {ReceiptReason.WRONG_MESH}
    assert [r.line for r in report.rejections] == [1, 2, 3, 4, 5, 6]


def test_a_revocation_not_signed_by_an_admin_is_refused() -> None:
    forged = revoke(
        ADMIN, mesh=MESH, target=RevocationTarget.node(nid(CONSUMER)), revoked_at=T0
    ).to_json()
    forged["revoked_at"] = T0 + 1
    lines = [*export([receipt(1)]), json.dumps(forged)]
    assert _reasons(lines) == [(7, "invalid_revocation")]


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        b"\xff\xfe{}",
        "[1, 2]",
        '{"type": "nothing"}',
        '{"type": "receipt", "version": 2}',
        '{"type": "receipt", "type": "receipt"}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_a_line_that_is_no_record_is_malformed(line: str | bytes) -> None:
    lines: list[str | bytes] = [*export([receipt(1)]), line, "", "  "]
    report = verify_export(lines, ADMIN_KEYS)
    assert [(r.line, r.reason) for r in report.rejections] == [(7, ReceiptReason.MALFORMED)]


def test_a_revocation_whose_target_kind_is_a_list_is_malformed() -> None:
    # It reached a dict lookup with an unhashable key in the membership JSON reader.
    revocation = revoke(
        ADMIN, mesh=MESH, target=RevocationTarget.node(nid(CONSUMER)), revoked_at=T0
    )
    obj = revocation.to_json()
    obj["target"] = {"kind": []}
    assert _reasons([*export([receipt(1)]), json.dumps(obj)]) == [(7, "malformed")]


GOOD_LINES = export([*_chain(), receipt(1, consumer=LATE, provider=CONSUMER)])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(GOOD_LINES),
            st.text(max_size=60),
            st.binary(max_size=60),
            st.sampled_from(GOOD_LINES).flatmap(
                lambda line: st.tuples(st.integers(0, len(line) - 1), st.characters()).map(
                    lambda edit: line[: edit[0]] + edit[1] + line[edit[0] + 1 :]
                )
            ),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_no_input_makes_it_raise(lines: list[str | bytes], with_admin: bool) -> None:
    report = verify_export(lines, ADMIN_KEYS if with_admin else [])
    assert all(r.line is None or 1 <= r.line <= len(lines) for r in report.rejections)


# --- the memoised membership answer is verify_membership's -----------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.integers(T0 - 2 * DAY, T0 + 32 * DAY),
    st.integers(0, 2 * DAY),
    st.one_of(st.none(), st.integers(T0 - DAY, T0 + 31 * DAY)),
    st.sampled_from([CONSUMER, LATE]),
)
def test_signer_membership_agrees_with_verify_membership_at_both_ends(
    not_before: int, length: int, revoked_at: int | None, who: object
) -> None:
    from tests.unit.receipt_fixtures import CERTIFICATES, DELEGATION, LATE_CERT

    trust = MeshTrust.from_definition(MESH, ADMIN_KEYS)
    if revoked_at is not None:
        target = RevocationTarget.node(nid(DELEGATE if who is LATE else CONSUMER))
        trust.revocations.add(revoke(ADMIN, mesh=MESH, target=target, revoked_at=revoked_at))
    signers = SignerMembership(trust, CERTIFICATES, [DELEGATION])
    cert, chain = (LATE_CERT, (DELEGATION,)) if who is LATE else (CONSUMER_CERT, ())
    not_after = not_before + length

    def member_at(t: int) -> bool:
        try:
            verify_membership(cert, chain, trust, t)
        except MembershipError:
            return False
        return True

    expected = member_at(not_before) and member_at(not_after)
    try:
        signers.check(cert.node_id, not_before, not_after)
        answer = True
    except ReceiptError:
        answer = False
    assert answer == expected
