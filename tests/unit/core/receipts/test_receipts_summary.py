"""summarize: the treasurer's table across many nodes' exports, each receipt counted once."""

from __future__ import annotations

from meshd.core.receipts import PairTotal, ReceiptReason, summarize
from tests.unit.receipt_fixtures import (
    ADMIN,
    CONSUMER,
    LATE,
    OTHER_MESH,
    PROVIDER,
    export,
    nid,
    receipt,
)

ADMIN_KEYS = [nid(ADMIN)]


def test_latest_per_epoch_summed_over_epochs_and_copies_counted_once() -> None:
    epoch_1 = [receipt(1, 10, 1), receipt(2, 100, 10)]
    epoch_2 = [receipt(1, 5, 5, epoch=2), receipt(4, 50, 7, epoch=2)]
    late = [receipt(1, 4096, 0, provider=CONSUMER, consumer=LATE)]
    # The provider's export has everything; the consumer's has some of the same receipts;
    # a third node's has the other pair.
    summary = summarize(
        [
            ("provider.jsonl", export([*epoch_1, *epoch_2])),
            ("consumer.jsonl", export([epoch_1[0], epoch_2[1]])),
            ("late.jsonl", export(late)),
        ],
        ADMIN_KEYS,
    )
    assert summary.ok and summary.membership_checked
    assert summary.rows == tuple(
        sorted(
            [
                PairTotal(nid(PROVIDER), nid(CONSUMER), 2, 150, 17),
                PairTotal(nid(CONSUMER), nid(LATE), 1, 4096, 0),
            ],
            key=lambda row: (row.provider, row.consumer),
        )
    )
    assert summary.names[nid(LATE)] == "late"


def test_two_files_with_different_receipts_for_one_seq_are_a_conflict() -> None:
    summary = summarize(
        [
            ("a.jsonl", export([receipt(1, 10), receipt(2, 20)])),
            ("b.jsonl", export([receipt(2, 25)])),
        ],
        ADMIN_KEYS,
    )
    assert [(source, r.line, r.reason) for source, r in summary.rejections] == [
        ("b.jsonl", 6, ReceiptReason.CONFLICT)
    ]
    assert summary.rows == (PairTotal(nid(PROVIDER), nid(CONSUMER), 1, 20, 0),)


def test_an_export_of_another_mesh_adds_nothing() -> None:
    summary = summarize(
        [("ours", export([receipt(1, 10)])), ("theirs", export([], mesh=OTHER_MESH))], []
    )
    assert [(source, r.reason) for source, r in summary.rejections] == [
        ("theirs", ReceiptReason.WRONG_MESH)
    ]
    assert [row.relayed_for_bytes for row in summary.rows] == [10]


def test_refused_receipts_are_left_out_of_the_table() -> None:
    lines = export([receipt(1, 10)])
    inflated = lines[-1].replace('"seq":1', '"seq":2')
    lines.append(inflated.replace('"relayed_for_bytes":10', '"relayed_for_bytes":1000000000000'))
    summary = summarize([("x", lines)], ADMIN_KEYS)
    assert [r.reason for _, r in summary.rejections] == [ReceiptReason.BAD_SIGNATURE]
    assert [row.relayed_for_bytes for row in summary.rows] == [10]
