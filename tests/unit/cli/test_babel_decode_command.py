"""meshd decode: JSON lines for a good packet, one line with a reason code for a bad one."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from meshd.cli.commands import decode

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "babel"


def run(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[int, list[dict[str, object]], str]:
    parser = argparse.ArgumentParser(prog="meshd decode")
    decode.add_arguments(parser)
    code = decode.main(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def golden(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((GOLDEN / f"{name}.json").read_text())
    return data


def without_offsets(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in line.items() if k != "offset"} for line in lines]


def test_prints_one_json_line_per_tlv(capsys: pytest.CaptureFixture[str]) -> None:
    vector = golden("packet_combined")
    code, lines, err = run(capsys, [str(vector["hex"])])
    assert code == 0
    assert err == ""
    assert without_offsets(lines) == vector["tlvs"]
    assert lines[0]["offset"] == 4


def test_accepts_spaced_and_colon_separated_hex(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, ["2a:02:00:08 0206 0000 1234 01f4"])
    assert code == 0
    assert without_offsets(lines) == golden("ack_request")["tlvs"]


def test_reads_hex_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = str(golden("hello")["hex"]).encode() + b"\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, lines, _ = run(capsys, ["-"])
    assert code == 0
    assert without_offsets(lines) == golden("hello")["tlvs"]


def test_reads_raw_or_hex_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    vector = golden("update_omitted_ae1")
    raw = tmp_path / "packet.bin"
    raw.write_bytes(bytes.fromhex(str(vector["hex"])))
    text = tmp_path / "packet.hex"
    text.write_text(str(vector["hex"]) + "\n")
    for path in (raw, text):
        code, lines, _ = run(capsys, ["--file", str(path)])
        assert code == 0
        assert without_offsets(lines) == vector["tlvs"]


def test_state_shows_router_id_and_default_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, [str(golden("update_omitted_ae2")["hex"]), "--state"])
    assert code == 0
    state = lines[2]["state"]
    assert isinstance(state, dict)
    assert state["router_id"] == "02:1e:2f:ff:fe:3a:4b:5c"
    assert state["default_prefix_ae2"] == "fd4d:6573:6800:1::"


def test_skipped_tlvs_and_trailer_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    # An unknown TLV (type 16), an Ack, then a 2-octet trailer after the body.
    code, lines, _ = run(capsys, ["2a0200091003aabbcc030212340000"])
    assert code == 0
    assert lines == [
        {"type": "skipped", "tlv_type": 16, "offset": 4, "reason": "unknown_tlv"},
        {"type": "ack", "opaque": 0x1234, "offset": 9},
        {"type": "trailer", "hex": "0000"},
    ]


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["2a02000504"], "truncated"),
        (["2b020000"], "bad_magic"),
        (["2a020008 0806 0500 0000 0000"], "bad_length"),
        (["zz"], "bad_input"),
        (["abc"], "bad_input"),
        ([], "bad_input"),
        (["--file", "/nonexistent/packet"], "bad_input"),
    ],
)
def test_bad_input_is_one_line_with_a_reason_and_exit_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    code, lines, err = run(capsys, argv)
    assert code == 1
    assert lines == []
    assert err.count("\n") == 1
    assert err.startswith(f"meshd decode: {reason}: ")
