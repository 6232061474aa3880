"""meshd revocations add FILE... | list: hand the daemon admin-signed revocations (canonical
bytes or hex, as `meshd decode` reads them); it checks them, keeps them and spreads them to
every neighbour, which cuts the revoked nodes off everywhere."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("add", "list"))
    p.add_argument("files", nargs="*", metavar="FILE", help="revocations to add (- for stdin)")
    p.add_argument("--socket", help="control socket (default: $MESHD_SOCKET or /run/meshd)")


def _read(name: str) -> bytes:
    from meshd.commands.decode import bytes_of

    return bytes_of(sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes())


def main(args: argparse.Namespace) -> int:
    from meshd.api import ApiError, Client
    from meshd.config import socket_path

    path = Path(args.socket) if args.socket else socket_path()
    try:
        if args.action == "list":
            for record in Client(path).call("revocations"):
                print(json.dumps(record))
            return 0
        if not args.files:
            print("meshd revocations add: give at least one FILE", file=sys.stderr)
            return 2
        records = [_read(name).hex() for name in args.files]
        result = Client(path).call("add_revocations", records=records)
    except (OSError, ValueError) as exc:
        print(f"meshd revocations: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"meshd revocations: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{result['added']} new, {result['known']} already known")
    return 0
