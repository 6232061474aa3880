"""The node's membership files (an adapter: reads them from the state directory).

``mesh.cert`` is the admin-signed mesh definition (with other admins' signatures, where
the mesh's threshold needed them: meshd.core.membership.cosigned), ``membership.cert``
this node's certificate and ``delegation.cert`` (optional) the delegation that issued it
or that lets this node issue invites. All are canonical bytes as `meshd decode` reads them. They are
public material; the config pins the admin keys that must have signed the definition.
``revocations`` holds the revocations the node has learned (u16 length, then the canonical
record, repeated), rewritten atomically whenever one is added. ``name.salt`` (16 octets,
only for a private name: meshd.core.membership.names) is what, with the config's name, opens
the commitment the certificate holds; it is written at join.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

from meshd.adapters import safe_files
from meshd.core.membership import (
    Cosigned,
    DelegationCertificate,
    MembershipCertificate,
    MembershipError,
    MeshDefinition,
    MeshTrust,
    OwnMembership,
    Revocation,
    RevocationSet,
    verify_membership,
)
from meshd.core.membership.names import NameOpening, is_committed
from meshd.core.membership.rotation import chain_anchors
from meshd.log import event

MESH_FILE = "mesh.cert"
MEMBERSHIP_FILE = "membership.cert"
DELEGATION_FILE = "delegation.cert"
REVOCATIONS_FILE = "revocations"
PROPOSALS_FILE = "proposals"  # what admins proposed, until carried, lapsed or withdrawn
NAME_SALT_FILE = "name.salt"


class TrustError(Exception):
    """A membership file is missing, malformed, or does not verify."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TrustError(f"{path}: missing") from None
    except OSError as exc:
        raise TrustError(f"{path}: {exc.strerror}") from None


def load(state_dir: Path, admin_keys: tuple[str, ...], node_id: str, now: float) -> OwnMembership:
    """Load and check the node's own membership; raise TrustError naming file and reason."""
    try:
        signed = Cosigned.decode(_read(state_dir / MESH_FILE), MeshDefinition)
        trust = MeshTrust.from_definition(signed.record, admin_keys, cosignatures=signed.signatures)
    except MembershipError as exc:
        raise TrustError(f"{state_dir / MESH_FILE}: {exc}") from None
    load_revocations(state_dir, trust.revocations)
    try:
        cert = MembershipCertificate.decode(_read(state_dir / MEMBERSHIP_FILE))
    except MembershipError as exc:
        raise TrustError(f"{state_dir / MEMBERSHIP_FILE}: {exc}") from None
    delegation = None
    if (state_dir / DELEGATION_FILE).exists():
        try:
            delegation = DelegationCertificate.decode(_read(state_dir / DELEGATION_FILE))
        except MembershipError as exc:
            raise TrustError(f"{state_dir / DELEGATION_FILE}: {exc}") from None
    # A certificate issued by a delegate is checked through the delegation that allowed it.
    chain = (delegation,) if delegation is not None and cert.issuer not in trust.admins else ()
    try:
        member = verify_membership(cert, chain, trust, now)
    except MembershipError as exc:
        raise TrustError(f"{state_dir / MEMBERSHIP_FILE}: {exc}") from None
    if member.node_id != node_id:
        raise TrustError(f"{state_dir / MEMBERSHIP_FILE}: certifies {member.node_id}, not us")
    return OwnMembership(trust, cert, chain, delegation, member)


def save_proposals(state_dir: Path, proposals: tuple[bytes, ...]) -> None:
    write_atomically(
        state_dir / PROPOSALS_FILE,
        b"".join(struct.pack("!H", len(record)) + record for record in proposals),
    )


def load_proposals(state_dir: Path) -> list[bytes]:
    """The stored proposals' bytes (each is checked again as it is heard: the plane's)."""
    path = state_dir / PROPOSALS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    while len(data) >= 2 and len(data) >= 2 + struct.unpack("!H", data[:2])[0]:
        (length,) = struct.unpack("!H", data[:2])
        records.append(data[2 : 2 + length])
        data = data[2 + length :]
    if data:
        event("proposal.stored_truncated", logging.WARNING, file=str(path), left=len(data))
    return records


def load_revocations(state_dir: Path, into: RevocationSet) -> None:
    """Add the stored revocations to ``into``. A record that does not verify is skipped
    with a warning (the file is left as it is: nothing stored is thrown away here)."""
    path = state_dir / REVOCATIONS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    while data:
        if len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            event("revocation.stored_truncated", logging.WARNING, file=str(path), left=len(data))
            return
        (length,) = struct.unpack("!H", data[:2])
        record, data = data[2 : 2 + length], data[2 + length :]
        try:
            into.add(Cosigned.decode(record, Revocation))
        except MembershipError as exc:
            event("revocation.stored_rejected", logging.WARNING, file=str(path), reason=str(exc))


def write_atomically(path: Path, data: bytes) -> None:
    """A state file (public material, 0644), replaced whole and never through a link
    planted in its place (meshd.adapters.safe_files)."""
    safe_files.write_atomically(path, data, 0o644)


CLOCK_FLOOR_FILE = "clock.floor"  # Unix seconds the mesh clock never reads below


def load_clock_floor(state_dir: Path) -> float:
    """The mesh clock's floor as last saved (0: none yet, or a file that does not parse,
    which the floor's next rise replaces)."""
    try:
        return max(0.0, float((state_dir / CLOCK_FLOOR_FILE).read_text()))
    except (OSError, ValueError):
        return 0.0


def save_clock_floor(state_dir: Path, floor: float) -> None:
    write_atomically(state_dir / CLOCK_FLOOR_FILE, f"{floor:.0f}\n".encode())


CHAIN_FILE = "mesh.chain"  # every mesh definition adopted (u16 length, canonical bytes)


def load_chain(state_dir: Path) -> list[Cosigned[MeshDefinition]]:
    """The mesh definitions this node adopted (admin key rotation), oldest first; a record
    that does not parse ends the chain there (``chain_anchors`` checks the links)."""
    try:
        data = (state_dir / CHAIN_FILE).read_bytes()
    except FileNotFoundError:
        return []
    chain = []
    while len(data) >= 2:
        (length,) = struct.unpack("!H", data[:2])
        try:
            chain.append(Cosigned.decode(data[2 : 2 + length], MeshDefinition))
        except MembershipError as exc:
            event("mesh.chain_rejected", logging.WARNING, reason=str(exc))
            break
        data = data[2 + length :]
    return chain


def save_chain(state_dir: Path, chain: list[Cosigned[MeshDefinition]]) -> None:
    write_atomically(
        state_dir / CHAIN_FILE,
        b"".join(struct.pack("!H", len(d.encode())) + d.encode() for d in chain),
    )


def admin_keys(state_dir: Path, pinned: tuple[str, ...]) -> tuple[str, ...]:
    """The admin keys to trust: those the config pins, and those they handed over to along
    the chain of mesh definitions this node adopted."""
    return tuple(sorted(chain_anchors(load_chain(state_dir), pinned)))


def save_joined(
    state_dir: Path,
    definition: Cosigned[MeshDefinition],
    certificate: MembershipCertificate,
    delegation: DelegationCertificate | None,
    opening: NameOpening | None = None,
) -> None:
    """Store what a join earned (meshd.daemon.joining): the mesh definition, the issuer's
    delegation when a delegate issued the certificate, the salt of a private name, and the
    certificate last, each atomically, so that ``membership.cert`` present means joined (a
    crash before it means: join again, and the issuer hands the same certificate back)."""
    write_atomically(state_dir / MESH_FILE, definition.encode())
    if opening is not None:
        write_atomically(state_dir / NAME_SALT_FILE, opening.salt)
    if delegation is not None:
        write_atomically(state_dir / DELEGATION_FILE, delegation.encode())
    write_atomically(state_dir / MEMBERSHIP_FILE, certificate.encode())
    directory = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)  # the renames too survive a power cut
    finally:
        os.close(directory)


def name_opening(state_dir: Path, name: str, certified: str) -> NameOpening | None:
    """What opens our certified name when it is private (``name``: the config's), or None
    when it is not private or cannot be opened (logged: the neighbours then see our id)."""
    if not is_committed(certified):
        return None
    path = state_dir / NAME_SALT_FILE
    try:
        opening = NameOpening(name, path.read_bytes())
    except (OSError, ValueError) as exc:
        event("name.unopened", logging.WARNING, file=str(path), reason=str(exc))
        return None
    if not opening.opens(certified):
        event("name.unopened", logging.WARNING, reason=f"node.name {name!r} is not the certified")
        return None
    return opening


def save_revocations(state_dir: Path, revocations: RevocationSet) -> None:
    records = [signed.encode() for signed in revocations.all_signed()]
    write_atomically(
        state_dir / REVOCATIONS_FILE,
        b"".join(struct.pack("!H", len(record)) + record for record in records),
    )
