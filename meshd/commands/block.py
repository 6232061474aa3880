"""meshd block NODE_ID [--undo]: stop one neighbour's traffic through this gateway at once
(its exit session is closed and its WireGuard peer removed), or allow it again. Kept across
restarts; `meshd status` lists the blocked under gateway.sharing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("node_id", help="the neighbour's node id (43 characters)")
    p.add_argument("--undo", action="store_true", help="allow it again")
    p.add_argument("--socket", help="control socket (default: $MESHD_SOCKET or /run/meshd)")


def main(args: argparse.Namespace) -> int:
    from meshd.api import ApiError, Client
    from meshd.config import socket_path

    path = Path(args.socket) if args.socket else socket_path()
    try:
        Client(path).call("block", node_id=args.node_id, blocked=not args.undo)
    except OSError as exc:
        print(f"meshd block: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"meshd block: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{args.node_id} {'allowed again' if args.undo else 'blocked'}")
    return 0
