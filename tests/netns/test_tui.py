"""The dashboard against a live node: the demo neighbourhood's b (netns-testbed/topologies/
demo.toml), headless (``App.run_test``) with the real control client on b's socket, while
e's household reaches the internet through b. It must name b's real neighbours with their
states, and show the bytes b relayed for e as b's own status counts them (and, once b
exchanges receipts with e, e's last signed figure)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator

import pytest

from meshd.api.client import ControlClient
from tests.netns import meshbed
from tests.tui.fakes import screen_text, until
from tui import fmt
from tui.app import Dashboard
from tui.events import Events
from tui.tables import LiveTable

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
SERVER = "203.0.113.1"  # the testbed's internet


class Bed(meshbed.Bed):
    def relayed_for(self, node: str, neighbour: str) -> int:
        """What ``node`` counted it relayed for ``neighbour`` (0 before its first reading)."""
        their_id = self.status(neighbour)["node_id"]
        usage = self.status(node)["usage"]
        return next((u["relayed_for_bytes"] for u in usage if u["node_id"] == their_id), 0)

    def traffic_from_lan(self, node: str, seconds: int) -> None:
        ns = json.loads(self.run("status", "--json"))["nodes"][node]["lan_namespace"]
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "ping",
                "-q",
                "-i",
                "0.02",
                "-s",
                "1000",
                "-w",
                str(seconds),
                SERVER,
            ],
            capture_output=True,
            timeout=seconds + 10,
        )


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("demo.toml", "u", Bed) as b:
        b.wait("e leaves by a gateway", lambda: b.status("e")["gateway"].get("exit_gateway"), 20)
        yield b


def test_the_dashboard_shows_a_live_nodes_neighbours_and_usage(bed: Bed) -> None:
    bed.traffic_from_lan("e", 3)
    # b reads its counters every 5 s.
    bed.wait(
        "b counted what it relayed for e",
        lambda: bed.relayed_for("b", "e") > 100_000,
        15,
    )
    counted_before = bed.relayed_for("b", "e")
    names = {bed.status(n)["node_id"]: n for n in "acde"}

    async def main() -> None:
        app = Dashboard(ControlClient(bed.dir / "nodes" / "b" / "meshd.sock"), interval=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.live.updates >= 2, within=15)
            overview = app.query_one("#overview-neighbours", LiveTable)
            shown = {
                str(overview.get_row_at(i)[0]): str(overview.get_row_at(i)[1])
                for i in range(overview.row_count)
            }
            assert shown == {"a": "up", "c": "up", "d": "up", "e": "up"}, screen_text(app)
            for name in "acde":
                assert f" {name} " in screen_text(app)

            await pilot.press("5")
            await pilot.pause()
            status = app.live.status
            assert status is not None
            e_usage = next(u for u in status["usage"] if names.get(u["node_id"]) == "e")
            assert e_usage["relayed_for_bytes"] >= counted_before
            provider = app.query_one("#provider-table", LiveTable)
            row = [str(c) for c in provider.get_row_at(provider.get_row_index(e_usage["node_id"]))]
            mine = fmt.size(e_usage["relayed_for_bytes"] + e_usage["relayed_to_bytes"])
            assert row[:2] == ["e", mine], screen_text(app)
            if "provider" in e_usage:  # once b exchanges receipts with e
                p = e_usage["provider"]
                assert row[2] == fmt.size(p["receipted_for_bytes"] + p["receipted_to_bytes"])
            else:
                assert row[5] == "no receipts yet"
            assert mine in screen_text(app)

            held = app.query_one(Events).held
            if "this meshd streams no events: reading its status" not in held:
                assert app.last_event_id > 0  # b's own events, streamed

    asyncio.run(main())
