"""meshd block NODE_ID [--undo]: stop one neighbour's traffic through this gateway at once
(its exit session is closed and its WireGuard peer removed), or allow it again. Kept across
restarts; `meshd status` lists the blocked under gateway.sharing."""

from __future__ import annotations

import argparse
import sys

from meshd.cli.commands import add_socket_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("node_id", help="the neighbour's node id (43 characters)")
    p.add_argument("--undo", action="store_true", help="allow it again")
    add_socket_argument(p)


def main(args: argparse.Namespace) -> int:
    from meshd.api.client import ControlClient, ControlError, locate_socket

    try:
        ControlClient(locate_socket(args.socket)).block(args.node_id, blocked=not args.undo)
    except ControlError as exc:
        print(f"meshd block: {exc}", file=sys.stderr)  # "code: message"
        return 1
    print(f"{args.node_id} {'allowed again' if args.undo else 'blocked'}")
    return 0
