"""One module per CLI subcommand, imported only when that subcommand runs."""

from __future__ import annotations

import argparse
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nacl.signing import SigningKey

    from meshd.adapters.identity import Identity
    from meshd.config import Config
    from meshd.core.membership import OwnMembership


def add_socket_argument(p: argparse.ArgumentParser) -> None:
    """``--socket`` for the commands that call the daemon (``meshd.api.client.locate_socket``)."""
    p.add_argument("--socket", help="control socket (default: $MESHD_SOCKET or /run/meshd)")


def add_config_argument(p: argparse.ArgumentParser) -> None:
    """``--config`` for the commands that read the node's own files (``config_path``)."""
    p.add_argument(
        "--config",
        help="this node's config file (default: $MESHD_CONFIG, else /etc/meshd/meshd.toml)",
    )


def load_node(config_arg: str | None, now: float) -> tuple[Config, Identity, OwnMembership]:
    """This node's config (``--config``, else $MESHD_CONFIG, else /etc/meshd), identity and
    membership, checked at ``now`` against the admin keys its config pins and those they
    handed over to (rotation). ConfigError, KeyFileError or TrustError saying what is wrong."""
    from meshd import config
    from meshd.adapters import identity, trust

    cfg = config.load(config.config_path(config_arg))
    state_dir = Path(cfg.node.state_dir)
    ident = identity.load(state_dir)
    admins = trust.admin_keys(state_dir, cfg.mesh.admin_keys)
    return cfg, ident, trust.load(state_dir, admins, ident.node_id, now)


# The mesh's admin signing key, on the node that holds it (restored from a backup, or put
# there when the mesh was made): apart from the node's own identity key, so that it can be
# backed up, moved to another node and rotated without changing any node's id.
ADMIN_KEY = "admin.key"


def load_admin_key(state_dir: Path, own: Identity, admins: Collection[str]) -> SigningKey:
    """The admin key this node holds: ``state_dir/admin.key``, else its own identity key
    when that is itself one of the mesh's ``admins``. ValueError saying why there is none:
    a delegation lets a node invite, never revoke or rotate."""
    from nacl.signing import SigningKey

    from meshd.adapters import identity

    path = state_dir / ADMIN_KEY
    if path.exists():
        try:
            key = SigningKey(identity.read_private(path))
        except identity.KeyFileError as exc:
            raise ValueError(str(exc)) from None
        node_id = identity.node_id_from_public(bytes(key.verify_key))
        if node_id not in admins:
            raise ValueError(f"{path}: {node_id} is not an admin key of this node's mesh")
        return key
    if own.node_id in admins:
        return own.signing_key
    raise ValueError(
        f"this node holds no admin key of the mesh ({path} is missing and its own key is "
        "not an admin's): a delegation lets a node invite, not revoke; run this on the "
        "node that holds the admin key (meshd admin-key restore puts a backup there)"
    )


def admin_errors() -> tuple[type[Exception], ...]:
    """What an admin's command (revoke, rotate, approve, a proposal) may fail with, each
    said in one line (a ControlError as "code: message")."""
    from meshd import config
    from meshd.adapters import identity, trust
    from meshd.api.client import ControlError
    from meshd.core.membership import MembershipError

    return (
        config.ConfigError,
        identity.KeyFileError,
        trust.TrustError,
        ControlError,
        MembershipError,
        OSError,
        ValueError,
    )


def add_passphrase_argument(p: argparse.ArgumentParser) -> None:
    """``--passphrase-file`` for the commands that seal or open a backup (``read_passphrase``)."""
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the passphrase from the first line of FILE (default: ask for it)",
    )


def read_passphrase(file: str | None, what: str, confirm: bool) -> bytes:
    """A passphrase: the first line of ``file`` (``--passphrase-file``), else asked on the
    terminal (twice when ``confirm``: it seals something). ValueError without either."""
    import getpass
    import sys

    if file:
        lines = Path(file).read_text().splitlines()
        return (lines[0] if lines else "").encode()
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the passphrase: give --passphrase-file")
    text = getpass.getpass(f"{what} passphrase: ")
    if confirm and getpass.getpass("the same again: ") != text:
        raise ValueError("the two passphrases differ")
    return text.encode()


def write_new(path: str, data: bytes) -> None:
    """A new file (0600) holding ``data``, synced: FileExistsError when anything is there
    (a backup is never written over another)."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
