"""Gateways: our uplink, how our traffic leaves, what we share, and every gateway whose
advert reached us, with its terms and why it is chosen or not."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from meshd.api.schema import GatewayCandidate, Sharing
from tui import explain, fmt
from tui.explain import styled
from tui.model import Live
from tui.tables import LiveTable


class Gateways(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("waiting for the first status from meshd", id="gateway-summary")
        yield LiveTable(
            [
                ("name", "GATEWAY", 11),
                ("metric", "METRIC", 6),
                ("terms", "TERMS", 17),
                ("state", "STATE", 8),
            ],
            id="gateways-table",
        )
        yield Static("", id="gateways-note")

    def show(self, live: Live) -> None:
        s = live.status
        if s is None:
            return
        gateway = s.get("gateway")
        summary = self.query_one("#gateway-summary", Static)
        if gateway is None:
            summary.update("this daemon does not report gateways")
            return
        up = explain.uplink(gateway)
        summary.update(
            Text("\n").join(
                [
                    styled(up) if up else Text("no uplink of our own configured"),
                    styled(explain.way_out(gateway, live.names())),
                    Text(_sharing(gateway.get("sharing"), live)),
                ]
            )
        )
        selected = gateway["selected"]
        whys = {c["node_id"]: explain.candidate(c, selected) for c in gateway["candidates"]}
        self.query_one(LiveTable).show(
            {
                c["node_id"]: [
                    live.name(c["node_id"]),
                    "-" if c["metric"] is None else str(c["metric"]),
                    _terms(c),
                    styled(whys[c["node_id"]], _state(c, selected)),
                ]
                for c in gateway["candidates"]
            }
        )
        # The reasons are sentences: below the table, where they may wrap.
        self.query_one("#gateways-note", Static).update(
            Text("\n").join(
                Text(f"{live.name(c['node_id'])}: ").append(styled(whys[c["node_id"]]))
                for c in gateway["candidates"]
            )
            if gateway["candidates"]
            else Text("no gateway's advert has reached this node")
        )


def _state(c: GatewayCandidate, selected: str | None) -> str:
    if c["node_id"] == selected:
        return "chosen"
    return "usable" if c["usable"] else "unusable"


def _terms(c: GatewayCandidate) -> str:
    cap = c.get("rate_cap_kbit")
    parts = [f"{cap / 1000:g} Mbit/s" if cap else "no cap"]
    if c.get("available") is False:
        parts.append("closed")
    elif c.get("accepts_new") is False:
        parts.append("full")
    else:
        parts.append("open")
    return ", ".join(parts)


def _sharing(sharing: Sharing | None, live: Live) -> str:
    if sharing is None:
        return "not sharing our uplink"
    cap = f"{sharing['rate_cap_kbit'] / 1000:g} Mbit/s" if sharing["rate_cap_kbit"] else "no cap"
    quota = f"{sharing['monthly_quota_mb']} MB/month" if sharing["monthly_quota_mb"] else "no quota"
    users = ", ".join(sharing["users"]) or "none"
    blocked = ", ".join(live.name(b) for b in sharing["blocked"]) or "none"
    used = " · ".join(
        f"{live.name(node)} {fmt.size(n)}" for node, n in sorted(sharing["exit_bytes"].items())
    )
    return (
        f"sharing  {'offered' if sharing['announced'] else 'withdrawn'} · {cap} · {quota} · "
        f"{'open to new users' if sharing['accepts_new'] else 'no new users'}\n"
        f"         users: {users} · blocked: {blocked}"
        + (f"\n         {sharing['month']}: {used}" if used else "")
    )
