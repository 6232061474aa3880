"""The treasurer's table: bytes per provider/consumer pair across many exports (pure).

Provider and consumer both export the receipts of their link, so the same receipt turns up
in several files. Each file is verified on its own first; then the receipts of all files
are merged chain by chain in seq order, so that an exact copy counts once and two files
holding different receipts for one seq (or totals that go back) are refused. Each chain's
latest receipt carries its cumulative totals; the pair's figure is the sum over its epochs.
Each pair also shows its disputes (counted once however many exports record one) and the
bytes they are about: claimed beyond what the consumer signed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from meshd.core.membership import DEFAULT_SKEW_S
from meshd.core.receipts.chain import ChainChecker
from meshd.core.receipts.dispute import DisputeRecord
from meshd.core.receipts.errors import ReceiptError, Rejection
from meshd.core.receipts.receipt import Receipt
from meshd.core.receipts.verify import verify_export


@dataclass(frozen=True)
class PairTotal:
    provider: str
    consumer: str
    epochs: int
    relayed_for_bytes: int
    relayed_to_bytes: int
    disputes: int = 0
    disputed_bytes: int = 0


@dataclass(frozen=True)
class Summary:
    mesh_id: bytes | None
    membership_checked: bool  # in every file
    rows: tuple[PairTotal, ...]  # sorted by provider, then consumer
    rejections: tuple[tuple[str, Rejection], ...]  # (source, rejection)
    names: Mapping[str, str]  # node id -> name, from the certificates the exports carry

    @property
    def ok(self) -> bool:
        return not self.rejections


def _pair_totals(
    latest: Iterable[Receipt], disputes: Iterable[DisputeRecord]
) -> tuple[PairTotal, ...]:
    sums: dict[tuple[str, str], list[int]] = {}
    for receipt in latest:
        row = sums.setdefault((receipt.provider, receipt.consumer), [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += receipt.relayed_for_bytes
        row[2] += receipt.relayed_to_bytes
    for dispute in {d.key: d for d in disputes}.values():  # once, whoever recorded it
        row = sums.setdefault((dispute.provider, dispute.consumer), [0, 0, 0, 0, 0])
        row[3] += 1
        row[4] += dispute.disputed_bytes
    return tuple(
        PairTotal(provider, consumer, *sums[(provider, consumer)])
        for provider, consumer in sorted(sums)
    )


def summarize(
    exports: Sequence[tuple[str, Iterable[str | bytes]]],
    admin_keys: Sequence[str] = (),
    skew_s: int = DEFAULT_SKEW_S,
) -> Summary:
    """``exports`` are (source name, lines). The first file that names its mesh sets the
    mesh for the others: receipts of another mesh are refused, never added up."""
    mesh_id: bytes | None = None
    membership_checked = bool(exports)
    rejections: list[tuple[str, Rejection]] = []
    found: list[tuple[str, int, Receipt]] = []
    disputes: list[DisputeRecord] = []
    names: dict[str, tuple[int, str]] = {}  # node id -> (not_before, name): newest wins
    for source, lines in exports:
        report = verify_export(lines, admin_keys, mesh_id, skew_s)
        mesh_id = mesh_id or report.mesh_id
        membership_checked = membership_checked and report.membership_checked
        rejections += [(source, rejection) for rejection in report.rejections]
        found += [(source, line, receipt) for line, receipt in report.receipts]
        disputes += report.disputes
        for cert in report.certificates:
            names[cert.node_id] = max(
                names.get(cert.node_id, (-1, "")), (cert.not_before, cert.name)
            )
    # Sorting puts each chain in seq order whatever file a receipt came from; stable, so
    # of two conflicting receipts the one from the earlier file is kept.
    found.sort(key=lambda item: (item[2].chain_key, item[2].seq))
    merged = ChainChecker()
    for source, line, receipt in found:
        try:
            merged.add(receipt)
        except ReceiptError as exc:
            rejections.append((source, Rejection(line, exc.reason, f"across files: {exc.message}")))
    return Summary(
        mesh_id=mesh_id,
        membership_checked=membership_checked,
        rows=_pair_totals(merged.latest.values(), disputes),
        rejections=tuple(rejections),
        names={node_id: name for node_id, (_, name) in names.items()},
    )
