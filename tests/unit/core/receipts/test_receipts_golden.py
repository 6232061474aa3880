"""Golden vectors (tests/golden/receipts): hex <-> JSON both ways, signatures, an export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshd.cli import main as meshd
from meshd.core.receipts import DOMAIN, Receipt, parse_line, record_to_json, verify_export
from tests.golden import vectors
from tests.golden.receipts import make_vectors as GEN

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "receipts"
FILES = sorted(p.name for p in GOLDEN.glob("*.json"))
_vector = vectors.reader(GOLDEN)


def test_checked_in_files_are_exactly_what_the_generator_makes() -> None:
    rendered = GEN.rendered()
    assert sorted(rendered) == sorted([*FILES, "export.jsonl"])
    for name, text in rendered.items():
        assert (GOLDEN / name).read_text(encoding="utf-8") == text, f"regenerate {name}"


def test_fixed_keys_are_the_membership_vectors_keys() -> None:
    assert GEN.node_id(GEN.NODE) == "wJqnU3NRB1AemMf689ObyaSbxMMtOPXmavK6tVA8d3k"
    assert GEN.MESH_ID.hex() == "a2e8efa88f9a2fc610601fc30b9f0e1d"


@pytest.mark.parametrize("name", FILES)
def test_vector_both_directions_and_signature(name: str) -> None:
    vector = _vector(name)
    assert set(vector) == {"description", "hex", "json"}
    data = bytes.fromhex(vector["hex"])
    decoded = Receipt.decode(data)
    assert record_to_json(decoded) == vector["json"]
    from_json = parse_line(json.dumps(vector["json"]))
    assert isinstance(from_json, Receipt)
    assert from_json.encode().hex() == vector["hex"]
    assert from_json == decoded and decoded.encode() == data
    decoded.verify_signature()
    # The receipt's own JSON is exactly the export contract's fields.
    assert list(decoded.to_json()) == [
        "mesh_id",
        "provider",
        "consumer",
        "epoch",
        "seq",
        "relayed_for_bytes",
        "relayed_to_bytes",
        "not_before",
        "not_after",
        "signature",
    ]


def test_layout_of_the_receipt_vector_by_hand() -> None:
    vector = _vector("receipt.json")
    data = bytes.fromhex(vector["hex"])
    assert len(data) == 224
    assert data[:2] == bytes((0x11, 0x01))  # type: receipt, version 1
    assert data[2:5] == bytes((1, 0, 16)) and data[5:21] == GEN.MESH_ID
    assert data[21:24] == bytes((2, 0, 32))  # provider key
    assert data[56:59] == bytes((3, 0, 32))  # consumer key
    assert data[91:94] == bytes((4, 0, 8))  # epoch
    assert data[94:102] == GEN.EPOCH.to_bytes(8, "big")
    assert data[102:105] == bytes((5, 0, 8)) and data[105:113] == (3).to_bytes(8, "big")
    assert data[113:116] == bytes((6, 0, 8))
    assert int.from_bytes(data[116:124], "big") == 1_234_567_890
    assert data[157:160] == bytes((10, 0, 64))  # the signature is the last field
    receipt = Receipt.decode(data)
    assert receipt.signed_bytes() == DOMAIN + data[:157]
    assert data[160:] == bytes.fromhex(vector["json"]["signature"])


def test_the_u64_vector_keeps_exact_integers_in_json() -> None:
    assert _vector("receipt_u64_max.json")["json"]["relayed_for_bytes"] == 2**64 - 1


def test_the_export_verifies_against_the_test_admin_key() -> None:
    lines = (GOLDEN / "export.jsonl").read_text(encoding="utf-8").splitlines()
    report = verify_export(lines, [GEN.node_id(GEN.MEMBERSHIP.ADMIN)])
    assert report.ok, report.rejections
    assert report.membership_checked and len(report.receipts) == 4


def test_meshd_decode_prints_the_receipt_as_its_export_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    vector = _vector("receipt.json")
    assert meshd(["decode", vector["hex"]]) == 0
    assert json.loads(capsys.readouterr().out) == vector["json"]
    assert meshd(["decode", "--kind", "receipt", vector["hex"][:-2]]) == 1
    assert capsys.readouterr().err.startswith("meshd decode: malformed: ")


def test_meshd_receipts_verify_accepts_the_golden_export(
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin = GEN.node_id(GEN.MEMBERSHIP.ADMIN)
    assert meshd(["receipts", "verify", str(GOLDEN / "export.jsonl"), "--admin-key", admin]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert "4 receipts verified, 0 duplicates ignored, 0 records refused" in out.err
