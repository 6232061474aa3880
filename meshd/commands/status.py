"""meshd status [--json]"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object (DESIGN.md)")
    p.add_argument("--socket", help="control socket (default: $MESHD_SOCKET or /run/meshd)")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from meshd.api import ApiError, Client
    from meshd.config import socket_path

    path = Path(args.socket) if args.socket else socket_path()
    try:
        status = Client(path).call("status")
    except ApiError as exc:
        print(f"meshd: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render(status))
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def render(s: dict[str, Any]) -> str:
    names = {n["node_id"]: n["name"] for n in s["neighbours"]}
    parts = [
        f"node     {s['name']}  {s['node_id']}",
        f"mesh     {s['mesh_ipv4']}  {s['mesh_ipv6']}",
        f"backend  {s['backend']}",
        "",
        table(
            ["NEIGHBOUR", "INTERFACE", "STATE", "RTT ms", "LOSS", "SILENT s", "RX", "TX"],
            [
                [
                    n["name"],
                    n["interface"],
                    n["state"],
                    n["rtt_ms"],
                    n["loss"],
                    n["silent_s"],
                    n["rx_bytes"],
                    n["tx_bytes"],
                ]
                for n in s["neighbours"]
            ],
        ),
        "",
        table(
            ["ROUTE", "VIA", "INTERFACE", "METRIC"],
            [
                [r["prefix"], names.get(r["via"], r["via"]), r["interface"], r["metric"]]
                for r in s["routes"]
            ],
        ),
    ]
    return "\n".join(parts)
