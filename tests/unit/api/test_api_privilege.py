"""The control API's local privilege (docs/threat-model.md, "Local privilege"): a caller
the socket lets in but who is not root (the ``meshd`` group, for ``meshd status`` and the
dashboard) reads everything and changes nothing. A real server on a real socket; the
caller is a child process that dropped to an unprivileged user, as the kernel tells the
server (SO_PEERCRED)."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from meshd import api, log
from meshd.api import calls
from meshd.api.client import CallRefused, ControlClient
from meshd.cli import main as meshd
from tests.local_privilege import NOBODY, as_user, needs_root, reachable_dir
from tests.unit.api.test_api_calls import NODE_B, Daemon, Node
from tests.unit.control_fakes import STATUS, serving

# Each call that changes the node, with arguments it would take from root.
CHANGING: dict[str, dict[str, Any]] = {
    "add_revocations": {"records": []},
    "mesh_definition": {"records": []},
    "propose": {"records": []},
    "block": {"node_id": NODE_B, "blocked": True},
    "publish_release": {"manifest": "30"},
    "device_add": {"name": "phone"},
    "device_remove": {"name": "phone"},
}


class Guarded(Daemon):
    """``calls.handle`` with a node to change and a count of the callers it refused."""

    def __init__(self) -> None:
        super().__init__()
        self.node = Node()
        self.refused: Counter[str] = Counter()

    async def handle(self, call: str, args: dict[str, Any], caller: api.Caller) -> Any:
        return await calls.handle(
            call, args, caller, self.status, events=self.ring, node=self.node, refused=self.refused
        )


def test_the_table_marks_exactly_the_calls_that_change_the_node() -> None:
    assert {name for name, call in calls.CALLS.items() if call.changes} == set(CHANGING)


def _as_nobody(path: Path) -> dict[str, Any]:
    """What an unprivileged caller gets: each read call's answer, each changing call's
    refusal, and what ``meshd block`` prints."""
    client = ControlClient(path)
    seen: dict[str, Any] = {
        "status": client.status()["node_id"],
        "version": client.version().api,
        "revocations": client.revocations(),
        "events": client.events().last_id >= 0,
    }
    for call, args in CHANGING.items():
        try:
            seen[call] = client.call(call, **args)
        except CallRefused as exc:
            seen[call] = (exc.code, exc.message)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        seen["cli"] = (meshd(["block", NODE_B, "--socket", str(path)]), err.getvalue())
    return seen


@needs_root
def test_root_changes_the_node_and_a_caller_who_is_not_root_only_reads() -> None:
    daemon = Guarded()
    with reachable_dir() as base, serving(base / "s.sock", daemon.handle, "nogroup") as path:
        # Root, through the CLI: blocked. (This also imports all the child needs: it may
        # not read this virtualenv's Python.)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert meshd(["block", NODE_B, "--socket", str(path)]) == 0
        assert out.getvalue() == f"{NODE_B} blocked\n"
        assert ControlClient(path).add_revocations([]).added == 0
        assert daemon.node.blocked == [(NODE_B, True)] and not daemon.refused

        assert grp.getgrgid(NOBODY).gr_name == "nogroup"  # the socket's group lets it in
        before = log.RECENT.last_id
        seen = as_user(NOBODY, lambda: _as_nobody(path))
        assert seen["status"] == STATUS["node_id"]
        assert seen["version"] == api.API_VERSION and seen["revocations"] == []
        for call in CHANGING:
            code, message = seen[call]
            assert code == "not_permitted", call
            assert f"{call} changes the node: only root may call it" in message
            assert f"uid {NOBODY}" in message and "sudo" in message
        code, err = seen["cli"]
        assert code == 1
        assert "meshd block: not_permitted: block changes the node: only root" in err
        assert daemon.node.blocked == [(NODE_B, True)]  # nothing more reached the node
        assert daemon.refused == {"not_root": len(CHANGING) + 1}
        refusals, _ = log.RECENT.after(before, 100, log.EventFilter("api.refused"))
        assert {ev.fields["call"] for ev in refusals} == set(CHANGING)
        assert all(ev.fields["uid"] == NOBODY for ev in refusals)
        assert all(ev.fields["reason"] == "not_root" for ev in refusals)


def test_a_request_cannot_claim_root() -> None:
    """The check is on the uid the kernel gave, not on anything the request says."""
    nobody = api.Caller(pid=1, uid=NOBODY, gid=NOBODY)
    with pytest.raises(api.CallError) as info:
        asyncio.run(Guarded().handle("block", {"node_id": NODE_B, "as_root": True}, nobody))
    assert info.value.code == "not_permitted"
