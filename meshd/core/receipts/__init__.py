"""Receipts as a pure core: what a consumer signs for the bytes a neighbour relayed for it.

``Receipt`` is the signed record (canonical bytes, JSON, sign, verify_signature);
``ChainChecker`` enforces the order within a chain (one mesh, pair and epoch);
``verify_export`` checks a JSON Lines export offline, membership included given the admin
key; ``summarize`` adds up many exports for the treasurer. No I/O and no clock: lines in,
reports out. The format of an export is in docs/receipts.md.
"""

from meshd.core.receipts.chain import ChainChecker, ChainKey, Outcome
from meshd.core.receipts.errors import ReceiptError, ReceiptReason, Rejection
from meshd.core.receipts.export import export_lines, format_line, parse_line, record_to_json
from meshd.core.receipts.receipt import DOMAIN, Receipt
from meshd.core.receipts.signers import SignerMembership
from meshd.core.receipts.summary import PairTotal, Summary, summarize
from meshd.core.receipts.verify import ExportReport, verify_export, verify_receipt

__all__ = [
    "DOMAIN",
    "ChainChecker",
    "ChainKey",
    "ExportReport",
    "Outcome",
    "PairTotal",
    "Receipt",
    "ReceiptError",
    "ReceiptReason",
    "Rejection",
    "SignerMembership",
    "Summary",
    "export_lines",
    "format_line",
    "parse_line",
    "record_to_json",
    "summarize",
    "verify_export",
    "verify_receipt",
]
