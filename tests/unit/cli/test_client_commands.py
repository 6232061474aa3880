"""The commands that call the daemon (status, block, revocations), against the real control
server with a fake handler: what they print, and one error line with the reason code."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meshd import api, cli
from meshd.adapters.installs import Installs
from tests.unit.cli.test_invite_command import _node
from tests.unit.control_fakes import NODE_A, NODE_B, STATUS, FakeDaemon, serving

STATUS_TEXT = f"""\
node     a  {NODE_A}
mesh     10.77.0.1  fd6d::1
backend  kernel

NEIGHBOUR  INTERFACE       STATE       RTT ms  LOSS  SILENT s  RX    TX  REFUSED
b          mwabcdef123456  up          1.25    0     0.5       2048  10  5 (rate_link 3, ...)
c          mw0123456789ab  connecting  -       -     -         -     -   -

ROUTE         VIA  INTERFACE       METRIC
10.77.0.2/32  b    mwabcdef123456  96
10.77.9.0/24  -    eth0            1024

USAGE  RELAYED FOR  RELAYED TO  SENT  RECEIVED  RECEIPTS
b      1            2           -     -         no receipts yet"""


def test_status_prints_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serving(tmp_path / "s.sock", FakeDaemon({"status": STATUS}).handle) as path:
        assert cli.main(["status", "--socket", str(path)]) == 0
    assert capsys.readouterr().out == STATUS_TEXT + "\n"


def test_status_says_where_receipts_stand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_receipts = copy.deepcopy(STATUS)
    with_receipts["receipts"] = {"tolerance_percent": 2.0, "tolerance_bytes": 9, "credit_bytes": 99}
    with_receipts["usage"][0].update(
        provider={
            "epoch": 7,
            "seq": 3,
            "claimed_for_bytes": 1,
            "claimed_to_bytes": 2,
            "receipted_for_bytes": 1,
            "receipted_to_bytes": 1,
            "unreceipted_bytes": 1,
            "credit_bytes": 99,
            "state": "throttled",
            "reason": "no_receipts",
            "disputes": 1,
        },
        consumer={
            "epoch": 8,
            "seq": 2,
            "signed_for_bytes": 5,
            "signed_to_bytes": 6,
            "throttled": True,
            "reason": "no_receipts",
            "disputes": 0,
        },
    )
    with serving(tmp_path / "s.sock", FakeDaemon({"status": with_receipts}).handle) as path:
        assert cli.main(["status", "--socket", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "b      1            2           -     -         they signed 1/1, throttled "
        "(no_receipts), 1 disputed by them, we signed 5/6, throttling us (no_receipts)"
    )


def test_status_json_is_the_document_as_it_came(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    grown = copy.deepcopy(STATUS)
    grown["later"] = {"added": "by a newer daemon"}
    with serving(tmp_path / "s.sock", FakeDaemon({"status": grown}).handle) as path:
        monkeypatch.setenv("MESHD_SOCKET", str(path))  # no --socket: the environment's
        assert cli.main(["status", "--json"]) == 0
    assert capsys.readouterr().out == json.dumps(grown, indent=2) + "\n"


def test_status_without_a_daemon_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "none.sock"
    assert cli.main(["status", "--socket", str(path)]) == 1
    assert capsys.readouterr() == ("", f"meshd: no meshd socket at {path}\n")


def test_block_and_undo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    daemon = FakeDaemon({"block": {"node_id": NODE_B, "blocked": True}})
    with serving(tmp_path / "s.sock", daemon.handle) as path:
        assert cli.main(["block", NODE_B, "--socket", str(path)]) == 0
        assert cli.main(["block", NODE_B, "--undo", "--socket", str(path)]) == 0
    assert capsys.readouterr().out == f"{NODE_B} blocked\n{NODE_B} allowed again\n"
    assert [args["blocked"] for _, args in daemon.calls] == [True, False]


def test_block_refused_is_one_line_with_the_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = api.CallError("bad_args", "blocked in the config: unblock it there")
    with serving(tmp_path / "s.sock", FakeDaemon({"block": refusal}).handle) as path:
        assert cli.main(["block", NODE_B, "--undo", "--socket", str(path)]) == 1
    assert capsys.readouterr() == (
        "",
        "meshd block: bad_args: blocked in the config: unblock it there\n",
    )


def test_block_without_a_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "none.sock"
    assert cli.main(["block", NODE_B, "--socket", str(path)]) == 1
    assert capsys.readouterr().err == f"meshd block: no_daemon: no meshd socket at {path}\n"


def test_revocations_list_and_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [{"type": "revocation", "node_id": NODE_B}, {"type": "revocation"}]
    daemon = FakeDaemon({"revocations": records, "add_revocations": {"added": 1, "known": 1}})
    hex_file, raw_file = tmp_path / "r1.hex", tmp_path / "r2.bin"
    hex_file.write_text("0a0b0c\n")
    raw_file.write_bytes(b"\x01\x02\xfe")
    with serving(tmp_path / "s.sock", daemon.handle) as path:
        assert cli.main(["revocations", "list", "--socket", str(path)]) == 0
        argv = ["revocations", "add", str(hex_file), str(raw_file), "--socket", str(path)]
        assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in out[:2]] == records
    assert out[2:] == ["1 new, 1 already known"]
    assert daemon.calls[1] == ("add_revocations", {"records": ["0a0b0c", "0102fe"]})


def test_revocations_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = api.CallError("unknown_issuer", "record 1: not signed by an admin of this mesh")
    record = tmp_path / "r.hex"
    record.write_text("0a0b\n")
    with serving(tmp_path / "s.sock", FakeDaemon({"add_revocations": refusal}).handle) as path:
        socket_args = ["--socket", str(path)]
        assert cli.main(["revocations", "add", str(record), *socket_args]) == 1
        assert capsys.readouterr().err == (
            "meshd revocations: unknown_issuer: record 1: not signed by an admin of this mesh\n"
        )
        assert cli.main(["revocations", "add", str(tmp_path / "missing"), *socket_args]) == 1
        assert capsys.readouterr().err.startswith("meshd revocations: [Errno 2]")
        assert cli.main(["revocations", "add", *socket_args]) == 2
        assert capsys.readouterr().err == "meshd revocations add: give at least one FILE\n"


RELEASE = {
    "serial": 3,
    "meshd_version": "0.2.0",
    "artifact": "meshd-0.2.0-py3-none-any.whl",
    "size": 400_000,
    "sha256": "00" * 32,
    "issuer": NODE_A,
    "issued_at": 1_767_225_600,
    "takes_from": 4_102_444_800,
}


def update_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], releases: dict[str, Any]
) -> str:
    """What `meshd update status` prints when the daemon answers ``releases``."""
    with serving(tmp_path / "s.sock", FakeDaemon({"releases": releases}).handle) as path:
        assert cli.main(["update", "status", "--socket", str(path)]) == 0
    return capsys.readouterr().out


def test_update_status_says_what_is_held_fetched_and_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    releases = {
        "running": "0.1.0",
        "stage": "normal",
        "held": RELEASE,
        "fetching": {
            **RELEASE,
            "serial": 4,
            "takes_from": None,
            "received": 65_536,
            "holders": [NODE_B],
        },  # fmt: skip
        "refused": {"release_not_admin": 2},
    }
    assert update_status(tmp_path, capsys, releases) == (
        "running: meshd 0.1.0, stage normal\n"
        "holds and serves: release 3 (meshd 0.2.0, meshd-0.2.0-py3-none-any.whl, 400000 bytes); "
        "its stage takes it from 2100-01-01 00:00 UTC\n"
        "fetching: release 4 (meshd 0.2.0, meshd-0.2.0-py3-none-any.whl, 400000 bytes); takes "
        "it only by hand (stage manual); 65536 of 400000 bytes; 1 neighbour holds it\n"
        "refused from neighbours: release_not_admin 2\n"
    )


def test_update_status_says_what_was_taken_and_rolled_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meshd.core.updates import Record

    record = Record(taken=3, current="/opt/meshd/versions/0.2.0-3", refused={2: "x", 4: "y"})
    installs = {**record.to_json(), "concerns": record.concerns(0)}
    assert installs["concerns"] == ["release 4 rolled back here: y"]
    releases = {"running": "0.2.0", "stage": "early", "held": None, "fetching": None,
                "installs": installs}  # fmt: skip
    assert update_status(tmp_path, capsys, releases) == (
        "running: meshd 0.2.0, stage early\n"
        "holds no release\n"
        "took: release 3 (/opt/meshd/versions/0.2.0-3)\n"
        "release 4 rolled back here: y\n"
        "rolled back before: release 2: x\n"
    )
    assert cli.main(["update", "apply", "--root", str(tmp_path / "absent")]) == 1
    assert "is not writable: run it as root" in capsys.readouterr().err


FAILED = "Job for meshd.service failed.\nSee 'systemctl status meshd.service' for details.\n"
WHY = (
    "systemctl restart meshd.service exited 1: Job for meshd.service failed. / "
    "See 'systemctl status meshd.service' for details."
)


def updating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restarts: list[int]
) -> tuple[list[str], Installs, list[str]]:
    """A node whose meshd runs versions/old, holding release 4 (meshd 0.2.0), which installs
    into versions/new (no pip); each systemctl restart exits with the next of ``restarts``.
    The version the link names at each restart, the installs, and the options to pass."""
    from meshd.cli.commands.update import Updater
    from meshd.core.updates import Health
    from tests.golden.release.make_vectors import ADMIN, ARTIFACT, MESH_ID, signed

    config = _node(tmp_path / "node", admin=True)
    installs = Installs(tmp_path / "opt")
    for name in ("old", "new"):
        (installs.versions / name).mkdir(parents=True)
    installs.link.symlink_to("versions/old")
    held = (signed(ADMIN, MESH_ID, 4, ARTIFACT), tmp_path / "release.whl")
    monkeypatch.setattr(Updater, "held", lambda self, work, record: held)
    monkeypatch.setattr(Updater, "health", lambda self: Health(True, "0.1.0"))
    monkeypatch.setattr(Installs, "install", lambda self, wheel, name: self.versions / "new")
    linked: list[str] = []

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert argv == ["systemctl", "restart", "meshd.service"]
        linked.append(installs.link.resolve().name)
        code = restarts.pop(0)
        return subprocess.CompletedProcess(argv, code, "", FAILED if code else "")

    monkeypatch.setattr(subprocess, "run", run)
    options = ["--root", str(installs.root), "--config", str(config), "--socket", "s.sock"]
    return linked, installs, options


def test_a_trial_whose_restart_fails_is_rolled_back_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    linked, installs, options = updating(tmp_path, monkeypatch, [1, 0])
    assert cli.main(["update", "apply", *options]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"meshd update apply: release 4 rolled back: {WHY}"
    assert err == ""
    assert linked == ["new", "old"]  # the old meshd restarted once the link was back
    record = installs.load()
    assert record.trial is None and record.refused == {4: WHY}


def test_a_rollback_whose_restart_fails_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from meshd.core.updates import Health, Record, Trial

    restarts = [1, 1]
    linked, installs, options = updating(tmp_path, monkeypatch, restarts)
    assert cli.main(["update", "apply", *options]) == 1
    assert capsys.readouterr().err == f"meshd update apply: {WHY}\n"
    assert linked == ["new", "old"] and installs.load().refused == {4: WHY}
    # By hand: a trial given back, the old meshd's restart failing too.
    new, old = (str(installs.versions / name) for name in ("new", "old"))
    installs.save(Record(trial=Trial(5, "0.3.0", new, old, 0.0, Health(True, "0.1.0"))))
    installs.switch(Path(new))
    restarts.append(1)
    assert cli.main(["update", "rollback", *options]) == 1
    assert capsys.readouterr().err == f"meshd update rollback: {WHY}\n"
    assert linked == ["new", "old", "old"] and installs.load().refused == {5: "rolled back by hand"}


DEVICE = {
    "name": "phone",
    "public_key": "F/6s6738o3tyGcC+dtUfKTuiZJ+0F4EtkuDCdhr4c3E=",
    "address": "10.254.0.2",
    "added_at": 1_796_633_785,
}


def test_device_add_prints_only_the_config_on_standard_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    added = {**DEVICE, "endpoint": "198.51.100.11:52821", "config": "[Interface]\n...\n"}
    daemon = FakeDaemon({"device_add": added})
    with serving(tmp_path / "s.sock", daemon.handle) as path:
        assert cli.main(["device", "add", "phone", "--all", "--socket", str(path)]) == 0
        out = tmp_path / "phone.conf"
        assert cli.main(["device", "add", "phone", "--out", str(out), "--socket", str(path)]) == 0
    note = "phone: 10.254.0.2, reaching this node at 198.51.100.11:52821"
    # Without --out: the config alone on standard output, the note beside it on stderr.
    assert capsys.readouterr() == (
        f"[Interface]\n...\n{note}; its config is in {out}\n",
        f"{note}\n",
    )
    assert out.read_text() == "[Interface]\n...\n" and out.stat().st_mode & 0o777 == 0o600
    assert [args for _, args in daemon.calls] == [
        {"name": "phone", "endpoint": None, "all": True},
        {"name": "phone", "endpoint": None, "all": False},
    ]


def test_device_list_and_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = [{**DEVICE, "endpoint": None, "last_handshake": None, "rx_bytes": 0, "tx_bytes": 0}]
    daemon = FakeDaemon({"devices": listed, "device_remove": DEVICE})
    with serving(tmp_path / "s.sock", daemon.handle) as path:
        assert cli.main(["device", "list", "--socket", str(path)]) == 0
        assert cli.main(["device", "remove", "phone", "--socket", str(path)]) == 0
        refused = FakeDaemon({"device_remove": api.CallError("bad_args", "no device named 'x'")})
        with serving(tmp_path / "r.sock", refused.handle) as other:
            assert cli.main(["device", "remove", "x", "--socket", str(other)]) == 1
    out, err = capsys.readouterr()
    assert out == (
        "DEVICE  ADDRESS     SEEN AT  HANDSHAKE s AGO  RX  TX\n"
        "phone   10.254.0.2  -        -                0   0\n"
        "phone (10.254.0.2) removed: cut off now\n"
    )
    assert err == "meshd device remove: bad_args: no device named 'x'\n"


def test_status_lists_the_devices_and_says_when_their_book_is_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = {**DEVICE, "endpoint": "198.51.100.250:50983", "rx_bytes": 151300, "tx_bytes": 4453052}
    devices = {"interface": "dv-abcdef", "pool": "10.254.0.0/24", "listen_port": 52821}
    with_devices = {
        **copy.deepcopy(STATUS),
        "devices": {**devices, "unreadable": None, "items": [{**seen, "last_handshake": None}]},
    }
    broken = {**copy.deepcopy(STATUS), "devices": {**devices, "unreadable": "bad", "items": []}}
    for doc in (with_devices, broken):
        with serving(tmp_path / "s.sock", FakeDaemon({"status": doc}).handle) as path:
            assert cli.main(["status", "--socket", str(path)]) == 0
    first, second = capsys.readouterr().out.split(STATUS_TEXT)[1:]
    assert first == (
        "\n\nDEVICE  ADDRESS     SEEN AT               HANDSHAKE s AGO  RX      TX\n"
        "phone   10.254.0.2  198.51.100.250:50983  -                151300  4453052\n"
    )
    assert second == "\n\ndevices: bad\n"


def test_status_names_the_proposals_short_of_their_quorum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = {"id": "a3eb9439cf9f", "what": "revocation of node x", "withdrawn": False}
    gone = {**pending, "id": "000000000000", "withdrawn": True}
    doc = {**copy.deepcopy(STATUS), "proposals": [pending, gone]}
    with serving(tmp_path / "s.sock", FakeDaemon({"status": doc}).handle) as path:
        assert cli.main(["status", "--socket", str(path)]) == 0
    assert capsys.readouterr().out.split(STATUS_TEXT)[1] == (
        "\n\nproposals short of their quorum (meshd proposals): a3eb9439cf9f revocation of node x\n"
    )
