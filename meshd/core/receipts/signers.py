"""Was a receipt's signer a member of the mesh while it signed? (pure)

A receipt says its consumer signed within [not_before, not_after]; we require one of the
consumer's certificates (carried by the export) to pass ``verify_membership`` over that
whole window. For one certificate and chain, every time rule there is ``t >= a`` or
``t < b`` (validity windows widened by the skew, revocations in force from revoked_at), so
the times it passes form one interval and checking both ends of the window is enough.

Speed: an export holds many receipts per signer and each ``verify_membership`` checks
signatures. Its answer can only change at those rules' boundary times, so each
certificate memoises one answer per stretch between boundaries, and verifying a long export
costs about one signature check per receipt, not three.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from meshd.core.membership import (
    DEFAULT_SKEW_S,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshTrust,
    RevocationTarget,
    verify_membership,
)
from meshd.core.receipts.errors import ReceiptError, ReceiptReason

Chain = tuple[DelegationCertificate, ...]
_BEFORE_ALL, _AFTER_ALL = -(2**64), 2**64  # receipts' times are u64


class _Candidate:
    """One certificate with one possible chain, and its memoised answers."""

    def __init__(
        self, cert: MembershipCertificate, chain: Chain, trust: MeshTrust, skew_s: int
    ) -> None:
        self.cert, self.chain, self._trust, self._skew_s = cert, chain, trust, skew_s
        boundaries = [cert.not_before - skew_s, cert.expires_at + skew_s]
        targets = [RevocationTarget.node(cert.node_id), RevocationTarget.certificate(cert)]
        for delegation in chain:
            boundaries += [delegation.not_before - skew_s, delegation.expires_at + skew_s]
            targets += [
                RevocationTarget.node(delegation.delegate),
                RevocationTarget.certificate(delegation),
            ]
        for target in targets:
            revocation = trust.revocations.get(target)
            if revocation is not None:
                boundaries.append(revocation.revoked_at)
        self._boundaries = sorted(set(boundaries))
        self._answers: dict[int, MembershipError | None] = {}

    def error_at(self, t: int) -> MembershipError | None:
        """None when the certificate verifies at ``t``, else why not."""
        stretch = bisect_right(self._boundaries, t)
        if stretch not in self._answers:
            try:
                verify_membership(self.cert, self.chain, self._trust, t, self._skew_s)
                self._answers[stretch] = None
            except MembershipError as exc:
                self._answers[stretch] = exc
        return self._answers[stretch]

    def span(self, first: int, last: int) -> tuple[int, int]:
        """The times [start, end) of the stretches that hold ``first`` and ``last`` and of
        every one between: where the certificate passes throughout if it passes at both."""
        boundaries = self._boundaries
        i, j = bisect_right(boundaries, first), bisect_right(boundaries, last)
        start = boundaries[i - 1] if i else _BEFORE_ALL
        return start, boundaries[j] if j < len(boundaries) else _AFTER_ALL


class SignerMembership:
    """The certificates of an export, indexed by node. Build it after every revocation of
    the export is in ``trust.revocations``: the memoised answers assume a fixed set."""

    def __init__(
        self,
        trust: MeshTrust,
        certificates: Iterable[MembershipCertificate],
        delegations: Iterable[DelegationCertificate],
        skew_s: int = DEFAULT_SKEW_S,
    ) -> None:
        by_delegate: dict[str, list[DelegationCertificate]] = {}
        for delegation in dict.fromkeys(delegations):  # the same one twice is one
            by_delegate.setdefault(delegation.delegate, []).append(delegation)
        self._by_node: dict[str, list[_Candidate]] = {}
        for cert in dict.fromkeys(certificates):
            # A delegate's certificate is checked through each delegation naming it as
            # delegate; none at all still gets a candidate, to say "unknown issuer".
            chains: list[Chain] = [()]
            if cert.issuer not in trust.admins and cert.issuer in by_delegate:
                chains = [(delegation,) for delegation in by_delegate[cert.issuer]]
            for chain in chains:
                candidate = _Candidate(cert, chain, trust, skew_s)
                self._by_node.setdefault(cert.node_id, []).append(candidate)
        # Per node, times [start, end) one of its certificates passes throughout: most of
        # an export's windows fall in the last one found, and need no more than a look.
        self._passes: dict[str, tuple[int, int]] = {}

    def check(self, node_id: str, not_before: int, not_after: int) -> None:
        """ReceiptError unless one certificate of ``node_id`` verifies over the window."""
        passes = self._passes.get(node_id)
        if passes is not None and passes[0] <= not_before and not_after < passes[1]:
            return
        candidates = self._by_node.get(node_id)
        if not candidates:
            raise ReceiptError(
                ReceiptReason.NO_CERTIFICATE,
                f"the export carries no membership certificate for the consumer {node_id}",
            )
        first_error: MembershipError | None = None
        for candidate in candidates:
            error = candidate.error_at(not_before) or candidate.error_at(not_after)
            if error is None:
                self._passes[node_id] = candidate.span(not_before, not_after)
                return
            first_error = first_error or error
        raise ReceiptError(
            ReceiptReason.NOT_A_MEMBER,
            f"the consumer {node_id} was not a member throughout [{not_before}, {not_after}]: "
            f"{first_error}",
        )
