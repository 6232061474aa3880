"""Traffic: the uplink's and each neighbour link's receive and send rates over the last
minutes, as plots one row high (each column the mean of a few status updates, every plot
on one scale, so an idle link reads as empty beside a busy uplink), beside the latest
rate."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui import fmt
from tui.model import PLOT_SAMPLES, LinkRates, Live
from tui.tables import Cell, LiveTable

COLUMNS = 20  # two plots and their rates fit 80 columns
PER_COLUMN = PLOT_SAMPLES // COLUMNS


class TrafficView(VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static("waiting for the first status from meshd", id="traffic-scale")
        yield LiveTable(
            [
                ("name", "WHO", 10),
                ("rx", "RECEIVE", fmt.RATE_WIDTH + COLUMNS + 1),
                ("tx", "SEND", fmt.RATE_WIDTH + COLUMNS + 1),
            ],
            id="traffic-table",
        )

    def show(self, live: Live) -> None:
        s = live.status
        if s is None:
            return
        plotted: dict[str, tuple[str, LinkRates | None]] = {}
        gateway = s.get("gateway")
        uplink = gateway.get("uplink") if gateway else None
        if uplink is not None:
            plotted["uplink"] = (f"↑{uplink['interface']}", live.uplink)
        for n in s["neighbours"]:
            plotted[n["node_id"]] = (n["name"], live.rates.get(n["node_id"]))
        columns = {
            (key, way): fmt.buckets(rates.history(way), COLUMNS, PER_COLUMN)
            for key, (_, rates) in plotted.items()
            if rates is not None
            for way in ("rx", "tx")
        }
        top = max((max(c, default=0.0) for c in columns.values()), default=0.0)
        spacing = live.spacing
        self.query_one("#traffic-scale", Static).update(
            "rates from the second status on"
            if spacing is None
            else f"up to the last {fmt.duration(PLOT_SAMPLES * spacing)}, a column per "
            f"{fmt.duration(PER_COLUMN * spacing)} · a full bar: {fmt.rate(top).strip()}"
        )
        rows: dict[str, list[Cell]] = {}
        for key, (name, rates) in plotted.items():
            if rates is None:
                rows[key] = [name, "no link yet", ""]
                continue
            rows[key] = [name, *(_plot(rates, way, columns[key, way], top) for way in ("rx", "tx"))]
        self.query_one(LiveTable).show(rows)


def _plot(rates: LinkRates, way: str, columns: list[float], top: float) -> str:
    latest = fmt.rate(rates.latest(way))
    return f"{latest:>{fmt.RATE_WIDTH}} {fmt.sparkline(columns, COLUMNS, top)}"
