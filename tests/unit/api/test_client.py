"""meshd.api.client against a real Unix socket: the daemon's own server with a fake handler,
or a raw socket answering fixed bytes."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from meshd import api, config
from meshd.api.client import (
    BadAnswer,
    CallRefused,
    ControlClient,
    DaemonUnreachable,
    locate_socket,
    parse_status,
)
from meshd.api.schema import BlockResult, DefinitionAdopted, RevocationsAdded, VersionInfo
from tests.unit.control_fakes import NODE_B, STATUS, FakeDaemon, answering, serving


def test_every_call_gets_its_typed_result(tmp_path: Path) -> None:
    daemon = FakeDaemon(
        {
            "version": {"meshd": "0.1.0", "api": 1, "python": "3.11.7", "later": "kept out"},
            "status": STATUS,
            "revocations": [{"type": "revocation", "node_id": NODE_B}],
            "add_revocations": {"added": 1, "known": 1},
            "mesh_definition": {"adopted": 1, "definition": {"serial": 2}},
            "block": {"node_id": NODE_B, "blocked": False},
        }
    )
    with serving(tmp_path / "s.sock", daemon.handle) as path:
        client = ControlClient(path)
        assert client.version() == VersionInfo(meshd="0.1.0", api=1, python="3.11.7")
        assert client.status() == STATUS
        assert client.revocations() == [{"type": "revocation", "node_id": NODE_B}]
        assert client.add_revocations([b"\x01\x02", b"\xff"]) == RevocationsAdded(1, 1)
        assert client.mesh_definition([b"\x07"]) == DefinitionAdopted(1, {"serial": 2})
        assert client.block(NODE_B, blocked=False) == BlockResult(NODE_B, False)
    assert daemon.calls == [
        ("version", {}),
        ("status", {}),
        ("revocations", {}),
        ("add_revocations", {"records": ["0102", "ff"]}),  # hex on the wire
        ("mesh_definition", {"records": ["07"]}),
        ("block", {"node_id": NODE_B, "blocked": False}),
    ]


def test_status_keeps_the_fields_it_does_not_know(tmp_path: Path) -> None:
    grown = copy.deepcopy(STATUS)
    grown["settlement"] = {"pending": 3}
    grown["neighbours"][0]["rate_bps"] = 12.5
    grown["gateway"]["candidates"][0]["terms"] = "new"
    with serving(tmp_path / "s.sock", FakeDaemon({"status": grown}).handle) as path:
        assert ControlClient(path).status() == grown


def test_a_refused_call_carries_the_daemons_code_and_message(tmp_path: Path) -> None:
    daemon = FakeDaemon({"block": api.CallError("bad_args", "not a node id: 'x'")})
    with serving(tmp_path / "s.sock", daemon.handle) as path:
        client = ControlClient(path)
        with pytest.raises(CallRefused) as info:
            client.block("x")
        assert (info.value.code, info.value.message) == ("bad_args", "not a node id: 'x'")
        assert str(info.value) == "bad_args: not a node id: 'x'"
        with pytest.raises(CallRefused) as info:
            client.call("receipts")
        assert info.value.code == "unknown_call"
    assert daemon.calls[0] == ("block", {"node_id": "x", "blocked": True})


def test_no_socket_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "none.sock"
    with pytest.raises(DaemonUnreachable) as info:
        ControlClient(path).status()
    assert info.value.code == "no_daemon"
    assert info.value.message == f"no meshd socket at {path}"


def test_a_stale_socket_file_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # bound, never listening: what a killed daemon leaves
    with pytest.raises(DaemonUnreachable) as info:
        ControlClient(path).version()
    assert (info.value.code, info.value.message) == ("no_daemon", f"nothing listens on {path}")


def test_a_daemon_that_does_not_answer_times_out(tmp_path: Path) -> None:
    with answering(tmp_path / "s.sock", None) as path, pytest.raises(DaemonUnreachable) as info:
        ControlClient(path, timeout=0.2).status()
    assert info.value.code == "timeout"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"", "closed the connection without answering"),
        (b'{"v": 1, "ok": true, "result": {}}', "cut short"),
        (b"<html>\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"v": 2, "ok": true, "result": {}}\n', "version 2"),
        (b'{"v": 1, "result": {}}\n', "'ok'"),
        (b'{"v": 1, "ok": true}\n', "no result"),
        (b'{"v": 1, "ok": false, "error": "bad"}\n', "error: expected an object"),
        (b'{"v": 1, "ok": false, "error": {"code": 7, "message": ""}}\n', "error.code"),
    ],
)
def test_a_malformed_answer_is_a_bad_answer(tmp_path: Path, answer: bytes, reason: str) -> None:
    with answering(tmp_path / "s.sock", answer) as path, pytest.raises(BadAnswer) as info:
        ControlClient(path).call("status")
    assert info.value.code == "bad_reply"
    assert reason in info.value.message


def _with(path: str, value: Any) -> dict[str, Any]:
    """STATUS with the field at ``path`` (dotted, list indexes as numbers) set or, for
    ``...``, removed."""
    doc = copy.deepcopy(STATUS)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "status: expected an object, got a list"),
        (_with("name", ...), "status: missing 'name'"),
        (_with("neighbours", {}), "status.neighbours: expected a list, got an object"),
        (_with("neighbours.0.rtt_ms", "1.2"), "status.neighbours[0].rtt_ms: expected a number"),
        (_with("neighbours.1.state", ...), "status.neighbours[1]: missing 'state'"),
        (_with("neighbours.0.rx_bytes", 1.5), "neighbours[0].rx_bytes: expected an integer"),
        (_with("neighbours.0.control.verified", 1), "control.verified: expected true or false"),
        (_with("routes.0.metric", True), "status.routes[0].metric: expected an integer"),
        (_with("gateway.sharing.exit_bytes", {NODE_B: "4k"}), f"exit_bytes.{NODE_B}:"),
        (_with("gateway.uplink", "eth1"), "status.gateway.uplink: expected an object"),
    ],
)
def test_a_status_that_does_not_fit_is_a_bad_answer(tmp_path: Path, doc: Any, reason: str) -> None:
    answer = json.dumps({"v": 1, "ok": True, "result": doc}).encode() + b"\n"
    with answering(tmp_path / "s.sock", answer) as path, pytest.raises(BadAnswer) as info:
        ControlClient(path).status()
    assert reason in info.value.message, info.value.message


def test_a_status_without_the_later_fields_is_fine() -> None:
    # What an early v1 daemon sent: the identity, the neighbours and the routes.
    early = {k: STATUS[k] for k in ("node_id", "name", "mesh_ipv4", "mesh_ipv6", "backend")}
    early["neighbours"] = [
        {k: STATUS["neighbours"][0][k] for k in list(STATUS["neighbours"][0])[:6]}
    ]
    early["routes"] = []
    assert parse_status(early) == early


@pytest.mark.parametrize(
    ("call", "result", "reason"),
    [
        ("version", {"meshd": "0.1.0", "python": "3.11"}, "version: missing 'api'"),
        ("add_revocations", {"added": "1", "known": 0}, "add_revocations.added: expected an"),
        ("block", [NODE_B, True], "block: expected an object, got a list"),
        ("revocations", [["not", "an", "object"]], "revocations[0]: expected an object"),
    ],
)
def test_other_results_that_do_not_fit_are_bad_answers(
    tmp_path: Path, call: str, result: Any, reason: str
) -> None:
    with serving(tmp_path / "s.sock", FakeDaemon({call: result}).handle) as path:
        client = ControlClient(path)
        with pytest.raises(BadAnswer) as info:
            if call == "add_revocations":
                client.add_revocations([b"\x01"])
            elif call == "block":
                client.block(NODE_B)
            else:
                getattr(client, call)()
    assert reason in info.value.message, info.value.message


def test_the_socket_is_the_flag_then_the_environment_then_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f"""
[node]
name = "a"
state_dir = "{tmp_path}"
mesh_ipv4 = "10.77.0.1"
[mesh]
admin_keys = ["{"A" * 43}"]
[control]
socket = "/srv/c.sock"
"""
    cfg = config.parse(text, "a.toml")
    monkeypatch.delenv("MESHD_SOCKET", raising=False)
    assert locate_socket() == Path(config.DEFAULT_SOCKET)
    assert locate_socket(None, cfg) == Path("/srv/c.sock")
    monkeypatch.setenv("MESHD_SOCKET", "/tmp/env.sock")
    assert locate_socket(None, cfg) == Path("/tmp/env.sock")
    assert locate_socket("/tmp/flag.sock", cfg) == Path("/tmp/flag.sock")
    monkeypatch.setenv("MESHD_SOCKET", "")  # set but empty: as if unset
    assert locate_socket() == Path(config.DEFAULT_SOCKET)
