"""A node's backup: its config and state directory in one file sealed with a passphrase.

A household moving to a new SD card (or a new Pi) keeps its node: the same id, keys,
certificates, mesh definition and ledger of receipts. ``meshd backup`` writes the file
(meshd.core.sealed: argon2id and a SecretBox, as the admin key's backup); ``meshd restore``
or ``provision --restore`` puts it back.

The payload is a tar archive: ``manifest.json`` (the node id and name, when, which meshd,
each state file's mode), ``meshd.toml`` (the config) and ``state/NAME`` for every regular
file of the state directory but SQLite's journals and temporary files. An SQLite database
(the ledger, the invite store) is copied with SQLite's online backup, so a backup taken
while the daemon writes is a consistent snapshot. The clear fields of the sealed file (the
node id and name, when) are checked against the manifest inside, and the identity key
inside against the node id.

Restoring writes only into a state directory that holds no identity key: one that holds
this node's key already has its own, newer ledger (nothing is replaced), and one that holds
another node's key is refused.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from meshd import __version__
from meshd.adapters import identity, safe_files
from meshd.core import sealed
from meshd.core.keys import decode_wireguard_key, node_id_from_public

KIND = ("meshd-node-backup", 1)
WHAT = "node backup"
MANIFEST = "manifest.json"
CONFIG = "meshd.toml"
STATE = "state/"
SQLITE_MAGIC = b"SQLite format 3\x00"
SKIPPED = ("-wal", "-shm", "-journal", ".tmp")  # SQLite's journals, files being replaced
CLEAR = ("node", "name", "created")


@dataclass(frozen=True)
class Backup:
    """What a backup holds: a node's config and state files (name -> mode, bytes)."""

    node: str
    name: str
    created: float
    meshd: str
    config: bytes
    files: dict[str, tuple[int, bytes]]


def state_files(state_dir: Path) -> list[str]:
    """The names of the state directory's files a backup takes."""
    names = []
    for entry in sorted(os.scandir(state_dir), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name.endswith(SKIPPED):
            continue
        if entry.is_file(follow_symlinks=False):
            names.append(entry.name)
    return names


def snapshot(path: Path) -> bytes:
    """An SQLite database's bytes as of one moment, through SQLite's online backup (the
    daemon may be writing it; its WAL is folded in)."""
    owner = safe_files.directory_owner(path.parent)
    with tempfile.TemporaryDirectory(prefix="meshd-backup-") as scratch:
        if owner is not None:  # SQLite runs as the directory's owner, and writes here
            os.chown(scratch, *owner)
        copy = Path(scratch) / path.name
        with safe_files.as_owner_of(path.parent):
            source, target = sqlite3.connect(path), sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
        return copy.read_bytes()


def collect(config_path: Path, state_dir: Path, node: str, name: str) -> Backup:
    """The backup of the node whose config is ``config_path`` (OSError when a file
    cannot be read; a link in the state directory is refused, never followed)."""
    files: dict[str, tuple[int, bytes]] = {}
    for entry in state_files(state_dir):
        path = state_dir / entry
        fd = safe_files.open_regular(path)
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            head = f.read(len(SQLITE_MAGIC))
            data = snapshot(path) if head == SQLITE_MAGIC else head + f.read()
        files[entry] = (mode, data)
    if identity.IDENTITY_KEY not in files:
        raise OSError(f"{state_dir / identity.IDENTITY_KEY}: missing: nothing to back up")
    config = safe_files.read_bytes(config_path)
    return Backup(node, name, time.time(), __version__, config, files)


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    archive.addfile(info, io.BytesIO(data))


def pack(backup: Backup) -> bytes:
    """The payload: a gzipped tar of the manifest, the config and the state files."""
    manifest = {
        "node": backup.node,
        "name": backup.name,
        "created": backup.created,
        "meshd": backup.meshd,
        "files": {name: mode for name, (mode, _) in backup.files.items()},
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        _add(archive, MANIFEST, json.dumps(manifest, indent=1).encode())
        _add(archive, CONFIG, backup.config)
        for name, (mode, data) in backup.files.items():
            _add(archive, STATE + name, data, mode)
    return out.getvalue()


def seal(backup: Backup, passphrase: bytes, salt: bytes) -> bytes:
    """The backup file's bytes."""
    clear = {"node": backup.node, "name": backup.name, "created": backup.created}
    return sealed.seal(pack(backup), passphrase, salt, KIND, clear)


def _fail(why: str) -> sealed.SealError:
    return sealed.SealError(f"not a valid {WHAT}: {why}")


def _members(payload: bytes) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
            for member in archive:
                if not member.isfile():
                    raise _fail(f"{member.name!r} is not a regular file")
                f = archive.extractfile(member)
                assert f is not None  # a regular member has its bytes
                members[member.name] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise _fail(f"its contents are not an archive ({exc})") from None
    return members


def unpack(payload: bytes) -> Backup:
    """The backup in a payload (SealError when it is not one: only plain names, regular
    members, each state file the manifest names and nothing else)."""
    members = _members(payload)
    try:
        manifest = json.loads(members.pop(MANIFEST))
        config = members.pop(CONFIG)
    except KeyError as exc:
        raise _fail(f"{exc.args[0]} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _fail(f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict):
        raise _fail(f"{MANIFEST} is not an object")
    modes = sealed.field(manifest, "files", dict, WHAT)
    named = {STATE + name for name in modes}
    if set(members) != named:
        raise _fail(f"its files differ from its manifest's: {sorted(set(members) ^ named)}")
    files: dict[str, tuple[int, bytes]] = {}
    for name, mode in modes.items():
        if "/" in name or name in ("", ".", "..") or name.startswith("."):
            raise _fail(f"a state file named {name!r}")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
            raise _fail(f"{name}: mode {mode!r}")
        files[name] = (mode, members[STATE + name])
    return Backup(
        node=sealed.field(manifest, "node", str, WHAT),
        name=sealed.field(manifest, "name", str, WHAT),
        created=float(sealed.field(manifest, "created", (int, float), WHAT)),
        meshd=sealed.field(manifest, "meshd", str, WHAT),
        config=config,
        files=files,
    )


def describe(data: bytes) -> dict[str, object]:
    """A backup file's clear fields (which node, when), before a passphrase is asked."""
    document = sealed.read(data, KIND, WHAT)
    return {name: document.get(name) for name in CLEAR}


def unseal(data: bytes, passphrase: bytes) -> Backup:
    """The backup in a file; SealError for a file that is not one, a wrong passphrase, an
    altered file (the clear fields must be the manifest's, the key the node id's)."""
    document, payload = sealed.unseal(data, passphrase, KIND, WHAT)
    backup = unpack(payload)
    for name in CLEAR:
        if document.get(name) != getattr(backup, name):
            raise sealed.SealError(f"the file was altered: its {name} in clear is not its own")
    key = backup.files.get(identity.IDENTITY_KEY)
    if key is None:
        raise _fail(f"no {identity.IDENTITY_KEY}")
    try:
        seed = decode_wireguard_key(key[1].decode())
        node = node_id_from_public(bytes(SigningKey(seed).verify_key))
    except ValueError:
        raise _fail(f"its {identity.IDENTITY_KEY} is not a key") from None
    if node != backup.node:
        raise sealed.SealError(f"the file was altered: its key is {node}, not {backup.node}")
    return backup


def present(state_dir: Path) -> str | None:
    """The node id whose identity key ``state_dir`` holds (None: none, a fresh node)."""
    if not os.path.lexists(state_dir / identity.IDENTITY_KEY):
        return None
    return identity.load(state_dir).node_id


def restore(backup: Backup, config_path: Path, state_dir: Path) -> list[Path]:
    """Write the backup's config and state files (the state directory's owner gets them);
    the caller has checked that ``state_dir`` holds no identity key; a file of the backup
    already there (or another config) is refused before anything is written. Returns
    what was written. The config is written last: a node is not configured before its keys exist."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    clashes = [str(state_dir / n) for n in backup.files if os.path.lexists(state_dir / n)]
    if os.path.lexists(config_path) and safe_files.read_bytes(config_path) != backup.config:
        clashes.append(f"{config_path} (another config)")
    if clashes:
        raise OSError(f"already there, not replacing: {', '.join(clashes)} (move them first)")
    owner = safe_files.directory_owner(state_dir)
    written = []
    for name, (mode, data) in backup.files.items():
        safe_files.write_atomically(state_dir / name, data, mode, owner)
        written.append(state_dir / name)
    config_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    safe_files.write_atomically(config_path, backup.config, 0o644)
    written.append(config_path)
    return written
