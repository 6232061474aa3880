"""meshd check-config FILE"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="the TOML config file to check")
    p.add_argument("--explain", action="store_true", help="print every option with its help")


def main(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity

    if args.explain:
        print(config.explain())
        return 0
    if not args.file:
        print("meshd check-config: give a FILE (or --explain)", file=sys.stderr)
        return 2
    try:
        cfg = config.load(args.file)
    except config.ConfigError as exc:
        print(f"meshd: {exc}", file=sys.stderr)
        return 1
    keys = cfg.node.state_dir
    if (keys / identity.IDENTITY_KEY).exists() or (keys / identity.WIREGUARD_KEY).exists():
        try:
            identity.load(keys)
        except identity.KeyFileError as exc:
            print(f"meshd: {exc}", file=sys.stderr)
            return 1
    print(f"{args.file}: ok (config version {cfg.version}, {len(cfg.bootstrap)} bootstrap peers)")
    return 0
