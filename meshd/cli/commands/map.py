"""meshd map export DIR: write the community map as this node sees it, ``meshviewer.json``
and ``nodelist.json`` (yanic's meshviewer-ffrgb and nodelist schemas, docs/map/), into DIR
for a web server or a meshviewer to serve. ``[map] export_dir`` has the daemon write them
on a timer instead."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshd.cli.commands import add_socket_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("export",))
    p.add_argument("directory", metavar="DIR", help="where the two files go (made if missing)")
    add_socket_argument(p)


def main(args: argparse.Namespace) -> int:
    from meshd.api.client import ControlClient, ControlError, locate_socket
    from meshd.daemon.community_map import files, write

    try:
        docs = ControlClient(locate_socket(args.socket)).call("map")
        writes = files(Path(args.directory), docs)
        write(writes)
    except (OSError, ControlError) as exc:  # a ControlError: "code: message"
        print(f"meshd map: {exc}", file=sys.stderr)
        return 1
    nodes = docs["meshviewer.json"]["nodes"]
    online = sum(1 for n in nodes if n["is_online"])
    links = len(docs["meshviewer.json"]["links"])
    print(f"{len(nodes)} nodes ({online} online), {links} links: {args.directory}")
    return 0
