"""`meshd decode` on membership records and session messages (Babel has its own tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from meshd.proto import session

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "membership"


def _decode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshd", "decode", *args], capture_output=True, text=True
    )


def test_a_membership_certificate_decodes_to_its_golden_json() -> None:
    vector = json.loads((GOLDEN / "membership_admin.json").read_text())
    res = _decode(vector["hex"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == vector["json"]


def test_a_session_membership_message_shows_both_records() -> None:
    cert = json.loads((GOLDEN / "membership_delegated.json").read_text())
    delegation = json.loads((GOLDEN / "delegation.json").read_text())
    msg = session.encode(
        session.Membership(bytes.fromhex(cert["hex"]), bytes.fromhex(delegation["hex"]))
    )
    res = _decode(msg.hex())
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines == [{"type": "session", "kind": "membership"}, cert["json"], delegation["json"]]


def test_a_session_babel_message_shows_its_tlvs() -> None:
    hello = json.loads((GOLDEN.parent / "babel" / "hello.json").read_text())
    res = _decode("02" + hello["hex"])
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[0] == {"type": "session", "kind": "babel"}
    assert [line["type"] for line in lines[1:]] == [t["type"] for t in hello["tlvs"]]


def test_a_tampered_certificate_is_one_line_with_a_reason() -> None:
    vector = json.loads((GOLDEN / "membership_admin.json").read_text())
    res = _decode(vector["hex"][:-2], "--kind", "membership")
    assert res.returncode == 1
    assert res.stderr.startswith("meshd decode: malformed: ") and res.stderr.count("\n") == 1
