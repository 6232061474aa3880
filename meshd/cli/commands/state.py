"""meshd state status|upgrade|rollback [--config FILE]: the schema of this node's state
directory and its stores (meshd.adapters.state_dir), upgraded as ``meshd run`` does at
start, or put back to the copy kept before an upgrade, for an older meshd."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from meshd.cli.commands import add_config_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = sub.add_parser(
        "status",
        help="the state directory's schema and its stores', and the copies kept",
        description="The schema of the state directory, the ledger's and the invite "
        "store's, beside the ones this meshd knows, and the copies kept before upgrades.",
    )
    status.add_argument("--json", action="store_true", help="as one JSON object")
    upgrade = sub.add_parser(
        "upgrade",
        help="upgrade the state directory now, as `meshd run` does at start",
        description="Copy the state directory into upgrades/ and bring it and its stores "
        "to this meshd's schema (what `meshd run` does when it starts). The daemon must be "
        "stopped.",
    )
    rollback = sub.add_parser(
        "rollback",
        help="put back the copy kept before an upgrade, for the older meshd",
        description="Move the state directory's files aside (upgrades/replaced-TIME/) and "
        "put back the copy kept before the last upgrade (or COPY), so that the meshd from "
        "before the upgrade runs on it again. The daemon must be stopped.",
    )
    rollback.add_argument("copy", nargs="?", metavar="COPY", help="a copy's name (status)")
    for q in (status, upgrade, rollback):
        add_config_argument(q)


def _daemon_answers(cfg: object) -> bool:
    from meshd.api.client import ControlClient, ControlError, locate_socket

    try:
        ControlClient(locate_socket(None, cfg), timeout=2.0).version()  # type: ignore[arg-type]
    except ControlError:
        return False
    return True


def _print_status(found: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(found, indent=1))
        return
    schema = found["schema"]
    shown = "new (nothing but keys)" if schema is None else f"schema {schema}"
    by = f", written by meshd {found['written_by']}" if found["written_by"] else ""
    print(f"{found['state_dir']}: {shown}{by}; this meshd knows {found['knows']}")
    stores = found["stores"]
    assert isinstance(stores, dict)
    for name, store in stores.items():
        have = "absent" if store["schema"] is None else f"schema {store['schema']}"
        print(f"  {name}: {have} (this meshd knows {store['knows']})")
    kept = found["copies"]
    assert isinstance(kept, list)
    print("copies kept before upgrades: " + (", ".join(kept) if kept else "none"))


def main(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import safe_files, state_dir

    try:
        cfg = config.load(config.config_path(args.config))
        where = Path(cfg.node.state_dir)
        if args.action != "status" and _daemon_answers(cfg):
            print(
                f"meshd state {args.action}: meshd is running on this node: stop it first "
                "(systemctl stop meshd)",
                file=sys.stderr,
            )
            return 1
        with safe_files.as_owner_of(where):
            if args.action == "status":
                _print_status(state_dir.status(where), args.json)
            elif args.action == "upgrade":
                done = state_dir.upgrade(where, time.time())
                if done is None:
                    print(f"{where}: schema {state_dir.STATE_VERSION} already: nothing to do")
                else:
                    stores = ", ".join(f"{n} from schema {v}" for n, v in done.stores.items())
                    print(
                        f"{where}: upgraded from schema {done.schema} to {done.to}"
                        + (f" ({stores})" if stores else "")
                        + f"; the files as they were are in {done.copy}"
                    )
            else:
                copy, aside = state_dir.rollback(where, time.time(), args.copy)
                print(
                    f"{where}: the files of {copy.name} put back; those it replaced are in "
                    f"{aside}. Start the meshd from before the upgrade on it"
                )
    except (config.ConfigError, OSError) as exc:
        print(f"meshd state {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
