"""Regenerate the receipt golden vectors: ``python3 tests/golden/receipts/make_vectors.py``.

The keys, mesh and certificates are the membership vectors' (tests/golden/membership), so
the export here verifies against the test admin key. Ed25519 signatures are deterministic:
the output never changes unless the encoding does; tests/unit/core/receipts/test_receipts_golden.py
checks that the files here are exactly what this script produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nacl.signing import SigningKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # run as a script from anywhere

from meshd.core.receipts import Receipt, export_lines, record_to_json  # noqa: E402
from tests.golden import vectors  # noqa: E402
from tests.golden.membership import make_vectors as MEMBERSHIP  # noqa: E402

MESH_ID = MEMBERSHIP.MESH_ID
NODE = MEMBERSHIP.NODE  # certified by the admin
JOINER = MEMBERSHIP.JOINER  # certified by the delegate, valid from T0 + 3600
T0 = MEMBERSHIP.T0
EPOCH = T0 + 3600  # the provider chose the epoch when the link came up
U64_MAX = 2**64 - 1


def node_id(key: SigningKey) -> str:
    return str(MEMBERSHIP.node_id(key))


def receipt(provider: SigningKey, consumer: SigningKey, **fields: int) -> Receipt:
    """A receipt of ``consumer`` for ``provider``, signed by the consumer."""
    return Receipt(
        mesh_id=MESH_ID, provider=node_id(provider), consumer=node_id(consumer), **fields
    ).sign(consumer)


def chain() -> list[Receipt]:
    """NODE's receipts for what JOINER relayed: one epoch, totals growing."""
    totals = [(0, 0), (1_234_567, 98_765_432), (1_234_567_890, 98_765_432_100)]
    return [
        receipt(
            JOINER,
            NODE,
            epoch=EPOCH,
            seq=seq,
            relayed_for_bytes=relayed_for,
            relayed_to_bytes=relayed_to,
            not_before=T0 + 7200 + 60 * seq,
            not_after=T0 + 7200 + 60 * seq + 30,
        )
        for seq, (relayed_for, relayed_to) in enumerate(totals, start=1)
    ]


def build() -> dict[str, tuple[str, Receipt]]:
    """File stem -> (description, receipt)."""
    return {
        "receipt": (
            "the test node signs for 1234567890 bytes relayed for it and 98765432100 to it "
            "by the joiner, seq 3 of the epoch",
            chain()[-1],
        ),
        "receipt_delegated_signer": (
            "the joiner (certified by the delegate) signs for what the test node relayed",
            receipt(
                NODE,
                JOINER,
                epoch=7,
                seq=1,
                relayed_for_bytes=4096,
                relayed_to_bytes=0,
                not_before=T0 + 7200,
                not_after=T0 + 7200,
            ),
        ),
        "receipt_u64_max": (
            "every integer at 2**64-1: JSON carries the exact integers",
            receipt(
                JOINER,
                NODE,
                epoch=U64_MAX,
                seq=U64_MAX,
                relayed_for_bytes=U64_MAX,
                relayed_to_bytes=U64_MAX,
                not_before=U64_MAX,
                not_after=U64_MAX,
            ),
        ),
    }


def export() -> list[str]:
    """A whole export that verifies against the test admin key."""
    records = MEMBERSHIP.build()
    return list(
        export_lines(
            records["mesh_definition"][1],
            certificates=[records["membership_admin"][1], records["membership_delegated"][1]],
            delegations=[records["delegation"][1]],
            receipts=[*chain(), build()["receipt_delegated_signer"][1]],
        )
    )


def render(description: str, message: Receipt) -> str:
    return vectors.render(description, message.encode().hex(), record_to_json(message))


def rendered() -> dict[str, str]:
    """File name -> exact file text."""
    files = {f"{stem}.json": render(*entry) for stem, entry in build().items()}
    files["export.jsonl"] = "".join(line + "\n" for line in export())
    return files


def main() -> None:
    vectors.write(HERE, rendered())


if __name__ == "__main__":
    main()
