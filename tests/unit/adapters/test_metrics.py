"""The status document as Prometheus metrics (meshd.adapters.metrics): every figure where
the exposition puts it, labels with bounds only, and prometheus-client's server answering
a real HTTP request. tests/netns/test_operations.py has a real Prometheus scrape nodes."""

from __future__ import annotations

import copy
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshd import __version__
from meshd.adapters.metrics import MetricsServer, families

SNAPSHOTS = Path(__file__).parents[2] / "tui" / "snapshots"


def status() -> dict[str, Any]:
    """A status document a daemon of the demo mesh answered, with today's additions."""
    doc = json.loads((SNAPSHOTS / "receipts-b-1.json").read_text())
    for n in doc["neighbours"]:
        n["public_key"] = "K" * 43 + "="
        n["refusals"] = {"rate_babel": 3}
    doc["discovery"] = {
        "refusals": {"off_subnet": 2},
        "sessions": {
            "sessions": 2,
            "half_open": 0,
            "unverified": 0,
            "evicted": {"half_open": 1},
            "bytes": {"sent": 1000, "received": 2000},
        },
    }
    doc["api"] = {"refused": {"not_root": 1}}
    doc["mesh"] = {
        "serial": 3,
        "admins": ["A" * 43, "B" * 43, "C" * 43],
        "threshold": 2,
        "emergency_revoked": ["x" * 43],
    }
    doc["proposals"] = [{"id": "a", "withdrawn": False}, {"id": "b", "withdrawn": True}]
    doc["gateway"]["uplink"] = {
        "interface": "upl",
        "state": "up",
        "reason": "",
        "since_s": 3.0,
        "rx_bytes": 7000,
        "tx_bytes": 5000,
    }
    return doc


class Collector:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def collect(self) -> Any:
        return families(self.doc)


def scrape(doc: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(Collector(doc))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], metric: str, /, **labels: str) -> float:
    found = [v for (n, ls), v in samples.items() if n == metric and set(labels.items()) <= set(ls)]
    assert len(found) == 1, (metric, labels, found)
    return found[0]


def test_every_neighbour_link_and_usage_figure_is_where_exporters_put_it() -> None:
    doc = status()
    samples = scrape(doc)
    n = doc["neighbours"][0]
    peer = {"device": n["interface"], "node_id": n["node_id"], "name": n["name"]}
    assert value(samples, "wireguard_peer_receive_bytes_total", **peer) == n["rx_bytes"]
    assert value(samples, "wireguard_peer_transmit_bytes_total", **peer) == n["tx_bytes"]
    assert value(samples, "wireguard_peer_last_handshake_seconds", **peer) == pytest.approx(
        n["last_handshake"]
    )
    who = {"node_id": n["node_id"]}
    assert value(samples, "meshd_neighbour_state", state="up", **who) == 1
    assert value(samples, "meshd_neighbour_rtt_seconds", **who) == n["rtt_ms"] / 1000
    assert value(samples, "meshd_neighbour_cost", **who) == n["cost"]
    assert value(samples, "meshd_neighbour_refusals_total", reason="rate_babel", **who) == 3
    for u in doc["usage"]:
        them = {"node_id": u["node_id"]}
        for key in ("relayed_for_bytes", "relayed_to_bytes", "sent_bytes", "received_bytes"):
            assert value(samples, f"meshd_{key}_total", **them) == u[key]
        if "provider" not in u:
            continue
        p, c = u["provider"], u["consumer"]
        got = value(samples, "meshd_receipted_bytes_total", direction="for", **them)
        assert got == p["receipted_for_bytes"]
        got = value(samples, "meshd_signed_bytes_total", direction="to", **them)
        assert got == c["signed_to_bytes"]
        assert value(samples, "meshd_throttled", by="us", **them) == 0
    assert value(samples, "meshd_control_bytes_total", direction="received") == 2000
    assert value(samples, "meshd_sessions_evicted_total", reason="half_open") == 1
    assert value(samples, "meshd_discovery_refusals_total", reason="off_subnet") == 2
    assert value(samples, "meshd_api_refusals_total", reason="not_root") == 1
    assert value(samples, "meshd_gateway_selected", node_id=doc["gateway"]["selected"]) == 1
    assert value(samples, "meshd_build_info", version=__version__) == 1
    assert value(samples, "meshd_mesh_serial") == 3 and value(samples, "meshd_mesh_admins") == 3
    assert value(samples, "meshd_mesh_threshold") == 2
    assert value(samples, "meshd_mesh_emergency_revocations") == 1
    assert value(samples, "meshd_mesh_proposals") == 1
    assert value(samples, "meshd_uplink_up", interface="upl", state="up") == 1
    assert value(samples, "meshd_uplink_receive_bytes_total", interface="upl") == 7000
    assert value(samples, "meshd_uplink_transmit_bytes_total", interface="upl") == 5000
    assert sum("provider" in u for u in doc["usage"]) >= 1
    routes = sum(v for (name, _), v in samples.items() if name == "meshd_routes")
    assert routes == len(doc["routes"])


def test_labels_carry_ids_names_and_codes_never_prefixes_or_sentences() -> None:
    doc = status()
    ids = {n["node_id"] for n in doc["neighbours"]} | {u["node_id"] for u in doc["usage"]}
    for (_, labels), _v in scrape(doc).items():
        for key, text in labels:
            if key == "node_id" or key == "via":
                assert text in ids | {doc["node_id"], ""}
            else:
                assert re.fullmatch(r"[A-Za-z0-9_.=+-]*", text), (key, text)


def test_a_node_without_links_receipts_or_gateway_yet_still_exposes_itself() -> None:
    doc = status()
    bare = copy.deepcopy(doc)
    bare.update(neighbours=[], routes=[], usage=[], gateway={"selected": None, "candidates": []})
    for key in ("discovery", "api", "receipts"):
        bare.pop(key)
    samples = scrape(bare)
    assert value(samples, "meshd_node", node_id=doc["node_id"]) == 1
    assert not [k for k in samples if k[0].startswith("wireguard_")]


def test_the_server_answers_http_with_the_exposition_and_process_metrics() -> None:
    doc = status()
    server = MetricsServer("127.0.0.1", 0, lambda: doc)
    try:
        port = server.server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = answer.read().decode()
    finally:
        server.close()
    assert f'meshd_node{{name="b",node_id="{doc["node_id"]}"}} 1.0' in text
    assert "process_cpu_seconds_total" in text
    assert "python_info" in text
