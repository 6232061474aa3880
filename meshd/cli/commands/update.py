"""meshd update status: the meshd running, this node's stage, the release it holds and serves
to its neighbours and the one it fetches (meshd.daemon.releases), with when its stage takes
each. Installing a release and rolling it back are not built yet (issue 20)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from meshd.cli.commands import add_socket_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = sub.add_parser("status", help="the releases this node holds and fetches")
    status.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    add_socket_argument(status)


def _when(start: int | None) -> str:
    if start is None:
        return "takes it only by hand (stage manual)"
    if start <= time.time():
        return "its stage takes it now"
    return time.strftime("its stage takes it from %Y-%m-%d %H:%M UTC", time.gmtime(start))


def _release(what: str, release: dict[str, Any]) -> str:
    return (
        f"{what}: release {release['serial']} (meshd {release['meshd_version']}, "
        f"{release['artifact']}, {release['size']} bytes); {_when(release['takes_from'])}"
    )


def describe(releases: dict[str, Any]) -> list[str]:
    lines = [f"running: meshd {releases['running']}, stage {releases['stage']}"]
    held, fetching = releases.get("held"), releases.get("fetching")
    lines.append(_release("holds and serves", held) if held else "holds no release")
    if fetching:
        holders = len(fetching["holders"])
        hold = "neighbour holds" if holders == 1 else "neighbours hold"
        done = f"{fetching['received']} of {fetching['size']} bytes; {holders} {hold} it"
        lines.append(f"{_release('fetching', fetching)}; {done}")
    if releases.get("refused"):
        refused = ", ".join(f"{k} {v}" for k, v in sorted(releases["refused"].items()))
        lines.append(f"refused from neighbours: {refused}")
    return lines


def main(args: argparse.Namespace) -> int:
    from meshd.api.client import ControlClient, ControlError, locate_socket

    try:
        releases = ControlClient(locate_socket(args.socket)).releases()
    except ControlError as exc:
        print(f"meshd update status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(releases, indent=2, sort_keys=True))
        return 0
    if releases is None:
        print("meshd update status: the daemon holds no release service yet", file=sys.stderr)
        return 1
    print("\n".join(describe(releases)))
    return 0
