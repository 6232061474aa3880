"""A dispute in an export: a claim that was not signed as it was (pure).

When a consumer's own count is beyond the tolerance below a provider's claim, it signs its
own figure and both sides record a dispute (meshd.core.receipts.exchange). The record is not
signed: it is the exporting node's word, there to explain a pair's figure to the treasurer
(`meshd receipts summary`); the receipt it is about carries the signature. Provider and
consumer usually both record the same dispute: it is counted once, by its chain and seq.

JSON (an export line)::

    {"type": "dispute", "version": 1, "recorded_by": NODE_ID, "provider": NODE_ID,
     "consumer": NODE_ID, "epoch": U64, "seq": U64, "reason": CODE,
     "claimed_for_bytes": U64, "claimed_to_bytes": U64,
     "signed_for_bytes": U64, "signed_to_bytes": U64}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from meshd.core.keys import public_from_node_id
from meshd.core.receipts.errors import ReceiptError, ReceiptReason

DISPUTE_TYPE = "dispute"
DISPUTE_JSON_VERSION = 1
_NODES = ("recorded_by", "provider", "consumer")
_INTEGERS = (
    "epoch",
    "seq",
    "claimed_for_bytes",
    "claimed_to_bytes",
    "signed_for_bytes",
    "signed_to_bytes",
)
JSON_KEYS = ("type", "version", *_NODES, "epoch", "seq", "reason", *_INTEGERS[2:])
_REASON = re.compile(r"[a-z0-9_]{1,64}")


@dataclass(frozen=True)
class DisputeRecord:
    recorded_by: str
    provider: str
    consumer: str
    epoch: int
    seq: int
    reason: str
    claimed_for_bytes: int
    claimed_to_bytes: int
    signed_for_bytes: int
    signed_to_bytes: int

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.provider, self.consumer, self.epoch, self.seq)

    @property
    def disputed_bytes(self) -> int:
        """What the provider claimed beyond what the consumer signed, both ways."""
        return max(0, self.claimed_for_bytes - self.signed_for_bytes) + max(
            0, self.claimed_to_bytes - self.signed_to_bytes
        )

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"type": DISPUTE_TYPE, "version": DISPUTE_JSON_VERSION}
        out.update((key, getattr(self, key)) for key in JSON_KEYS[2:])
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Self:
        """Strict, as receipts are: exactly these keys, integers as integers."""
        if set(obj) != set(JSON_KEYS):
            missing = sorted(set(JSON_KEYS) - set(obj))
            extra = sorted(set(obj) - set(JSON_KEYS))
            raise _malformed(f"missing keys {missing}, unexpected keys {extra}")
        if obj["version"] != DISPUTE_JSON_VERSION or type(obj["version"]) is not int:
            raise _malformed(f"version: expected {DISPUTE_JSON_VERSION}")
        for key in _NODES:
            value = obj[key]
            try:
                public_from_node_id(value)  # type: ignore[arg-type]
            except (ValueError, TypeError):
                raise _malformed(f"{key}: expected a node id") from None
        for key in _INTEGERS:
            value = obj[key]
            if type(value) is not int or not 0 <= value < 1 << 64:
                raise _malformed(f"{key}: expected an integer in 0..2**64-1")
        reason = obj["reason"]
        if not isinstance(reason, str) or not _REASON.fullmatch(reason):
            raise _malformed("reason: expected a reason code")
        return cls(**{key: obj[key] for key in JSON_KEYS[2:]})  # type: ignore[arg-type]


def _malformed(message: str) -> ReceiptError:
    return ReceiptError(ReceiptReason.MALFORMED, f"dispute: {message}")
