from __future__ import annotations

import asyncio

from textual.widgets import DataTable, Static

from meshd.client import BadAnswer, ControlError, DaemonUnreachable, Status, parse_status
from tui.app import Dashboard

NODE_B = "B" * 43
STATUS: Status = {
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


class FakeClient:
    """meshd.client.ControlClient's ``status`` from recorded answers, one per call (the
    last one again once they run out); an error in the list is raised instead."""

    def __init__(self, *answers: Status | ControlError) -> None:
        self.answers = list(answers)

    def status(self) -> Status:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, ControlError):
            raise answer
        return parse_status(answer)  # a snapshot the real client would refuse is no test


def test_dashboard_shows_links_and_routes() -> None:
    async def scenario() -> None:
        app = Dashboard(FakeClient(STATUS), interval=60)
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
    async def scenario() -> None:
        app = Dashboard(FakeClient(DaemonUnreachable("no_daemon", "no meshd socket")), 60)
        async with app.run_test() as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert "unreachable" in str(app.query_one("#error", Static).render())
            assert app.query_one("#neighbours", DataTable).row_count == 0

    asyncio.run(scenario())


def test_dashboard_recovers_once_the_daemon_answers_again() -> None:
    async def scenario() -> None:
        app = Dashboard(FakeClient(DaemonUnreachable("timeout", "did not answer"), STATUS), 60)
        async with app.run_test() as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            error = app.query_one("#error", Static)
            assert "meshd unreachable: timeout: did not answer" in str(error.render())
            await pilot.press("r")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert str(error.render()) == ""
            assert app.query_one("#neighbours", DataTable).row_count == 1

    asyncio.run(scenario())


def test_dashboard_tells_a_garbled_answer_from_no_daemon() -> None:
    async def scenario() -> None:
        app = Dashboard(FakeClient(BadAnswer("daemon answer is not JSON")), interval=60)
        async with app.run_test() as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            shown = str(app.query_one("#error", Static).render())
            assert shown == "meshd error: bad_reply: daemon answer is not JSON"

    asyncio.run(scenario())
