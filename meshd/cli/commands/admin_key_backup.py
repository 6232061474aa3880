"""meshd admin-key backup --out FILE | restore FILE [--passphrase-file F] [--config FILE]:
the mesh's admin signing key, encrypted with a passphrase, to keep off the node (a USB
stick, a printout of the file), and put back on a node (this one, or a new one after the
old one died) as ``state_dir/admin.key``.

Without the admin key nobody can revoke a node or rotate the key, and it exists on one
node only: a backup is the way back. The file is one JSON object: the admin's node id,
argon2id's salt and limits, and the key's 32-byte seed in a SecretBox (XSalsa20-Poly1305)
under the key argon2id derives from the passphrase. Its MAC catches a wrong passphrase
and an altered file alike; the node id in clear must be the decrypted key's.

The first half (``seal``, ``unseal``) is pure: bytes and passphrase in, bytes or a key out;
the sealing itself is meshd.core.sealed's, shared with ``meshd backup``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import nacl.utils
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.cli.commands import (
    add_config_argument,
    add_passphrase_argument,
    read_passphrase,
    write_new,
)
from meshd.core import sealed

KIND = ("meshd-admin-key-backup", 1)
WHAT = "admin key backup"
BackupError = sealed.SealError


def seal(
    key: SigningKey,
    passphrase: bytes,
    salt: bytes,
    opslimit: int = sealed.OPSLIMIT,
    memlimit: int = sealed.MEMLIMIT,
) -> bytes:
    """The backup file's bytes for ``key``; ``salt`` is argon2id's (16 random bytes)."""
    admin = node_id_from_public(bytes(key.verify_key))
    return sealed.seal(bytes(key), passphrase, salt, KIND, {"admin": admin}, opslimit, memlimit)


def unseal(data: bytes, passphrase: bytes) -> SigningKey:
    """The admin key in a backup; BackupError for a file that is not one, a wrong
    passphrase or an altered file."""
    admin = sealed.field(sealed.read(data, KIND, WHAT), "admin", str, WHAT)
    _, seed = sealed.unseal(data, passphrase, KIND, WHAT)
    if len(seed) != 32:
        raise BackupError(f"the decrypted key is {len(seed)} bytes, not 32")
    key = SigningKey(seed)
    if node_id_from_public(bytes(key.verify_key)) != admin:
        raise BackupError(f"the file was altered: its key is not the admin key it names, {admin}")
    return key


# ---- the commands (adapters: files, the prompt, the node's config) ------------------------


def _common(p: argparse.ArgumentParser) -> None:
    add_passphrase_argument(p)
    add_config_argument(p)


def add_backup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """``backup`` under ``meshd admin-key``'s subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "backup",
        help="write the admin key, encrypted with a passphrase, to a file",
        description="Write this node's admin key (state_dir/admin.key, or its own key when "
        "that is an admin's) to FILE, encrypted with a passphrase (argon2id, SecretBox).",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the backup to write (new file)")
    _common(p)
    p.set_defaults(admin_key_run=backup)
    return p


def add_restore_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """``restore`` under ``meshd admin-key``'s subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "restore",
        help="put a backed-up admin key on this node (state_dir/admin.key, 0600)",
        description="Decrypt a backup made by `meshd admin-key backup` and write the key to "
        "this node's state_dir/admin.key (mode 0600); refuses to replace a different key.",
    )
    p.add_argument("file", metavar="FILE", help="the backup to restore")
    _common(p)
    p.set_defaults(admin_key_run=restore)
    return p


def backup(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity, trust
    from meshd.cli.commands import load_admin_key, load_node

    try:
        cfg, ident, own = load_node(args.config, time.time())
        key = load_admin_key(cfg.node.state_dir, ident, own.trust.admins)
        data = seal(
            key, read_passphrase(args.passphrase_file, WHAT, confirm=True), nacl.utils.random(16)
        )
        write_new(args.out, data)
    except FileExistsError:
        print(f"meshd admin-key backup: {args.out} exists: not overwriting it", file=sys.stderr)
        return 1
    except (config.ConfigError, identity.KeyFileError, trust.TrustError, OSError, ValueError) as e:
        print(f"meshd admin-key backup: {e}", file=sys.stderr)
        return 1
    admin = node_id_from_public(bytes(key.verify_key))
    print(f"admin key {admin} written to {args.out}, encrypted: keep it and the passphrase apart")
    return 0


def restore(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity, trust
    from meshd.cli.commands import ADMIN_KEY, load_node

    try:
        key = unseal(
            Path(args.file).read_bytes(), read_passphrase(args.passphrase_file, WHAT, confirm=False)
        )
        admin = node_id_from_public(bytes(key.verify_key))
        cfg, ident, own = load_node(args.config, time.time())
        if admin not in own.trust.admins:
            raise ValueError(f"{admin} is not an admin key of this node's mesh")
        path = cfg.node.state_dir / ADMIN_KEY
        if path.exists():
            present = SigningKey(identity.read_private(path))
            if present != key:
                raise ValueError(f"{path} holds another key: not replacing it (move it first)")
            print(f"{path} holds admin key {admin} already: nothing to do")
            return 0
        identity.write_private(path, bytes(key))  # 0600, new file only, synced
    except (config.ConfigError, identity.KeyFileError, trust.TrustError, OSError, ValueError) as e:
        print(f"meshd admin-key restore: {e}", file=sys.stderr)
        return 1
    print(f"admin key {admin} restored to {path} (0600)")
    return 0
