"""meshd revoke NODE [--unseen] [--emergency] [--out FILE] [--config FILE] [--socket PATH]:
on the node holding the mesh's admin key, sign a revocation of NODE (a node id, or a
neighbour's name as `meshd status` shows it) and hand it to the running daemon, as `meshd
revocations add` does; the daemon keeps it and spreads it to every node, which drops the
revoked node's sessions, links and routes, and refuses it from then on.

NODE must be one this node has seen (a neighbour, a gateway) so that a typo revokes no
one; ``--unseen`` takes a full node id of a node out of sight (one that went dark). A
delegate cannot revoke: revocations never expire, so only an admin key signs them. Where
the mesh's definition sets a threshold above 1, the daemon takes it as a proposal that
spreads to every node, for the other admins to sign (``meshd proposals sign ID``), or
``--out FILE`` writes it for them to approve by hand (``meshd admin-key approve FILE``);
``--emergency`` makes one that takes the definition's emergency threshold instead (one
admin, if it says 1); revoking a node revoked already adds this admin's signature to the
revocation in force (so that it outlives the removal of an admin who signed it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from meshd.cli.commands import (
    add_config_argument,
    add_socket_argument,
    admin_errors,
    load_admin_key,
    load_node,
)

if TYPE_CHECKING:
    from meshd.api.schema import Status


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("node", metavar="NODE", help="the node's id, or a neighbour's name")
    p.add_argument(
        "--unseen",
        action="store_true",
        help="NODE is the full id of a node this one has not seen (out of sight, gone dark)",
    )
    p.add_argument(
        "--emergency",
        action="store_true",
        help="an emergency revocation (a node that attacks): it takes the definition's "
        "emergency threshold of admin signatures, and every node shows it as one",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="where the mesh needs more than one admin's signature: write the signed "
        "revocation here for the other admins to approve, instead of proposing it over the mesh",
    )
    add_config_argument(p)
    add_socket_argument(p)


def known_nodes(status: Status) -> dict[str, str]:
    """Node id -> name of every node the daemon shows: neighbours, then gateways."""
    found = {n["node_id"]: n["name"] for n in status["neighbours"]}
    for candidate in status.get("gateway", {}).get("candidates", []):
        found.setdefault(candidate["node_id"], "")
    return found


def resolve(text: str, status: Status, revoked: set[str], unseen: bool) -> str:
    """NODE as a node id; ValueError naming why it is not one to revoke."""
    from meshd.adapters.identity import public_from_node_id

    own = status["node_id"]
    if text in (own, status["name"]):
        raise ValueError(f"{text} is this node: revoke it from another admin node, or leave")
    known = known_nodes(status)
    if text in known or text in revoked:
        return text
    named = sorted(node_id for node_id, name in known.items() if name == text)
    if len(named) > 1:
        raise ValueError(f"{len(named)} neighbours are named {text!r}: give the node id")
    if named:
        return named[0]
    try:
        public_from_node_id(text)
    except ValueError:
        neighbours = ", ".join(sorted(n for n in known.values() if n)) or "none"
        raise ValueError(
            f"no node {text!r} known to this node (neighbours: {neighbours}); give a "
            "neighbour's name or a node id"
        ) from None
    if not unseen:
        raise ValueError(
            f"{text} is no node this one has seen (not a neighbour or gateway): check the "
            "id, and give --unseen to revoke a node out of sight"
        )
    return text


def main(args: argparse.Namespace) -> int:
    from meshd.adapters import trust
    from meshd.api.client import ControlClient, locate_socket
    from meshd.cli.commands.proposals import propose
    from meshd.core.membership import (
        Cosigned,
        Revocation,
        RevocationKind,
        RevocationTarget,
        revoke,
    )

    now = int(time.time())
    try:
        cfg, ident, own = load_node(args.config, now)
        admin_key = load_admin_key(cfg.node.state_dir, ident, own.trust.admins)
        client = ControlClient(locate_socket(args.socket, cfg))
        status = client.status()
        held = [Cosigned.from_json(r, Revocation) for r in client.revocations()]
        revoked = {
            s.record.target.key: s for s in held if s.record.target.kind is RevocationKind.NODE
        }
        node_id = resolve(args.node, status, set(revoked), args.unseen)
        if node_id in revoked and own.trust.definition.threshold == 1:
            print(f"meshd revoke: {node_id} is revoked already: nothing to do")
            return 0
        if node_id in revoked:  # under a quorum: this admin's signature on it too
            signed = revoked[node_id].cosign(admin_key)
            client.add_revocations([signed.encode()])
            print(
                f"meshd revoke: {node_id} is revoked already; this admin's signature is on "
                f"it now too ({len(signed.signed_by)} in all)"
            )
            return 0
        if node_id in own.trust.admins:
            raise ValueError(f"{node_id} is an admin key of the mesh: rotate it instead")
        definition = own.trust.definition
        if args.emergency and not definition.emergency_threshold:
            raise ValueError("the mesh's definition sets no emergency threshold")
        record = revoke(
            admin_key,
            mesh=definition,
            target=RevocationTarget.node(node_id),
            revoked_at=now,
            emergency=args.emergency,
        )
        needed = definition.emergency_threshold if args.emergency else definition.threshold
        if needed > 1 and not args.out:
            propose(client, Cosigned(record), f"the revocation of {node_id}", needed)
            return 0
        if needed > 1:
            trust.write_atomically(Path(args.out), record.encode())
            print(
                f"revocation of {node_id} written to {args.out}, signed by 1 of the "
                f"{needed} admins it needs: run `meshd admin-key approve {args.out}` on "
                "another admin's node"
            )
            return 0
        client.add_revocations([record.encode()])
    except admin_errors() as exc:
        print(f"meshd revoke: {exc}", file=sys.stderr)
        return 1
    name = known_nodes(status).get(node_id)
    print(
        f"{'emergency: ' if args.emergency else ''}revoked {f'{name} ' if name else ''}"
        f"{node_id} from "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now))}: every node drops it "
        "as the revocation spreads, and refuses it from now on"
    )
    return 0
