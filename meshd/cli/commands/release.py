"""meshd release make|sign|check|publish: a release manifest for a new meshd, signed with
the mesh's admin key on the node that holds it (meshd.core.proto.release), and co-signed by
more admins where the mesh's threshold asks for them; its check on any node: signed by as
many current admins of this node's mesh, and the artifact the one it names; and its
publishing on any node (meshd.daemon.releases), from which every node of the mesh fetches
it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from meshd.cli.commands import (
    add_config_argument,
    add_socket_argument,
    load_admin_key,
    load_node,
    write_new,
)

if TYPE_CHECKING:
    from meshd.core.membership.cosigned import Cosigned
    from meshd.core.proto.release import ReleaseManifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    from meshd.core.proto import release

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = sub.add_parser(
        "make",
        help="sign a manifest for ARTIFACT (on the node holding the admin key)",
        description="Sign a release manifest naming ARTIFACT (a wheel or a provisioning "
        "bundle as one file) by its size and SHA-256, with the mesh's admin key.",
    )
    make.add_argument("artifact", metavar="ARTIFACT", help="the release's file")
    make.add_argument("--version", required=True, help="the meshd version inside (0.2.0)")
    make.add_argument(
        "--serial", type=int, required=True, help="above every earlier release of this mesh"
    )
    make.add_argument("--out", required=True, metavar="FILE", help="the manifest (new file)")
    make.add_argument(
        "--stage-interval-s",
        type=int,
        default=86_400,
        help="seconds from the early stage's start to the normal's, and the normal's to "
        f"the late's (0..{release.MAX_STAGE_INTERVAL_S}; default a day)",
    )
    make.add_argument(
        "--health-window-s",
        type=int,
        default=600,
        help="a node rolls back unless the new version is healthy within this "
        f"({release.MIN_HEALTH_WINDOW_S}..{release.MAX_HEALTH_WINDOW_S}; default 600)",
    )
    check = sub.add_parser(
        "check",
        help="check a manifest (and its artifact) against this node's mesh",
        description="Check that MANIFEST is signed by a current admin key of this node's "
        "mesh and, with --artifact, that the file is the one it names; print when each "
        "stage may take it.",
    )
    check.add_argument("manifest", metavar="MANIFEST")
    check.add_argument("--artifact", metavar="FILE", help="the release's file, to check too")
    sign = sub.add_parser(
        "sign",
        help="add this node's admin signature to MANIFEST (where the mesh asks for more)",
        description="Co-sign a release manifest another admin made, in place, with the "
        "admin key this node holds: where the mesh definition's threshold is above 1, a "
        "release is taken only with that many admins' signatures.",
    )
    sign.add_argument("manifest", metavar="MANIFEST")
    publish = sub.add_parser(
        "publish",
        help="hand MANIFEST and its ARTIFACT to the running daemon, which serves them",
        description="Hand a release to this node's daemon: its neighbours fetch the "
        "artifact from it and pass it on, until every node of the mesh holds it. The "
        "artifact is copied into the state directory first.",
    )
    publish.add_argument("manifest", metavar="MANIFEST")
    publish.add_argument("artifact", metavar="ARTIFACT")
    add_socket_argument(publish)
    for q in (make, check, sign, publish):
        add_config_argument(q)


def _named(manifest: ReleaseManifest) -> str:
    return f"release {manifest.serial} (meshd {manifest.meshd_version}, {manifest.artifact_name}"


def _stages(manifest: ReleaseManifest) -> str:
    from meshd.core.proto.release import STAGES

    parts = []
    for stage in STAGES:
        start = manifest.stage_start(stage)
        when = (
            "when applied"
            if start is None
            else time.strftime("from %Y-%m-%d %H:%M UTC", time.gmtime(start))
        )
        parts.append(f"{stage} {when}")
    return "; ".join(parts)


def _signers(signed: Cosigned[ReleaseManifest], admins: tuple[str, ...], threshold: int) -> str:
    signers = signed.signers(admins)
    return f"signed for this mesh by {len(signers)} of its admins ({threshold} needed)"


def _publish(
    args: argparse.Namespace, state_dir: Path, manifest: ReleaseManifest, signed: bytes
) -> int:
    """Copy the artifact where the daemon reads it (its owner's), then hand it the manifest."""
    import shutil

    from meshd.adapters import safe_files
    from meshd.api.client import ControlClient, ControlError, locate_socket
    from meshd.daemon.releases import RELEASES_DIR

    releases = state_dir / RELEASES_DIR
    part = releases / f"{manifest.serial}.part"
    owner = safe_files.directory_owner(state_dir)
    if not releases.exists():
        releases.mkdir(mode=0o700)
        if owner is not None:
            os.chown(releases, *owner)
    part.unlink(missing_ok=True)
    safe_files.create(part, 0o600, owner)
    fd = safe_files.open_regular(part, os.O_WRONLY)
    with open(args.artifact, "rb") as src, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out)
    try:
        ControlClient(locate_socket(args.socket)).publish_release(signed)
    except ControlError as exc:
        print(f"meshd release publish: {exc}", file=sys.stderr)
        return 1
    print(f"{_named(manifest)}): published; the neighbours fetch it from this node")
    return 0


def main(args: argparse.Namespace) -> int:
    import hashlib

    from meshd import config
    from meshd.adapters import identity, safe_files, trust
    from meshd.core.membership import MembershipError
    from meshd.core.membership.messages import NO_SIGNATURE
    from meshd.core.proto.release import (
        ReleaseError,
        ReleaseManifest,
        check_for_mesh,
        decode_signed,
    )

    now = int(time.time())
    try:
        cfg, ident, own = load_node(args.config, now)
        mesh_id = own.trust.definition.mesh_id
        if args.action == "make":
            key = load_admin_key(cfg.node.state_dir, ident, own.trust.admins)
            data = Path(args.artifact).read_bytes()
            manifest = ReleaseManifest(
                mesh_id=mesh_id,
                issuer=identity.node_id_from_public(bytes(key.verify_key)),
                serial=args.serial,
                issued_at=now,
                meshd_version=args.version,
                artifact_name=Path(args.artifact).name,
                artifact_size=len(data),
                artifact_sha256=hashlib.sha256(data).digest(),
                stage_interval_s=args.stage_interval_s,
                health_window_s=args.health_window_s,
                signature=NO_SIGNATURE,
            ).sign(key)
            write_new(args.out, manifest.encode())
            print(
                f"{_named(manifest)}, {manifest.artifact_size} bytes) signed into {args.out}: "
                + _stages(manifest)
            )
            threshold = own.trust.definition.threshold
            if threshold > 1:
                print(
                    f"the mesh asks for {threshold} admins' signatures: {threshold - 1} more "
                    f"with `meshd release sign {args.out}` on their nodes"
                )
            return 0
        signed = decode_signed(Path(args.manifest).read_bytes())
        admins, threshold = own.trust.admins, own.trust.definition.threshold
        if args.action == "sign":
            check_for_mesh(signed, mesh_id, admins, 1, taken_serial=0)
            key = load_admin_key(cfg.node.state_dir, ident, admins)
            signed = signed.cosign(key)
            safe_files.write_atomically(Path(args.manifest), signed.encode(), 0o644)
            print(f"{_named(signed.record)}): {_signers(signed, admins, threshold)}")
            return 0
        manifest = check_for_mesh(signed, mesh_id, admins, threshold, taken_serial=0)
        if args.action == "publish":
            return _publish(args, cfg.node.state_dir, manifest, signed.encode())
        if args.artifact:
            manifest.check_artifact(Path(args.artifact).read_bytes())
        artifact = "artifact checked" if args.artifact else "artifact not checked (--artifact)"
        print(
            f"{_named(manifest)}): {_signers(signed, admins, threshold)}, {artifact}; "
            + _stages(manifest)
        )
    except FileExistsError:
        print(f"meshd release: {args.out} exists: not overwriting it", file=sys.stderr)
        return 1
    except (
        config.ConfigError,
        identity.KeyFileError,
        trust.TrustError,
        MembershipError,
        ReleaseError,
        OSError,
        ValueError,
    ) as exc:
        print(f"meshd release {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
