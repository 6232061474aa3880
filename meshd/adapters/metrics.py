"""Prometheus metrics (``[metrics] listen``): the status document (docs/control-api.md) as
the text exposition format, written by ``prometheus-client``.

A scrape asks the daemon for the status it already keeps (the same answer ``meshd status``
gets, taken on the event loop: nothing here reads the kernel or starts a process) and
turns it into metric families (``families``, pure). WireGuard's per-peer counters carry
the names the common WireGuard exporters give them; everything else is ``meshd_*``.
Labels are node ids and names, interface names and reason codes: never a prefix, an
address or anything else without bounds. The HTTP server is prometheus-client's own, on a
thread of its own; it serves whoever reaches it, so who may is the firewall's business
(meshd.adapters.net.firewall, ``metrics_allow``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server

from meshd import __version__

PEER = ("device", "public_key", "node_id", "name")  # as the WireGuard exporters label peers
NEIGHBOUR = ("node_id", "name")


def families(doc: Mapping[str, Any]) -> Iterator[Metric]:
    """The status document ``doc`` as metric families."""
    yield InfoMetricFamily(
        "meshd_build",
        "the running meshd",
        value={"version": __version__, "backend": doc["backend"]},
    )
    node = GaugeMetricFamily("meshd_node", "this node (always 1)", labels=NEIGHBOUR)
    node.add_metric([doc["node_id"], doc["name"]], 1)
    yield node
    names = {n["node_id"]: n.get("name") or "" for n in doc["neighbours"]}
    yield from _links(doc["neighbours"])
    yield from _neighbours(doc["neighbours"])
    yield from _routes(doc, names)
    yield from _usage(doc.get("usage") or [], names)
    yield from _gateway(doc.get("gateway") or {})
    yield from _membership(doc)
    yield from _discovery(doc.get("discovery") or {})
    api = CounterMetricFamily(
        "meshd_api_refusals", "control API callers refused, by reason", labels=["reason"]
    )
    for reason, n in sorted((doc.get("api") or {}).get("refused", {}).items()):
        api.add_metric([reason], n)
    yield api


def _links(neighbours: list[Mapping[str, Any]]) -> Iterator[Metric]:
    rx = CounterMetricFamily(
        "wireguard_peer_receive_bytes", "bytes received from the peer (WireGuard)", labels=PEER
    )
    tx = CounterMetricFamily(
        "wireguard_peer_transmit_bytes", "bytes sent to the peer (WireGuard)", labels=PEER
    )
    handshake = GaugeMetricFamily(
        "wireguard_peer_last_handshake_seconds",
        "Unix time of the peer's last handshake (WireGuard)",
        labels=PEER,
    )
    for n in neighbours:
        if "rx_bytes" not in n:  # no link yet
            continue
        labels = [n["interface"], n.get("public_key") or "", n["node_id"], n.get("name") or ""]
        rx.add_metric(labels, n["rx_bytes"])
        tx.add_metric(labels, n["tx_bytes"])
        if n.get("last_handshake"):
            handshake.add_metric(labels, n["last_handshake"])
    yield from (rx, tx, handshake)


def _neighbours(neighbours: list[Mapping[str, Any]]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "meshd_neighbour_state",
        "1 for the neighbour's state (up, down, connecting)",
        labels=[*NEIGHBOUR, "state"],
    )
    session = GaugeMetricFamily(
        "meshd_neighbour_session_up", "its QUIC session is up (1) or not (0)", labels=NEIGHBOUR
    )
    rtt = GaugeMetricFamily(
        "meshd_neighbour_rtt_seconds",
        "smoothed round trip of probes through the tunnel",
        labels=NEIGHBOUR,
    )
    loss = GaugeMetricFamily(
        "meshd_neighbour_loss_ratio",
        "share of its probes that did not reach us",
        labels=NEIGHBOUR,
    )
    cost = GaugeMetricFamily(
        "meshd_neighbour_cost", "the link's Babel cost (96 at best)", labels=NEIGHBOUR
    )
    refusals = CounterMetricFamily(
        "meshd_neighbour_refusals",
        "what it sent that was refused, by reason",
        labels=[*NEIGHBOUR, "reason"],
    )
    for n in neighbours:
        labels = [n["node_id"], n.get("name") or ""]
        state.add_metric([*labels, n["state"]], 1)
        session.add_metric(labels, 1 if (n.get("control") or {}).get("session") == "up" else 0)
        if n.get("rtt_ms") is not None:
            rtt.add_metric(labels, n["rtt_ms"] / 1000)
        if n.get("loss") is not None:
            loss.add_metric(labels, n["loss"])
        if n.get("cost") is not None:
            cost.add_metric(labels, n["cost"])
        for reason, count in sorted((n.get("refusals") or {}).items()):
            refusals.add_metric([*labels, reason], count)
    yield from (state, session, rtt, loss, cost, refusals)


def _routes(doc: Mapping[str, Any], names: Mapping[str, str]) -> Iterator[Metric]:
    routes = GaugeMetricFamily(
        "meshd_routes", "routes installed, by next hop", labels=["via", "via_name"]
    )
    by_via = Counter(r.get("via") or "" for r in doc["routes"])
    for via, n in sorted(by_via.items()):
        routes.add_metric([via, names.get(via, "")], n)
    yield routes
    holes = GaugeMetricFamily(
        "meshd_black_holes", "destinations a next hop is kept out of (no progress)"
    )
    holes.add_metric([], len(doc.get("black_holes") or []))
    yield holes


def _usage(usage: list[Mapping[str, Any]], names: Mapping[str, str]) -> Iterator[Metric]:
    def counter(name: str, help: str, extra: tuple[str, ...] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(name, help, labels=[*NEIGHBOUR, *extra])

    kernel = {
        key: counter(f"meshd_{key}", help)
        for key, help in (
            ("relayed_for_bytes", "bytes in from the neighbour this node forwarded (nftables)"),
            ("relayed_to_bytes", "bytes this node forwarded out to the neighbour (nftables)"),
            ("sent_bytes", "bytes out to the neighbour, not addressed to it (nftables)"),
            ("received_bytes", "bytes in from the neighbour, not sent by it (nftables)"),
        )
    }
    receipted = counter(
        "meshd_receipted_bytes",
        "bytes the neighbour's last signed receipt covers of what we relayed for it",
        ("direction",),
    )
    signed = counter(
        "meshd_signed_bytes",
        "bytes our last signed receipt covers of what the neighbour relayed for us",
        ("direction",),
    )
    unreceipted = GaugeMetricFamily(
        "meshd_unreceipted_bytes",
        "bytes relayed for the neighbour that no signed receipt covers",
        labels=NEIGHBOUR,
    )
    disputes = counter("meshd_disputes", "claims signed below what was claimed", ("role",))
    throttled = GaugeMetricFamily(
        "meshd_throttled",
        "1 while throttled: by_us (it does not sign) or by_them (they say we do not)",
        labels=[*NEIGHBOUR, "by"],
    )
    for u in usage:
        labels = [u["node_id"], names.get(u["node_id"], "")]
        for key, family in kernel.items():
            if key in u:
                family.add_metric(labels, u[key])
        if (p := u.get("provider")) is not None:
            receipted.add_metric([*labels, "for"], p["receipted_for_bytes"])
            receipted.add_metric([*labels, "to"], p["receipted_to_bytes"])
            unreceipted.add_metric(labels, p["unreceipted_bytes"])
            disputes.add_metric([*labels, "provider"], p.get("disputes", 0))
            throttled.add_metric([*labels, "us"], 1 if p["state"] == "throttled" else 0)
        if (c := u.get("consumer")) is not None:
            signed.add_metric([*labels, "for"], c["signed_for_bytes"])
            signed.add_metric([*labels, "to"], c["signed_to_bytes"])
            disputes.add_metric([*labels, "consumer"], c.get("disputes", 0))
            throttled.add_metric([*labels, "them"], 1 if c.get("throttled") else 0)
    yield from (*kernel.values(), receipted, signed, unreceipted, disputes, throttled)


def _gateway(gateway: Mapping[str, Any]) -> Iterator[Metric]:
    selected = GaugeMetricFamily(
        "meshd_gateway_selected", "1 for the gateway this node leaves by", labels=["node_id"]
    )
    candidates = GaugeMetricFamily(
        "meshd_gateway_usable", "each gateway heard of: usable (1) or not (0)", labels=["node_id"]
    )
    if gateway.get("selected"):
        selected.add_metric([gateway["selected"]], 1)
    for c in gateway.get("candidates") or []:
        candidates.add_metric([c["node_id"]], 1 if c["usable"] else 0)
    yield from (selected, candidates)
    uplink = gateway.get("uplink")
    if uplink is not None:
        up = GaugeMetricFamily(
            "meshd_uplink_up",
            "the own uplink's health: up (1) or not (0)",
            labels=["interface", "state"],
        )
        up.add_metric([uplink["interface"], uplink["state"]], 1 if uplink["state"] == "up" else 0)
        yield up
        for key, way, did in (
            ("rx_bytes", "receive", "received"),
            ("tx_bytes", "transmit", "sent"),
        ):
            if uplink.get(key) is not None:
                counted = CounterMetricFamily(
                    f"meshd_uplink_{way}_bytes",
                    f"bytes the own uplink's interface {did} (the household's traffic too)",
                    labels=["interface"],
                )
                counted.add_metric([uplink["interface"]], uplink[key])
                yield counted
    sharing = gateway.get("sharing")
    if sharing is not None:
        users = GaugeMetricFamily("meshd_exit_users", "neighbours leaving by our uplink")
        users.add_metric([], len(sharing.get("users") or []))
        blocked = GaugeMetricFamily("meshd_exit_blocked", "nodes blocked from our exit")
        blocked.add_metric([], len(sharing.get("blocked") or []))
        used = GaugeMetricFamily(
            "meshd_exit_month_bytes", "an exit user's bytes this month", labels=["node_id"]
        )
        for node_id, n in sorted((sharing.get("exit_bytes") or {}).items()):
            used.add_metric([node_id], n)
        quota = GaugeMetricFamily("meshd_exit_quota_bytes", "each exit user's monthly quota")
        if sharing.get("monthly_quota_mb"):
            quota.add_metric([], sharing["monthly_quota_mb"] * 1024 * 1024)
        yield from (users, blocked, used, quota)


def _membership(doc: Mapping[str, Any]) -> Iterator[Metric]:
    if (m := doc.get("membership")) is not None:
        expires = GaugeMetricFamily(
            "meshd_certificate_expiry_seconds", "Unix time this node's certificate expires"
        )
        expires.add_metric([], m["expires_at"])
        yield expires
    if (d := doc.get("directory")) is not None:
        members = GaugeMetricFamily("meshd_directory_members", "members' certificates held")
        members.add_metric([], d["members"])
        yield members
    if (mesh := doc.get("mesh")) is not None:
        serial = GaugeMetricFamily("meshd_mesh_serial", "the mesh definition in force")
        serial.add_metric([], mesh["serial"])
        yield serial
        admins = GaugeMetricFamily("meshd_mesh_admins", "admins the definition names")
        admins.add_metric([], len(mesh["admins"]))
        yield admins
        threshold = GaugeMetricFamily(
            "meshd_mesh_threshold", "admins that must sign the next definition"
        )
        threshold.add_metric([], mesh.get("threshold", 1))
        yield threshold
        emergency = GaugeMetricFamily(
            "meshd_mesh_emergency_revocations", "revocations in force on the emergency threshold"
        )
        emergency.add_metric([], len(mesh.get("emergency_revoked", ())))
        yield emergency
        proposals = GaugeMetricFamily(
            "meshd_mesh_proposals", "admins' proposals held short of their quorum"
        )
        proposals.add_metric([], sum(not p["withdrawn"] for p in doc.get("proposals", ())))
        yield proposals


def _discovery(discovery: Mapping[str, Any]) -> Iterator[Metric]:
    refusals = CounterMetricFamily(
        "meshd_discovery_refusals",
        "beacons and candidates refused, by reason",
        labels=["reason"],
    )
    for reason, n in sorted((discovery.get("refusals") or {}).items()):
        refusals.add_metric([reason], n)
    yield refusals
    sessions = discovery.get("sessions")
    if sessions is None:
        return
    held = GaugeMetricFamily(
        "meshd_sessions", "QUIC sessions on the neighbour port, by stage", labels=["stage"]
    )
    for stage in ("sessions", "half_open", "unverified"):
        held.add_metric(["held" if stage == "sessions" else stage], sessions[stage])
    evicted = CounterMetricFamily(
        "meshd_sessions_evicted", "sessions closed to make room, by reason", labels=["reason"]
    )
    for reason, n in sorted(sessions["evicted"].items()):
        evicted.add_metric([reason], n)
    control = CounterMetricFamily(
        "meshd_control_bytes",
        "UDP payload bytes of the neighbour port's QUIC sessions",
        labels=["direction"],
    )
    for direction in ("sent", "received"):
        control.add_metric([direction], sessions.get("bytes", {}).get(direction, 0))
    yield from (held, evicted, control)


class _StatusCollector:
    """Each scrape: the daemon's status (``snapshot``, blocking until the event loop gave
    it), as metric families."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        return families(self.snapshot())


class MetricsServer:
    """prometheus-client's HTTP server on ``host:port`` (its own thread)."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StatusCollector(snapshot))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.server, self.thread = start_http_server(port, host, registry=self.registry)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
