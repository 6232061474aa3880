"""meshd receipts verify | summary: exit codes, one line per bad record, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshd.cli import main as meshd
from tests.unit.receipt_fixtures import ADMIN, CONSUMER, LATE, PROVIDER, export, nid, receipt

ADMIN_KEY = nid(ADMIN)


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_verify_exits_0_when_every_record_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "good.jsonl", export([receipt(1), receipt(2, 5)]))
    assert meshd(["receipts", "verify", path, "--admin-key", ADMIN_KEY]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip().endswith("0 records refused; membership checked")


def test_verify_prints_a_line_per_bad_record_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = export([receipt(1), receipt(2, 5)])
    lines.append(lines[-2])  # replay seq 1
    lines.append("{}")
    path = _write(tmp_path / "bad.jsonl", lines)
    assert meshd(["receipts", "verify", path, "--admin-key", ADMIN_KEY]) == 1
    bad = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[:2] for line in bad] == [
        [f"{path}:8", "seq_not_increasing"],
        [f"{path}:9", "malformed"],
    ]


def test_verify_without_admin_key_says_membership_was_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "x.jsonl", export([receipt(1)]))
    assert meshd(["receipts", "verify", path]) == 0
    assert "membership not checked (no --admin-key)" in capsys.readouterr().err


def test_verify_refuses_a_bad_admin_key_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "x.jsonl", export([receipt(1)]))
    assert meshd(["receipts", "verify", path, "--admin-key", "admin"]) == 2
    assert "--admin-key 'admin': expected a node id" in capsys.readouterr().err
    assert meshd(["receipts", "verify", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: No such file or directory" in capsys.readouterr().err


def test_summary_prints_the_table_across_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _write(tmp_path / "a.jsonl", export([receipt(1, 10, 1), receipt(2, 100, 10)]))
    second = _write(
        tmp_path / "b.jsonl",
        export([receipt(2, 100, 10), receipt(1, 7, 0, provider=CONSUMER, consumer=LATE)]),
    )
    assert meshd(["receipts", "summary", first, second, "--admin-key", ADMIN_KEY]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "provider",
        "consumer",
        "epochs",
        "relayed_for_bytes",
        "relayed_to_bytes",
        "disputes",
        "disputed_bytes",
    ]
    rows = {tuple(line.split()[-5:]) for line in table[1:]}
    assert rows == {("1", "100", "10", "0", "0"), ("1", "7", "0", "0", "0")}
    assert any(line.startswith(f"member 1 ({nid(PROVIDER)[:8]})") for line in table)


def test_summary_json_and_exit_1_with_a_refused_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = export([receipt(1, 10)])
    lines.append(lines[-1].replace('"seq":1', '"seq":2'))
    path = _write(tmp_path / "a.jsonl", lines)
    assert meshd(["receipts", "summary", "--json", path]) == 1
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["pairs"] == [
        {
            "provider": nid(PROVIDER),
            "provider_name": "member 1",
            "consumer": nid(CONSUMER),
            "consumer_name": "member 2",
            "epochs": 1,
            "relayed_for_bytes": 10,
            "relayed_to_bytes": 0,
            "disputes": 0,
            "disputed_bytes": 0,
        }
    ]
    assert [r["reason"] for r in result["refused"]] == ["bad_signature"]
    assert f"{path}:7: bad_signature: " in out.err


def test_a_dispute_both_sides_recorded_counts_once_with_the_bytes_it_is_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meshd.core.receipts import format_line
    from meshd.core.receipts.dispute import DisputeRecord

    def dispute(recorded_by: str) -> str:
        return format_line(
            DisputeRecord(
                recorded_by,
                nid(PROVIDER),
                nid(CONSUMER),
                1,
                2,
                "over_tolerance",
                0,
                1_000,
                0,
                900,
            )  # fmt: skip
        )

    signed = [receipt(1, 10), receipt(2, 10, 900)]
    first = _write(tmp_path / "p.jsonl", [*export(signed), dispute(nid(PROVIDER))])
    second = _write(tmp_path / "c.jsonl", [*export(signed), dispute(nid(CONSUMER))])
    assert meshd(["receipts", "verify", first]) == 0
    assert meshd(["receipts", "summary", "--json", first, second]) == 0
    [pair] = json.loads(capsys.readouterr().out)["pairs"]
    assert (pair["disputes"], pair["disputed_bytes"]) == (1, 100)
