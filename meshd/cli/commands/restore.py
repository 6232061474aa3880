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
from typing import TYPE_CHECKING, TextIO

from meshd.cli.commands import add_passphrase_argument, read_passphrase

if TYPE_CHECKING:
    from meshd.adapters.node_backup import Backup
    from meshd.config import Config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the backup (meshd backup --out FILE)")
    add_passphrase_argument(p)
    p.add_argument(
        "--config",
        help="where the node's config goes (default: $MESHD_CONFIG, else /etc/meshd/meshd.toml)",
    )


def open_backup(
    file: str, passphrase_file: str | None, config_path: Path, out: TextIO, prefix: str
) -> tuple[Backup, Config]:
    """The backup in ``file`` and its config (parsed as ``config_path``), opened with the
    passphrase; which node it holds is said on ``out`` first, before the passphrase is
    asked. OSError or ValueError (SealError, ConfigError) saying what is wrong. Also
    provision --restore's."""
    from meshd import config
    from meshd.adapters import node_backup

    data = Path(file).read_bytes()
    clear = node_backup.describe(data)
    print(f"{prefix}{file}: node {clear['node']} ({clear['name'] or 'unnamed'})", file=out)
    passphrase = read_passphrase(passphrase_file, node_backup.WHAT, confirm=False)
    backup = node_backup.unseal(data, passphrase)
    return backup, config.parse(backup.config.decode(), config_path)


def main(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity, node_backup

    try:
        path = config.config_path(args.config)
        backup, cfg = open_backup(args.file, args.passphrase_file, path, sys.stdout, "")
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
