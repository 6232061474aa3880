"""Usage and receipts, per neighbour and both ways. As its provider (we relay for it): my
count, its last signed figure, how far my last claim is beyond it against the tolerance,
how much of its credit it uses, and whether we throttle it and why. As its consumer (it
relays for us): our own count, what we last signed, whether it throttles us and why."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from meshd.api.schema import ReceiptTerms, Usage
from tui import explain, fmt
from tui.explain import Level, styled
from tui.model import Live
from tui.tables import Cell, LiveTable

NO_RECEIPTS = "no receipts yet"
DAY_COLUMNS = 14  # the daemon's usage_days (meshd.daemon.metering.HISTORY_DAYS)


class UsageView(VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static("waiting for the first status from meshd", id="receipt-terms")
        yield Static("[b]we relay for[/b]")
        yield LiveTable(
            [
                ("name", "NEIGHBOUR", 9),
                ("mine", "MY COUNT", 9),
                ("signed", "SIGNED", 9),
                ("diff", "BEYOND", 9),
                ("credit", "CREDIT USED", 15),
                ("state", "STATE", 15),
            ],
            id="provider-table",
        )
        yield Static("[b]they relay for us[/b]")
        yield LiveTable(
            [
                ("name", "NEIGHBOUR", 9),
                ("mine", "MY COUNT", 9),
                ("signed", "WE SIGNED", 9),
                ("state", "STATE", 15),
            ],
            id="consumer-table",
        )
        yield Static("", id="usage-why")
        yield Static("", id="days-title")
        yield LiveTable(
            [
                ("name", "NEIGHBOUR", 9),
                ("gave", "WE RELAYED FOR IT", DAY_COLUMNS + 10),
                ("took", "IT RELAYED FOR US", DAY_COLUMNS + 10),
            ],
            id="days-table",
        )

    def show(self, live: Live) -> None:
        s = live.status
        if s is None:
            return
        terms = s.get("receipts")
        self.query_one("#receipt-terms", Static).update(
            f"tolerance {terms['tolerance_percent']:g}% + {fmt.size(terms['tolerance_bytes'])}"
            f" · credit {fmt.size(terms['credit_bytes'])} · counted by IP length, every 5s"
            if terms
            else "receipts: this daemon reports no tolerance or credit terms yet"
        )
        usage = s.get("usage", [])
        names = {u["node_id"]: live.name(u["node_id"]) for u in usage}
        self.query_one("#provider-table", LiveTable).show(
            {u["node_id"]: _provider_row(u, names[u["node_id"]], terms) for u in usage}
        )
        self.query_one("#consumer-table", LiveTable).show(
            {u["node_id"]: _consumer_row(u, names[u["node_id"]]) for u in usage}
        )
        whys = [
            w
            for u in usage
            for w in explain.usage(u, names[u["node_id"]], terms)
            if w.level is not Level.OK
        ]
        self.query_one("#usage-why", Static).update(
            Text("\n").join(styled(w, f"• {w.text}") for w in whys)
            if whys
            else ("no neighbour has been metered yet" if not usage else "")
        )
        self._days(live)

    def _days(self, live: Live) -> None:
        """Receipts signed for, day by day: what this household gave and took."""
        days = live.status.get("usage_days") if live.status else None
        title = self.query_one("#days-title", Static)
        if not days:
            title.update("[b]by day[/b]: this daemon has read no receipts history yet")
            self.query_one("#days-table", LiveTable).show({})
            return
        title.update(
            f"[b]by day[/b], signed in receipts: {days['days'][0]} .. {days['days'][-1]} (UTC)"
        )
        rows: dict[str, list[Cell]] = {}
        for node_id in sorted({*days["gave"], *days["took"]}, key=live.name):
            rows[node_id] = [
                live.name(node_id),
                *(_by_day(days[way].get(node_id)) for way in ("gave", "took")),
            ]
        self.query_one("#days-table", LiveTable).show(rows)


def _by_day(values: list[int] | None) -> str:
    if not values:
        return "-"
    return f"{fmt.sparkline(values, DAY_COLUMNS)} {fmt.size(sum(values)):>9}"


def _provider_row(u: Usage, name: str, terms: ReceiptTerms | None) -> list[str | Text]:
    mine = fmt.size(u["relayed_for_bytes"] + u["relayed_to_bytes"])
    p = u.get("provider")
    if p is None:
        return [name, mine, "-", "-", "-", NO_RECEIPTS]
    why = explain.provider(p, name, terms)
    claimed = p["claimed_for_bytes"] + p["claimed_to_bytes"]
    signed = p["receipted_for_bytes"] + p["receipted_to_bytes"]
    used = p["unreceipted_bytes"] / p["credit_bytes"] if p["credit_bytes"] else None
    credit = f"{fmt.percent(used)} of {fmt.size(p['credit_bytes'])}"
    state = p["state"] if not p["disputes"] else f"{p['state']}, {p['disputes']} disp."
    return [
        name,
        mine,
        fmt.size(signed),
        fmt.size(max(0, claimed - signed)),
        credit,
        styled(why, state),
    ]


def _consumer_row(u: Usage, name: str) -> list[str | Text]:
    mine = fmt.size(u.get("sent_bytes", 0) + u.get("received_bytes", 0))
    c = u.get("consumer")
    if c is None:
        return [name, mine, "-", NO_RECEIPTS]
    why = explain.consumer(c, name)
    state = "throttled" if c["throttled"] else "ok"
    if c["disputes"]:
        state += f", {c['disputes']} disp."
    return [name, mine, fmt.size(c["signed_for_bytes"] + c["signed_to_bytes"]), styled(why, state)]
