from __future__ import annotations

import asyncio
from typing import Any

from textual.widgets import DataTable, Static

from tui.app import Dashboard

NODE_B = "B" * 43
STATUS: dict[str, Any] = {
    "node_id": "A" * 43,
    "name": "a",
    "mesh_ipv4": "10.77.0.1",
    "mesh_ipv6": "fd6d::1",
    "backend": "userspace",
    "neighbours": [
        {
            "node_id": NODE_B,
            "name": "b",
            "interface": "mwabcdef123456",
            "state": "down",
            "rtt_ms": None,
            "loss": None,
            "silent_s": 3.5,
            "rx_bytes": 2048,
            "tx_bytes": 10,
        }
    ],
    "routes": [
        {"prefix": "10.77.0.2/32", "via": NODE_B, "interface": "mwabcdef123456", "metric": 100}
    ],
    "gateway": {"selected": None, "candidates": []},
    "usage": [],
}


def test_dashboard_shows_links_and_routes() -> None:
    async def scenario() -> None:
        app = Dashboard(lambda: STATUS, interval=60)
        async with app.run_test() as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            neighbours = app.query_one("#neighbours", DataTable)
            assert neighbours.row_count == 1
            row = neighbours.get_row_at(0)
            assert row[0] == "b" and "down" in str(row[2]) and row[6] == "2.0 KiB"
            routes = app.query_one("#routes", DataTable)
            assert routes.get_row_at(0)[:2] == ["10.77.0.2/32", "b"]
            assert "10.77.0.1" in str(app.query_one("#node", Static).render())

    asyncio.run(scenario())


def test_dashboard_survives_an_unreachable_daemon() -> None:
    def fail() -> dict[str, Any]:
        raise ConnectionError("no meshd socket")

    async def scenario() -> None:
        app = Dashboard(fail, interval=60)
        async with app.run_test() as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert "unreachable" in str(app.query_one("#error", Static).render())
            assert app.query_one("#neighbours", DataTable).row_count == 0

    asyncio.run(scenario())
