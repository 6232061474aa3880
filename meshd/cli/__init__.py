"""The meshd command line. Kept light: subcommands import what they need when they run."""

from __future__ import annotations

import argparse
import importlib
import sys

from meshd import __version__

# name -> (module under meshd.cli.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the daemon"),
    "status": ("status", "show this node's links, routes and usage"),
    "doctor": ("doctor", "check what new operators get wrong, and say what to do"),
    "check-config": ("check_config", "check a config file and explain every error"),
    "keygen": ("keygen", "create a node's identity and WireGuard keys"),
    "tui": ("tui", "the operator's terminal dashboard"),
    "decode": ("decode", "print any control message (Babel, membership, receipt, ...) as JSON"),
    "revocations": ("revocations", "add admin-signed revocations (spread mesh-wide), or list"),
    "map": ("map", "write the community map's files (meshviewer.json, nodelist.json) to DIR"),
    "block": ("block", "stop (or --undo: allow) one neighbour's traffic through this gateway"),
    "device": ("device", "the household's phones and laptops: a WireGuard config each"),
    "receipts": ("receipts", "verify receipts exports offline, or add them up (summary)"),
    "invite": ("invite", "issue a one-time invite for a new household node (token and QR)"),
    "revoke": ("revoke", "cut a node off the mesh for good (on the node holding the admin key)"),
    "admin-key": ("admin_key", "the mesh's admin key: back it up, restore it, rotate it"),
    "proposals": ("proposals", "what the admins proposed: list, show, sign or withdraw one"),
    "release": ("release", "sign a release manifest (admin), check one, or publish it"),
    "update": ("update", "releases: what is held and fetched; take one, or roll it back (root)"),
    "state": ("state", "the state directory's schema: status, upgrade, rollback to the copy"),
    "backup": ("backup", "this node (config, keys, ledger) in one file sealed with a passphrase"),
    "restore": ("restore", "put a node back from its backup (a new SD card, a new box)"),
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
        importlib.import_module(f"meshd.cli.commands.{module}").add_arguments(p)
    return parser


def node_ids_as_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """A node id is URL-safe base64 and begins with "-" once in 64: argparse would take it
    for an option. As an option's value it is joined to the option (``--admin-key=ID``);
    standing alone (a command's NODE) it goes after a final ``--``, where argparse reads
    only positionals. Anything else is left as it is."""
    takes_value = _value_options(parser)
    out: list[str] = []
    alone: list[str] = []
    for arg in argv:
        if "--" in out or not (arg.startswith("-") and _is_node_id(arg)):
            out.append(arg)
        elif out and out[-1] in takes_value:
            out[-1] = f"{out[-1]}={arg}"
        else:
            alone.append(arg)
    return [*out, "--", *alone] if alone and "--" not in out else out + alone


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """The long options that take a value, in ``parser`` and every subcommand's."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _value_options(sub)
        elif action.nargs != 0:
            found |= {s for s in action.option_strings if s.startswith("--")}
    return found


def _is_node_id(text: str) -> bool:
    from meshd.core.keys import public_from_node_id

    try:
        public_from_node_id(text)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(node_ids_as_arguments(parser, sys.argv[1:] if argv is None else argv))
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(f"meshd.cli.commands.{args._module}")
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
