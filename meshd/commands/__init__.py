"""One module per CLI subcommand, imported only when that subcommand runs."""

from __future__ import annotations

import argparse


def add_socket_argument(p: argparse.ArgumentParser) -> None:
    """``--socket`` for the commands that call the daemon (``meshd.client.locate_socket``)."""
    p.add_argument("--socket", help="control socket (default: $MESHD_SOCKET or /run/meshd)")
