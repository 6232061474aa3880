"""meshd leave [--yes] [--purge] [--export FILE] [--dry-run] [--root DIR] [--config FILE]:
this machine stops being a mesh node. The daemon is stopped, the receipts are saved to a
file first (unless --purge), then what meshd made in the kernel and everything
provisioning/provision made is removed. The code is provisioning/leave.py, beside what it
undoes (provisioning/layout.py)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--purge",
        action="store_true",
        help="no receipts export first, and remove the admin key if this node holds it",
    )
    p.add_argument(
        "--export",
        metavar="FILE",
        help="where to save the receipts (default: ./meshd-receipts-NAME-DATE.jsonl)",
    )
    p.add_argument(
        "--config", help="the node's config (default: /etc/meshd/meshd.toml, under --root)"
    )
    p.add_argument("--dry-run", action="store_true", help="say every action, do none")
    p.add_argument(
        "--root",
        metavar="DIR",
        help="remove the files under DIR; no user or service (the daemon and the kernel "
        "are this machine's)",
    )


def main(args: argparse.Namespace) -> int:
    try:
        from provisioning.leave import main as leave
    except ModuleNotFoundError:
        print(
            "meshd leave: this meshd was installed without its provisioning package "
            "(pyproject.toml's packages must include provisioning*): run it from the "
            "checkout that provisioned this node, as .venv/bin/python -m meshd leave",
            file=sys.stderr,
        )
        return 1
    return leave(args)
