"""`meshd tui`: the operator's dashboard of one node, live.

One subscription to the daemon (``ControlClient.subscribe``) brings a status document
every interval and each event as it happens; a worker reads it in a thread (the client
blocks) and hands each item to the app, which only renders. The views are tabs; the
visible one is redrawn on each status, in place (tui.tables), and a hidden one when it is
shown. A lost daemon brings up a banner saying why and how old the figures still on screen
are, and the worker reconnects every ``retry_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from meshd.api.client import CallRefused, ControlError, DaemonUnreachable
from meshd.api.schema import EventsDropped, LoggedEvent, StatusUpdate, StreamItem
from tui import fmt
from tui.events import Events
from tui.feed import Feed, Polling, Source
from tui.gateways import Gateways
from tui.model import Live
from tui.neighbours import Neighbours
from tui.overview import Overview, attention
from tui.routes import Routes
from tui.traffic import TrafficView
from tui.usage import UsageView

# The views a status document redraws; events come one by one instead.
View = Overview | Neighbours | Routes | Gateways | UsageView | TrafficView
VIEWS = (
    ("overview", "1 Overview"),
    ("neighbours", "2 Neighbours"),
    ("routes", "3 Routes"),
    ("gateways", "4 Gateways"),
    ("usage", "5 Usage"),
    ("events", "6 Events"),
    ("traffic", "7 Traffic"),
)


class Dashboard(App[None]):
    TITLE = "meshd"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #top { height: 1; background: $primary; color: $text; padding: 0 1; }
    #banner { height: auto; background: $error; color: $text; padding: 0 1; display: none; }
    #banner.lost { display: block; }
    TabbedContent { height: 1fr; }
    TabPane { padding: 0 0; }
    #events-level { color: $text-muted; }
    #filter { height: 1; border: none; padding: 0 1; }
    """
    BINDINGS = [
        *(
            Binding(str(i), f"view('{key}')", label, show=False)
            for i, (key, label) in enumerate(VIEWS, 1)
        ),
        Binding("q", "quit", "Quit"),
        Binding("/", "filter", "Filter events"),
        Binding("l", "level", "Event level"),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    def __init__(
        self,
        source: Source,
        interval: float = 1.0,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.source, self.interval, self.retry_s, self.clock = source, interval, retry_s, clock
        self.live = Live()
        self.lost_since: float | None = None
        self.last_event_id = 0
        self._feed: Feed | None = None
        self._to_filter = False
        self.views: dict[str, View] = {
            "overview": Overview(id="overview-view"),
            "neighbours": Neighbours(id="neighbours-view"),
            "routes": Routes(id="routes-view"),
            "gateways": Gateways(id="gateways-view"),
            "usage": UsageView(id="usage-view"),
            "traffic": TrafficView(id="traffic-view"),
        }

    def compose(self) -> ComposeResult:
        yield Static("meshd · connecting", id="top")
        yield Static("", id="banner")
        with TabbedContent(initial="overview"):
            for key, label in VIEWS:
                with TabPane(label, id=key):
                    yield self.views[key] if key in self.views else Events(id="events-view")
        yield Footer()

    def on_mount(self) -> None:
        self.feed()

    def on_unmount(self) -> None:
        if self._feed is not None:
            self._feed.close()  # a read blocked in its thread returns at once

    # ---- the subscription ------------------------------------------------------------

    @work(exclusive=True, group="feed")
    async def feed(self) -> None:
        # Every await may return after the app began to shut down (its widgets go before
        # on_unmount): then stop before touching one.
        while True:
            feed = await self._connect()
            if self.stopping:
                if not isinstance(feed, ControlError):
                    feed.close()
                return
            if isinstance(feed, ControlError):
                self.lost(feed)
            elif isinstance(feed, Polling):
                self.query_one(Events).add("this meshd streams no events: reading its status")
                await self.follow(feed)
            elif feed.last_id < self.last_event_id:
                # A new daemon counts its events from 1 again: ask it for all it holds.
                feed.close()
                self.last_event_id = 0
                self.query_one(Events).add("meshd restarted")
                continue
            else:
                await self.follow(feed)
            if self.stopping:
                return
            await asyncio.sleep(self.retry_s)

    async def _connect(self) -> Feed | ControlError:
        """A subscription for the events after the last one shown; polling for a daemon
        older than ``subscribe``; or why neither."""
        try:
            return await asyncio.to_thread(self.source.subscribe, self.interval, self.last_event_id)
        except CallRefused as exc:
            return Polling(self.source, self.interval) if exc.code == "unknown_call" else exc
        except ControlError as exc:
            return exc

    async def follow(self, feed: Feed) -> None:
        """Apply what ``feed`` brings until it fails or the app closes."""
        self._feed = feed
        try:
            while (item := await asyncio.to_thread(feed.receive)) is not None:
                if self.stopping:
                    return
                self.apply(item)
        except ControlError as exc:
            if not self.stopping:
                self.lost(exc)
        finally:
            feed.close()
            self._feed = None

    @property
    def stopping(self) -> bool:
        return not self.is_running

    def apply(self, item: StreamItem) -> None:
        if isinstance(item, StatusUpdate):
            self.live.update(item.status)
            self.lost_since = None
            self.render_views()
        elif isinstance(item, LoggedEvent):
            self.last_event_id = item.id
            self.query_one(Events).add(item)
        elif isinstance(item, EventsDropped):
            self.query_one(Events).add(f"{item.count} events not shown (the dashboard fell behind)")

    def lost(self, exc: ControlError) -> None:
        if self.lost_since is None:
            self.lost_since = self.clock()
        # Not answering (stopped, restarting) and answering wrongly are different things
        # to an operator; exc.message says which and where.
        what = "unreachable" if isinstance(exc, DaemonUnreachable) else "answered wrongly"
        shown = (
            f"; the figures below are {fmt.duration(self.clock() - self.lost_since)} old"
            if self.live.status
            else ""
        )
        self.query_one("#banner", Static).update(
            Text(
                f"meshd {what}: {exc.message} ({exc.code}). Reconnecting every "
                f"{fmt.duration(self.retry_s)}{shown}."
            )
        )
        self.query_one("#banner").add_class("lost")
        self.render_top()

    # ---- rendering -------------------------------------------------------------------

    def render_views(self) -> None:
        self.query_one("#banner").remove_class("lost")
        self.render_top()
        view = self.views.get(self.query_one(TabbedContent).active)
        if view is not None:
            view.show(self.live)

    def render_top(self) -> None:
        s = self.live.status
        if s is None:
            text = Text("meshd · connecting")
        else:
            up = sum(n["state"] == "up" for n in s["neighbours"])
            problems = len(attention(self.live))
            text = Text(
                f"meshd · {s['name']} · {up}/{len(s['neighbours'])} neighbours up · "
                f"{len(s['routes'])} routes · "
            )
            if self.lost_since is not None:
                text.append("connection lost", style="bold red")
            elif problems:
                text.append(f"{problems} need a look (1)", style="bold yellow")
            else:
                text.append("all well", style="bold green")
        self.query_one("#top", Static).update(text)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # Keyboard first: the arrows move in the view just shown.
        focus = event.pane.query("#filter" if self._to_filter else "LiveTable, RichLog")
        self._to_filter = False
        if focus:
            focus.first().focus()
        if self.live.status is not None:
            self.render_views()

    # ---- keys ------------------------------------------------------------------------

    def action_view(self, key: str) -> None:
        self.query_one(TabbedContent).active = key

    def action_filter(self) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active == "events":
            self.query_one("#filter", Input).focus()
        else:
            self._to_filter = True  # once the view is shown (on_tabbed_content_tab_activated)
            tabs.active = "events"

    def action_level(self) -> None:
        self.query_one(Events).next_level()

    def action_leave_filter(self) -> None:
        if self.focused is self.query_one("#filter", Input):
            self.query_one(Events).query_one("RichLog").focus()
