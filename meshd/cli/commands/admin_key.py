"""meshd admin-key backup | restore | rotate | approve: the mesh's admin keys. ``backup``
and ``restore`` are meshd.cli.commands.admin_key_backup's. ``rotate [--add NODE_ID]
[--remove NODE_ID] [--threshold K] [--emergency-threshold K] [--out FILE] [--force]
[--config FILE] [--socket PATH]``,
on a node holding an admin key, signs the next mesh definition (serial + 1) with admins
added or removed (and the threshold changed) and hands it to the running daemon, which
adopts it and spreads it to every node (meshd.core.membership.rotation).

Where the mesh's definition sets a threshold above 1, one admin's signature is not enough:
``rotate`` hands the daemon a proposal, which spreads to every node for the other admins
to sign (``meshd proposals sign ID``). By hand instead: ``rotate --out FILE`` writes the
signed proposal, and each other admin runs ``approve FILE`` on their own node, which adds
their signature (``meshd decode --file FILE`` shows who signed) and, once the proposal
carries the threshold, hands it to the daemon.

A rotation is two runs. ``--add NEW`` with the old key: both keys are admins, every
certificate verifies. Then, once certificates and delegations were issued again under the
new key (renewal does it), ``--remove OLD`` with the new key (``meshd admin-key restore``
or ``state_dir/admin.key`` puts it on a node). The second run signs again, with the new
key, every revocation the old key signed, before the definition goes out: a revocation
must outlive the key that made it (under a threshold above 1 one key cannot: it refuses
while a revocation would be left with too few signatures of the admins that stay). It
refuses while this node's own certificate is signed by a key it removes (``--force`` to do
it anyway).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from meshd.cli.commands import add_config_argument, add_socket_argument, admin_errors


def add_arguments(p: argparse.ArgumentParser) -> None:
    from meshd.cli.commands.admin_key_backup import add_backup_arguments, add_restore_arguments

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    adders = (add_backup_arguments, add_restore_arguments, add_rotate_arguments, add_approve)
    for add in adders:
        add(sub)


def add_rotate_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """``rotate`` under ``meshd admin-key``'s subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "rotate",
        help="add or remove admin keys: the next mesh definition, spread to every node",
        description="Sign the next mesh definition (serial + 1) with the admin key this node "
        "holds and hand it to the daemon, which spreads it mesh-wide.",
    )
    p.add_argument("--add", action="append", default=[], metavar="NODE_ID", help="a new admin")
    p.add_argument(
        "--remove", action="append", default=[], metavar="NODE_ID", help="an admin to drop"
    )
    p.add_argument(
        "--threshold",
        type=int,
        metavar="K",
        help="how many admins must sign the change after this one (default: as now)",
    )
    p.add_argument(
        "--emergency-threshold",
        type=int,
        metavar="K",
        help="how many admins an emergency revocation of a node takes (0: none; default: as now)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="where the mesh needs more than one admin's signature: write the signed "
        "proposal here for the other admins to approve, instead of proposing it over the mesh",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="remove a key even though this node's own certificate still depends on it",
    )
    add_config_argument(p)
    add_socket_argument(p)
    p.set_defaults(admin_key_run=rotate)
    return p


def add_approve(subparsers: Any) -> argparse.ArgumentParser:
    """``approve`` under ``meshd admin-key``'s subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "approve",
        help="add this node's admin signature to a proposed mesh definition",
        description="Sign a proposal written by `meshd admin-key rotate --out FILE` with the "
        "admin key this node holds. Once it carries as many admin signatures as the mesh "
        "requires it goes to the daemon, which spreads it; until then FILE is rewritten "
        "with the signature added, for the next admin.",
    )
    p.add_argument("file", metavar="FILE", help="the proposal")
    add_config_argument(p)
    add_socket_argument(p)
    p.set_defaults(admin_key_run=approve)
    return p


def main(args: argparse.Namespace) -> int:
    return int(args.admin_key_run(args))


def rotate(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity
    from meshd.adapters.identity import public_from_node_id
    from meshd.api.client import ControlClient, locate_socket
    from meshd.cli.commands import load_admin_key
    from meshd.cli.commands.proposals import propose
    from meshd.core.membership import (
        Cosigned,
        MembershipError,
        MeshDefinition,
        Revocation,
        RevocationSet,
        revoke,
    )
    from meshd.core.membership.rotation import rotate_mesh

    now = int(time.time())
    try:
        changes = (args.add, args.remove, args.threshold, args.emergency_threshold)
        if changes == ([], [], None, None):
            raise ValueError(
                "nothing to do: give --add, --remove, --threshold or --emergency-threshold"
            )
        for node_id in (*args.add, *args.remove):
            public_from_node_id(node_id)
        cfg = config.load(config.config_path(args.config))
        ident = identity.load(cfg.node.state_dir)
        client = ControlClient(locate_socket(args.socket, cfg))
        current = MeshDefinition.from_json(client.mesh_definition().definition)
        unknown = sorted(set(args.remove) - set(current.admins))
        if unknown:
            raise ValueError(f"not an admin of the mesh: {', '.join(unknown)}")
        key = load_admin_key(cfg.node.state_dir, ident, current.admins)
        newer = rotate_mesh(
            key,
            current,
            add=args.add,
            remove=args.remove,
            threshold=args.threshold,
            emergency_threshold=args.emergency_threshold,
            issued_at=now,
        )
        own = client.status().get("membership") or {}
        if own.get("issuer") in args.remove and not args.force:
            raise ValueError(
                f"this node's certificate is signed by {own['issuer']}, which this removes: "
                "wait until it is renewed under the new key, or give --force"
            )
        held = [Cosigned.from_json(j, Revocation) for j in client.revocations()]
        if current.threshold > 1:
            # One key cannot sign them again: those the new definition would refuse lapse.
            judged = RevocationSet.of(newer)
            lapsing = []
            for signed in held:
                try:
                    judged.check(signed)
                except MembershipError:
                    lapsing.append(signed)
            if lapsing and not args.force:
                raise ValueError(
                    f"{len(lapsing)} revocation(s) would lapse: the admins left signed too "
                    "few of them; run `meshd revoke NODE` for those nodes on the nodes of "
                    "admins that stay (each adds its signature) first, or give --force"
                )
            resigned = []
        else:
            resigned = [
                revoke(key, mesh=current, target=r.target, revoked_at=max(0, r.revoked_at - 1))
                for r in (s.record for s in held)
                if r.issuer in args.remove
            ]
        if resigned:  # a second earlier: these are kept over the old key's (the least wins)
            client.add_revocations([r.encode() for r in resigned])
        if current.threshold > 1 and not args.out:
            what = f"mesh definition serial {newer.serial}"
            propose(client, Cosigned(newer), what, current.threshold)
            return 0
        if current.threshold > 1:
            _write_proposal(args.out, Cosigned(newer))
            print(
                f"proposal serial {newer.serial} written to {args.out}, signed by 1 of the "
                f"{current.threshold} admins it needs: run `meshd admin-key approve "
                f"{args.out}` on another admin's node"
            )
            return 0
        result = client.mesh_definition([newer.encode()])
    except admin_errors() as exc:  # ControlError: "code: message"
        print(f"meshd admin-key rotate: {exc}", file=sys.stderr)
        return 1
    admins = ", ".join(result.definition["admins"])
    print(
        f"mesh definition serial {newer.serial} adopted and spreading: admins {admins}"
        + (f"; {len(resigned)} revocation(s) signed again with the new key" if resigned else "")
    )
    return 0


def _write_proposal(path: str, proposal: Any) -> None:
    from meshd.adapters.safe_files import write_atomically

    write_atomically(Path(path), proposal.encode(), 0o644)


def approve(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity
    from meshd.api.client import ControlClient, locate_socket
    from meshd.cli.commands import load_admin_key
    from meshd.cli.commands.decode import bytes_of
    from meshd.core.membership import MeshDefinition
    from meshd.core.membership.cosigned import decode_proposal

    try:
        proposal = decode_proposal(bytes_of(Path(args.file).read_bytes()))
        cfg = config.load(config.config_path(args.config))
        ident = identity.load(cfg.node.state_dir)
        client = ControlClient(locate_socket(args.socket, cfg))
        current = MeshDefinition.from_json(client.mesh_definition().definition)
        what = _proposed(proposal, current)
        key = load_admin_key(cfg.node.state_dir, ident, current.admins)
        signed = proposal.cosign(key)
        have = len(signed.signers(current.admins))
        emergency = getattr(signed.record, "emergency", False)
        needed = current.emergency_threshold if emergency else current.threshold
        if have < needed:
            _write_proposal(args.file, signed)
            print(
                f"signed: {have} of the {needed} admin signatures {what} needs; "
                f"{args.file} rewritten for the next admin"
            )
            return 0
        if isinstance(signed.record, MeshDefinition):
            result = client.mesh_definition([signed.encode()])
            done = f"admins {', '.join(result.definition['admins'])}"
            done += f", threshold {result.definition.get('threshold', 1)}"
        else:
            client.add_revocations([signed.encode()])
            done = "every node drops it as the revocation spreads"
    except admin_errors() as exc:  # ControlError: "code: message"
        print(f"meshd admin-key approve: {exc}", file=sys.stderr)
        return 1
    print(f"{what} in force, signed by {have} admins: {done}")
    return 0


def _proposed(proposal: Any, current: Any) -> str:
    """What ``proposal`` is, in words; ValueError when it is late or of another mesh."""
    from meshd.core.membership import MeshDefinition

    record = proposal.record
    if record.mesh_id != current.mesh_id:
        raise ValueError("the proposal is for another mesh")
    if not isinstance(record, MeshDefinition):
        return f"the revocation of {record.target.describe()}"
    if record.serial <= current.serial:
        raise ValueError(
            f"the proposal is serial {record.serial}; the mesh is at {current.serial} already"
        )
    return f"mesh definition serial {record.serial}"
