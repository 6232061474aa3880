"""Node identity: an Ed25519 key (signs) and an X25519 WireGuard key (tunnels).

Files under the state directory (DESIGN.md): private keys are ``*.key`` with mode 0600,
public material ``*.pub``. Keys are stored as one line of standard base64, as ``wg`` does.
The node id is the Ed25519 public key, URL-safe base64 without padding (43 characters).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from meshd.adapters import safe_files
from meshd.core.keys import (  # the pure half, for this module's callers
    NODE_ID_LENGTH,
    decode_wireguard_key,
    encode_key,
    node_id_from_public,
    public_from_node_id,
)

__all__ = [
    "NODE_ID_LENGTH",
    "Identity",
    "KeyFileError",
    "decode_wireguard_key",
    "encode_key",
    "generate",
    "load",
    "load_or_generate",
    "node_id_from_public",
    "public_from_node_id",
    "read_private",
    "write_private",
]

IDENTITY_KEY = "identity.key"
IDENTITY_PUB = "identity.pub"
WIREGUARD_KEY = "wireguard.key"
WIREGUARD_PUB = "wireguard.pub"


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or too open."""


@dataclass(frozen=True)
class Identity:
    signing_key: SigningKey
    wireguard_private: bytes

    @property
    def node_id(self) -> str:
        return node_id_from_public(bytes(self.signing_key.verify_key))

    @property
    def wireguard_public(self) -> bytes:
        return bytes(PrivateKey(self.wireguard_private).public_key)

    @property
    def wireguard_public_b64(self) -> str:
        return encode_key(self.wireguard_public)

    def __repr__(self) -> str:  # never print a private key
        return f"Identity(node_id={self.node_id!r})"


def write_private(path: Path, raw: bytes) -> None:
    """A new key file, 0600: O_EXCL refuses anything already there, a link included."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(encode_key(raw) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_private(path: Path) -> bytes:
    """A key file's key, never read through a link (``identity.key -> /etc/shadow``
    planted by the state directory's owner, for root to read), checked on what was opened."""
    try:
        fd = safe_files.open_regular(path)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file is missing") from None
    except safe_files.UnsafeFile as exc:
        raise KeyFileError(str(exc)) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{path}: key file mode is {oct(mode & 0o777)}, expected 0600")
        try:
            return decode_wireguard_key(f.read().decode())
        except ValueError as exc:  # UnicodeDecodeError is one too
            raise KeyFileError(f"{path}: {exc}") from None
        except OSError as exc:
            raise KeyFileError(f"{path}: {exc.strerror}") from None


def generate(state_dir: Path) -> Identity:
    """Create both keys in ``state_dir``; refuse to overwrite existing keys."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in (IDENTITY_KEY, WIREGUARD_KEY):
        if os.path.lexists(state_dir / name):  # a link, even a dangling one, is there too
            raise KeyFileError(f"{state_dir / name}: already exists, not overwriting")
    signing = SigningKey.generate()
    wg_private = bytes(PrivateKey.generate())
    write_private(state_dir / IDENTITY_KEY, bytes(signing))
    write_private(state_dir / WIREGUARD_KEY, wg_private)
    ident = Identity(signing, wg_private)
    safe_files.write_atomically(state_dir / IDENTITY_PUB, f"{ident.node_id}\n".encode(), 0o644)
    wireguard_pub = f"{ident.wireguard_public_b64}\n".encode()
    safe_files.write_atomically(state_dir / WIREGUARD_PUB, wireguard_pub, 0o644)
    return ident


def load(state_dir: Path) -> Identity:
    """Load both keys; raise KeyFileError naming the file and the problem."""
    signing = SigningKey(read_private(state_dir / IDENTITY_KEY))
    wg_private = read_private(state_dir / WIREGUARD_KEY)
    return Identity(signing, wg_private)


def load_or_generate(state_dir: Path) -> Identity:
    if not any(os.path.lexists(state_dir / name) for name in (IDENTITY_KEY, WIREGUARD_KEY)):
        return generate(state_dir)
    return load(state_dir)
