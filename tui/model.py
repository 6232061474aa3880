"""What the dashboard derives from successive status documents: each link's receive and
send rates, and the uplink's (for the sparklines and plots), and the routes withdrawn
since, with why. Pure: status documents in, figures out.

Time is the daemon's own ``uptime_s`` from each document, not this process's clock: rates
stay right when updates arrive late or in a burst, and recorded snapshots replay exactly.
An uptime that goes back means the daemon restarted: its counters began again, so what
was derived from the old ones is dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from meshd.api.schema import Neighbour, Route, Status
from tui import explain, fmt

HISTORY = 8  # rate samples in a neighbour's row of the neighbours view
PLOT_SAMPLES = 120  # rate samples kept per link and the uplink: the traffic view's plots
WITHDRAWN_KEEP_S = 120.0  # how long a withdrawn route stays listed


@dataclass
class LinkRates:
    rx: deque[float] = field(default_factory=lambda: deque(maxlen=PLOT_SAMPLES))
    tx: deque[float] = field(default_factory=lambda: deque(maxlen=PLOT_SAMPLES))
    sample: tuple[float, int, int] | None = None  # uptime_s, rx_bytes, tx_bytes

    def add(self, uptime: float, rx_bytes: int, tx_bytes: int) -> None:
        if self.sample is not None:
            then, rx0, tx0 = self.sample
            elapsed = uptime - then
            if elapsed <= 0:
                return  # the same document again: nothing new
            if rx_bytes >= rx0 and tx_bytes >= tx0:
                self.rx.append((rx_bytes - rx0) / elapsed)
                self.tx.append((tx_bytes - tx0) / elapsed)
            # else the interface was made again and its counters restarted: no rate
        self.sample = (uptime, rx_bytes, tx_bytes)

    def history(self, way: str) -> deque[float]:
        """The receive (``rx``) or send (``tx``) rates, oldest first."""
        return self.rx if way == "rx" else self.tx

    def latest(self, way: str) -> float | None:
        history = self.history(way)
        return history[-1] if history else None


@dataclass(frozen=True)
class Withdrawn:
    route: Route
    at: float  # the daemon's uptime_s when it was first missing
    why: str


class Live:
    """The latest status and what successive ones tell together."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.uptimes: deque[float] = deque(maxlen=PLOT_SAMPLES + 1)  # the plots' documents
        self.rates: dict[str, LinkRates] = {}
        self.uplink = LinkRates()  # the own uplink's interface, where there is one
        self.withdrawn: dict[str, Withdrawn] = {}
        self.updates = 0

    @property
    def uptime(self) -> float:
        return self.status.get("uptime_s", 0.0) if self.status else 0.0

    def update(self, status: Status) -> None:
        previous = self.status
        uptime = status.get("uptime_s", 0.0)
        if previous is not None and uptime < self.uptime:
            self.rates.clear()
            self.uplink = LinkRates()
            self.uptimes.clear()
            self.withdrawn.clear()
            previous = None
        self.status = status
        self.updates += 1
        if not self.uptimes or uptime > self.uptimes[-1]:
            self.uptimes.append(uptime)
        for n in status["neighbours"]:
            if "rx_bytes" in n and "tx_bytes" in n:
                self.rates.setdefault(n["node_id"], LinkRates()).add(
                    uptime, n["rx_bytes"], n["tx_bytes"]
                )
        gateway = status.get("gateway")
        uplink = gateway.get("uplink") if gateway else None
        if uplink is not None:
            rx, tx = uplink.get("rx_bytes"), uplink.get("tx_bytes")
            if rx is not None and tx is not None:
                self.uplink.add(uptime, rx, tx)
        current = {r["prefix"] for r in status["routes"]}
        if previous is not None:
            for r in previous["routes"]:
                if r["prefix"] not in current and r["prefix"] not in self.withdrawn:
                    self.withdrawn[r["prefix"]] = Withdrawn(r, uptime, self._why_gone(r))
        self.withdrawn = {
            prefix: w
            for prefix, w in self.withdrawn.items()
            if prefix not in current and uptime - w.at <= WITHDRAWN_KEEP_S
        }

    @property
    def spacing(self) -> float | None:
        """Seconds between the documents the plots come from, as their uptimes say."""
        if len(self.uptimes) < 2:
            return None
        return (self.uptimes[-1] - self.uptimes[0]) / (len(self.uptimes) - 1)

    def names(self) -> dict[str, str]:
        """Node id -> what to call it: a neighbour's name (the status names only those),
        else a gateway's mesh address."""
        if self.status is None:
            return {}
        gateway = self.status.get("gateway")
        candidates = gateway["candidates"] if gateway else []
        named = {c["node_id"]: c["mesh_ipv4"] for c in candidates if "mesh_ipv4" in c}
        named.update((n["node_id"], n["name"]) for n in self.status["neighbours"])
        return named

    def name(self, node_id: str | None) -> str:
        if node_id is None:
            return "-"
        return self.names().get(node_id) or fmt.short_id(node_id)

    def neighbour(self, node_id: str | None) -> Neighbour | None:
        if self.status is None or node_id is None:
            return None
        return next((n for n in self.status["neighbours"] if n["node_id"] == node_id), None)

    def _why_gone(self, route: Route) -> str:
        via = self.neighbour(route["via"])
        if via is None:
            return "its next hop is no longer a neighbour"
        if via["state"] != "up":
            return f"the link to {via['name']} is {via['state']}: {explain.neighbour(via).text}"
        return f"{via['name']} no longer offers a route to it"
