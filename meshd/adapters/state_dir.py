"""The state directory's schema, upgraded at start with a copy kept to roll back to.

``state.version`` in the state directory says which schema its files follow
(``{"schema": N, "meshd": VERSION}``, VERSION the meshd that last wrote it). The schemas:

- 1: the first release's, which wrote no ``state.version``: the ledger and the invite store
  at SQLite schema 0 (meshd.adapters.sqlite_schema).
- 2: ``state.version``; the ledger at schema 1 (receipts compacted, ``receipt_days``, the
  carried tolerance), the invite store stamped 1 (the same table). The files added since
  the first release (``name.salt``, ``clock.floor``, ``directory``, ``map.jsonl``) are
  made when first needed; the key, certificate, chain and revocation files are unchanged.

A directory without ``state.version`` is schema 1 when it holds anything the first release
wrote beside its keys, and new otherwise (the keys are the same in every schema). One whose
files need no change (the testbed's certificates written before meshd first starts, say)
only gets ``state.version``: there is nothing to copy.

``upgrade`` (``meshd run`` before anything else reads the directory, and ``meshd state
upgrade``): a newer schema than this meshd knows, or a store of a newer one, is refused
with a message saying so; an older one is first copied whole into ``upgrades/schema-N-
<UTC time>/`` (SQLite files through SQLite's online backup, modes kept), then each store is
brought to its schema and ``state.version`` written last. A step that fails leaves the old
``state.version`` and the copy: the next start tries again (each step is idempotent).
``rollback`` puts a copy back for the older meshd, after moving what is there aside into
``upgrades/replaced-<UTC time>/``. A later change of a file's format adds a schema here and
its step to ``upgrade``, which then copies first whenever that step has work to do.

The caller runs with the directory owner's rights (the daemon is that owner; the CLI wraps
these in ``safe_files.as_owner_of``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshd import __version__
from meshd.adapters import invite_store, ledger, node_backup, safe_files, trust
from meshd.adapters.sqlite_schema import SchemaError

STATE_VERSION = 2
VERSION_FILE = "state.version"
UPGRADES_DIR = "upgrades"
COPY_PREFIX = "schema-"
REPLACED_PREFIX = "replaced-"
# What the first release wrote beside the keys: a directory holding one is of schema 1.
FIRST_RELEASE_FILES = (
    trust.MESH_FILE,
    trust.MEMBERSHIP_FILE,
    trust.DELEGATION_FILE,
    trust.REVOCATIONS_FILE,
    trust.CHAIN_FILE,
    "babel-seqno",
    "blocked",
    ledger.LEDGER_FILE,
    invite_store.STORE_FILE,
)
# (file, the schema this meshd knows, how to open it upgraded)
STORES: tuple[tuple[str, int, Any], ...] = (
    (ledger.LEDGER_FILE, ledger.SCHEMA_VERSION, ledger.Ledger),
    (invite_store.STORE_FILE, invite_store.SCHEMA_VERSION, invite_store.SqliteInviteStore),
)


class StateError(OSError):
    """The state directory cannot be used by this meshd as it is, and why."""


@dataclass(frozen=True)
class Upgraded:
    """What ``upgrade`` did: from and to which schema, the copy it kept, the stores it
    brought up to date (file: from which of their schemas)."""

    schema: int
    to: int
    copy: Path
    stores: dict[str, int]


def _now_name(prefix: str, now: float) -> str:
    return prefix + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def found_schema(state_dir: Path) -> int | None:
    """The directory's schema, None for a new one (nothing in it but keys, or nothing)."""
    path = state_dir / VERSION_FILE
    try:
        data = safe_files.read_bytes(path)
    except FileNotFoundError:
        names = set(node_backup.state_files(state_dir)) if state_dir.is_dir() else set()
        return 1 if names & set(FIRST_RELEASE_FILES) else None
    try:
        doc = json.loads(data)
        schema = doc["schema"]
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 2:
            raise ValueError(f"schema {schema!r}")
    except (ValueError, KeyError, TypeError) as exc:
        expected = _version_doc()
        raise StateError(f"{path}: not a state version ({exc}): expected {expected}") from None
    return schema


def written_by(state_dir: Path) -> str:
    """The meshd that last wrote ``state.version``, as it says ("" if unknown)."""
    try:
        doc = json.loads(safe_files.read_bytes(state_dir / VERSION_FILE))
        return str(doc.get("meshd", "")) if isinstance(doc, dict) else ""
    except (OSError, ValueError):
        return ""


def store_schema(path: Path) -> int | None:
    """A store's SQLite schema, read without changing the file; None when it is absent."""
    if safe_files.lstat(path) is None:
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise StateError(f"{path}: cannot read its schema: {exc}") from None
    finally:
        db.close()


def _version_doc() -> str:
    return json.dumps({"schema": STATE_VERSION, "meshd": __version__})


def _stamp(state_dir: Path) -> None:
    safe_files.write_atomically(state_dir / VERSION_FILE, (_version_doc() + "\n").encode(), 0o644)


def _older_stores(state_dir: Path) -> dict[str, int]:
    """The stores of an older schema than this meshd's (file: its schema); StateError
    for one of a newer schema."""
    older = {}
    for name, known, _ in STORES:
        found = store_schema(state_dir / name)
        if found is None or found == known:
            continue
        if found > known:
            raise StateError(
                f"{state_dir / name}: schema {found}, written by a newer meshd; this meshd "
                f"knows up to schema {known}: run that meshd, or `meshd state rollback`"
            )
        older[name] = found
    return older


def _copy(state_dir: Path, into: Path) -> None:
    """Every regular file of ``state_dir`` into the new directory ``into``, modes kept."""
    into.mkdir(mode=0o700)
    for name in node_backup.state_files(state_dir):
        path = state_dir / name
        fd = safe_files.open_regular(path)
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            head = f.read(len(node_backup.SQLITE_MAGIC))
            sqlite = head == node_backup.SQLITE_MAGIC
            data = b"" if sqlite else head + f.read()
        if sqlite:
            data = node_backup.snapshot(path)
        safe_files.write_atomically(into / name, data, mode)


def upgrade(state_dir: Path, now: float) -> Upgraded | None:
    """Bring the state directory to STATE_VERSION (see the module's doc); None when there
    was nothing to do. StateError when it is newer than this meshd, or a step fails."""
    schema = found_schema(state_dir)
    if schema is None:  # new: nothing to upgrade
        if state_dir.is_dir():
            _stamp(state_dir)
        return None
    if schema > STATE_VERSION:
        by = written_by(state_dir)
        raise StateError(
            f"{state_dir}: state schema {schema}, written by meshd {by or '(unknown)'}; this "
            f"meshd ({__version__}) knows up to schema {STATE_VERSION}: run that meshd, or "
            "`meshd state rollback` to the copy taken before it upgraded this directory"
        )
    older = _older_stores(state_dir)
    if not older:  # no file to change (from 1 to 2 only the stores do): the number alone
        if schema != STATE_VERSION:
            _stamp(state_dir)
        return None
    copies = state_dir / UPGRADES_DIR
    if safe_files.lstat(copies, directory=True) is None:
        copies.mkdir(mode=0o700)
    copy = copies / _now_name(f"{COPY_PREFIX}{schema}-", now)
    try:
        _copy(state_dir, copy)
        for name, _, store in STORES:
            if name in older:
                store(state_dir / name, upgrade=True).close()
        _stamp(state_dir)
    except (SchemaError, StateError):
        raise
    except Exception as exc:  # a store that cannot be opened, whatever the library says
        raise StateError(
            f"{state_dir}: upgrading from schema {schema}: {exc} (the files as they were are "
            f"in {copy} when it was made)"
        ) from exc
    return Upgraded(schema, STATE_VERSION, copy, older)


def copies(state_dir: Path) -> list[Path]:
    """The copies kept before upgrades, oldest first."""
    where = state_dir / UPGRADES_DIR
    if not where.is_dir():
        return []
    return sorted(p for p in where.iterdir() if p.name.startswith(COPY_PREFIX) and p.is_dir())


def rollback(state_dir: Path, now: float, name: str | None = None) -> tuple[Path, Path]:
    """Put the copy ``name`` (the newest when None) back in place of the directory's files,
    which move to ``upgrades/replaced-<UTC time>/``; (the copy, where the files went).
    The copy stays, so the newer meshd can upgrade from it again. The daemon must be
    stopped (the caller checks)."""
    kept = copies(state_dir)
    if not kept:
        raise StateError(f"{state_dir / UPGRADES_DIR}: no copy kept: nothing to roll back to")
    if name is None:
        chosen = kept[-1]
    else:
        chosen = next((p for p in kept if p.name == name), None)  # type: ignore[assignment]
        if chosen is None:
            names = ", ".join(p.name for p in kept)
            raise StateError(f"{state_dir / UPGRADES_DIR}: no copy {name!r} (kept: {names})")
    aside = state_dir / UPGRADES_DIR / _now_name(REPLACED_PREFIX, now)
    aside.mkdir(mode=0o700)
    for entry in os.scandir(state_dir):  # SQLite's journals too: they belong to the files
        if entry.is_file(follow_symlinks=False) or entry.is_symlink():
            os.rename(entry.path, aside / entry.name)
    for file in node_backup.state_files(chosen):
        fd = safe_files.open_regular(chosen / file)
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            data = f.read()
        safe_files.write_atomically(state_dir / file, data, mode)
    return chosen, aside


def status(state_dir: Path) -> dict[str, Any]:
    """The directory's schema and its stores', beside what this meshd knows, and the copies."""
    stores = {
        name: {"schema": store_schema(state_dir / name), "knows": known}
        for name, known, _ in STORES
    }
    return {
        "state_dir": str(state_dir),
        "schema": found_schema(state_dir),
        "knows": STATE_VERSION,
        "written_by": written_by(state_dir),
        "stores": stores,
        "copies": [p.name for p in copies(state_dir)],
    }
