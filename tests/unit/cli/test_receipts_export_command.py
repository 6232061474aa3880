"""`meshd receipts export` from a node's files (a real ledger in a scratch state
directory): the JSON Lines verify offline with the admin key, CSV has one row per receipt
(the latest of each epoch: the ledger keeps no superseded one), --since filters, and a node
with no ledger gets a clear error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from meshd.adapters.ledger import Ledger
from meshd.adapters.net import command
from meshd.adapters.net.throttle import Throttle
from meshd.adapters.trust import MEMBERSHIP_FILE, MESH_FILE
from meshd.cli import main
from meshd.config import ReceiptsSettings
from meshd.core.receipts import verify_export
from meshd.core.receipts.counting import Snapshot
from meshd.daemon.claims import ClaimService, Signer
from tests.local_privilege import NOBODY, needs_root, plant, reachable_dir, untouched
from tests.unit.receipt_fixtures import (
    ADMIN,
    CONSUMER,
    CONSUMER_CERT,
    DAY,
    MESH,
    PROVIDER,
    PROVIDER_CERT,
    T0,
    nid,
)

WALL = float(T0 + DAY)  # within every fixture certificate


def node_files(tmp: Path, name: str, cert: bytes) -> Path:
    state = tmp / name
    state.mkdir()
    (state / MESH_FILE).write_bytes(MESH.encode())
    (state / MEMBERSHIP_FILE).write_bytes(cert)
    config = tmp / f"{name}.toml"
    config.write_text(
        f'[node]\nname = "{name}"\nstate_dir = "{state}"\nmesh_ipv4 = "10.88.0.{len(name)}"\n'
        f'[mesh]\nipv4_prefix = "10.88.0.0/16"\nadmin_keys = ["{nid(ADMIN)}"]\n'
    )
    return config


@pytest.fixture
def provider_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A provider that stored three receipts of its consumer in one epoch, the second
    disputed: it holds the third (the latest supersedes the others) and the dispute."""
    monkeypatch.setattr(command, "run_ok", lambda *cmd: True)
    config = node_files(tmp_path, "p", PROVIDER_CERT.encode())
    node_files(tmp_path, "cc", CONSUMER_CERT.encode())
    p_id, c_id = nid(PROVIDER), nid(CONSUMER)
    settings = ReceiptsSettings(claim_interval_s=1)
    p = ClaimService(
        p_id, PROVIDER, MESH.mesh_id, Ledger.open(tmp_path / "p"), settings, Throttle(1)
    )
    c = ClaimService(
        c_id, CONSUMER, MESH.mesh_id, Ledger.open(tmp_path / "cc"), settings, Throttle(1)
    )
    for step, (relayed, seen) in enumerate(
        [(10_000, 10_000), (2_000_000, 1_000_000), (3 << 20, 3 << 20)]
    ):
        counts = (relayed, relayed, 0, 0)
        [(_, claim)] = p.round({c_id: Snapshot(counts, 1, counts)}, {}, {c_id}, 10.0 * step, WALL)
        answer = c.on_claim(p_id, claim, (seen, seen), WALL + step)
        assert answer is not None
        assert p.on_receipt(c_id, answer, Signer(CONSUMER_CERT.encode(), b""), WALL + step)
    p.ledger.close()
    return config


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["receipts", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_export_verifies_offline_with_the_admin_key(
    provider_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "export", "--config", str(provider_config))
    assert code == 0, err
    lines = out.splitlines()
    types = [json.loads(line)["type"] for line in lines]
    assert types[0] == "mesh_definition" and types.count("membership_certificate") == 2
    assert types.count("receipt") == 1 and types[-1] == "dispute"
    report = verify_export(lines, [nid(ADMIN)])
    assert report.ok and report.membership_checked and len(report.receipts) == 1
    assert report.receipts[0][1].seq == 3
    [dispute] = report.disputes
    assert (dispute.recorded_by, dispute.consumer, dispute.seq) == (
        nid(PROVIDER),
        nid(CONSUMER),
        2,
    )
    assert (dispute.reason, dispute.disputed_bytes) == ("over_tolerance", 2_000_000)
    exported = tmp_path / "export.jsonl"
    exported.write_text(out)
    assert run(capsys, "verify", str(exported), "--admin-key", nid(ADMIN))[0] == 0


def test_csv_has_a_row_per_receipt_with_its_dispute(
    provider_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHD_CONFIG", str(provider_config))
    code, out, _ = run(capsys, "export", "--format", "csv")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split(",")[-1] == "dispute" and header.startswith("mesh_id,provider,consumer")
    assert [row.split(",")[-1] for row in rows] == [""]
    assert [int(row.split(",")[4]) for row in rows] == [3]


def test_since_leaves_out_what_was_stored_before(
    provider_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "export", "--config", str(provider_config), "--since", "2999-01-01")
    assert code == 0 and '"type":"receipt"' not in out
    code, out, _ = run(capsys, "export", "--config", str(provider_config), "--since", "2000-01-01")
    assert out.count('"type":"receipt"') == 1
    code, _, err = run(capsys, "export", "--config", str(provider_config), "--since", "soon")
    assert code == 2 and "expected YYYY-MM-DD" in err


def test_a_node_without_a_ledger_is_told_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = node_files(tmp_path, "new", PROVIDER_CERT.encode())
    code, _, err = run(capsys, "export", "--config", str(config))
    assert code == 2 and "no ledger" in err
    assert not os.path.exists(tmp_path / "new" / "ledger.sqlite")


# ---- local privilege: root exports from a state directory the meshd user owns -----------


def test_a_planted_ledger_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = node_files(tmp_path, "new", PROVIDER_CERT.encode())
    victim = plant(tmp_path / "new", "ledger.sqlite")
    code, _, err = run(capsys, "export", "--config", str(config))
    assert code == 2 and "ledger.sqlite: is a symbolic link: not following it" in err
    untouched(victim)


@needs_root
def test_root_reads_the_ledger_as_its_owner_and_leaves_it_nothing_of_roots(
    provider_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with reachable_dir() as base:
        state = shutil.copytree(tmp_path / "p", base / "p")
        for path in (state, *state.iterdir()):
            os.chown(path, NOBODY, NOBODY)
        config = base / "p.toml"
        config.write_text(provider_config.read_text().replace(str(tmp_path / "p"), str(state)))
        code, out, err = run(capsys, "export", "--config", str(config))
        assert code == 0, err
        assert out.count('"type":"receipt"') == 1
        assert all(p.stat().st_uid == NOBODY for p in state.iterdir())
        assert (os.geteuid(), os.getegid()) == (0, 0)
