"""meshd admin-key backup / restore: the admin key sealed with a passphrase (argon2id,
SecretBox) and put back as state_dir/admin.key (0600): a round trip, a wrong passphrase,
altered files, and restores that must not replace or accept the wrong key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from meshd import cli
from meshd.adapters import identity
from meshd.cli.commands import ADMIN_KEY, load_admin_key
from meshd.cli.commands.admin_key_backup import BackupError, seal, unseal
from tests.golden.membership.make_vectors import ADMIN, node_id
from tests.local_privilege import plant, untouched
from tests.unit.cli.test_invite_command import _node

PASS = b"correct horse battery"
SALT = bytes(range(16))


def test_a_round_trip_gives_the_same_key_back() -> None:
    data = seal(ADMIN, PASS, SALT)
    assert bytes(ADMIN) not in data and bytes(ADMIN).hex().encode() not in data
    assert json.loads(data)["admin"] == node_id(ADMIN)
    assert unseal(data, PASS) == ADMIN


def test_a_wrong_passphrase_is_refused() -> None:
    with pytest.raises(BackupError, match="wrong passphrase, or the file was altered"):
        unseal(seal(ADMIN, PASS, SALT), b"correct horse battery!")


def _altered(field: str, value: object) -> bytes:
    document = json.loads(seal(ADMIN, PASS, SALT))
    document[field] = value
    return json.dumps(document).encode()


def test_altered_files_are_refused_with_the_reason() -> None:
    document = json.loads(seal(ADMIN, PASS, SALT))
    box = bytearray(document["box"].encode())
    box[40] = ord("A") if box[40] != ord("A") else ord("B")  # one ciphertext character
    with pytest.raises(BackupError, match="wrong passphrase, or the file was altered"):
        unseal(_altered("box", box.decode()), PASS)
    other = node_id(SigningKey(bytes(32)))
    with pytest.raises(BackupError, match="its key is not the admin key it names"):
        unseal(_altered("admin", other), PASS)
    with pytest.raises(BackupError, match="out of range"):
        unseal(_altered("memlimit", 1 << 40), PASS)
    with pytest.raises(BackupError, match="'salt' is not base64"):
        unseal(_altered("salt", "not base64!"), PASS)
    with pytest.raises(BackupError, match="not JSON"):
        unseal(seal(ADMIN, PASS, SALT)[:-20], PASS)
    with pytest.raises(BackupError, match="no format field"):
        unseal(b'{"admin": "x"}', PASS)


def test_a_short_passphrase_is_refused() -> None:
    with pytest.raises(BackupError, match="at least 8"):
        seal(ADMIN, b"short", SALT)


def _run(*argv: str) -> int:
    return cli.main(["admin-key", *argv])


def test_backup_on_the_admin_node_and_restore_on_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = _node(tmp_path / "holder", admin=False, delegation=True)
    state = tmp_path / "holder" / "state"
    secret = tmp_path / "passphrase"
    secret.write_text(PASS.decode() + "\n")
    out = tmp_path / "admin.backup"
    # A delegate alone holds no admin key: nothing to back up.
    assert _run("backup", "--out", str(out), "--config", str(holder), "--passphrase-file",
                str(secret)) == 1  # fmt: skip
    assert "holds no admin key" in capsys.readouterr().err and not out.exists()

    identity.write_private(state / ADMIN_KEY, bytes(ADMIN))
    assert _run("backup", "--out", str(out), "--config", str(holder), "--passphrase-file",
                str(secret)) == 0  # fmt: skip
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert unseal(out.read_bytes(), PASS) == ADMIN
    assert _run("backup", "--out", str(out), "--config", str(holder), "--passphrase-file",
                str(secret)) == 1  # fmt: skip
    assert "exists: not overwriting" in capsys.readouterr().err

    fresh = _node(tmp_path / "fresh", admin=False)
    fresh_state = tmp_path / "fresh" / "state"
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    assert _run("restore", str(out), "--config", str(fresh), "--passphrase-file", str(wrong)) == 1
    assert "wrong passphrase" in capsys.readouterr().err
    assert not (fresh_state / ADMIN_KEY).exists()

    assert _run("restore", str(out), "--config", str(fresh), "--passphrase-file", str(secret)) == 0
    assert stat.S_IMODE((fresh_state / ADMIN_KEY).stat().st_mode) == 0o600
    ident = identity.load(fresh_state)
    assert load_admin_key(fresh_state, ident, [node_id(ADMIN)]) == ADMIN
    # Again: the same key is there, nothing to do.
    assert _run("restore", str(out), "--config", str(fresh), "--passphrase-file", str(secret)) == 0
    assert "already" in capsys.readouterr().out


def test_restore_refuses_to_replace_another_key_or_a_stranger_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _node(tmp_path, admin=False)
    state = tmp_path / "state"
    secret = tmp_path / "passphrase"
    secret.write_text(PASS.decode())
    stranger = tmp_path / "stranger.backup"
    stranger.write_bytes(seal(SigningKey(bytes(32)), PASS, SALT))
    assert _run("restore", str(stranger), "--config", str(config), "--passphrase-file",
                str(secret)) == 1  # fmt: skip
    assert "is not an admin key of this node's mesh" in capsys.readouterr().err

    other = SigningKey(bytes(range(32)))
    identity.write_private(state / ADMIN_KEY, bytes(other))
    backup = tmp_path / "admin.backup"
    backup.write_bytes(seal(ADMIN, PASS, SALT))
    assert _run("restore", str(backup), "--config", str(config), "--passphrase-file",
                str(secret)) == 1  # fmt: skip
    assert "holds another key: not replacing it" in capsys.readouterr().err
    assert identity.read_private(state / ADMIN_KEY) == bytes(other)


def test_restore_writes_no_key_through_a_link_planted_in_the_state_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _node(tmp_path, admin=False)
    secret = tmp_path / "passphrase"
    secret.write_text(PASS.decode())
    backup = tmp_path / "admin.backup"
    backup.write_bytes(seal(ADMIN, PASS, SALT))
    victim = plant(tmp_path / "state", ADMIN_KEY)
    assert _run("restore", str(backup), "--config", str(config), "--passphrase-file",
                str(secret)) == 1  # fmt: skip
    assert "admin.key: is a symbolic link: not following it" in capsys.readouterr().err
    untouched(victim)
