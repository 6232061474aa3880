"""The receipts export: JSON Lines, one record per line (pure: strings in, strings out).

Every line is one JSON object whose ``type`` says what it is, in the same form that
``meshd decode`` prints for the record's canonical bytes:

- ``receipt``: ``{"type": "receipt", "version": 1, ...}`` plus exactly the ten receipt
  fields (Receipt.to_json; DESIGN.md receipts export contract);
- ``mesh_definition``, ``membership_certificate``, ``delegation_certificate``,
  ``revocation``: the membership JSON form, unchanged (it has its own type and version);
  ``cosigned``: a revocation other admins co-signed (a mesh whose threshold is above 1),
  the record and their signatures (meshd.core.membership.cosigned);
- ``dispute``: a claim the consumer did not sign as it was (meshd.core.receipts.dispute): the
  exporting node's word, unsigned, for the treasurer.

The membership lines let a verifier check offline that each signer was a member. Writers
put them first, receipts after, each chain's receipts in increasing seq, and disputes
last; readers take
the lines in any order but check each chain in file order. Blank lines are skipped.
docs/receipts.md describes the format for people.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from meshd.core.membership import (
    Cosigned,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    Message,
    Revocation,
    message_from_json,
)
from meshd.core.membership.cosigned import JSON_TYPE as COSIGNED_TYPE
from meshd.core.receipts.dispute import DISPUTE_TYPE, DisputeRecord
from meshd.core.receipts.errors import ReceiptError, ReceiptReason
from meshd.core.receipts.receipt import JSON_KEYS as RECEIPT_KEYS
from meshd.core.receipts.receipt import Receipt

RECEIPT_TYPE = "receipt"
RECEIPT_JSON_VERSION = 1

ExportRecord = Receipt | DisputeRecord | Message | Cosigned[Revocation]


def record_to_json(record: ExportRecord) -> dict[str, object]:
    """The JSON object of one export line (also what ``meshd decode`` prints)."""
    if isinstance(record, Receipt):
        return {"type": RECEIPT_TYPE, "version": RECEIPT_JSON_VERSION, **record.to_json()}
    return record.to_json()  # a dispute's and membership's carry their type


def format_line(record: ExportRecord) -> str:
    """One line, without its newline; UTF-8 text (names may be any language)."""
    return json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":"))


def export_lines(
    definition: MeshDefinition,
    certificates: Iterable[MembershipCertificate] = (),
    delegations: Iterable[DelegationCertificate] = (),
    revocations: Iterable[Revocation | Cosigned[Revocation]] = (),
    receipts: Iterable[Receipt] = (),
    disputes: Iterable[DisputeRecord] = (),
) -> Iterator[str]:
    """The lines of an export: what the verifier needs to trust first, then receipts in
    the given order (the caller keeps each chain in increasing seq), then disputes."""
    yield format_line(definition)
    yield from map(format_line, delegations)
    yield from map(format_line, certificates)
    yield from map(format_line, revocations)
    yield from map(format_line, receipts)
    yield from map(format_line, disputes)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Another reader could keep the first of two equal keys where json keeps the last:
    # refuse, so that every tool reads the same receipt from a line.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)  # one, not one per line


def _malformed(message: str) -> ReceiptError:
    return ReceiptError(ReceiptReason.MALFORMED, message)


def _canonical_receipt_line() -> re.Pattern[str]:
    """A receipt line exactly as format_line writes it: every key once, in FIELDS order,
    no escapes, integers as JSON spells them. What it matches, json reads as the same
    object, so a match can skip the decoder; anything else takes the strict path."""
    integer = r"(0|[1-9][0-9]{0,18})"  # JSON's spelling, < 10**19 < 2**64 (else: strict)
    fields = {
        "mesh_id": r'"([0-9a-f]{32})"',
        "provider": r'"([A-Za-z0-9_-]{43})"',
        "consumer": r'"([A-Za-z0-9_-]{43})"',
        "signature": r'"([0-9a-f]{128})"',
    }
    body = ",".join(f'"{name}":{fields.get(name, integer)}' for name in RECEIPT_KEYS)
    blank = r"[ \t\n\r]*"  # JSON's whitespace, which json allows around a value
    return re.compile(
        f'{blank}\\{{"type":"{RECEIPT_TYPE}","version":{RECEIPT_JSON_VERSION},{body}\\}}{blank}'
    )


_RECEIPT_LINE = _canonical_receipt_line()


def canonical_receipt(line: str) -> Receipt | None:
    """The receipt on a line exactly as format_line writes it (most lines of an export:
    read without the JSON decoder), or None for any other line (parse_line reads those);
    ReceiptError(malformed) for a well-spelled receipt that cannot be."""
    match = _RECEIPT_LINE.fullmatch(line)
    if match is None:
        return None
    try:
        return Receipt.from_spelled_fields(match.groups())
    except ValueError as exc:  # well spelled, impossible (a node id that is not a key)
        raise _malformed(f"receipt: {exc}") from None


def parse_line(line: str | bytes) -> ExportRecord | None:
    """The record on one line; None for a blank line; ReceiptError(malformed) for a line
    that is not exactly one record of a known type."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _malformed(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    receipt = canonical_receipt(line)
    if receipt is not None:
        return receipt
    if not line.strip():
        return None
    try:
        obj = _DECODER.decode(line)
    except RecursionError:  # nesting deep enough to exhaust the stack: not a record
        raise _malformed("not JSON: nested too deeply") from None
    except ValueError as exc:
        raise _malformed(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _malformed(f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("type") == RECEIPT_TYPE:
        version = obj.pop("version", None)
        if type(version) is not int or version != RECEIPT_JSON_VERSION:
            raise _malformed(f"receipt.version: expected {RECEIPT_JSON_VERSION}")
        del obj["type"]
        return Receipt.from_json(obj)
    if obj.get("type") == DISPUTE_TYPE:
        return DisputeRecord.from_json(obj)
    try:
        if obj.get("type") == COSIGNED_TYPE:  # a revocation other admins co-signed
            return Cosigned.from_json(obj, Revocation)
        return message_from_json(obj)
    except MembershipError as exc:
        raise _malformed(exc.message) from None
