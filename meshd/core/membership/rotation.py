"""Admin key rotation and the admin quorum (pure): a newer mesh definition, and which one a
node adopts.

Rotation is two definitions. First an admin signs one with ``serial + 1`` that adds the new
key; nodes adopt it (gossiped like revocations) and certificates signed by either key
verify. Once every certificate and delegation has been issued again under the new key
(renewal does it), the new key signs one without the old key. A node adopts a definition
of its own mesh (same id, name and prefixes) with a higher serial, signed by as many admins
of the definition it holds as that one's ``threshold`` says (the issuer and others'
``Cosigned`` signatures): each step is vouched for by the one before, so a node that
pinned only the first admin key follows the whole chain (``chain_anchors``).

Only the admins of the definition a node holds count, so an admin key once removed signs
nothing that counts again, and putting it back takes the quorum without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.membership.cosigned import Cosigned
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
    threshold: int | None = None,
    emergency_threshold: int | None = None,
    issued_at: int,
) -> MeshDefinition:
    """``current`` with admins added and removed and the threshold changed (None: kept,
    or lowered to the admins left), serial + 1, signed by ``signing_key``, which must be an
    admin of ``current`` and stay one (ValueError otherwise: our misuse). Where
    ``current.threshold`` is above 1 it takes effect once enough admins co-signed it."""
    signer = node_id_from_public(bytes(signing_key.verify_key))
    if signer not in current.admins:
        raise ValueError(f"{signer} is not an admin of the current mesh definition")
    removed = set(remove)
    if signer in removed:
        raise ValueError("an admin cannot sign its own removal: the new key signs that step")
    admins = [a for a in dict.fromkeys((*current.admins, *add)) if a not in removed]
    if threshold is None:
        threshold = min(current.threshold, len(admins))
    if not 1 <= threshold <= len(admins):
        raise ValueError(f"a threshold of {threshold} with {len(admins)} admin(s)")
    if emergency_threshold is None:
        emergency_threshold = min(current.emergency_threshold, threshold)
    if not 0 <= emergency_threshold <= threshold:
        raise ValueError(f"an emergency threshold of {emergency_threshold} above {threshold}")
    return create_mesh(
        signing_key,
        mesh_id=current.mesh_id,
        name=current.name,
        ipv4_prefix=current.ipv4_prefix,
        ipv6_prefix=current.ipv6_prefix,
        issued_at=issued_at,
        other_admins=[a for a in admins if a != signer],
        serial=current.serial + 1,
        threshold=threshold,
        emergency_threshold=emergency_threshold,
    )


def check_successor(current: MeshDefinition, signed: Cosigned[MeshDefinition]) -> None:
    """MembershipError unless ``signed`` may follow ``current``: the same mesh, a higher
    serial, issued by one of ``current``'s admins and signed (good signatures) by as many
    of them as ``current.threshold`` says."""
    newer = signed.record
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
    signers = signed.signers(current.admins)
    if len(signers) < current.threshold:
        raise MembershipError(
            Reason.SHORT_OF_QUORUM,
            f"serial {newer.serial} carries {len(signers)} of the {current.threshold} "
            f"admin signatures serial {current.serial} requires",
        )


def adopt(trust: MeshTrust, signed: Cosigned[MeshDefinition]) -> MeshTrust | None:
    """The trust ``newer`` gives, or None when it is not newer than ours (gossip repeats).
    MembershipError when it is newer but may not follow ours. Revocations are judged again
    by ``newer``: one whose signers among its admins are too few now (one an admin it
    removes signed alone, say) is dropped; under a threshold of 1 ``meshd admin-key
    rotate`` signs them again with the new key before it removes the old one."""
    newer = signed.record
    if newer.mesh_id == trust.mesh_id and newer.serial <= trust.definition.serial:
        return None
    check_successor(trust.definition, signed)
    revocations = RevocationSet.of(newer)
    for revocation in trust.revocations.all_signed():
        with contextlib.suppress(MembershipError):  # too few of its signers are admins now
            revocations.add(revocation)
    return MeshTrust(newer, revocations, signed.signatures)


def chain_anchors(
    chain: Sequence[Cosigned[MeshDefinition]], pinned: Iterable[str]
) -> frozenset[str]:
    """The admin keys a node may trust: the ones it pinned, and every admin of each stored
    definition that follows (``check_successor``) from one signed by a pinned key. Links
    that do not follow are skipped (MembershipError is the caller's to log, not here)."""
    anchors = set(pinned)
    held: MeshDefinition | None = None
    for signed in sorted(chain, key=lambda d: d.record.serial):
        definition = signed.record
        try:
            if held is None:
                if definition.issuer not in anchors:
                    continue
                definition.verify_signature()
            else:
                check_successor(held, signed)
        except MembershipError:
            continue
        held = definition
        anchors |= set(definition.admins)
    return frozenset(anchors)
