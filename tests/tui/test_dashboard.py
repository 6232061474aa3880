"""The dashboard driven by Pilot against a fake client replaying recorded status documents
and events (tests/tui/snapshots/, recorded from the demo testbed; trouble-* and receipts-*
are hand-edited copies): navigation, each view's content, losing and finding the daemon."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable

from textual.pilot import Pilot
from textual.widgets import Input, RichLog, Static, TabbedContent

from meshd.api.client import BadAnswer, CallRefused, DaemonUnreachable
from meshd.api.schema import Status, StatusUpdate
from tests.tui.fakes import FakeClient, dashboard, events, status, until, updates
from tui.app import Dashboard
from tui.events import Events
from tui.tables import LiveTable

Scenario = Callable[[Dashboard, Pilot[None]], Awaitable[None]]


def run(client: object, scenario: Scenario) -> None:
    async def main() -> None:
        app = dashboard(client)
        async with app.run_test(size=(80, 24)) as pilot:
            await scenario(app, pilot)

    asyncio.run(main())


def rows(app: Dashboard, table: str) -> list[list[str]]:
    t = app.query_one(f"#{table}", LiveTable)
    return [[str(cell) for cell in t.get_row_at(i)] for i in range(t.row_count)]


def text(app: Dashboard, widget: str) -> str:
    return str(app.query_one(f"#{widget}", Static).render())


def test_the_first_screen_names_every_neighbour_and_its_state() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.live.updates == 3)
        assert app.query_one(TabbedContent).active == "overview"
        assert [r[:3] for r in rows(app, "overview-neighbours")] == [
            ["a", "up", "5.8"],
            ["e", "up", "5.2"],
            ["d", "up", "7.1"],
            ["c", "up", "6.2"],
        ]
        assert "node     b  tlQyES5ZiAxDFXLkgvFDxUIRPzrNqogGIOZoCpxYxKA" in text(app, "identity")
        assert "leaving by a's uplink" in text(app, "way")
        assert text(app, "attention") == "nothing needs attention"
        assert "4/4 neighbours up · 8 routes · all well" in text(app, "top")

    run(FakeClient(updates("demo-b-1", "demo-b-2", "demo-b-3")), scenario)


def test_keys_move_between_the_views() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.live.updates == 1)
        tabs = app.query_one(TabbedContent)
        for key, view in zip(
            "234561",
            ("neighbours", "routes", "gateways", "usage", "events", "overview"),
            strict=True,
        ):
            await pilot.press(key)
            assert tabs.active == view
        await pilot.press("/")
        assert tabs.active == "events" and app.focused is app.query_one("#filter", Input)
        await pilot.press("2")  # typed into the filter, not a view change
        assert tabs.active == "events" and app.query_one("#filter", Input).value == "2"
        await pilot.press("escape", "3")
        assert tabs.active == "routes"

    run(FakeClient(updates("demo-a-1")), scenario)


def test_neighbours_show_rates_from_successive_documents() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await pilot.press("2")
        await until(pilot, lambda: app.live.updates == 3)
        b, d = rows(app, "neighbours-table")
        # b's receive counter: 501732 -> 671812 bytes over 1.5 s of the daemon's uptime.
        assert b[:4] == ["b", "up", "5.6", "0%"]
        assert b[4] == " 110.7K/s       ██"  # two rates so far: 102.9K/s, then this one
        assert d[4].startswith("    21B/s")
        detail = text(app, "neighbour-detail")
        assert "reached  bootstrap · session up at 100.64.0.2:6697 · verified" in detail
        await pilot.press("down")
        assert text(app, "neighbour-detail").startswith("d  cZkoFtgv9jhkk")

    run(FakeClient(updates("demo-a-1", "demo-a-2", "demo-a-3")), scenario)


def test_a_link_down_says_why() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.live.updates == 2)
        state, why = rows(app, "overview-neighbours")[0][1::2]
        assert state == "down"
        assert why == "its WireGuard tunnel carries nothing (silent 6.4s)"
        cell = app.query_one("#overview-neighbours", LiveTable).get_row_at(0)[1]
        assert getattr(cell, "style", None) == "red"
        assert "• b: its WireGuard tunnel carries nothing" in text(app, "attention")
        assert "1 need a look" in text(app, "top")

    run(FakeClient(updates("cut-a-1", "cut-a-2")), scenario)


def test_a_refused_neighbour_says_why() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.live.updates == 2)
        await pilot.press("2", "down", "down", "down")  # c, the last row
        assert "refused: its membership has been revoked" in text(app, "neighbour-detail")
        assert "session down · not verified" in text(app, "neighbour-detail")

    run(FakeClient(updates("trouble-b-1", "trouble-b-2")), scenario)


def test_withdrawn_routes_are_listed_with_why() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await pilot.press("3")
        await until(pilot, lambda: app.live.updates == 2)
        assert [r[0] for r in rows(app, "routes-table")] == [
            r["prefix"] for r in status("lose-e-a-1")["routes"]
        ]
        assert rows(app, "routes-table")[0][1:] == ["b", "96"]
        note = text(app, "routes-note")
        assert "10.77.0.5/32 (was via b): b no longer offers a route to it" in note
        assert "fd6d:6573:6864:1351:3735:d6d4:90f6:72e2/128 (was via b)" in note
        assert "route 10.77.0.5/32 withdrawn" in _overview_attention(app)

    run(FakeClient(updates("lose-e-a-before-1", "lose-e-a-1")), scenario)


def test_hops_show_once_the_daemon_reports_them() -> None:
    without, with_hops = status("demo-a-2"), copy.deepcopy(status("demo-a-3"))
    for route in with_hops["routes"]:
        route["hops"] = route["metric"] // 96  # type: ignore[typeddict-unknown-key]

    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await pilot.press("3")
        await until(pilot, lambda: app.live.updates == 2)
        assert rows(app, "routes-table")[1] == ["10.77.0.3/32", "b", "192", "2"]

    run(FakeClient([StatusUpdate(without), StatusUpdate(with_hops)]), scenario)


def _overview_attention(app: Dashboard) -> str:
    from tui.overview import attention

    return "\n".join(w.text for w in attention(app.live))


def test_gateways_show_terms_and_why_the_chosen_one() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await pilot.press("4")
        await until(pilot, lambda: app.live.updates == 1)
        assert rows(app, "gateways-table") == [
            ["10.77.0.4", "192", "no cap, open", "usable"],  # not a neighbour: no name
            ["10.77.0.1", "192", "no cap, open", "chosen"],
        ]
        note = text(app, "gateways-note")
        assert "10.77.0.4: same metric: the smaller node id is chosen" in note
        assert "10.77.0.1: selected: kept at metric 192" in note
        assert "leaving by 10.77.0.1's uplink" in text(app, "gateway-summary")

    run(FakeClient(updates("demo-e-1")), scenario)


def test_a_gateway_node_shows_its_uplink_and_sharing() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await pilot.press("4")
        await until(pilot, lambda: app.live.updates == 1)
        summary = text(app, "gateway-summary")
        assert "uplink upl up for 16m51s: checks succeed" in summary
        assert "leaving by our own uplink" in summary
        assert "users: b, e · blocked: none" in summary

    run(FakeClient(updates("demo-a-3")), scenario)


def test_usage_without_receipts_says_so() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await pilot.press("5")
        await until(pilot, lambda: app.live.updates == 1)
        assert rows(app, "provider-table") == [
            ["d", "0 B", "-", "-", "-", "no receipts yet"],
            ["b", "0 B", "-", "-", "-", "no receipts yet"],
        ]
        assert rows(app, "consumer-table")[1] == ["b", "878.4 KiB", "-", "no receipts yet"]
        assert "reports no tolerance or credit terms yet" in text(app, "receipt-terms")

    run(FakeClient(updates("demo-a-3")), scenario)


def test_usage_with_receipts_in_order() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await pilot.press("5")
        await until(pilot, lambda: app.live.updates == 2)
        assert rows(app, "provider-table")[0] == [
            "e",
            "325.5 KiB",
            "325.5 KiB",
            "0 B",
            "0% of 8.0 MiB",
            "ok",
        ]
        assert text(app, "receipt-terms").startswith("tolerance 2% + 256.0 KiB · credit 8.0 MiB")
        assert text(app, "usage-why") == ""

    run(FakeClient(updates("receipts-b-1", "receipts-b-2")), scenario)


def test_throttling_and_disputes_say_why() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await pilot.press("5")
        await until(pilot, lambda: app.live.updates == 2)
        e, c, d, a = rows(app, "provider-table")
        assert e == ["e", "105.5 MiB", "88.7 MiB", "16.8 MiB", "99% of 16.9 MiB", "throttled"]
        assert a[5] == "ok, 1 disp."
        assert rows(app, "consumer-table")[2][3] == "throttled"
        why = text(app, "usage-why").splitlines()
        assert why == [
            "• throttling e: claims left unsigned beyond the credit allowance "
            "(16.8 MiB unsigned, credit 16.9 MiB)",
            "• d throttles us: claims left unsigned beyond the credit allowance",
            "• 1 dispute: a signed less than we claimed",
            "• 2 disputes: we signed less than a claimed",
        ]

    run(FakeClient(updates("trouble-b-1", "trouble-b-2")), scenario)


def test_events_are_filtered_by_text_and_level() -> None:
    recorded = events("events-b")

    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.last_event_id == recorded[-1].id)
        await pilot.press("6")
        log = app.query_one("#events-log", RichLog)
        assert len(log.lines) > len(recorded)  # some wrap
        await pilot.press("/", *"session.up")
        assert text(app, "events-level").endswith(
            f"{sum(e.name == 'session.up' for e in recorded)} of {len(recorded)} shown"
        )
        await pilot.press("escape", "l", "l")  # info -> warning -> error
        assert text(app, "events-level").startswith("level error and above")
        await pilot.press("/", *(["backspace"] * 10), "escape", "l", "l", "l")  # -> warning
        assert text(app, "events-level").endswith(f"1 of {len(recorded)} shown")
        assert "exit.session_down" in "".join(str(s.text) for s in log.lines)

    run(FakeClient([*recorded, *updates("demo-b-1")]), scenario)


def test_a_lost_daemon_shows_a_banner_and_the_last_figures() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.query_one("#banner").has_class("lost"))
        assert text(app, "banner") == (
            "meshd unreachable: no meshd socket at /run/meshd/meshd.sock (no_daemon). "
            "Reconnecting every 0.1s; the figures below are 0.0s old."
        )
        assert "connection lost" in text(app, "top")
        assert [r[0] for r in rows(app, "overview-neighbours")] == ["a", "e", "d", "c"]

    gone = DaemonUnreachable("no_daemon", "no meshd socket at /run/meshd/meshd.sock")
    run(FakeClient([*updates("demo-b-1"), gone], gone), scenario)


def test_it_reconnects_and_resumes_after_the_last_event() -> None:
    recorded = events("events-b")
    client = FakeClient(
        [*recorded[:5], *updates("demo-b-1"), DaemonUnreachable("disconnected", "went away")],
        DaemonUnreachable("no_daemon", "no meshd socket at /x"),
        [*recorded[5:8], *updates("demo-b-2")],
    )

    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.live.updates == 2)
        assert not app.query_one("#banner").has_class("lost")
        assert "all well" in text(app, "top")
        assert app.last_event_id == 8

    run(client, scenario)
    assert client.asked == [0, 5, 5]


def test_a_restarted_daemon_is_asked_for_all_its_events() -> None:
    recorded = events("events-b")
    client = FakeClient(
        [*recorded[:30], DaemonUnreachable("disconnected", "went away")],
        ([*recorded[:2], *updates("demo-b-1")], 0),  # its ids begin again: 0 < 30
    )

    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.live.updates == 1)
        assert "meshd restarted" in app.query_one(Events).held

    run(client, scenario)
    assert client.asked == [0, 30, 0]


def test_a_garbled_answer_is_told_from_no_daemon() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.query_one("#banner").has_class("lost"))
        assert text(app, "banner").startswith(
            "meshd answered wrongly: daemon answer is not JSON (bad_reply)."
        )
        assert text(app, "identity") == "waiting for the first status from meshd"

    run(FakeClient(BadAnswer("daemon answer is not JSON")), scenario)


class OldDaemon:
    """A daemon from before ``subscribe``: status only."""

    def __init__(self, *documents: Status) -> None:
        self.documents = list(documents)

    def subscribe(self, interval: float = 1.0, after: int | None = None) -> None:
        raise CallRefused("unknown_call", "no call named 'subscribe'")

    def status(self) -> Status:
        return self.documents.pop(0) if len(self.documents) > 1 else self.documents[0]


def test_an_older_daemon_is_polled_for_its_status() -> None:
    async def scenario(app: Dashboard, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.live.updates >= 1)
        assert [r[0] for r in rows(app, "overview-neighbours")] == ["b", "d"]
        assert "this meshd streams no events: reading its status" in app.query_one(Events).held

    run(OldDaemon(status("demo-a-1")), scenario)
