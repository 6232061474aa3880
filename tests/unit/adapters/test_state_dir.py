"""The state directory's schema (meshd.adapters.state_dir) on real files: state directories
the first release wrote (tests/golden/state_v1, made by its own testbed) are upgraded with
a copy kept, their receipts exported and verified as before; a newer schema is refused;
a rollback puts the copy back and a later upgrade works again."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from meshd import config
from meshd.adapters import identity, ledger_export, state_dir, trust
from meshd.adapters.invite_store import STORE_FILE, SqliteInviteStore
from meshd.adapters.ledger import LEDGER_FILE, Ledger
from meshd.adapters.sqlite_schema import SchemaError
from meshd.core.membership import MembershipCertificate
from meshd.core.receipts import verify_export

FIRST_RELEASE = Path(__file__).parents[2] / "golden" / "state_v1"
NOW = 1_900_000_000.0


def first_release_node(tmp_path: Path, name: str) -> tuple[Path, config.Config]:
    """A copy of node ``name``'s state directory as the first release left it."""
    state = tmp_path / name
    shutil.copytree(FIRST_RELEASE / name / "state", state)
    state.chmod(0o700)
    for key in state.glob("*.key"):  # git keeps no modes but the executable bit
        key.chmod(0o600)
    return state, config.load(FIRST_RELEASE / name / "meshd.toml")


def files(state: Path) -> dict[str, bytes]:
    """The directory's files but SQLite's journals (reading a database may touch them)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(state.iterdir())
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def schema(path: Path) -> int | None:
    return state_dir.store_schema(path)


def test_a_first_release_node_is_upgraded_with_a_copy_and_its_receipts_verify(
    tmp_path: Path,
) -> None:
    state, cfg = first_release_node(tmp_path, "a")
    before = files(state)
    assert state_dir.found_schema(state) == 1
    for store in (Ledger, SqliteInviteStore):  # not opened as they are: upgraded first
        with pytest.raises(SchemaError, match="schema 0, older than this meshd's 1"):
            store.open(state)
    with pytest.raises(ledger_export.ExportError, match="older than this meshd's 1: start"):
        list(ledger_export.jsonl(state, cfg.mesh.admin_keys))
    assert files(state) == before

    done = state_dir.upgrade(state, NOW)
    assert done is not None and (done.schema, done.to) == (1, state_dir.STATE_VERSION)
    assert done.stores == {LEDGER_FILE: 0, STORE_FILE: 0}
    assert done.copy == state / "upgrades" / "schema-1-20300317T174640Z"
    copied = files(done.copy)
    assert copied.keys() == before.keys()
    for name, data in before.items():  # the databases through SQLite's backup, the rest as is
        if name.endswith(".sqlite"):
            assert schema(done.copy / name) == 0
        else:
            assert copied[name] == data, name
    assert (done.copy / identity.IDENTITY_KEY).stat().st_mode & 0o777 == 0o600
    assert json.loads((state / "state.version").read_text())["schema"] == 2
    assert schema(state / LEDGER_FILE) == schema(state / STORE_FILE) == 1

    # The node is what it was: its keys, its membership, its invite, its receipts.
    ident = identity.load(state)
    cert = MembershipCertificate.decode((state / trust.MEMBERSHIP_FILE).read_bytes())
    own = trust.load(state, cfg.mesh.admin_keys, ident.node_id, cert.not_before + 60)
    assert own.certificate.node_id == ident.node_id
    store = SqliteInviteStore.open(state)
    assert store.db.table("invites").count == 1
    store.close()
    lines = list(ledger_export.jsonl(state, cfg.mesh.admin_keys))
    report = verify_export(lines, cfg.mesh.admin_keys)
    assert report.ok and report.membership_checked, report.rejections
    with sqlite3.connect(done.copy / LEDGER_FILE) as old:
        [(stored,)] = old.execute("SELECT count(DISTINCT provider || epoch) FROM receipts")
    assert len(report.receipts) == stored >= 1  # each chain's latest, every one verified

    assert state_dir.upgrade(state, NOW + 1) is None  # nothing more to do
    assert state_dir.copies(state) == [done.copy]


def test_a_newer_schema_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    state, _ = first_release_node(tmp_path, "b")
    state_dir.upgrade(state, NOW)
    (state / "state.version").write_text('{"schema": 3, "meshd": "9.9.0"}\n')
    before = files(state)
    with pytest.raises(state_dir.StateError, match=r"state schema 3, written by meshd 9\.9\.0; "):
        state_dir.upgrade(state, NOW)
    (state / "state.version").write_text('{"schema": 2, "meshd": "0.1.0"}\n')
    with sqlite3.connect(state / LEDGER_FILE) as db:
        db.execute("PRAGMA user_version = 7")
    before = files(state)
    with pytest.raises(state_dir.StateError, match="schema 7, written by a newer meshd"):
        state_dir.upgrade(state, NOW)
    with pytest.raises(SchemaError, match="schema 7, written by a newer meshd"):
        Ledger.open(state)
    assert files(state) == before and len(state_dir.copies(state)) == 1
    (state / "state.version").write_text("two")
    with pytest.raises(state_dir.StateError, match="not a state version"):
        state_dir.upgrade(state, NOW)


def test_a_new_directory_is_stamped_without_a_copy(tmp_path: Path) -> None:
    identity.load_or_generate(tmp_path / "n")
    assert state_dir.found_schema(tmp_path / "n") is None
    assert state_dir.upgrade(tmp_path / "n", NOW) is None
    assert state_dir.found_schema(tmp_path / "n") == state_dir.STATE_VERSION
    assert state_dir.copies(tmp_path / "n") == []
    assert state_dir.upgrade(tmp_path / "missing", NOW) is None  # made later, by the keys


def test_a_failed_step_leaves_the_old_schema_and_the_copy(tmp_path: Path) -> None:
    state, _ = first_release_node(tmp_path, "a")
    with sqlite3.connect(state / LEDGER_FILE) as db:  # receipts the upgrade cannot compact
        db.execute("ALTER TABLE receipts RENAME TO kept")
        db.execute("CREATE VIEW receipts AS SELECT * FROM kept")
    with pytest.raises(state_dir.StateError, match="upgrading from schema 1: .*view.* are in"):
        state_dir.upgrade(state, NOW)
    assert state_dir.found_schema(state) == 1 and len(state_dir.copies(state)) == 1
    assert schema(state / LEDGER_FILE) == schema(state / STORE_FILE) == 0  # rolled back


def test_rollback_puts_the_copy_back_and_a_later_upgrade_works_again(tmp_path: Path) -> None:
    state, _ = first_release_node(tmp_path, "a")
    before = files(state)
    first = state_dir.upgrade(state, NOW)
    assert first is not None
    Ledger.open(state).close()  # the new meshd ran: WAL files beside the ledger
    copy, aside = state_dir.rollback(state, NOW + 60)
    assert copy == first.copy and aside.name == "replaced-20300317T174740Z"
    back = files(state)
    assert back.keys() == before.keys() and state_dir.found_schema(state) == 1
    assert schema(state / LEDGER_FILE) == schema(state / STORE_FILE) == 0
    assert {n: d for n, d in back.items() if not n.endswith(".sqlite")} == {
        n: d for n, d in before.items() if not n.endswith(".sqlite")
    }
    assert (aside / "state.version").exists() and schema(aside / LEDGER_FILE) == 1
    with pytest.raises(state_dir.StateError, match="no copy 'nope'"):
        state_dir.rollback(state, NOW, "nope")
    second = state_dir.upgrade(state, NOW + 120)
    assert second is not None and state_dir.copies(state) == [first.copy, second.copy]


def test_meshd_state_commands(tmp_path: Path) -> None:
    state, _ = first_release_node(tmp_path, "b")
    toml = (FIRST_RELEASE / "b" / "meshd.toml").read_text()
    toml = toml.replace("/run/meshd-testbed-v1fx/nodes/b/state", str(state))
    toml = toml.replace("/run/meshd-testbed-v1fx/nodes/b/meshd.sock", str(tmp_path / "s"))
    (tmp_path / "b.toml").write_text(toml)

    def meshd(*args: str) -> subprocess.CompletedProcess[str]:
        run = [sys.executable, "-m", "meshd", "state", *args, "--config", str(tmp_path / "b.toml")]
        return subprocess.run(run, capture_output=True, text=True)

    status = meshd("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["schema"] == 1
    assert json.loads(status.stdout)["stores"][LEDGER_FILE] == {"schema": 0, "knows": 1}
    up = meshd("upgrade")
    assert up.returncode == 0 and "upgraded from schema 1 to 2 (ledger.sqlite from" in up.stdout
    assert "nothing to do" in meshd("upgrade").stdout
    text = meshd("status").stdout
    assert "schema 2, written by meshd" in text and "copies kept before upgrades: schema-1-" in text
    back = meshd("rollback")
    assert back.returncode == 0 and "put back" in back.stdout, back.stderr
    assert state_dir.found_schema(state) == 1


def test_a_directory_whose_files_need_no_change_only_gets_its_version(tmp_path: Path) -> None:
    """Certificates written before meshd first starts (the testbed does), a store this
    meshd made (`meshd invite` before the daemon ran): nothing to copy."""
    state, _ = first_release_node(tmp_path, "b")
    (state / LEDGER_FILE).unlink()
    SqliteInviteStore.open(state).close()
    assert state_dir.found_schema(state) == 1
    assert state_dir.upgrade(state, NOW) is None
    assert state_dir.found_schema(state) == 2 and state_dir.copies(state) == []
