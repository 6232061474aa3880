"""The first screen: this node, how its traffic leaves, the totals, every neighbour with
its state, and every red or yellow thing anywhere with why."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from meshd.api.schema import Status
from tui import explain, fmt
from tui.explain import Level, Why, styled
from tui.model import Live
from tui.tables import Cell, LiveTable


class Overview(VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static("waiting for the first status from meshd", id="identity")
        yield Static("", id="way")
        yield Static("", id="totals")
        yield LiveTable(
            [
                ("name", "NEIGHBOUR", 10),
                ("state", "STATE", 10),
                ("rtt", "RTT ms", 6),
                ("why", "WHY", 40),
            ],
            id="overview-neighbours",
        )
        yield Static("", id="attention")

    def show(self, live: Live) -> None:
        s = live.status
        if s is None:
            return
        # Text, not markup: what the daemon sends is shown as it is, brackets included.
        self.query_one("#identity", Static).update(
            Text.assemble(
                "node     ",
                (s["name"], "bold"),
                f"  {s['node_id']}\n"
                f"mesh     {s['mesh_ipv4']}  {s['mesh_ipv6']}\n"
                f"backend  {s['backend']} · routing {s.get('routing', '-')}"
                f" · up {fmt.duration(s.get('uptime_s'))}",
                governance(s),
            )
        )
        self.query_one("#way", Static).update(_way(s, live))
        self.query_one("#totals", Static).update(_totals(s))
        rows: dict[str, list[Cell]] = {}
        for n in s["neighbours"]:
            why = explain.neighbour(n)
            rows[n["node_id"]] = [
                n["name"],
                styled(why, n["state"]),
                fmt.ms(n["rtt_ms"]),
                styled(why),
            ]
        self.query_one(LiveTable).show(rows)
        if not s["neighbours"]:
            self.query_one("#attention", Static).update(
                "no neighbours: no bootstrap peer configured and none found on the LAN yet"
            )
            return
        problems = attention(live)
        self.query_one("#attention", Static).update(
            Text("\n").join(styled(w, f"• {w.text}") for w in problems)
            if problems
            else Text("nothing needs attention", style="green")
        )


def _way(s: Status, live: Live) -> Text:
    gateway = s.get("gateway")
    if gateway is None:
        return Text("gateway  not reported by this daemon")
    lines = Text()
    up = explain.uplink(gateway)
    if up is not None:
        lines.append("uplink   ").append(styled(up)).append("\n")
    lines.append("way out  ").append(styled(explain.way_out(gateway, live.names())))
    sharing = gateway.get("sharing")
    if sharing is not None:
        users = ", ".join(sharing["users"]) or "nobody yet"
        lines.append(
            f"\nsharing  {'offered' if sharing['announced'] else 'withdrawn'} · exit users: {users}"
        )
    if seen := devices(s):
        lines.append(f"\ndevices  {seen}")
    return lines


def governance(s: Status) -> str:
    """Who governs the mesh, on a line of its own (none from a daemon that does not say):
    how many admins, how many of them sign a change, and an emergency revocation's."""
    mesh = s.get("mesh")
    if not mesh:
        return ""
    said = f"\nadmins   {len(mesh['admins'])} · {mesh.get('threshold', 1)} sign a change"
    if emergency := mesh.get("emergency_threshold"):
        said += f" · {emergency} revoke in an emergency"
    return said + f" · definition {mesh['serial']}"


def devices(s: Status) -> str:
    """The household's roaming devices on one line: each one's last handshake and bytes."""
    items = (s.get("devices") or {}).get("items") or []
    said = []
    for d in items:
        seen = d.get("last_handshake")
        ago = f"{fmt.duration(time.time() - seen)} ago" if seen else "never seen"
        said.append(f"{d['name']} ({ago}, {fmt.size(d['rx_bytes'] + d['tx_bytes'])})")
    return ", ".join(said)


def _totals(s: Status) -> str:
    usage = s.get("usage", [])
    relayed = sum(u["relayed_for_bytes"] + u["relayed_to_bytes"] for u in usage)
    through = sum(u.get("sent_bytes", 0) + u.get("received_bytes", 0) for u in usage)
    up = sum(n["state"] == "up" for n in s["neighbours"])
    return (
        f"totals   relayed for neighbours {fmt.size(relayed)} · through neighbours "
        f"{fmt.size(through)}\n         {up}/{len(s['neighbours'])} neighbours up · "
        f"{len(s['routes'])} routes"
    )


def attention(live: Live) -> list[Why]:
    """Every red or yellow state the views show, each with why."""
    s = live.status
    if s is None:
        return []
    found = [
        Why(w.level, f"{n['name']}: {w.text}")
        for n in s["neighbours"]
        if (w := explain.neighbour(n)).level is not Level.OK
    ]
    found += [
        Why(Level.WARN, f"route {w.route['prefix']} withdrawn: {w.why}")
        for w in live.withdrawn.values()
    ]
    gateway = s.get("gateway")
    if gateway is not None:
        up = explain.uplink(gateway)
        out = explain.way_out(gateway, live.names())
        found += [w for w in (up, out) if w is not None and w.level is not Level.OK]
    for u in s.get("usage", []):
        found += explain.usage(u, live.name(u["node_id"]), s.get("receipts"))
    mesh = s.get("mesh") or {}
    found += [
        Why(
            Level.WARN,
            f"{live.name(node_id)}: revoked in an emergency by {mesh.get('emergency_threshold')}"
            f" of {len(mesh['admins'])} admins, fewer than the {mesh.get('threshold')} a"
            " revocation takes",
        )
        for node_id in mesh.get("emergency_revoked", ())
    ]
    installs = (s.get("releases") or {}).get("installs") or {}
    found += [Why(Level.WARN, f"update: {c}") for c in installs.get("concerns", ())]
    found += [
        Why(
            Level.WARN,
            f"proposal {p['id']}: {p['what']}, signed by {len(p['signed_by'])} of the"
            f" {p['needed']} admins it needs (`meshd proposals`)",
        )
        for p in s.get("proposals", ())
        if not p.get("withdrawn")
    ]
    if unreadable := (s.get("devices") or {}).get("unreadable"):
        found.append(Why(Level.BAD, f"devices: {unreadable}"))
    return [w for w in found if w.level is not Level.OK]
