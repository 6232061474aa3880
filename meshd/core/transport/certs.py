"""A node's self-signed X.509 certificate over its Ed25519 identity key.

TLS 1.3 in QUIC needs a certificate; ours carries nothing but the node's identity key, and
peers authenticate each other by that key (the node id), never by a CA chain. The certificate
is deterministic (fixed dates, serial derived from the key; Ed25519 signatures are
deterministic), so the same key always gives the same DER bytes.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public

# RFC 5280 4.1.2.5: 99991231235959Z means "no well-defined expiration date". Expiry of
# mesh membership lives in the membership certificate, not in this TLS wrapper.
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


class CertificateKeyError(ValueError):
    """A peer's certificate does not carry an Ed25519 public key."""


@dataclass(frozen=True)
class NodeCredentials:
    """What a node presents in the TLS handshake: its certificate and the matching key."""

    certificate: x509.Certificate
    private_key: ed25519.Ed25519PrivateKey
    node_id: str

    def __repr__(self) -> str:  # never print a private key
        return f"NodeCredentials(node_id={self.node_id!r})"


def private_key_from_signing_key(signing_key: SigningKey) -> ed25519.Ed25519PrivateKey:
    """Convert a PyNaCl signing key to ``cryptography``'s: both are the 32-byte seed."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(signing_key))


def node_certificate(signing_key: SigningKey) -> NodeCredentials:
    """A self-signed certificate for the node's Ed25519 identity key.

    It has the CA basic constraint: a self-signed certificate used as a trust anchor
    (``cadata``) must be a CA, or OpenSSL-style verifiers refuse it (REFERENCES.md, aioquic).
    """
    key = private_key_from_signing_key(signing_key)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    node_id = node_id_from_public(public)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    # RFC 5280 4.1.2.2: a positive serial of at most 20 octets.
    serial = int.from_bytes(hashlib.sha256(public).digest()[:19], "big") or 1
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm=None)  # Ed25519 takes no separate hash
    )
    return NodeCredentials(certificate=certificate, private_key=key, node_id=node_id)


def node_id_from_certificate(certificate: x509.Certificate) -> str:
    """The node id of a peer: the Ed25519 public key in its certificate.

    Raise CertificateKeyError when the key is not Ed25519. The TLS handshake has already
    proved (CertificateVerify) that the peer holds the matching private key.
    """
    public_key = certificate.public_key()
    if not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise CertificateKeyError(
            f"certificate key is {type(public_key).__name__}, expected Ed25519"
        )
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return node_id_from_public(raw)
