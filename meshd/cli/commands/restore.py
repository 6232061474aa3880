"""meshd restore FILE [--passphrase-file F] [--config FILE]: put a node back from a backup
made by ``meshd backup`` (a new SD card, a new box): its config at ``--config`` (default
/etc/meshd/meshd.toml) and its state files in the state directory that config names. Only
into a state directory without an identity key: one with this node's key already is left
alone (its ledger is newer than the backup's), one with another node's key is refused.
Start meshd afterwards (``systemctl start meshd``); on a box without meshd,
``provision --bundle DIR --restore FILE`` installs it and does this."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from meshd.cli.commands import add_passphrase_argument, read_passphrase


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the backup (meshd backup --out FILE)")
    add_passphrase_argument(p)
    p.add_argument(
        "--config",
        help="where the node's config goes (default: $MESHD_CONFIG, else /etc/meshd/meshd.toml)",
    )


def main(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity, node_backup

    try:
        data = Path(args.file).read_bytes()
        clear = node_backup.describe(data)
        print(f"{args.file}: node {clear['node']} ({clear['name'] or 'unnamed'})")
        passphrase = read_passphrase(args.passphrase_file, node_backup.WHAT, confirm=False)
        backup = node_backup.unseal(data, passphrase)
        path = config.config_path(args.config)
        cfg = config.parse(backup.config.decode(), path)
        state_dir = Path(cfg.node.state_dir)
        there = node_backup.present(state_dir)
        if there == backup.node:
            print(f"{state_dir} holds node {there} already: nothing restored (its files are newer)")
            return 0
        if there is not None:
            raise ValueError(f"{state_dir} holds another node's keys ({there}): not replacing them")
        written = node_backup.restore(backup, path, state_dir)
    except (config.ConfigError, identity.KeyFileError, OSError, ValueError) as e:
        print(f"meshd restore: {e}", file=sys.stderr)
        return 1
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(backup.created))
    print(
        f"node {backup.node} restored from its backup of {made} (meshd {backup.meshd}): "
        f"{len(written) - 1} files in {state_dir}, its config in {path}; start meshd now"
    )
    return 0
