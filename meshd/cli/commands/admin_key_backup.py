"""meshd admin-key backup --out FILE | restore FILE [--passphrase-file F] [--config FILE]:
the mesh's admin signing key, encrypted with a passphrase, to keep off the node (a USB
stick, a printout of the file), and put back on a node (this one, or a new one after the
old one died) as ``state_dir/admin.key``.

Without the admin key nobody can revoke a node or rotate the key, and it exists on one
node only: a backup is the way back. The file is one JSON object: the admin's node id,
argon2id's salt and limits, and the key's 32-byte seed in a SecretBox (XSalsa20-Poly1305)
under the key argon2id derives from the passphrase. Its MAC catches a wrong passphrase
and an altered file alike; the node id in clear must be the decrypted key's.

The first half (``seal``, ``unseal``) is pure: bytes and passphrase in, bytes or a key out.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.signing import SigningKey

from meshd.adapters.identity import node_id_from_public
from meshd.cli.commands import add_config_argument

FORMAT = "meshd-admin-key-backup"
VERSION = 1
# argon2id: 64 MiB and 3 passes, about 0.4 s here and a few seconds on a Pi (MODERATE's
# 256 MiB took 7.6 s on this machine; a Pi 3 has 1 GiB in all).
OPSLIMIT = 3
MEMLIMIT = 64 * 1024 * 1024
# What a file may ask for: argon2id's floor up to what a Pi can give (an altered file must
# not make restore allocate gigabytes).
OPS_RANGE = (nacl.pwhash.argon2id.OPSLIMIT_MIN, 16)
MEM_RANGE = (8 * 1024, 1024 * 1024 * 1024)
MIN_PASSPHRASE = 8


class BackupError(ValueError):
    """A backup that cannot be read or opened; the message says why in words."""


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )


def seal(
    key: SigningKey,
    passphrase: bytes,
    salt: bytes,
    opslimit: int = OPSLIMIT,
    memlimit: int = MEMLIMIT,
) -> bytes:
    """The backup file's bytes for ``key``; ``salt`` is argon2id's (16 random bytes)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase is too short: at least {MIN_PASSPHRASE} characters")
    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    document = {
        "format": FORMAT,
        "version": VERSION,
        "admin": node_id_from_public(bytes(key.verify_key)),
        "kdf": "argon2id",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": base64.b64encode(salt).decode(),
        "box": base64.b64encode(box.encrypt(bytes(key))).decode(),
    }
    return (json.dumps(document, indent=1) + "\n").encode()


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BackupError(f"not a valid admin key backup: {name!r} is missing or not a {kind}")
    return value


def _bytes(document: dict[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(_field(document, name, str), validate=True)
    except binascii.Error:
        raise BackupError(f"not a valid admin key backup: {name!r} is not base64") from None


def unseal(data: bytes, passphrase: bytes) -> SigningKey:
    """The admin key in a backup; BackupError for a file that is not one, a wrong
    passphrase or an altered file."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BackupError("not a meshd admin key backup (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BackupError("not a meshd admin key backup (no format field of ours)")
    if document.get("version") != VERSION or document.get("kdf") != "argon2id":
        raise BackupError(
            f"backup version {document.get('version')!r} / kdf {document.get('kdf')!r}: "
            f"this meshd reads version {VERSION} with argon2id"
        )
    admin = _field(document, "admin", str)
    opslimit, memlimit = _field(document, "opslimit", int), _field(document, "memlimit", int)
    if not (OPS_RANGE[0] <= opslimit <= OPS_RANGE[1] and MEM_RANGE[0] <= memlimit <= MEM_RANGE[1]):
        raise BackupError(f"argon2id limits {opslimit}/{memlimit} out of range: altered file")
    salt = _bytes(document, "salt")
    if len(salt) != nacl.pwhash.argon2id.SALTBYTES:
        raise BackupError(f"the salt is {len(salt)} bytes, not {nacl.pwhash.argon2id.SALTBYTES}")
    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    try:
        seed = box.decrypt(_bytes(document, "box"))
    except nacl.exceptions.CryptoError:
        raise BackupError("cannot decrypt: wrong passphrase, or the file was altered") from None
    if len(seed) != 32:
        raise BackupError(f"the decrypted key is {len(seed)} bytes, not 32")
    key = SigningKey(seed)
    if node_id_from_public(bytes(key.verify_key)) != admin:
        raise BackupError(f"the file was altered: its key is not the admin key it names, {admin}")
    return key


# ---- the commands (adapters: files, the prompt, the node's config) ------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the passphrase from the first line of FILE (default: ask for it)",
    )
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


def _passphrase(args: argparse.Namespace, confirm: bool) -> bytes:
    if args.passphrase_file:
        lines = Path(args.passphrase_file).read_text().splitlines()
        return (lines[0] if lines else "").encode()
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the passphrase: give --passphrase-file")
    text = getpass.getpass("admin key backup passphrase: ")
    if confirm and getpass.getpass("the same again: ") != text:
        raise ValueError("the two passphrases differ")
    return text.encode()


def backup(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity, trust
    from meshd.cli.commands import load_admin_key, load_node

    try:
        cfg, ident, own = load_node(args.config, time.time())
        key = load_admin_key(cfg.node.state_dir, ident, own.trust.admins)
        data = seal(key, _passphrase(args, confirm=True), nacl.utils.random(16))
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
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
        key = unseal(Path(args.file).read_bytes(), _passphrase(args, confirm=False))
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
