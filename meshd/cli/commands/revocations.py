"""meshd revocations add FILE... | list: hand the daemon admin-signed revocations (canonical
bytes or hex, as `meshd decode` reads them); it checks them, keeps them and spreads them to
every neighbour, which cuts the revoked nodes off everywhere."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meshd.cli.commands import add_socket_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("add", "list"))
    p.add_argument("files", nargs="*", metavar="FILE", help="revocations to add (- for stdin)")
    add_socket_argument(p)


def _read(name: str) -> bytes:
    from meshd.cli.commands.decode import bytes_of

    return bytes_of(sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes())


def main(args: argparse.Namespace) -> int:
    from meshd.api.client import ControlClient, ControlError, locate_socket

    client = ControlClient(locate_socket(args.socket))
    try:
        if args.action == "list":
            for record in client.revocations():
                print(json.dumps(record))
            return 0
        if not args.files:
            print("meshd revocations add: give at least one FILE", file=sys.stderr)
            return 2
        result = client.add_revocations([_read(name) for name in args.files])
    except (OSError, ValueError, ControlError) as exc:  # a ControlError: "code: message"
        print(f"meshd revocations: {exc}", file=sys.stderr)
        return 1
    print(f"{result.added} new, {result.known} already known")
    return 0
