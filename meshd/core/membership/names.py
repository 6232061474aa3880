"""Household names that only the neighbours see: a certificate commits to the name (pure).

Every member holds every other member's certificate (the directory, which route origin
validation needs), so a name inside a certificate is told to the whole mesh. A private
name is certified as its commitment instead, a text in the certificate's ``name`` field:

    "sha256:" + base32 (lower case, no padding) of
        SHA-256("meshd-name-v1\\0" | salt (16 octets) | the name, UTF-8 NFC)

59 characters, so it fits the field (1..64 octets) and a node of any version decodes and
verifies the certificate as before: the format did not change. The salt keeps the name
from being guessed from a list of likely names; it is derived from the invite's one-time
secret (``salt_for_invite``), which only the issuer (when it made the invite) and the
household's node ever held, so the invite token can carry the name beside it and the
issuer never stores the salt. The node shows its name (a ``NameOpening``: the name and the
salt) to its direct neighbours only, on the session (meshd.core.proto.session NAME, feature
``private_names``); they check it against the certificate (``opens``). Everyone else sees
the node by its id (``shown``). A household that wants its name known mesh-wide is invited
with ``meshd invite --show-name``: the certificate then holds the name itself, as before.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from meshd.core.membership.canonical import check_text
from meshd.core.membership.messages import NAME_MAX_BYTES  # the certificate's name field

PREFIX = "sha256:"
SALT_LENGTH = 16
_DOMAIN = b"meshd-name-v1\0"
_SALT_DOMAIN = b"meshd-name-salt-v1\0"


def salt_for_invite(secret: bytes) -> bytes:
    """The salt of the name an invite with this one-time ``secret`` commits to."""
    return hashlib.sha256(_SALT_DOMAIN + secret).digest()[:SALT_LENGTH]


def commit(name: str, salt: bytes) -> str:
    """The text a certificate holds in place of ``name``."""
    raw = check_text(name, 1, NAME_MAX_BYTES)
    if len(salt) != SALT_LENGTH:
        raise ValueError(f"a name's salt is {SALT_LENGTH} octets, got {len(salt)}")
    digest = hashlib.sha256(_DOMAIN + salt + raw).digest()
    return PREFIX + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def is_committed(name: str) -> bool:
    """Whether a certified name is a commitment (a private name), not the name itself."""
    return name.startswith(PREFIX)


@dataclass(frozen=True)
class NameOpening:
    """A private name and its salt: what opens the commitment in the certificate."""

    name: str
    salt: bytes

    def __post_init__(self) -> None:
        commit(self.name, self.salt)  # ValueError for a name or salt no commitment has

    def opens(self, certified: str) -> bool:
        return commit(self.name, self.salt) == certified


def shown(certified: str, node_id: str, opening: NameOpening | None = None) -> str:
    """What a person sees for a member certified as ``certified``: the name itself, the
    name a neighbour showed (``opening``, checked), else "node " and the id's start."""
    if not is_committed(certified):
        return certified
    if opening is not None and opening.opens(certified):
        return opening.name
    return f"node {node_id[:8]}"
