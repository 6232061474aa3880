"""The release manifest: a new meshd for the mesh's nodes, signed by a mesh admin (pure: no
files, no clocks; issue 20, updates over the mesh).

An admin makes one for a release artifact (a wheel or a provisioning bundle as a tar file)
with ``meshd release make``; a node takes the release only from a manifest signed by one of
the mesh's current admin keys, for its mesh, with a serial above every release it took
before, and only an artifact of exactly the size and SHA-256 the manifest names. The
manifest says when each stage of nodes may take it (``[update] stage``): ``early`` from
``issued_at``, ``normal`` one ``stage_interval_s`` later, ``late`` two later; ``manual``
only when its operator says so. A node that took it rolls back unless the new version comes
up healthy within ``health_window_s``.

Canonical bytes (meshd.core.membership.canonical, type tag RELEASE_MANIFEST, version 1)::

    field  name              kind         bytes
      1    mesh_id           fixed(16)    the MeshDefinition's mesh id
      2    issuer            fixed(32)    the admin key that signs it
      3    serial            u64          grows with every release of the mesh
      4    issued_at         u64          Unix seconds; the early stage's start
      5    meshd_version     text 1..32   the meshd version inside (as ``meshd --version``)
      6    artifact_name     text 1..128  the artifact's file name, no directory
      7    artifact_size     u64          1..MAX_ARTIFACT_BYTES
      8    artifact_sha256   fixed(32)    the artifact's SHA-256
      9    stage_interval_s  u64          0..MAX_STAGE_INTERVAL_S between the stages' starts
     10    health_window_s   u64          MIN_HEALTH_WINDOW_S..MAX_HEALTH_WINDOW_S
     11    signature         fixed(64)    the issuer's Ed25519 over DOMAIN + fields 1..10
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, ClassVar

from meshd.core.membership.canonical import MessageType
from meshd.core.membership.cosigned import Cosigned
from meshd.core.membership.errors import MembershipError
from meshd.core.membership.messages import (
    MESH_ID,
    NODE_ID,
    SIGNATURE,
    U64,
    SignedMessage,
    hex_bytes,
    text,
)

STAGES = ("early", "normal", "late", "manual")
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024
MAX_STAGE_INTERVAL_S = 7 * 86_400
MIN_HEALTH_WINDOW_S = 60
MAX_HEALTH_WINDOW_S = 3600
VERSION_MAX_BYTES = 32
NAME_MAX_BYTES = 128
SHA256 = hex_bytes(32)


class ReleaseError(ValueError):
    """An artifact that is not the one a manifest names, or a manifest a node must not take:
    ``code`` is the refusal's code (a neighbour's is counted under it: meshd.core.releases),
    ``str()`` the reason in words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ReleaseManifest(SignedMessage):
    """A release of meshd for one mesh, signed by one of its admins (``issuer``)."""

    TYPE: ClassVar[MessageType] = MessageType.RELEASE_MANIFEST
    DOMAIN: ClassVar[bytes] = b"meshd-release-v1\0"
    JSON_TYPE: ClassVar[str] = "release_manifest"

    mesh_id: Annotated[bytes, MESH_ID]
    issuer: Annotated[str, NODE_ID]
    serial: Annotated[int, U64]
    issued_at: Annotated[int, U64]
    meshd_version: Annotated[str, text(1, VERSION_MAX_BYTES)]
    artifact_name: Annotated[str, text(1, NAME_MAX_BYTES)]
    artifact_size: Annotated[int, U64]
    artifact_sha256: Annotated[bytes, SHA256]
    stage_interval_s: Annotated[int, U64]
    health_window_s: Annotated[int, U64]
    signature: Annotated[bytes, SIGNATURE]

    def _check(self) -> None:
        if "/" in self.artifact_name or self.artifact_name in (".", ".."):
            raise ValueError("artifact_name must be a file name, not a path")
        if not 1 <= self.artifact_size <= MAX_ARTIFACT_BYTES:
            raise ValueError(f"artifact_size must be 1..{MAX_ARTIFACT_BYTES}")
        if self.stage_interval_s > MAX_STAGE_INTERVAL_S:
            raise ValueError(f"stage_interval_s must be at most {MAX_STAGE_INTERVAL_S}")
        if not MIN_HEALTH_WINDOW_S <= self.health_window_s <= MAX_HEALTH_WINDOW_S:
            raise ValueError(
                f"health_window_s must be {MIN_HEALTH_WINDOW_S}..{MAX_HEALTH_WINDOW_S}"
            )

    def stage_start(self, stage: str) -> int | None:
        """When nodes of ``stage`` may take this release (Unix seconds); None: ``manual``,
        only when the operator applies it."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
        if stage == "manual":
            return None
        return self.issued_at + STAGES.index(stage) * self.stage_interval_s

    def check_artifact(self, data: bytes) -> None:
        """ReleaseError unless ``data`` is exactly the artifact this manifest names."""
        if len(data) != self.artifact_size:
            raise ReleaseError(
                "release_bad_artifact",
                f"{self.artifact_name}: {len(data)} bytes, the manifest says {self.artifact_size}",
            )
        digest = hashlib.sha256(data).digest()
        if digest != self.artifact_sha256:
            raise ReleaseError(
                "release_bad_artifact",
                f"{self.artifact_name}: SHA-256 {digest.hex()}, the manifest says "
                f"{self.artifact_sha256.hex()}",
            )


def decode_signed(data: bytes) -> Cosigned[ReleaseManifest]:
    """A manifest, bare or with more admins' signatures (meshd.core.membership.cosigned:
    where the mesh asks for a quorum); MembershipError(malformed) for anything else."""
    return Cosigned.decode(data, ReleaseManifest)


def check_for_mesh(
    signed: Cosigned[ReleaseManifest],
    mesh_id: bytes,
    admins: Collection[str],
    threshold: int,
    taken_serial: int,
) -> ReleaseManifest:
    """The manifest, unless (ReleaseError) a node of mesh ``mesh_id`` whose admin keys are
    ``admins``, ``threshold`` of them needed, and which took releases up to
    ``taken_serial`` may not take it: for this mesh, signed by a current admin and by as
    many as the threshold (every signature of theirs good), newer than what it has."""
    manifest = signed.record
    said = f"release {manifest.serial}"
    if manifest.mesh_id != mesh_id:
        raise ReleaseError("release_other_mesh", f"{said}: for another mesh")
    if manifest.issuer not in admins:
        raise ReleaseError("release_not_admin", f"{said}: signed by {manifest.issuer}, no admin")
    try:
        signers = signed.signers(admins)
    except MembershipError as exc:
        raise ReleaseError("release_bad_signature", f"{said}: {exc.message}") from None
    if len(signers) < threshold:
        raise ReleaseError(
            "release_short_of_quorum",
            f"{said}: signed by {len(signers)} admin(s), the mesh asks "
            f"for {threshold} (meshd release sign FILE on another admin's node)",
        )
    if manifest.serial <= taken_serial:
        raise ReleaseError(
            "release_not_newer", f"{said}: not newer than release {taken_serial}, taken already"
        )
    return manifest
