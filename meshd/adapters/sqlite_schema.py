"""Schema versions of meshd's SQLite files (the ledger, the invite store): SQLite's
``user_version``, 0 in the first release, which set none.

A store opened by a meshd that knows an older schema than the file's is refused: its code
would misread or damage what a newer meshd wrote. A file of an older schema is brought up
to date only when asked (``upgrade=True``): meshd.adapters.state_dir does it at start,
after it has copied the state directory, so that every upgrade has a copy to roll back to.
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils


class SchemaError(OSError):
    """A file's schema is newer than this meshd knows, or older and not to be upgraded here."""


def version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def stamp(db: sqlite_utils.Database, to: int) -> None:
    db.execute(f"PRAGMA user_version = {int(to)}")


def pending(db: sqlite_utils.Database, path: Path, known: int, upgrade: bool) -> int | None:
    """Before a store makes its tables: the older schema ``db`` must be upgraded from, or
    None when there is nothing to do (a new file is stamped ``known`` here). SchemaError
    for a newer schema, or an older one when ``upgrade`` is false."""
    found = version(db)
    if found > known:
        raise SchemaError(
            f"{path}: schema {found}, written by a newer meshd; this meshd knows up to "
            f"schema {known}: run that newer meshd, or `meshd state rollback` to the copy "
            "taken before it upgraded this file"
        )
    if found == known:
        return None
    if not db.table_names():  # a new file
        stamp(db, known)
        return None
    if not upgrade:
        raise SchemaError(
            f"{path}: schema {found}, older than this meshd's {known}: start meshd (or run "
            "`meshd state upgrade`) to upgrade it, with a copy kept to roll back to"
        )
    return found
