"""meshd backup --out FILE [--passphrase-file F] [--config FILE]: this node (its config,
keys, certificates, mesh definition and ledger) in one file encrypted with a passphrase,
for a household moving to a new SD card or a new box: ``meshd restore FILE`` or
``provision --restore FILE`` puts it back (meshd.adapters.node_backup). It may run while
the daemon runs: the databases are copied with SQLite's online backup."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from meshd.cli.commands import (
    add_config_argument,
    add_passphrase_argument,
    read_passphrase,
    write_new,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="FILE", help="the backup to write (new file)")
    add_passphrase_argument(p)
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    import nacl.utils

    from meshd import config
    from meshd.adapters import identity, node_backup, trust
    from meshd.cli.commands import load_node

    try:
        path = config.config_path(args.config)
        cfg, ident, _ = load_node(args.config, time.time())
        state_dir = Path(cfg.node.state_dir)
        made = node_backup.collect(path, state_dir, ident.node_id, cfg.node.name)
        passphrase = read_passphrase(args.passphrase_file, node_backup.WHAT, confirm=True)
        data = node_backup.seal(made, passphrase, nacl.utils.random(16))
        write_new(args.out, data)
    except FileExistsError:
        print(f"meshd backup: {args.out} exists: not overwriting it", file=sys.stderr)
        return 1
    except (config.ConfigError, identity.KeyFileError, trust.TrustError, OSError, ValueError) as e:
        print(f"meshd backup: {e}", file=sys.stderr)
        return 1
    names = ", ".join(made.files)
    print(
        f"node {made.node} ({made.name or 'unnamed'}) written to {args.out}, encrypted: "
        f"{path} and {len(made.files)} files of {state_dir} ({names}). It holds the "
        "node's private keys: keep it and the passphrase apart"
    )
    return 0
