"""meshd admin-key backup|restore: the mesh's admin signing key, kept off the node
(meshd.commands.admin_key_backup)."""

from __future__ import annotations

import argparse

from meshd.commands.admin_key_backup import add_backup_arguments, add_restore_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_backup_arguments(sub)
    add_restore_arguments(sub)


def main(args: argparse.Namespace) -> int:
    return int(args.admin_key_run(args))
