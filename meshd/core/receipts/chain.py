"""The order rules of receipts (pure): within one chain -- one mesh, provider, consumer and
epoch -- ``seq`` only grows and the cumulative totals never shrink.

Feed receipts in the order they were exported (or, when merging several exports, sorted by
seq). An exact repeat of the chain's latest receipt is a duplicate and changes nothing;
anything else that does not move the chain forward is refused with a reason, and the chain
stays where it was, so one bad record does not condemn the good ones after it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from meshd.core.receipts.errors import ReceiptError, ReceiptReason
from meshd.core.receipts.receipt import Receipt

ChainKey = tuple[bytes, str, str, int]  # (mesh_id, provider, consumer, epoch)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # the chain's new latest receipt
    DUPLICATE = "duplicate"  # the same receipt as the chain's latest, again


class ChainChecker:
    def __init__(self) -> None:
        self._latest: dict[ChainKey, Receipt] = {}

    def add(self, receipt: Receipt) -> Outcome:
        """Advance ``receipt``'s chain, or ReceiptError saying why it cannot."""
        key = receipt.chain_key
        latest = self._latest.get(key)
        if latest is None:
            self._latest[key] = receipt
            return Outcome.ACCEPTED
        if receipt.seq == latest.seq:
            if receipt == latest:
                return Outcome.DUPLICATE
            raise ReceiptError(
                ReceiptReason.CONFLICT,
                f"a second, different receipt for seq {receipt.seq} of epoch {receipt.epoch}",
            )
        if receipt.seq < latest.seq:
            raise ReceiptError(
                ReceiptReason.SEQ_NOT_INCREASING,
                f"seq {receipt.seq} after seq {latest.seq} of epoch {receipt.epoch} "
                "(an old receipt replayed, or receipts out of order)",
            )
        if (
            receipt.relayed_for_bytes < latest.relayed_for_bytes
            or receipt.relayed_to_bytes < latest.relayed_to_bytes
        ):
            for name in ("relayed_for_bytes", "relayed_to_bytes"):  # which, in the message
                before, now = getattr(latest, name), getattr(receipt, name)
                if now < before:
                    raise ReceiptError(
                        ReceiptReason.TOTALS_DECREASED,
                        f"{name} {now} at seq {receipt.seq}, down from {before} at seq "
                        f"{latest.seq}",
                    )
        self._latest[key] = receipt
        return Outcome.ACCEPTED

    @property
    def latest(self) -> Mapping[ChainKey, Receipt]:
        """Each chain's latest accepted receipt: the one that counts."""
        return self._latest
