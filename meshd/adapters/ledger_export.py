"""A node's receipts export, from its files (an adapter: the ledger and the membership
files in the state directory; works with the daemon stopped).

The export holds every receipt the node stored, as provider (signed by its neighbours) and
as consumer (signed by itself), in the order stored, which keeps each chain in increasing
seq; before them what a verifier needs offline: the mesh definition, each signer's
certificate (the neighbours' as they presented them on their sessions, the node's own) and
delegation, and the revocations the node knows; after them the disputes the node recorded
(format: docs/receipts.md).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from meshd.adapters import safe_files
from meshd.adapters.ledger import LEDGER_FILE, Dispute, Ledger
from meshd.adapters.sqlite_schema import SchemaError
from meshd.adapters.trust import DELEGATION_FILE, MEMBERSHIP_FILE, MESH_FILE, load_revocations
from meshd.core.membership import (
    Cosigned,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    MeshTrust,
)
from meshd.core.receipts import export_lines
from meshd.core.receipts.dispute import DisputeRecord
from meshd.core.receipts.receipt import JSON_KEYS

CSV_COLUMNS = (*JSON_KEYS, "dispute")


class ExportError(Exception):
    """The node's files cannot give an export (missing, unreadable, malformed)."""


@contextmanager
def open_ledger(state_dir: Path) -> Iterator[Ledger]:
    """The node's ledger, opened, read and closed with the rights of the state directory's
    owner: ``meshd receipts export`` and ``meshd leave`` run as root, and SQLite opens by
    path (a link planted as ``ledger.sqlite``, its WAL files) what only that owner may."""
    path = state_dir / LEDGER_FILE
    try:
        if safe_files.lstat(path) is None:
            raise ExportError(f"{path}: no ledger (has meshd run here?)")
    except safe_files.UnsafeFile as exc:
        raise ExportError(str(exc)) from None
    with safe_files.as_owner_of(state_dir):
        try:
            ledger = Ledger.open(state_dir)
        except SchemaError as exc:  # names the file already
            raise ExportError(str(exc)) from None
        except sqlite3.Error as exc:
            raise ExportError(f"{path}: {exc}") from None
        try:
            yield ledger
        finally:
            ledger.close()


def jsonl(state_dir: Path, admin_keys: tuple[str, ...], since: float = 0.0) -> Iterator[str]:
    """The export's lines, membership first."""
    try:
        stored = (state_dir / MESH_FILE).read_bytes()
        definition = Cosigned.decode(stored, MeshDefinition).record
        trust = MeshTrust.from_definition(definition, admin_keys)
        own = MembershipCertificate.decode((state_dir / MEMBERSHIP_FILE).read_bytes())
        delegations: dict[bytes, DelegationCertificate] = {}
        if (state_dir / DELEGATION_FILE).exists():
            own_delegation = DelegationCertificate.decode(
                (state_dir / DELEGATION_FILE).read_bytes()
            )
            delegations[own_delegation.encode()] = own_delegation
    except (OSError, MembershipError) as exc:
        raise ExportError(f"{state_dir}: membership files: {exc}") from None
    load_revocations(state_dir, trust.revocations)
    with open_ledger(state_dir) as ledger:
        certificates = {own.encode(): own}
        for certificate, delegation in ledger.signers().values():
            try:
                cert = MembershipCertificate.decode(certificate)
                certificates[certificate] = cert
                if delegation:
                    delegations[delegation] = DelegationCertificate.decode(delegation)
            except MembershipError as exc:  # stored as verified: only a damaged file
                message = f"{state_dir / LEDGER_FILE}: a signer's certificate: {exc}"
                raise ExportError(message) from None
        receipts = [receipt for _, receipt, _ in ledger.receipts(since=since)]
        disputes = [
            dispute_record(own.node_id, dispute)
            for _, dispute in ledger.disputes()
            if dispute.at >= since
        ]
    yield from export_lines(
        definition,
        certificates.values(),
        delegations.values(),
        trust.revocations.all_signed(),
        receipts,
        disputes,
    )


def dispute_record(node_id: str, dispute: Dispute) -> DisputeRecord:
    """The ledger's dispute as an export line: provider and consumer by name of role."""
    ours, theirs = node_id, dispute.neighbour
    provider, consumer = (ours, theirs) if dispute.role == "provider" else (theirs, ours)
    return DisputeRecord(
        node_id, provider, consumer, dispute.epoch, dispute.seq, dispute.reason,
        *dispute.claimed, *dispute.signed,
    )  # fmt: skip


def csv_rows(state_dir: Path, since: float = 0.0) -> Iterator[str]:
    """For spreadsheets: a header line, then one line per receipt with its dispute reason (empty:
    the claim was signed as it was). No certificates: verify the JSON Lines export."""
    with open_ledger(state_dir) as ledger:
        rows = ledger.receipts(since=since)
    yield _csv_line(CSV_COLUMNS)
    for _, receipt, dispute in rows:
        fields = receipt.to_json()
        yield _csv_line([*(fields[k] for k in JSON_KEYS), dispute])


def _csv_line(cells: Iterable[object]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()
