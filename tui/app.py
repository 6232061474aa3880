"""`meshd tui`: a live view of one node: its links, their state and counters, its routes.

The status is fetched in a thread worker (the API client blocks) once a second; the UI
only renders snapshots.
"""

from __future__ import annotations

from typing import Any, Protocol

from textual import work
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from meshd.client import ControlError, DaemonUnreachable, Status


class StatusSource(Protocol):
    """What the dashboard needs of ``meshd.client.ControlClient`` (tests pass a fake
    serving recorded snapshots); fails with ``ControlError`` only."""

    def status(self) -> Status: ...


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class Dashboard(App[None]):
    TITLE = "meshd"
    CSS = """
    #node { height: 3; padding: 0 1; }
    #error { color: $error; height: auto; padding: 0 1; }
    DataTable { height: auto; max-height: 50%; margin-bottom: 1; }
    """
    BINDINGS = [("q", "quit", "Quit"), ("r", "refresh", "Refresh now")]

    def __init__(self, client: StatusSource, interval: float = 1.0) -> None:
        super().__init__()
        self.client, self.interval = client, interval

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting to meshd ...", id="node")
        yield Static("", id="error")
        yield DataTable(id="neighbours", cursor_type="row")
        yield DataTable(id="routes", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#neighbours", DataTable).add_columns(
            "neighbour", "interface", "state", "rtt ms", "loss", "silent s", "rx", "tx"
        )
        self.query_one("#routes", DataTable).add_columns("route", "via", "interface", "metric")
        self.action_refresh()
        self.set_interval(self.interval, self.action_refresh)

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        try:
            status = self.client.status()
        except ControlError as exc:  # the daemon may be restarting: show why, keep trying
            self.call_from_thread(self.show_error, exc)
            return
        self.call_from_thread(self.show, status)

    def show_error(self, exc: ControlError) -> None:
        # Not answering (stopped, restarting) and answering with an error are different
        # things to an operator; str(exc) is "code: message".
        what = "unreachable" if isinstance(exc, DaemonUnreachable) else "error"
        self.query_one("#error", Static).update(f"meshd {what}: {exc}")

    def show(self, s: Status) -> None:
        self.query_one("#error", Static).update("")
        self.query_one("#node", Static).update(
            f"[b]{s['name']}[/b]  {s['node_id']}\n"
            f"{s['mesh_ipv4']}  {s['mesh_ipv6']}  backend {s['backend']}"
        )
        names: dict[str | None, str] = {n["node_id"]: n["name"] for n in s["neighbours"]}
        table = self.query_one("#neighbours", DataTable)
        table.clear()
        for n in s["neighbours"]:
            state = {"up": "[green]up[/]", "down": "[red]down[/]"}.get(n["state"], n["state"])
            table.add_row(
                n["name"],
                n["interface"],
                state,
                _fmt(n["rtt_ms"]),
                _fmt(n["loss"]),
                _fmt(n.get("silent_s")),
                _bytes(n.get("rx_bytes", 0)),
                _bytes(n.get("tx_bytes", 0)),
            )
        routes = self.query_one("#routes", DataTable)
        routes.clear()
        for r in s["routes"]:
            routes.add_row(
                r["prefix"], names.get(r["via"], _fmt(r["via"])), r["interface"], str(r["metric"])
            )
