"""The issuer's record of its invites: one SQLite file in the state directory (the adapter
behind meshd.core.invites.redeem.InviteStore: the invites' only I/O).

``meshd invite`` adds a row before it prints the token, so that every token handed out
can be redeemed; the daemon marks the row redeemed with one conditional UPDATE, so that two
redemptions racing (two bootstrap nodes forwarding, a retry) cannot both win. Both write
with ``synchronous=FULL``: a redemption that was answered is on disk.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

import sqlite_utils

from meshd.adapters import safe_files, sqlite_schema
from meshd.adapters.sqlite_schema import SchemaError
from meshd.core.invites.invite import Invite
from meshd.core.invites.redeem import IssuedInvite

STORE_FILE = "invites.sqlite"
TABLE = "invites"
SCHEMA_VERSION = 1  # 1: the first release's table, stamped (sqlite_schema)


class SqliteInviteStore:
    def __init__(self, path: Path, upgrade: bool = False) -> None:
        """``meshd invite`` (root) opens it within ``safe_files.as_owner_of`` the state
        directory, as SQLite follows links. Root making it otherwise makes it empty first,
        new and given to the directory's owner on its descriptor: the daemon, as that
        owner, must be able to record redemptions in it. ``upgrade``: bring a store of an
        older schema up to date (meshd.adapters.state_dir); otherwise one is refused."""
        if safe_files.lstat(path) is None:  # UnsafeFile (an OSError): a link planted there
            owner = safe_files.directory_owner(path.parent)
            if owner is not None:
                safe_files.create(path, 0o644, owner)
        self.path = path
        self.db = sqlite_utils.Database(path)
        try:
            older = sqlite_schema.pending(self.db, path, SCHEMA_VERSION, upgrade)
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.table(TABLE).create(
                {
                    "invite_id": str,
                    "name": str,
                    "mesh_ipv4": str,
                    "issued_at": int,
                    "expires_at": int,
                    "redeemed_by": str,
                    "redeemed_at": int,
                    "certificate": bytes,
                },
                pk="invite_id",
                not_null=("name", "mesh_ipv4", "issued_at", "expires_at"),
                if_not_exists=True,
            )
            if older is not None:  # 0: the same table
                sqlite_schema.stamp(self.db, SCHEMA_VERSION)
        except SchemaError:
            self.db.close()
            raise
        except sqlite3.Error as exc:
            self.db.close()
            raise OSError(f"{path}: {exc}") from exc

    @classmethod
    def open(cls, state_dir: Path, upgrade: bool = False) -> SqliteInviteStore:
        return cls(state_dir / STORE_FILE, upgrade)

    def close(self) -> None:
        self.db.close()

    def record_issued(self, invite: Invite, name: str | None = None) -> None:
        """``name``: the private name the invite commits to (the issuer's own record)."""
        row = {
            "invite_id": invite.invite_id.hex(),
            "name": name or invite.name,
            "mesh_ipv4": str(invite.mesh_ipv4),
            "issued_at": invite.issued_at,
            "expires_at": invite.expires_at,
        }
        try:
            with self.db.conn:
                self.db.table(TABLE).insert(row)
        except sqlite3.Error as exc:
            raise OSError(f"{self.path}: {exc}") from exc

    def lookup(self, invite_id: bytes) -> IssuedInvite | None:
        rows = list(self.db.table(TABLE).rows_where("invite_id = ?", [invite_id.hex()]))
        if not rows:
            return None
        row = rows[0]
        return IssuedInvite(
            invite_id=invite_id,
            name=row["name"],
            mesh_ipv4=ipaddress.IPv4Address(row["mesh_ipv4"]),
            expires_at=row["expires_at"],
            redeemed_by=row["redeemed_by"],
            certificate=row["certificate"],
        )

    def mark_redeemed(self, invite_id: bytes, node_id: str, certificate: bytes, now: int) -> bool:
        try:
            with self.db.conn:
                cursor = self.db.execute(
                    f"UPDATE {TABLE} SET redeemed_by = ?, redeemed_at = ?, certificate = ? "
                    "WHERE invite_id = ? AND redeemed_by IS NULL",
                    [node_id, now, certificate, invite_id.hex()],
                )
        except sqlite3.Error as exc:
            raise OSError(f"{self.path}: {exc}") from exc
        return cursor.rowcount == 1

    def taken_ipv4(self) -> set[ipaddress.IPv4Address]:
        """Every address an invite of ours ever carried (redeemed, pending or expired)."""
        return {ipaddress.IPv4Address(row["mesh_ipv4"]) for row in self.db.table(TABLE).rows}
