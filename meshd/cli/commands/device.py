"""meshd device add|list|remove: the household's phones and laptops, each with a stock
WireGuard client (meshd.daemon.devices).

``add NAME`` writes the device's wg-quick file (with its private key, kept nowhere else)
to ``--out FILE`` (mode 0600), or to standard output with nothing else there; on a
terminal it also shows the file as a QR code, for the phone apps to scan. ``remove NAME``
cuts the device off at once."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from meshd.cli.commands import add_socket_argument
from meshd.cli.commands.status import device_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="a new device: its wg-quick config and a QR code")
    add.add_argument("name", help="what the household calls it (a-z, 0-9, . _ -)")
    add.add_argument("--out", help="write the config here (mode 0600), not to standard output")
    add.add_argument(
        "--endpoint",
        help="HOST:PORT the device reaches this node at (default: devices.endpoint, else "
        "the uplink's address)",
    )
    add.add_argument(
        "--all",
        action="store_true",
        help="send all the device's traffic by this node (its uplink or its exit), not only "
        "the mesh's",
    )
    add_socket_argument(add)
    listing = sub.add_parser("list", help="the devices, their last handshake and bytes")
    listing.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    add_socket_argument(listing)
    remove = sub.add_parser("remove", help="cut a device off at once")
    remove.add_argument("name")
    add_socket_argument(remove)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def _qr(text: str, out: Any) -> None:
    import segno

    segno.make(text, error="l").terminal(out=out, compact=True)


def main(args: argparse.Namespace) -> int:
    from meshd.api.client import ControlClient, ControlError, locate_socket

    what = f"meshd device {args.action}"
    try:
        client = ControlClient(locate_socket(args.socket))
        if args.action == "add":
            added = client.device_add(args.name, args.endpoint, args.all)
        elif args.action == "remove":
            removed = client.device_remove(args.name)
        else:
            found = client.devices()
    except ControlError as exc:
        print(f"{what}: {exc}", file=sys.stderr)  # "code: message"
        return 1
    if args.action == "add":
        config = added["config"]
        note = f"{args.name}: {added['address']}, reaching this node at {added['endpoint']}"
        if args.out:
            try:
                _write_private(Path(args.out), config)
            except OSError as exc:
                print(f"{what}: {args.out}: {exc}", file=sys.stderr)
                return 1
            print(f"{note}; its config is in {args.out}")
            if sys.stdout.isatty():
                _qr(config, sys.stdout)
        else:
            sys.stdout.write(config)
            print(note, file=sys.stderr)
            if sys.stderr.isatty():
                _qr(config, sys.stderr)
    elif args.action == "remove":
        print(f"{removed['name']} ({removed['address']}) removed: cut off now")
    elif args.json:
        print(json.dumps(found, indent=1))
    else:
        print(device_table(found, time.time()) if found else "no devices")
    return 0
