"""meshd status [--json]"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from meshd.cli.commands import add_socket_argument

if TYPE_CHECKING:
    from meshd.api.schema import Neighbour, Status, Usage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object (DESIGN.md)")
    add_socket_argument(p)


def main(args: argparse.Namespace) -> int:
    from meshd.api.client import ControlClient, ControlError, locate_socket

    try:
        status = ControlClient(locate_socket(args.socket)).status()
    except ControlError as exc:
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


def render(s: Status) -> str:
    # Keyed by a route's via, which is null for a route of no neighbour's.
    names: dict[str | None, str | None] = {n["node_id"]: n["name"] for n in s["neighbours"]}
    parts = [
        f"node     {s['name']}  {s['node_id']}",
        f"mesh     {s['mesh_ipv4']}  {s['mesh_ipv6']}",
        f"backend  {s['backend']}",
        "",
        table(
            ["NEIGHBOUR", "INTERFACE", "STATE", "RTT ms", "LOSS", "SILENT s", "RX", "TX"]
            + ["REFUSED"],
            [
                [
                    n["name"],
                    n["interface"],
                    n["state"],
                    n["rtt_ms"],
                    n["loss"],
                    # The link fields come once the WireGuard link exists.
                    n.get("silent_s"),
                    n.get("rx_bytes"),
                    n.get("tx_bytes"),
                    refused(n),
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
    if s.get("usage"):
        parts += [
            "",
            table(
                ["USAGE", "RELAYED FOR", "RELAYED TO", "SENT", "RECEIVED", "RECEIPTS"],
                [
                    [
                        names.get(u["node_id"]) or u["node_id"],
                        u["relayed_for_bytes"],
                        u["relayed_to_bytes"],
                        u.get("sent_bytes"),
                        u.get("received_bytes"),
                        receipts(u),
                    ]
                    for u in s["usage"]
                ],
            ),
        ]
    devices = s.get("devices") or {}
    if devices.get("unreadable"):
        parts += ["", f"devices: {devices['unreadable']}"]
    if devices.get("items"):
        parts += ["", device_table(devices["items"], time.time())]
    installs = (s.get("releases") or {}).get("installs") or {}
    for concern in installs.get("concerns", ()):
        parts += ["", f"update: {concern} (meshd update status)"]
    if pending := [p for p in s.get("proposals", ()) if not p.get("withdrawn")]:
        what = "; ".join(f"{p['id']} {p['what']}" for p in pending)
        parts += ["", f"proposals short of their quorum (meshd proposals): {what}"]
    return "\n".join(parts)


def device_table(items: list[dict[str, Any]], now: float) -> str:
    """The roaming devices (``meshd device list`` and ``meshd status``): where each was
    last seen, how long since its last handshake and its bytes."""
    return table(
        ["DEVICE", "ADDRESS", "SEEN AT", "HANDSHAKE s AGO", "RX", "TX"],
        [
            [
                d["name"],
                d["address"],
                d.get("endpoint"),
                round(now - d["last_handshake"]) if d.get("last_handshake") else None,
                d.get("rx_bytes", 0),
                d.get("tx_bytes", 0),
            ]
            for d in items
        ],
    )


def refused(n: Neighbour) -> str | None:
    """How many things it sent were refused, and the most counted reason (every reason:
    ``--json``, or the dashboard's neighbour detail)."""
    counts = n.get("refusals") or {}
    if not counts:
        return None
    top = max(counts, key=lambda code: counts[code])
    more = ", ..." if len(counts) > 1 else ""
    return f"{sum(counts.values())} ({top} {counts[top]}{more})"


def receipts(u: Usage) -> str:
    """Both roles' last signed figures (for/to), and what is wrong, in one cell."""
    said = []
    if "provider" in u:
        p = u["provider"]
        said.append(f"they signed {p['receipted_for_bytes']}/{p['receipted_to_bytes']}")
        if p["state"] != "ok":
            said.append(f"{p['state']} ({p['reason']})")
        if p["disputes"]:
            said.append(f"{p['disputes']} disputed by them")
    if "consumer" in u:
        c = u["consumer"]
        said.append(f"we signed {c['signed_for_bytes']}/{c['signed_to_bytes']}")
        if c["throttled"]:
            said.append(f"throttling us ({c['reason']})")
        if c["disputes"]:
            said.append(f"{c['disputes']} disputed by us")
    return ", ".join(said) or "no receipts yet"
