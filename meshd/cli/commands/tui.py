"""meshd tui: the operator's dashboard of this node, live (tui/app.py)."""

from __future__ import annotations

import argparse

from meshd.cli.commands import add_socket_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_socket_argument(p)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")


def main(args: argparse.Namespace) -> int:
    from meshd.api.client import ControlClient, locate_socket
    from tui.app import Dashboard

    Dashboard(ControlClient(locate_socket(args.socket)), args.interval).run()
    return 0
