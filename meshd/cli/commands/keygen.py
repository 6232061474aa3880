"""meshd keygen --state-dir DIR"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", required=True, help="directory for the *.key and *.pub files")
    p.add_argument("--json", action="store_true", help="print node_id and wireguard_key as JSON")


def main(args: argparse.Namespace) -> int:
    from meshd.adapters import identity

    try:
        ident = identity.generate(Path(args.state_dir))
    except (identity.KeyFileError, OSError) as exc:
        print(f"meshd: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"node_id": ident.node_id, "wireguard_key": ident.wireguard_public_b64}))
    else:
        print(f"node_id       {ident.node_id}\nwireguard_key {ident.wireguard_public_b64}")
    return 0
