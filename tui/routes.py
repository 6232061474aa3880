"""Routes: what the kernel holds from meshd (prefix, next hop, Babel metric, hops when the
daemon reports them), and the routes withdrawn lately with why."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tui.model import WITHDRAWN_KEEP_S, Live
from tui.tables import LiveTable


class Routes(Vertical):
    def compose(self) -> ComposeResult:
        yield LiveTable(
            [("prefix", "PREFIX", 43), ("via", "VIA", 10), ("metric", "METRIC", 6)],
            id="routes-table",
        )
        yield Static("waiting for the first status from meshd", id="routes-note")

    def show(self, live: Live) -> None:
        s = live.status
        if s is None:
            return
        table = self.query_one(LiveTable)
        if any("hops" in r for r in s["routes"]) and "hops" not in table.columns:
            table.add_live_column("hops", "HOPS", 4)
        with_hops = "hops" in table.columns
        rows = {}
        for r in s["routes"]:
            cells = [
                r["prefix"],
                live.name(r["via"]) if r["via"] else r["interface"],
                str(r["metric"]),
            ]
            if with_hops:
                hops = r.get("hops")  # a later daemon's field
                cells.append("-" if hops is None else str(hops))
            rows[r["prefix"]] = cells
        table.show(rows)
        note = Text()
        if not s["routes"]:
            note.append("no routes installed: no neighbour has offered one yet\n")
        if live.withdrawn:
            note.append(f"withdrawn in the last {WITHDRAWN_KEEP_S:.0f}s:\n", style="bold")
            for w in live.withdrawn.values():
                note.append(f"{w.route['prefix']}", style="yellow")
                note.append(f" (was via {live.name(w.route['via'])}): {w.why}\n")
        self.query_one("#routes-note", Static).update(note)
