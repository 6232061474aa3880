"""Node ids and key spellings (pure): the node id is the Ed25519 public key in URL-safe
base64 without padding (43 characters); a WireGuard key is standard base64, as ``wg``
prints it. The key files are meshd.adapters.identity's."""

from __future__ import annotations

import base64

NODE_ID_LENGTH = 43


def node_id_from_public(public: bytes) -> str:
    return base64.urlsafe_b64encode(public).rstrip(b"=").decode()


def public_from_node_id(node_id: str) -> bytes:
    """Decode a node id; raise ValueError when it is not 32 bytes of URL-safe base64."""
    if len(node_id) != NODE_ID_LENGTH:
        raise ValueError(f"node id must be {NODE_ID_LENGTH} characters, got {len(node_id)}")
    try:
        raw = base64.urlsafe_b64decode(node_id + "=")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"node id is not URL-safe base64: {exc}") from None
    if len(raw) != 32 or node_id_from_public(raw) != node_id:
        raise ValueError("node id is not a canonical 32-byte key")
    return raw


def decode_wireguard_key(text: str) -> bytes:
    """Decode a WireGuard key (standard base64 of 32 bytes, as `wg` prints it)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (ValueError, TypeError):
        raise ValueError("WireGuard key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"WireGuard key must be 32 bytes, got {len(raw)}")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
