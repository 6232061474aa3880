"""meshd.api.calls: the read calls of the control API, answered from a status coroutine,
page readers and an event ring, over the real server and the typed client."""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from meshd import api
from meshd.api import calls
from meshd.api.client import CallRefused, ControlClient, DaemonUnreachable
from meshd.api.schema import EventsDropped, LoggedEvent, StatusUpdate
from meshd.core.keys import node_id_from_public
from meshd.log import EventLog
from tests.unit.control_fakes import STATUS, serving

ROOT = api.Caller(pid=1, uid=0, gid=0)


class Daemon:
    """``calls.handle`` over a ring of its own, counting status reads."""

    def __init__(self, receipts: calls.PageReader | None = None) -> None:
        self.ring = EventLog()
        self.receipts = receipts
        self.status_reads = 0

    async def status(self) -> dict[str, Any]:
        self.status_reads += 1
        return copy.deepcopy(STATUS)

    async def handle(self, call: str, args: dict[str, Any], caller: api.Caller) -> Any:
        return await calls.handle(
            call, args, caller, self.status, receipts=self.receipts, events=self.ring
        )


def test_slices_of_the_status(tmp_path: Path) -> None:
    with serving(tmp_path / "s.sock", Daemon().handle) as path:
        client = ControlClient(path)
        assert client.neighbours() == STATUS["neighbours"]
        assert client.routes() == STATUS["routes"]
        assert client.gateways() == STATUS["gateway"]
        assert client.usage() == STATUS["usage"]


def test_unknown_calls_are_refused() -> None:
    with pytest.raises(api.CallError) as info:
        asyncio.run(calls.handle("nope", {}, ROOT, Daemon().status))
    assert info.value.code == "unknown_call"


def test_without_a_ledger_receipts_and_disputes_are_an_empty_last_page(tmp_path: Path) -> None:
    with serving(tmp_path / "s.sock", Daemon().handle) as path:
        client = ControlClient(path)
        assert client.receipts() == {"items": [], "next": None}
        assert client.disputes(after="x", limit=5) == {"items": [], "next": None}


def test_receipts_are_read_a_page_at_a_time(tmp_path: Path) -> None:
    records = [{"seq": i} for i in range(5)]
    asked: list[tuple[str | None, int]] = []

    async def reader(after: str | None, limit: int) -> calls.Page:
        asked.append((after, limit))
        start = int(after) if after else 0
        end = start + limit
        return {"items": records[start:end], "next": str(end) if end < len(records) else None}

    with serving(tmp_path / "s.sock", Daemon(receipts=reader).handle) as path:
        client = ControlClient(path)
        pages, after = [], None
        while True:
            page = client.receipts(after=after, limit=2)
            pages.append(page["items"])
            if (after := page["next"]) is None:
                break
    assert pages == [records[0:2], records[2:4], records[4:]]
    assert asked == [(None, 2), ("2", 2), ("4", 2)]


@pytest.mark.parametrize(
    ("call", "args", "reason"),
    [
        ("receipts", {"after": 3}, "after:"),
        ("receipts", {"limit": 0}, "limit:"),
        ("disputes", {"limit": 5000}, "limit:"),
        ("events", {"after": -1}, "after:"),
        ("events", {"level": "loud"}, "level:"),
        ("events", {"name": 5}, "name:"),
        ("subscribe", {"interval": 0}, "interval:"),
        ("subscribe", {"interval": True}, "interval:"),
    ],
)
def test_bad_arguments_are_refused(call: str, args: dict[str, Any], reason: str) -> None:
    with pytest.raises(api.CallError) as info:
        asyncio.run(Daemon().handle(call, args, ROOT))
    assert info.value.code == "bad_args" and str(info.value).startswith(reason)


def test_events_by_page_name_and_level(tmp_path: Path) -> None:
    daemon = Daemon()
    daemon.ring.record("session.up", logging.INFO, {"peer": "b"})
    daemon.ring.record("session.refused", logging.WARNING, {"peer": "c", "reason": "revoked"})
    daemon.ring.record("link.lost", logging.WARNING, {"peer": "b"})
    with serving(tmp_path / "s.sock", daemon.handle) as path:
        client = ControlClient(path)
        page = client.events(limit=2)
        assert [e.name for e in page.items] == ["session.up", "session.refused"]
        assert (page.next, page.last_id) == (2, 3)
        assert [e.name for e in client.events(after=2).items] == ["link.lost"]
        warnings = client.events(name="session.", level="warning")
        assert warnings.items == [
            LoggedEvent(
                2,
                warnings.items[0].time,
                "warning",
                "session.refused",
                {"peer": "c", "reason": "revoked"},
            )
        ]
        assert warnings.next is None


def test_a_subscription_streams_status_and_events_until_closed(tmp_path: Path) -> None:
    daemon = Daemon()
    daemon.ring.record("old.event", logging.INFO, {})
    with serving(tmp_path / "s.sock", daemon.handle) as path:
        with ControlClient(path).subscribe(interval=0.1) as sub:
            assert (sub.interval, sub.last_id) == (0.1, 1)
            first = sub.receive()
            assert isinstance(first, StatusUpdate) and first.status == STATUS
            daemon.ring.record("session.up", logging.INFO, {"peer": "b"})  # another thread
            seen = [sub.receive() for _ in range(4)]
            events = [i for i in seen if isinstance(i, LoggedEvent)]
            assert [e.name for e in events] == ["session.up"]  # not the one from before
            assert sum(isinstance(i, StatusUpdate) for i in seen) == 3
        # The client hung up: the daemon stops reading status for it, and lets go of its
        # place in the ring.
        _until(lambda: not daemon.ring._subscribers)
        reads = daemon.status_reads
        time.sleep(0.3)
        assert daemon.status_reads == reads


def test_a_subscription_resumes_after_an_id_and_filters(tmp_path: Path) -> None:
    daemon = Daemon()
    for name in ("session.up", "link.lost", "session.down"):
        daemon.ring.record(name, logging.INFO, {})
    with (
        serving(tmp_path / "s.sock", daemon.handle) as path,
        ControlClient(path).subscribe(interval=60, after=1, name="session.") as sub,
    ):
        got = [sub.receive(), sub.receive()]
    assert isinstance(got[0], StatusUpdate)
    assert isinstance(got[1], LoggedEvent) and (got[1].id, got[1].name) == (3, "session.down")


def test_a_slow_subscriber_is_told_what_it_lost(tmp_path: Path) -> None:
    daemon = Daemon()
    with (
        serving(tmp_path / "s.sock", daemon.handle) as path,
        ControlClient(path).subscribe(interval=0.2) as sub,
    ):
        assert isinstance(sub.receive(), StatusUpdate)
        # Far more than the socket's buffers and the subscriber's queue hold for a reader
        # that waits.
        big = "x" * 4000
        for _ in range(3000):
            daemon.ring.record("flood", logging.INFO, {"pad": big})
        # Each event follows the one before it, or the count of those lost between.
        last, lost, total_lost = 0, 0, 0
        while last < 3000:
            item = sub.receive()
            if isinstance(item, EventsDropped):
                lost += item.count
            elif isinstance(item, LoggedEvent):
                assert item.id == last + lost + 1
                last, total_lost, lost = item.id, total_lost + lost, 0
    assert total_lost > 0


def test_closing_from_another_thread_ends_a_blocked_receive(tmp_path: Path) -> None:
    with serving(tmp_path / "s.sock", Daemon().handle) as path:
        sub = ControlClient(path).subscribe(interval=60)
        assert isinstance(sub.receive(), StatusUpdate)
        threading.Timer(0.1, sub.close).start()
        started = time.monotonic()
        assert sub.receive() is None
        assert time.monotonic() - started < 5
        assert sub.receive() is None


def test_the_daemon_stopping_ends_the_stream_with_an_error(tmp_path: Path) -> None:
    with serving(tmp_path / "s.sock", Daemon().handle) as path:
        sub = ControlClient(path).subscribe(interval=60)
        assert isinstance(sub.receive(), StatusUpdate)
    with pytest.raises(DaemonUnreachable) as info:
        sub.receive()
    assert info.value.code == "disconnected"
    sub.close()


def test_a_refused_subscription_is_a_call_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "s.sock", Daemon().handle) as path, pytest.raises(CallRefused):
        ControlClient(path).subscribe(interval=-1)


def _until(predicate: Any, within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.01)


# ---- the calls that change the node: one table with the read calls ---------------------


NODE_B, NODE_C = node_id_from_public(bytes([2]) * 32), node_id_from_public(bytes([3]) * 32)


class Node:
    """What ``calls.Changes`` asks of the node, recorded."""

    def __init__(self) -> None:
        self.blocked: list[tuple[str, bool]] = []
        self.devices: list[str] = []

    def revocations(self) -> list[dict[str, Any]]:
        return []

    def add_revocations(self, records: list[bytes]) -> dict[str, int]:
        from meshd.core.membership import Revocation

        for record in records:
            Revocation.decode(record)  # MembershipError: a BadInput
        return {"added": len(records), "known": 0}

    def adopt_definitions(self, records: list[bytes]) -> dict[str, Any]:
        return {"adopted": 0, "definition": {}}

    def proposals(self) -> list[dict[str, Any]]:
        return []

    def propose(self, records: list[bytes]) -> list[dict[str, Any]]:
        from meshd.core.membership.proposals import Proposal

        return [{"id": Proposal.decode(r).id, "outcome": "new"} for r in records]

    def publish_release(self, manifest: bytes) -> dict[str, Any]:
        return {"held": {"manifest": manifest.hex()}}

    def map_documents(self) -> dict[str, Any]:
        return {}

    async def add_device(self, name: str, endpoint: str | None, everything: bool) -> dict[str, Any]:
        self.devices.append(name)
        return {"name": name, "endpoint": endpoint, "all": everything}

    async def remove_device(self, name: str) -> dict[str, Any]:
        self.devices.remove(name)
        return {"name": name}

    async def device_list(self) -> list[dict[str, Any]]:
        return [{"name": name} for name in self.devices]

    def block(self, node_id: str, blocked: bool) -> None:
        if not blocked and node_id == NODE_C:
            raise ValueError("blocked by the config file ([uplink] blocked)")
        self.blocked.append((node_id, blocked))


def _call(call: str, node: Node | None = None, **args: Any) -> Any:
    return asyncio.run(calls.handle(call, args, ROOT, Daemon().status, node=node))


def test_device_calls_check_their_arguments() -> None:
    node = Node()
    assert _call("device_add", node, name="phone", all=True) == {
        "name": "phone",
        "endpoint": None,
        "all": True,
    }
    assert _call("devices", node) == [{"name": "phone"}]
    assert _call("device_remove", node, name="phone") == {"name": "phone"}
    for call, bad in (
        ("device_add", {}),
        ("device_add", {"name": "x", "all": "yes"}),
        ("device_add", {"name": "x", "endpoint": 7}),
        ("device_remove", {"name": None}),
    ):
        with pytest.raises(api.CallError) as info:
            _call(call, node, **bad)
        assert info.value.code == "bad_args", (call, bad)


def test_block_checks_the_node_id_and_what_the_config_blocks() -> None:
    node = Node()
    assert _call("block", node, node_id=NODE_B) == {"node_id": NODE_B, "blocked": True}
    assert node.blocked == [(NODE_B, True)]
    for bad in ({"node_id": "nope"}, {"node_id": NODE_C, "blocked": False}, {}):
        with pytest.raises(api.CallError) as info:
            _call("block", node, **bad)
        assert info.value.code == "bad_args"
    assert node.blocked == [(NODE_B, True)]


def test_publish_release_takes_a_manifest_in_hex_only() -> None:
    assert _call("publish_release", Node(), manifest="30ab") == {"held": {"manifest": "30ab"}}
    for bad in ({"manifest": "zz"}, {"manifest": ""}, {"manifest": 48}, {}):
        with pytest.raises(api.CallError) as info:
            _call("publish_release", Node(), **bad)
        assert info.value.code == "bad_args", bad


def test_a_record_that_does_not_decode_answers_its_reason() -> None:
    with pytest.raises(api.CallError) as info:
        _call("add_revocations", Node(), records=["00"])
    assert info.value.code not in ("bad_args", "unknown_call", "internal")
    with pytest.raises(api.CallError) as info:
        _call("add_revocations", Node(), records=["zz"])
    assert info.value.code == "bad_args"


def test_a_daemon_without_a_node_takes_no_changing_call() -> None:
    with pytest.raises(api.CallError) as info:
        _call("block", None, node_id=NODE_B)
    assert info.value.code == "unknown_call"
    assert _call("version")["api"] == api.API_VERSION
