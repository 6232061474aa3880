"""Neighbours: state, RTT, loss and live receive/send rates with sparklines; below, the
highlighted one in full: how it was reached, its tunnel and session, why not up."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from meshd.api.schema import Neighbour
from tui import explain, fmt
from tui.explain import styled
from tui.model import HISTORY, LinkRates, Live
from tui.tables import Cell, LiveTable

REFUSALS_SHOWN = 4  # reasons in a neighbour's detail, the most counted first


class Neighbours(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.live: Live | None = None

    def compose(self) -> ComposeResult:
        yield LiveTable(
            [
                ("name", "NEIGHBOUR", 9),
                ("state", "STATE", 10),
                ("rtt", "RTT ms", 6),
                ("loss", "LOSS", 4),
                ("rx", "RECEIVE", fmt.RATE_WIDTH + HISTORY + 1),
                ("tx", "SEND", fmt.RATE_WIDTH + HISTORY + 1),
            ],
            id="neighbours-table",
        )
        yield Static("waiting for the first status from meshd", id="neighbour-detail")

    def show(self, live: Live) -> None:
        self.live = live
        if live.status is None:
            return
        rows: dict[str, list[Cell]] = {}
        for n in live.status["neighbours"]:
            rates = live.rates.get(n["node_id"])
            rows[n["node_id"]] = [
                n["name"],
                styled(explain.neighbour(n), n["state"]),
                fmt.ms(n["rtt_ms"]),
                fmt.percent(n["loss"]),
                _rate(rates, "rx"),
                _rate(rates, "tx"),
            ]
        self.query_one(LiveTable).show(rows)
        self._detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    def _detail(self) -> None:
        detail = self.query_one("#neighbour-detail", Static)
        if self.live is None or self.live.status is None:
            return
        if not self.live.status["neighbours"]:
            detail.update("no neighbours: no bootstrap peer configured and none found yet")
            return
        n = self.live.neighbour(self.query_one(LiveTable).highlighted_key())
        if n is not None:
            detail.update(describe(n))


def _rate(rates: LinkRates | None, which: str) -> str:
    if rates is None:
        return "no link yet"
    latest = fmt.rate(rates.latest(which))
    return f"{latest:>{fmt.RATE_WIDTH}} {fmt.sparkline(rates.history(which), HISTORY)}"


def describe(n: Neighbour) -> Text:
    """One neighbour in full, a fact per line."""
    why = explain.neighbour(n)
    control = n.get("control")
    text = Text()
    text.append(f"{n['name']}  ", style="bold").append(n["node_id"]).append("\n")
    text.append(styled(why)).append("\n")
    if control is not None:
        found = ", ".join(control["found_by"]) or "not found yet"
        session = control["session"] + (f" at {control['address']}" if control["address"] else "")
        reached = control.get("reached")
        how = f"{reached} (found by {found})" if reached else found
        text.append(f"reached  {how} · session {session}")
        text.append(f" · {'verified' if control['verified'] else 'not verified'}\n")
    if "liveness" in n:
        text.append(
            f"tunnel   {n['interface']} {n['liveness']} · endpoint {n.get('endpoint') or '-'}"
            f" · silent {fmt.duration(n.get('silent_s'))}\n"
            f"counters received {fmt.size(n.get('rx_bytes', 0))} · sent "
            f"{fmt.size(n.get('tx_bytes', 0))} · cost {n.get('cost') or '-'}"
        )
    else:
        text.append(f"tunnel   {n['interface']}: no WireGuard link yet")
    refusals = n.get("refusals") or {}
    if refusals:
        top = sorted(refusals.items(), key=lambda item: -item[1])
        shown = " · ".join(f"{count} {code}" for code, count in top[:REFUSALS_SHOWN])
        more = f" · {len(top) - REFUSALS_SHOWN} more" if len(top) > REFUSALS_SHOWN else ""
        text.append(f"\nrefused  {shown}{more}")
        if explain.hostile(n):
            text.append(f"\nhostile? meshd block {n['node_id']}", style="bold red")
    return text
