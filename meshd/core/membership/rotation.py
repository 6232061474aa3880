"""Admin key rotation (pure): a newer mesh definition, and which one a node adopts.

Rotation is two definitions. First an admin signs one with ``serial + 1`` that adds the new
key; nodes adopt it (gossiped like revocations) and certificates signed by either key
verify. Once every certificate and delegation has been issued again under the new key
(renewal does it), the new key signs one without the old key. A node adopts a definition
of its own mesh (same id, name and prefixes) with a higher serial, signed by an admin of
the definition it holds: each step is vouched for by the one before, so a node that
pinned only the first admin key follows the whole chain (``chain_anchors``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.membership.errors import MembershipError, Reason
from meshd.core.membership.issue import create_mesh
from meshd.core.membership.messages import MeshDefinition
from meshd.core.membership.revocations import RevocationSet
from meshd.core.membership.verify import MeshTrust


def rotate_mesh(
    signing_key: SigningKey,
    current: MeshDefinition,
    *,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    issued_at: int,
) -> MeshDefinition:
    """``current`` with admins added and removed, serial + 1, signed by ``signing_key``,
    which must be an admin of ``current`` and stay one (ValueError otherwise: our misuse)."""
    signer = node_id_from_public(bytes(signing_key.verify_key))
    if signer not in current.admins:
        raise ValueError(f"{signer} is not an admin of the current mesh definition")
    removed = set(remove)
    if signer in removed:
        raise ValueError("an admin cannot sign its own removal: the new key signs that step")
    admins = [a for a in (*current.admins, *add) if a not in removed]
    return create_mesh(
        signing_key,
        mesh_id=current.mesh_id,
        name=current.name,
        ipv4_prefix=current.ipv4_prefix,
        ipv6_prefix=current.ipv6_prefix,
        issued_at=issued_at,
        other_admins=[a for a in admins if a != signer],
        serial=current.serial + 1,
    )


def check_successor(current: MeshDefinition, newer: MeshDefinition) -> None:
    """MembershipError unless ``newer`` may follow ``current``: the same mesh, a higher
    serial, signed by one of ``current``'s admins, the signature good."""
    if newer.mesh_id != current.mesh_id:
        raise MembershipError(Reason.WRONG_MESH, f"a definition of mesh {newer.mesh_id.hex()}")
    if (newer.name, newer.ipv4_prefix, newer.ipv6_prefix) != (
        current.name,
        current.ipv4_prefix,
        current.ipv6_prefix,
    ):
        raise MembershipError(Reason.WRONG_MESH, "a definition that changes the mesh's prefixes")
    if newer.serial <= current.serial:
        raise MembershipError(
            Reason.MALFORMED, f"serial {newer.serial} is not above {current.serial}"
        )
    if newer.issuer not in current.admins:
        raise MembershipError(
            Reason.UNKNOWN_ISSUER,
            f"signed by {newer.issuer}, not an admin of serial {current.serial}",
        )
    newer.verify_signature()


def adopt(trust: MeshTrust, newer: MeshDefinition) -> MeshTrust | None:
    """The trust ``newer`` gives, or None when it is not newer than ours (gossip repeats).
    MembershipError when it is newer but may not follow ours. Revocations signed by an
    admin that ``newer`` removes are dropped: ``meshd admin-key rotate`` signs them again
    with the new key before it removes the old one."""
    if newer.mesh_id == trust.mesh_id and newer.serial <= trust.definition.serial:
        return None
    check_successor(trust.definition, newer)
    revocations = RevocationSet(newer.mesh_id, newer.admins)
    for revocation in trust.revocations:
        if revocation.issuer in revocations.admins:
            revocations.add(revocation)
    return MeshTrust(newer, revocations)


def chain_anchors(chain: Sequence[MeshDefinition], pinned: Iterable[str]) -> frozenset[str]:
    """The admin keys a node may trust: the ones it pinned, and every admin of each stored
    definition that follows (``check_successor``) from one signed by a pinned key. Links
    that do not follow are skipped (MembershipError is the caller's to log, not here)."""
    anchors = set(pinned)
    held: MeshDefinition | None = None
    for definition in sorted(chain, key=lambda d: d.serial):
        try:
            if held is None:
                if definition.issuer not in anchors:
                    continue
                definition.verify_signature()
            else:
                check_successor(held, definition)
        except MembershipError:
            continue
        held = definition
        anchors |= set(definition.admins)
    return frozenset(anchors)
