"""Verifying receipts and whole exports, offline (pure: lines in, a report out).

A receipt is good when it is for the expected mesh, its time bounds are in order, the
consumer's signature holds over the canonical bytes rebuilt from its fields, its chain
moves forward (meshd.core.receipts.chain) and, given the mesh's admin key(s), the consumer held
a membership certificate over the receipt's time bounds (meshd.core.receipts.signers). Every
failure is a Rejection of that line with a reason code; bad input never raises.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from meshd.core.membership import (
    DEFAULT_SKEW_S,
    Cosigned,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    MeshTrust,
    Revocation,
)
from meshd.core.receipts.chain import ChainChecker, Outcome
from meshd.core.receipts.dispute import DisputeRecord
from meshd.core.receipts.errors import ReceiptError, ReceiptReason, Rejection
from meshd.core.receipts.export import parse_line
from meshd.core.receipts.receipt import Receipt
from meshd.core.receipts.signers import SignerMembership

_M = TypeVar("_M", MembershipCertificate, DelegationCertificate, Revocation)
# Whether each receipt's signature holds, in order (one by one here; on every core:
# meshd.adapters.signatures).
SignatureCheck = Callable[[Sequence[Receipt]], list[bool]]


def verify_receipt(receipt: Receipt, mesh_id: bytes | None) -> None:
    """The checks one receipt needs no context for; ReceiptError with the reason.
    ``mesh_id`` None skips the mesh check (only when the mesh is unknown)."""
    if mesh_id is not None and receipt.mesh_id != mesh_id:
        raise ReceiptError(
            ReceiptReason.WRONG_MESH, f"for mesh {receipt.mesh_id.hex()}, not {mesh_id.hex()}"
        )
    if receipt.not_before > receipt.not_after:
        raise ReceiptError(
            ReceiptReason.BAD_TIME_BOUNDS,
            f"not_before {receipt.not_before} is after not_after {receipt.not_after}",
        )
    receipt.verify_signature()


@dataclass(frozen=True)
class ExportReport:
    mesh_id: bytes | None  # the mesh the receipts were checked against
    membership_checked: bool  # False without admin keys, or when the mesh is untrusted
    receipts: tuple[tuple[int, Receipt], ...]  # (line, receipt) that verified, file order
    duplicates: int  # exact repeats of a chain's latest receipt, ignored
    rejections: tuple[Rejection, ...]  # by line; line None: the file as a whole
    certificates: tuple[MembershipCertificate, ...]
    disputes: tuple[DisputeRecord, ...] = ()  # as the exporting node recorded them

    @property
    def ok(self) -> bool:
        return not self.rejections


@dataclass
class _Lines:
    """Pass one: every line parsed and sorted by what it is."""

    receipts: list[tuple[int, Receipt]]
    definitions: list[tuple[int, MeshDefinition]]
    certificates: list[tuple[int, MembershipCertificate]]
    delegations: list[tuple[int, DelegationCertificate]]
    revocations: list[tuple[int, Revocation]]
    disputes: list[DisputeRecord]
    rejections: list[Rejection]
    cosignatures: dict[int, tuple[tuple[str, bytes], ...]]  # by line: a revocation's

    @classmethod
    def read(cls, lines: Iterable[str | bytes]) -> _Lines:
        out = cls([], [], [], [], [], [], [], {})
        receipts = out.receipts
        for number, line in enumerate(lines, start=1):
            try:
                record = parse_line(line)  # a receipt as the exporter writes it at once
            except ReceiptError as exc:
                out.rejections.append(Rejection(number, exc.reason, exc.message))
                continue
            if type(record) is Receipt:
                receipts.append((number, record))
            elif isinstance(record, MeshDefinition):
                out.definitions.append((number, record))
            elif isinstance(record, MembershipCertificate):
                out.certificates.append((number, record))
            elif isinstance(record, DelegationCertificate):
                out.delegations.append((number, record))
            elif isinstance(record, Revocation):
                out.revocations.append((number, record))
            elif isinstance(record, Cosigned):
                out.revocations.append((number, record.record))
                out.cosignatures[number] = record.signatures
            elif isinstance(record, DisputeRecord):
                out.disputes.append(record)
        return out

    def reject(self, line: int | None, reason: ReceiptReason, message: str) -> None:
        self.rejections.append(Rejection(line, reason, message))


def _the_mesh(read: _Lines, expected_mesh_id: bytes | None) -> MeshDefinition | None:
    """The export's mesh definition (one, repeats allowed), or None after a rejection."""
    if not read.definitions:
        read.reject(
            None,
            ReceiptReason.NO_MESH_DEFINITION,
            "no mesh_definition line: the mesh and its members cannot be checked",
        )
        return None
    first_line, definition = read.definitions[0]
    for line, other in read.definitions[1:]:
        if other != definition:
            read.reject(
                line,
                ReceiptReason.CONFLICTING_MESH_DEFINITION,
                f"differs from the mesh definition on line {first_line}",
            )
    if expected_mesh_id is not None and definition.mesh_id != expected_mesh_id:
        read.reject(
            first_line,
            ReceiptReason.WRONG_MESH,
            f"mesh {definition.mesh_id.hex()}, expected {expected_mesh_id.hex()}",
        )
        return None
    return definition


def _trust(read: _Lines, definition: MeshDefinition, admin_keys: Sequence[str]) -> MeshTrust | None:
    definition_line = read.definitions[0][0]
    try:
        trust = MeshTrust.from_definition(definition, admin_keys)
    except MembershipError as exc:
        read.reject(definition_line, ReceiptReason.UNTRUSTED_MESH, str(exc))
        return None
    for line, revocation in read.revocations:
        try:
            trust.revocations.add(Cosigned(revocation, read.cosignatures.get(line, ())))
        except MembershipError as exc:
            read.reject(line, ReceiptReason.INVALID_REVOCATION, str(exc))
    return trust


def _same_mesh(read: _Lines, records: list[tuple[int, _M]], mesh_id: bytes) -> list[tuple[int, _M]]:
    """The records of ``mesh_id``; those of another mesh become refused lines."""
    kept = []
    for line, record in records:
        if record.mesh_id == mesh_id:
            kept.append((line, record))
        else:
            read.reject(
                line,
                ReceiptReason.WRONG_MESH,
                f"{record.JSON_TYPE} for mesh {record.mesh_id.hex()}, not {mesh_id.hex()}",
            )
    return kept


def verify_export(
    lines: Iterable[str | bytes],
    admin_keys: Sequence[str] = (),
    expected_mesh_id: bytes | None = None,
    skew_s: int = DEFAULT_SKEW_S,
    signatures: SignatureCheck | None = None,
) -> ExportReport:
    """Check every line of an export. ``admin_keys`` (node ids) pin the mesh definition;
    without them signatures, mesh and order are checked but not membership.
    ``expected_mesh_id`` makes an export of another mesh wrong (summaries of many files).
    ``signatures`` checks the receipts' signatures (None: one by one); everything else
    is checked in order after."""
    with _no_cycle_collection():
        return _verify_export(lines, admin_keys, expected_mesh_id, skew_s, signatures or one_by_one)


def one_by_one(receipts: Sequence[Receipt]) -> list[bool]:
    return [receipt.signature_holds() for receipt in receipts]


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Reading an export makes objects by the hundred thousand and none of them refer to
    each other: the cycle collector, run again and again over all of them, would cost a
    fifth of the time. Reference counting still frees everything."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _verify_export(
    lines: Iterable[str | bytes],
    admin_keys: Sequence[str],
    expected_mesh_id: bytes | None,
    skew_s: int,
    signatures: SignatureCheck,
) -> ExportReport:
    read = _Lines.read(lines)
    definition = _the_mesh(read, expected_mesh_id)
    mesh_id = definition.mesh_id if definition is not None else expected_mesh_id
    if mesh_id is not None:
        read.certificates = _same_mesh(read, read.certificates, mesh_id)
        read.delegations = _same_mesh(read, read.delegations, mesh_id)
        read.revocations = _same_mesh(read, read.revocations, mesh_id)
    signers = None
    if definition is not None and admin_keys:
        trust = _trust(read, definition, admin_keys)
        if trust is not None:
            signers = SignerMembership(
                trust,
                (cert for _, cert in read.certificates),
                (delegation for _, delegation in read.delegations),
                skew_s,
            )
    checker = ChainChecker()
    accepted: list[tuple[int, Receipt]] = []
    duplicates = 0
    signed = signatures([receipt for _, receipt in read.receipts])
    for (line, receipt), holds in zip(read.receipts, signed, strict=True):
        try:
            if receipt.mesh_id != mesh_id or receipt.not_before > receipt.not_after:
                verify_receipt(receipt, mesh_id)  # says what is wrong first
            elif not holds:
                receipt.verify_signature()  # says why
            if signers is not None:
                signers.check(receipt.consumer, receipt.not_before, receipt.not_after)
            outcome = checker.add(receipt)
        except ReceiptError as exc:
            read.reject(line, exc.reason, exc.message)
            continue
        if outcome is Outcome.DUPLICATE:
            duplicates += 1
        else:
            accepted.append((line, receipt))
    rejections = sorted(read.rejections, key=lambda r: -1 if r.line is None else r.line)
    return ExportReport(
        mesh_id=mesh_id,
        membership_checked=signers is not None,
        receipts=tuple(accepted),
        duplicates=duplicates,
        rejections=tuple(rejections),
        certificates=tuple(cert for _, cert in read.certificates),
        disputes=tuple(read.disputes),
    )
