"""The meshd command line. Kept light: subcommands import what they need when they run."""

from __future__ import annotations

import argparse
import importlib
import sys

from meshd import __version__

# name -> (module under meshd.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the daemon"),
    "status": ("status", "show this node's links, routes and usage"),
    "check-config": ("check_config", "check a config file and explain every error"),
    "keygen": ("keygen", "create a node's identity and WireGuard keys"),
    "tui": ("tui", "the operator's terminal dashboard"),
    "decode": ("decode", "print any control message (Babel, membership, receipt, ...) as JSON"),
    "revocations": ("revocations", "add admin-signed revocations (spread mesh-wide), or list"),
    "block": ("block", "stop (or --undo: allow) one neighbour's traffic through this gateway"),
    "receipts": ("receipts", "verify receipts exports offline, or add them up (summary)"),
    "invite": ("invite", "issue a one-time invite for a new household node (token and QR)"),
    "revoke": ("revoke", "cut a node off the mesh for good (on the node holding the admin key)"),
    "admin-key": ("admin_key", "the mesh's admin key: back it up, restore it, rotate it"),
    "leave": ("leave", "stop being a node: remove meshd's files, keys and kernel state"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshd", description="Community mesh router: WireGuard links, shared uplinks."
    )
    parser.add_argument("--version", action="version", version=f"meshd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(f"meshd.commands.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(f"meshd.commands.{args._module}")
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
