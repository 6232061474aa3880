"""meshd backup / restore: a node in one sealed file, and back (meshd.adapters.node_backup).
The daemon's side (a backup of a running node, restored on a new machine, rejoining with
its ledger) is tests/vm/test_guest_node.py's."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from meshd import cli
from meshd.adapters import identity, node_backup
from meshd.adapters.ledger import Ledger
from meshd.core import sealed
from tests.unit.cli.test_invite_command import _node

PASS = b"correct horse battery"
SALT = bytes(range(16))


def _secret(tmp_path: Path, text: bytes = PASS) -> str:
    path = tmp_path / f"passphrase-{len(text)}"
    path.write_bytes(text + b"\n")
    return str(path)


def _files(state: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.name: (stat.S_IMODE(p.stat().st_mode), p.read_bytes())
        for p in state.iterdir()
        if not p.name.endswith(("-wal", "-shm"))
    }


def test_a_node_backed_up_while_its_ledger_is_open_comes_back_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _node(tmp_path, admin=False, delegation=True)
    state = tmp_path / "state"
    ledger = Ledger.open(state)  # the daemon's connection: what it wrote is in the WAL
    ledger.add_exit_usage("2026-12", {"neighbour": 12345})
    assert (state / "ledger.sqlite-wal").stat().st_size > 0
    out = tmp_path / "node.backup"
    argv = ["backup", "--out", str(out), "--config", str(config)]
    assert cli.main([*argv, "--passphrase-file", _secret(tmp_path)]) == 0
    assert "holds the node's private keys" in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = (state / identity.IDENTITY_KEY).read_bytes()
    assert key not in out.read_bytes() and b"neighbour" not in out.read_bytes()
    assert cli.main([*argv, "--passphrase-file", _secret(tmp_path)]) == 1
    assert "exists: not overwriting" in capsys.readouterr().err
    ledger.close()

    before = _files(state)
    node = identity.load(state).node_id
    state.rename(tmp_path / "old-card")
    config.unlink()
    restore = ["restore", str(out), "--config", str(config)]
    assert cli.main([*restore, "--passphrase-file", _secret(tmp_path, b"not the one!")]) == 1
    assert "wrong passphrase" in capsys.readouterr().err and not state.exists()

    assert cli.main([*restore, "--passphrase-file", _secret(tmp_path)]) == 0
    assert f"node {node} restored" in capsys.readouterr().out
    after = _files(state)
    assert set(after) == set(before)
    for name, (mode, data) in before.items():
        if name != "ledger.sqlite":  # a snapshot: the same rows, not the same pages
            assert after[name] == (mode, data), name
    assert Ledger.open(state).exit_usage("2026-12") == {"neighbour": 12345}
    assert identity.load(state).node_id == node
    assert config.read_bytes()

    # Again, on the node it made: its own files are newer than the backup's, kept.
    assert cli.main([*restore, "--passphrase-file", _secret(tmp_path)]) == 0
    assert "nothing restored" in capsys.readouterr().out


def test_restore_refuses_another_node_and_files_in_the_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _node(tmp_path / "a", admin=False)
    out = tmp_path / "a.backup"
    secret = _secret(tmp_path)
    assert cli.main(["backup", "--out", str(out), "--config", str(config),
                     "--passphrase-file", secret]) == 0  # fmt: skip
    restore = ["restore", str(out), "--config", str(config), "--passphrase-file", secret]
    state = tmp_path / "a" / "state"
    theirs = state.rename(tmp_path / "a-state")
    identity.generate(state)  # another node lives here now
    assert cli.main(restore) == 1
    assert "holds another node's keys" in capsys.readouterr().err

    for p in state.iterdir():
        p.unlink()
    (state / "mesh.cert").write_bytes(b"someone's")  # no key, but a file of the backup's
    assert cli.main(restore) == 1
    assert "already there, not replacing" in capsys.readouterr().err
    assert (state / "mesh.cert").read_bytes() == b"someone's"
    assert not (state / identity.IDENTITY_KEY).exists()
    assert sorted(os.listdir(theirs))  # untouched


def test_altered_or_foreign_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    config = _node(tmp_path, admin=False)
    state = tmp_path / "state"
    made = node_backup.collect(config, state, identity.load(state).node_id, "first")
    data = node_backup.seal(made, PASS, SALT)
    assert node_backup.unseal(data, PASS).files == made.files
    assert node_backup.describe(data)["name"] == "first"

    document = json.loads(data)
    document["name"] = "someone else"
    with pytest.raises(sealed.SealError, match="its name in clear is not its own"):
        node_backup.unseal(json.dumps(document).encode(), PASS)
    with pytest.raises(sealed.SealError, match="not a meshd node backup"):
        node_backup.unseal(b'{"format": "meshd-admin-key-backup"}', PASS)

    def sealed_payload(payload: bytes) -> bytes:
        clear = {"node": made.node, "name": made.name, "created": made.created}
        return sealed.seal(payload, PASS, SALT, node_backup.KIND, clear)

    with pytest.raises(sealed.SealError, match="not an archive"):
        node_backup.unseal(sealed_payload(b"plain bytes"), PASS)
    # An archive naming a file outside the state directory, or holding a link.
    members = _members(node_backup.pack(made))
    manifest = json.loads(members["manifest.json"])
    manifest["files"]["../escape"] = 0o600
    members |= {"manifest.json": json.dumps(manifest).encode(), "state/../escape": b"x"}
    with pytest.raises(sealed.SealError, match="a state file named '../escape'"):
        node_backup.unseal(sealed_payload(_archive(members)), PASS)
    link = tarfile.TarInfo("state/identity.pub")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    with pytest.raises(sealed.SealError, match="is not a regular file"):
        node_backup.unseal(sealed_payload(_archive(_members(node_backup.pack(made)), link)), PASS)
    # Another node's key inside, under this node's id.
    other = dict(made.files)
    other[identity.IDENTITY_KEY] = (0o600, f"{identity.encode_key(bytes(32))}\n".encode())
    swapped = node_backup.Backup(made.node, made.name, made.created, made.meshd, made.config, other)
    with pytest.raises(sealed.SealError, match="its key is"):
        node_backup.unseal(node_backup.seal(swapped, PASS, SALT), PASS)


def _members(packed: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as archive:
        for member in archive:
            f = archive.extractfile(member)
            assert f is not None
            out[member.name] = f.read()
    return out


def _archive(members: dict[str, bytes], *extra: tarfile.TarInfo) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
        for info in extra:
            archive.addfile(info)
    return out.getvalue()
