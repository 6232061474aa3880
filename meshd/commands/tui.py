"""meshd tui"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help="control socket (default: $MESHD_SOCKET or /run/meshd)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from meshd.api import Client
    from meshd.config import socket_path
    from tui.app import Dashboard

    client = Client(Path(args.socket) if args.socket else socket_path())
    Dashboard(lambda: client.call("status"), args.interval).run()
    return 0
