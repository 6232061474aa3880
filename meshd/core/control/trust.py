"""What the control plane believes about membership (pure): our own certificate and mesh
definition, the revocations, the directory of every member's certificate, and the check
of a neighbour's certificate at the mesh's time.

Admin rotation (meshd.core.membership.rotation): a mesh definition with a higher serial,
signed by an admin of ours, is adopted and stored (``mesh.cert``, and every definition
adopted in ``mesh.chain``, which lets a restarted node follow the chain from the admin key
its config pins). Revocations are taken whole from the control API (all verify or none is
taken) and one by one from neighbours (a bad record spoils neither the rest nor the
session: a neighbour relays what it could not check). The directory
(meshd.core.membership.directory) holds every member's certificate so that route origins
are known beyond the neighbours; it is reconciled with neighbours that announced the
feature (directory_sync) and stored when it changed. What is stored leaves as effects."""

from __future__ import annotations

import logging
from typing import Any

from meshd.core.control import effects as fx
from meshd.core.journal import Journal
from meshd.core.membership import (
    Cosigned,
    MembershipError,
    MeshDefinition,
    OwnMembership,
    Reason,
    Revocation,
    RevocationTarget,
    VerifiedMember,
    verify_membership,
)
from meshd.core.membership.clock import MeshClock
from meshd.core.membership.directory import Added, Directory, DirectoryError, Entry
from meshd.core.membership.directory_sync import DirectoryMessage, DirectorySync
from meshd.core.membership.rotation import adopt as adopt_successor
from meshd.core.membership.rotation import check_successor
from meshd.core.proto import session as messages
from meshd.core.session_policy import Credential, Refusal, check_membership, decode_credential

# Failures that only say "not now by our clock": worth a look with the peer's clock.
TIME_REASONS = frozenset({"not_yet_valid", "expired", "delegation_not_yet_valid"})
Outgoing = list[tuple[str, DirectoryMessage]]  # directory messages, by neighbour node id
Time = tuple[float, int]  # the monotonic clock, and how many neighbours we have a session with


class Trust:
    def __init__(
        self,
        own: OwnMembership,
        clock: MeshClock,
        effects: list[fx.Effect],
        journal: Journal,
        directory: bytes | None,
    ) -> None:
        self.clock, self.effects, self.journal = clock, effects, journal
        self.renewed(own)
        self.directory = Directory(own.trust)
        self.directory.pinned = own.certificate.node_id  # our addresses stay ours
        self.sync = DirectorySync(self.directory)
        self._directory_saved = b""  # the digest of what the file holds (none: write it)
        # Ours first: a stored entry that would take our address is refused, not ours.
        self.add_to_directory((own.certificate, own.chain))
        refused: list[DirectoryError] = []
        try:
            if directory is not None:  # what no longer verifies is left out
                refused = self.directory.load(directory, clock.now())
        except DirectoryError as exc:
            journal("directory.unreadable", logging.WARNING, error=str(exc))
        journal("directory.loaded", members=len(self.directory), left_out=len(refused))
        self.raise_clock_floor()

    def renewed(self, own: OwnMembership) -> None:
        """Our certificate (renewed, or the one we started with), used from now on."""
        self.own = own
        self.clock.own_validity = (own.certificate.not_before, own.certificate.expires_at)
        chain = b"".join(d.encode() for d in own.chain)
        self.membership_message = messages.encode(
            messages.Membership(own.certificate.encode(), chain)
        )

    def revoked(self, node_id: str) -> bool:
        target = RevocationTarget.node(node_id)
        return self.own.trust.revocations.in_force(target, self.clock.now()) is not None

    def check(
        self, node_id: str, clock_offset: float | None, msg: messages.Membership, at: Time
    ) -> tuple[VerifiedMember, Credential]:
        """A neighbour's certificate checked at the mesh's time; its offset (``clock_offset``,
        from its CLOCK) then counts in the mesh clock's consensus. One that is not valid by
        our clock but verifies at the time the peer said it is gives its offset first, then
        is checked at the mesh's time again: that is how a node with a stale clock learns
        the time (meshd.core.membership.clock), if our own certificate is valid at that
        time too (a time at which we are no member is no time of our mesh). A member that
        shows an old certificate with an old CLOCK is outvoted by the rest, and refused."""
        own = self.own
        try:
            checked = check_membership(msg, own, node_id, self.clock.now())
        except Refusal as exc:
            if exc.reason not in TIME_REASONS or clock_offset is None:
                raise
            theirs = self.clock.local() + clock_offset
            check_membership(msg, own, node_id, theirs)
            try:
                verify_membership(own.certificate, own.chain, own.trust, theirs)
            except MembershipError:
                raise exc from None
            self.clock.report(node_id, clock_offset, *at)
            checked = check_membership(msg, own, node_id, self.clock.now())
        else:
            if clock_offset is not None:
                self.clock.report(node_id, clock_offset, *at)
        if (conflict := self.conflict(checked[1])) is not None:
            raise Refusal(conflict.reason, conflict.message)
        return checked

    def conflict(self, credential: Credential) -> DirectoryError | None:
        """Why a verified certificate may not hold its addresses here (another member's,
        certified first, or ours: ``address_in_use``; a pool another delegate holds:
        ``pool_overlap``), or None (meshd.core.membership.directory)."""
        try:
            self.directory.contest(*credential, self.clock.now())
        except DirectoryError as exc:
            return exc
        return None

    def raise_clock_floor(self) -> None:
        """The newest time the node knows has come (meshd.core.membership.clock): its own
        certificate's start, its mesh definition's, the newest revocation in force."""
        now = self.clock.now()
        own = self.own
        passed = [own.certificate.not_before, own.trust.definition.issued_at]
        passed += [r.revoked_at for r in own.trust.revocations if r.revoked_at <= now]
        if self.clock.raise_floor(max(passed)):
            self.effects.append(fx.SaveClockFloor(self.clock.floor))

    def member(self, node_id: str) -> VerifiedMember | None:
        """A member whose certificate this node holds and that is not revoked, or None."""
        return None if self.revoked(node_id) else self.directory.member(node_id)

    def invalid(self, credential: Credential | None, node_id: str) -> str | None:
        """Why a neighbour's certificate no longer holds (revoked, expired...), or None."""
        if self.revoked(node_id):
            return "revoked"
        if credential is not None:
            try:
                verify_membership(*credential, self.own.trust, self.clock.now())
            except MembershipError as exc:
                return str(exc.reason)
            if (conflict := self.conflict(credential)) is not None:
                return conflict.reason  # a member certified first came to the directory
        return None

    # ---- mesh definitions and revocations --------------------------------------------

    def follows(self, signed: Cosigned[MeshDefinition]) -> bool:
        """Whether ``signed`` is newer than ours and may follow it; MembershipError when it
        is newer and may not. Its signatures only: the revocations are judged again under
        it when it is adopted (``adopt``), not for every copy a stranger sends."""
        current, newer = self.own.trust.definition, signed.record
        if newer.mesh_id == current.mesh_id and newer.serial <= current.serial:
            return False
        check_successor(current, signed)
        return True

    def vouched(
        self, node_id: str, signed: Cosigned[MeshDefinition], msg: messages.Membership
    ) -> bool:
        """Whether ``node_id``'s certificate (``msg``) makes it a member by our definition
        or by ``signed``, the newer one it sent first (which may add the admin that signed
        the certificate): a definition is taken only from a member. MembershipError when
        ``signed`` may not follow ours or the certificate does not parse."""
        newer = adopt_successor(self.own.trust, signed)
        cert, chain = decode_credential(msg)
        for trust in (self.own.trust, *((newer,) if newer is not None else ())):
            try:
                member = verify_membership(cert, chain, trust, self.clock.now())
            except MembershipError:
                continue
            if member.node_id == node_id:  # certificates are public: it must be its own
                return True
        return False

    def adopt(self, signed: Cosigned[MeshDefinition]) -> bool:
        """True when ``signed`` follows ours and is now ours (stored); False when we hold it
        already; MembershipError when it may not follow ours."""
        trust = adopt_successor(self.own.trust, signed)
        if trust is None:
            return False
        own, newer = self.own, signed.record
        self.effects.append(fx.SaveDefinition(signed, own.trust.signed_definition, own.certificate))
        self.own = OwnMembership(trust, own.certificate, own.chain, own.delegation, own.member)
        self.effects.append(fx.SaveRevocations(trust.revocations))
        self.journal("mesh.definition_adopted", serial=newer.serial, admins=len(newer.admins))
        return True

    def take_revocations(self, records: list[bytes]) -> tuple[list[Revocation], int]:
        """Revocations handed in locally: all must verify, or none is taken and the first
        that does not raises MembershipError. The new ones, and how many were given."""
        parsed = []
        for record in records:
            signed = Cosigned.decode(record, Revocation)
            self.own.trust.revocations.check(signed)
            parsed.append(signed)
        fresh = [s.record for s in parsed if self.own.trust.revocations.add(s)]
        return fresh, len(parsed)

    def hear_revocations(
        self, records: tuple[bytes, ...], sender: str
    ) -> tuple[list[Revocation], list[MembershipError]]:
        """Revocations a neighbour (named ``sender``) relays: the new ones, and why each
        refused one was (logged once for the message: a thousand refused records are one
        warning line). A forged admin signature stops the reading at once: nothing honest
        relays one (every node checked what it passes on), so the caller closes the session."""
        fresh: list[Revocation] = []
        refused: list[MembershipError] = []
        for record in records:
            try:
                signed = Cosigned.decode(record, Revocation)
                if self.own.trust.revocations.add(signed):
                    fresh.append(signed.record)
            except MembershipError as exc:
                refused.append(exc)
                if exc.reason is Reason.BAD_SIGNATURE:
                    break
        if refused:
            self.journal(
                "revocation.rejected",
                logging.WARNING,
                peer=sender,
                refused=len(refused),
                reason=str(refused[0]),
            )
        return fresh, refused

    def learned(self, fresh: list[Revocation]) -> bytes:
        """Revocations new to us (or new co-signatures on one): stored; the message that
        spreads them, with every co-signature held."""
        revocations = self.own.trust.revocations
        self.effects.append(fx.SaveRevocations(revocations))
        for revocation in fresh:
            if revocation.emergency:  # on one admin's word, or a few: said loudly
                self.journal(
                    "revocation.emergency",
                    logging.WARNING,
                    target=revocation.target.describe(),
                    issuer=revocation.issuer,
                )
            else:
                self.journal("revocation.learned", target=revocation.target.describe())
        held = tuple(revocations.signed(r.target).encode() for r in fresh)
        return messages.encode(messages.Revocations(held))

    def revocations_message(self) -> messages.Revocations | None:
        """Every revocation we hold, for a newly verified neighbour (None: none)."""
        revocations = self.own.trust.revocations
        held = tuple(s.encode() for s in revocations.all_signed())
        return messages.Revocations(held) if held else None

    # ---- the directory ---------------------------------------------------------------

    def add_to_directory(self, credential: Credential) -> Outgoing:
        """A certificate that verified on a session (a neighbour's, or ours) goes into the
        directory too; what to tell the neighbours if it was new."""
        try:
            added, _ = self.directory.add(Entry(*credential), self.clock.now())
        except DirectoryError as exc:
            self.journal(
                "directory.refused", logging.WARNING, reason=exc.reason, detail=exc.message
            )
            return []
        return [] if added is Added.KNOWN else self.sync.changed()

    def on_directory(
        self, node_id: str, msg: DirectoryMessage, now: float
    ) -> tuple[list[VerifiedMember], list[DirectoryError], Outgoing]:
        """Reconciliation with a neighbour (meshd.core.membership.directory_sync): the
        members learned, the entries refused, and what to send. DirectoryError: the
        message itself is bad (its session is closed)."""
        if isinstance(msg, messages.DirectoryDigest):
            return [], [], self.sync.on_digest(node_id, msg, now)
        if isinstance(msg, messages.DirectoryFingerprints):
            return [], [], self.sync.on_fingerprints(node_id, msg)
        learned, refused = self.sync.on_entries(node_id, msg, self.clock.now())
        return learned, refused, self.sync.changed() if learned else []

    def prune(self) -> list[str]:
        """Members whose certificate expired or was revoked, dropped from the directory."""
        gone = self.directory.prune(self.clock.now())
        for node_id in gone:
            self.journal("directory.dropped", node=node_id[:8])
        return gone

    def save_directory(self) -> None:
        """The file again, once the set changed (its digest is cached until it does)."""
        digest = self.directory.digest()
        if digest != self._directory_saved:
            self.effects.append(fx.SaveDirectory(self.directory.encode()))
            self._directory_saved = digest

    def directory_status(self) -> dict[str, Any]:
        """``meshd status``'s ``directory``: how many members it knows, and its digest
        (the same on two nodes exactly when they know the same certificates)."""
        return {"members": len(self.directory), "digest": self.directory.digest().hex()}
