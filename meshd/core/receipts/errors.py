"""Why a receipt (or a line of a receipts export) was refused: one reason code per cause."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meshd.core.errors import BadInput


class ReceiptReason(enum.StrEnum):
    MALFORMED = "malformed"  # not the canonical bytes, not JSON, wrong or missing fields
    WRONG_MESH = "wrong_mesh"  # made for another mesh: never replayed across meshes
    BAD_TIME_BOUNDS = "bad_time_bounds"  # not_before after not_after
    BAD_SIGNATURE = "bad_signature"  # not the consumer's signature over these fields
    NO_CERTIFICATE = "no_certificate"  # the export carries no certificate for the signer
    NOT_A_MEMBER = "not_a_member"  # no certificate of the signer verifies over the window
    SEQ_NOT_INCREASING = "seq_not_increasing"  # an older receipt after a newer: replay/reorder
    CONFLICT = "conflict"  # a second, different receipt for the same seq
    TOTALS_DECREASED = "totals_decreased"  # a newer receipt with smaller cumulative totals
    NO_MESH_DEFINITION = "no_mesh_definition"  # the export does not say which mesh it is
    CONFLICTING_MESH_DEFINITION = "conflicting_mesh_definition"
    UNTRUSTED_MESH = "untrusted_mesh"  # the mesh definition is not signed by the admin key
    INVALID_REVOCATION = "invalid_revocation"


class ReceiptError(BadInput):
    """A receipt or export line from a file or a peer was refused. Raised where the bytes
    or JSON are read; the verifiers turn it into a Rejection for that record."""

    reason: ReceiptReason


@dataclass(frozen=True)
class Rejection:
    """One refused record of an export: its 1-based line (None: the file as a whole)."""

    line: int | None
    reason: ReceiptReason
    message: str

    def describe(self, source: str) -> str:
        """``source:line: reason: message``, the way compilers point at a line."""
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.reason}: {self.message}"
