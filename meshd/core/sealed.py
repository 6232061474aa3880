"""Files sealed with a passphrase: the admin key's backup and a node's backup.

A sealed file is one JSON object: its ``format`` and ``version``, the fields its kind keeps
in clear (which node, when), argon2id's salt and limits, and the payload in a SecretBox
(XSalsa20-Poly1305) under the key argon2id derives from the passphrase. The box's MAC
catches a wrong passphrase and an altered payload alike; whoever reads a file checks its
clear fields against what the payload says. Pure: bytes and a passphrase in, bytes out.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret

# argon2id: 64 MiB and 3 passes, about 0.4 s here and a few seconds on a Pi (MODERATE's
# 256 MiB took 7.6 s on this machine; a Pi 3 has 1 GiB in all).
OPSLIMIT = 3
MEMLIMIT = 64 * 1024 * 1024
# What a file may ask for: argon2id's floor up to what a Pi can give (an altered file must
# not make a restore allocate gigabytes).
OPS_RANGE = (nacl.pwhash.argon2id.OPSLIMIT_MIN, 16)
MEM_RANGE = (8 * 1024, 1024 * 1024 * 1024)
MIN_PASSPHRASE = 8
SALT_BYTES = nacl.pwhash.argon2id.SALTBYTES
KEPT = ("format", "version", "kdf", "opslimit", "memlimit", "salt", "box")


class SealError(ValueError):
    """A sealed file that cannot be read or opened; the message says why in words."""


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )


def seal(
    payload: bytes,
    passphrase: bytes,
    salt: bytes,
    kind: tuple[str, int],
    clear: dict[str, Any],
    opslimit: int = OPSLIMIT,
    memlimit: int = MEMLIMIT,
) -> bytes:
    """The file's bytes: ``payload`` sealed under ``passphrase``, ``kind`` (format, version)
    and the ``clear`` fields beside it; ``salt`` is argon2id's (16 random bytes)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise SealError(f"the passphrase is too short: at least {MIN_PASSPHRASE} characters")
    if set(clear) & set(KEPT):
        raise ValueError(f"clear fields may not be named {sorted(set(clear) & set(KEPT))}")
    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    document = {
        "format": kind[0],
        "version": kind[1],
        **clear,
        "kdf": "argon2id",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": base64.b64encode(salt).decode(),
        "box": base64.b64encode(box.encrypt(payload)).decode(),
    }
    return (json.dumps(document, indent=1) + "\n").encode()


def field(document: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``document[name]`` when it is a ``kind`` (never a bool for a number); SealError else."""
    value = document.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SealError(f"not a valid {what}: {name!r} is missing or not a {kind}")
    return value


def _bytes(document: dict[str, Any], name: str, what: str) -> bytes:
    try:
        return base64.b64decode(field(document, name, str, what), validate=True)
    except binascii.Error:
        raise SealError(f"not a valid {what}: {name!r} is not base64") from None


def read(data: bytes, kind: tuple[str, int], what: str) -> dict[str, Any]:
    """The file's JSON object once it is one of ``kind``, unopened (its clear fields say
    what it holds before anyone types a passphrase)."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SealError(f"not a meshd {what} (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != kind[0]:
        raise SealError(f"not a meshd {what} (no format field of ours)")
    if document.get("version") != kind[1] or document.get("kdf") != "argon2id":
        raise SealError(
            f"{what} version {document.get('version')!r} / kdf {document.get('kdf')!r}: "
            f"this meshd reads version {kind[1]} with argon2id"
        )
    return document


def unseal(
    data: bytes, passphrase: bytes, kind: tuple[str, int], what: str
) -> tuple[dict[str, Any], bytes]:
    """The file's JSON object and its payload; SealError for a file that is not one of
    ``kind``, a wrong passphrase or an altered file."""
    document = read(data, kind, what)
    opslimit = field(document, "opslimit", int, what)
    memlimit = field(document, "memlimit", int, what)
    if not (OPS_RANGE[0] <= opslimit <= OPS_RANGE[1] and MEM_RANGE[0] <= memlimit <= MEM_RANGE[1]):
        raise SealError(f"argon2id limits {opslimit}/{memlimit} out of range: altered file")
    salt = _bytes(document, "salt", what)
    if len(salt) != SALT_BYTES:
        raise SealError(f"the salt is {len(salt)} bytes, not {SALT_BYTES}")
    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    try:
        payload = box.decrypt(_bytes(document, "box", what))
    except nacl.exceptions.CryptoError:
        raise SealError("cannot decrypt: wrong passphrase, or the file was altered") from None
    return document, payload
