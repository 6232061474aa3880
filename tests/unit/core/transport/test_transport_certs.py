"""The node certificate and framing: pure functions."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.adapters.identity import Identity
from meshd.core.transport import _aioquic_private
from meshd.core.transport.certs import (
    CertificateKeyError,
    node_certificate,
    node_id_from_certificate,
)
from meshd.core.transport.framing import FrameDecoder, FrameError, encode_frame, encode_varint


def test_certificate_carries_the_node_id_and_is_a_ca() -> None:
    key = SigningKey(b"\x07" * 32)
    creds = node_certificate(key)
    assert creds.node_id == Identity(key, b"\x00" * 32).node_id
    assert node_id_from_certificate(creds.certificate) == creds.node_id
    constraints = creds.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca
    # The certificate verifies under its own key (self-signed) and is deterministic.
    creds.certificate.verify_directly_issued_by(creds.certificate)
    again = node_certificate(key).certificate
    assert again.public_bytes(serialization.Encoding.DER) == creds.certificate.public_bytes(
        serialization.Encoding.DER
    )
    assert "private" not in repr(creds).lower()


def test_non_ed25519_certificate_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CertificateKeyError):
        node_id_from_certificate(cert)


def test_aioquic_private_api_is_present() -> None:
    _aioquic_private.check_supported()


@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
)
def test_frames_survive_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p, 300) for p in payloads)
    decoder = FrameDecoder(300)
    out: list[bytes] = []
    position, i = 0, 0
    while position < len(stream):
        step = cuts[i % len(cuts)]
        out += decoder.feed(stream[position : position + step])
        position += step
        i += 1
    assert out == payloads and decoder.buffered == 0


@pytest.mark.parametrize("value", [0, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**62 - 1])
def test_varint_boundaries(value: int) -> None:
    raw = encode_varint(value)
    decoder = FrameDecoder(max_frame_size=2**62)
    if value == 0:
        assert decoder.feed(raw) == []
    else:
        assert decoder.feed(raw) == [] and decoder.buffered == len(raw)


def test_broken_frames_raise_frame_error_with_reason() -> None:
    with pytest.raises(FrameError) as too_large:
        FrameDecoder(10).feed(encode_varint(11))
    assert too_large.value.reason == "frame_too_large"
    with pytest.raises(FrameError) as malformed:
        FrameDecoder(10).feed(b"\x40\x01x")
    assert malformed.value.reason == "malformed_frame"
