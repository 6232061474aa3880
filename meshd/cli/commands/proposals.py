"""meshd proposals [list | show ID | sign ID | withdraw ID] [--json] [--config FILE]
[--socket PATH]: what the mesh's admins proposed and sign together (issue 27).

Where the mesh's definition sets a threshold above 1, ``meshd revoke NODE`` and ``meshd
admin-key rotate ...`` hand the daemon a proposal signed by this admin; it spreads to every
node like a revocation. ``list`` (the default) shows every proposal held, with who signed
it, how many it needs and when it lapses; ``show ID`` prints one as JSON (the record as
``meshd decode`` prints it). ``sign ID``, on another admin's node, adds that admin's
signature: once the proposal carries the quorum, every node takes it (the definition is
adopted, the node revoked). ``withdraw ID`` takes this admin's signature back, for good;
the admin who proposed it withdraws the whole proposal. A proposal lapses two weeks after
it was signed (``TTL_S``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from meshd.cli.commands import add_config_argument, add_socket_argument, admin_errors


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", nargs="?", default="list", choices=("list", "show", "sign", "withdraw")
    )
    p.add_argument("id", nargs="?", metavar="ID", help="the proposal, as `list` shows it")
    p.add_argument("--json", action="store_true", help="list: one JSON object per line")
    add_config_argument(p)
    add_socket_argument(p)


def main(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.api.client import ControlClient, locate_socket

    try:
        if args.action != "list" and not args.id:
            raise ValueError(
                f"{args.action}: give the proposal's ID (`meshd proposals` lists them)"
            )
        cfg = config.load(config.config_path(args.config))
        client = ControlClient(locate_socket(args.socket, cfg))
        held = client.proposals()
        if args.action == "list":
            _list(held, args.json)
            return 0
        found = [p for p in held if p["id"] == args.id]
        if not found:
            ids = ", ".join(p["id"] for p in held) or "none"
            raise ValueError(f"no proposal {args.id} held here (held: {ids})")
        if args.action == "show":
            print(json.dumps({k: v for k, v in found[0].items() if k != "proposal"}, indent=2))
            return 0
        return _sign(client, cfg, found[0], withdraw=args.action == "withdraw")
    except admin_errors() as exc:
        print(f"meshd proposals: {exc}", file=sys.stderr)
        return 1


def propose(client: Any, signed: Any, what: str, needed: int) -> None:
    """Hand ``signed`` (a Cosigned record this admin signed) to the daemon as a proposal,
    which spreads it to every node, and say what the other admins do next."""
    from meshd.core.membership.proposals import Proposal

    (heard,) = client.propose([Proposal(signed).encode()])
    print(
        f"proposal {heard['id']}: {what}, signed by 1 of the {needed} admins it needs; it "
        f"spreads to every node: run `meshd proposals sign {heard['id']}` on another "
        "admin's node"
    )


def _list(held: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for p in held:
            print(json.dumps({k: v for k, v in p.items() if k != "proposal"}))
        return
    if not held:
        print("no proposals held")
        return
    print(f"{'ID':<13} {'SIGNED':<8} {'LAPSES (UTC)':<17} WHAT")
    for p in held:
        signed = "withdrawn" if p["withdrawn"] else f"{len(p['signed_by'])} of {p['needed']}"
        lapses = time.strftime("%Y-%m-%d %H:%M", time.gmtime(p["lapses_at"]))
        print(f"{p['id']:<13} {signed:<8} {lapses:<17} {p['what']}")


def _sign(client: Any, cfg: Any, found: dict[str, Any], withdraw: bool) -> int:
    from meshd.adapters import identity
    from meshd.cli.commands import load_admin_key
    from meshd.core.membership import MeshDefinition
    from meshd.core.membership.proposals import Proposal

    current = MeshDefinition.from_json(client.mesh_definition().definition)
    key = load_admin_key(cfg.node.state_dir, identity.load(cfg.node.state_dir), current.admins)
    proposal = Proposal.decode(bytes.fromhex(found["proposal"]))
    changed = proposal.withdraw(key) if withdraw else proposal.cosign(key)
    (heard,) = client.propose([changed.encode()])
    what, outcome = found["what"], heard["outcome"]
    if withdraw and changed.dropped:
        print(f"{found['id']}: the {what} is withdrawn by the admin who proposed it, for good")
    elif withdraw:
        print(f"{found['id']}: this admin's signature on the {what} is withdrawn, for good")
    elif outcome == "carried":
        print(f"{found['id']}: the {what} carries its quorum: in force, and spreading")
    else:
        print(f"{found['id']}: signed, {heard['signed']} of the {heard['needed']} the {what} needs")
    return 0
