"""Every use of aioquic's private API, checked against aioquic 1.7.2, in one place.

aioquic has no public API to request a client certificate, to read the peer's certificate,
to learn whether the peer accepts DATAGRAM frames, to know whether the handshake is
confirmed, or whether any packet from the peer decrypted. If a later aioquic renames one
of these, ``check_supported()`` fails at start instead of a session failing silently.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import QuicConnection, QuicConnectionState
from cryptography import x509


class RequestClientCertificateConnection(QuicConnection):
    """A QuicConnection whose server side asks the client for its certificate.

    aioquic issues #541 and #586: the TLS layer supports client certificates but only turns
    the CertificateRequest on through ``tls.Context._request_client_certificate`` ("For test
    purposes only"). The TLS context is created in ``_initialize``, which a server calls on
    the first INITIAL packet, just before feeding it the ClientHello; setting the flag right
    after ``_initialize`` is the only point where it takes effect. Subclassing (instead of
    patching QuicConnection globally) keeps every other aioquic user unaffected.
    The server does not validate the client's chain: the session checks the key itself.
    """

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if not self._is_client:
            self.tls._request_client_certificate = True


def peer_certificate(connection: QuicConnection) -> x509.Certificate | None:
    """The certificate the peer presented (None if it sent none)."""
    certificate: x509.Certificate | None = connection.tls._peer_certificate
    return certificate


def remote_max_datagram_frame_size(connection: QuicConnection) -> int | None:
    """The peer's ``max_datagram_frame_size`` transport parameter (RFC 9221 3), if any."""
    value: int | None = connection._remote_max_datagram_frame_size
    return value


def handshake_confirmed(connection: QuicConnection) -> bool:
    """RFC 9001 4.1.2: after this, CONNECTION_CLOSE travels only in 1-RTT packets.

    Before it, aioquic also sends the close in HANDSHAKE packets, where an application close
    becomes a transport APPLICATION_ERROR with the reason phrase dropped (RFC 9000 10.2.3),
    and the peer reads that one first.
    """
    return bool(connection._handshake_confirmed)


def received_a_packet(connection: QuicConnection) -> bool:
    """Whether a packet from the peer has decrypted: aioquic leaves FIRSTFLIGHT on the first
    one (``QuicConnection.receive_datagram``, "update state"); a server's INITIAL that
    does not decrypt leaves it there."""
    return connection._state is not QuicConnectionState.FIRSTFLIGHT


def check_supported() -> None:
    """Raise RuntimeError when the installed aioquic lacks what this module relies on."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.tls import Context

    probe: Any = QuicConnection(configuration=QuicConfiguration(is_client=True))
    missing = [
        name
        for name in (
            "_remote_max_datagram_frame_size",
            "_handshake_confirmed",
            "_is_client",
            "_state",
        )
        if not hasattr(probe, name)
    ]
    context = Context(is_client=False)
    for name in ("_request_client_certificate", "_peer_certificate"):
        if not hasattr(context, name):
            missing.append(f"tls.Context.{name}")
    if missing:
        raise RuntimeError(f"aioquic private API changed, missing: {', '.join(missing)}")
