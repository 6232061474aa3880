"""Behaviour every WireGuard backend shares.

``exercise_backend`` runs against the in-memory fake, the kernel backend on netlink fakes and
real wireguard-go, so that the fake the upper layers test with cannot drift from the real
ones: whatever it asserts was seen on wireguard-go.
"""

from __future__ import annotations

import errno

import pytest

from meshd.adapters.wg.backend import WireGuardBackend
from meshd.adapters.wg.model import (
    DeviceUpdate,
    PeerStatus,
    PeerUpdate,
    WireGuardError,
    public_key_from_private,
)

PRIVATE_KEY = bytes(range(1, 33))
OTHER_PRIVATE_KEY = bytes(range(101, 133))
PEER_A = bytes([0xA1]) * 32
PEER_B = bytes([0xB2]) * 32
PEER_C = bytes([0xC3]) * 32
PEER_D = bytes([0xD4]) * 32


def peers_by_key(backend: WireGuardBackend, ifname: str) -> dict[bytes, PeerStatus]:
    return {peer.public_key: peer for peer in backend.show(ifname).peers}


def exercise_backend(backend: WireGuardBackend, ifname: str, listen_port: int = 51820) -> None:
    """Create, configure, inspect and delete ``ifname``; leaves nothing behind."""
    assert not backend.exists(ifname)
    assert backend.list_interfaces(ifname) == []
    for missing in (
        lambda: backend.show(ifname),
        lambda: backend.configure(ifname, DeviceUpdate(listen_port=listen_port)),
    ):
        with pytest.raises(WireGuardError) as missing_error:
            missing()
        assert missing_error.value.errno == errno.ENODEV
    backend.delete(ifname)  # deleting what is not there is a no-op

    backend.create(ifname)
    try:
        _exercise_live(backend, ifname, listen_port)
    finally:
        backend.delete(ifname)
    assert not backend.exists(ifname)
    assert backend.list_interfaces(ifname) == []
    backend.delete(ifname)


def _exercise_live(backend: WireGuardBackend, ifname: str, listen_port: int) -> None:
    assert backend.exists(ifname)
    assert backend.list_interfaces(ifname) == [ifname]
    assert backend.list_interfaces(ifname + "x") == []
    with pytest.raises(WireGuardError) as twice:
        backend.create(ifname)
    assert twice.value.errno == errno.EEXIST

    fresh = backend.show(ifname)
    assert fresh.name == ifname
    assert fresh.public_key is None
    assert fresh.peers == ()

    # Device fields.
    backend.configure(ifname, DeviceUpdate(private_key=PRIVATE_KEY, listen_port=listen_port))
    device = backend.show(ifname)
    assert device.public_key == public_key_from_private(PRIVATE_KEY)
    assert device.listen_port == listen_port
    backend.configure(ifname, DeviceUpdate(private_key=OTHER_PRIVATE_KEY))
    device = backend.show(ifname)
    assert device.public_key == public_key_from_private(OTHER_PRIVATE_KEY)
    assert device.listen_port == listen_port  # left as it was

    # Peers: added with every field, shown normalised, no traffic yet.
    backend.configure(
        ifname,
        DeviceUpdate(
            peers=(
                PeerUpdate(
                    public_key=PEER_A,
                    endpoint=("10.0.0.2", 51821),
                    allowed_ips=("10.1.2.3/24", "fd00::5/64"),
                    persistent_keepalive_s=25,
                ),
                PeerUpdate(
                    public_key=PEER_B,
                    endpoint=("fd00::2", 51822),
                    allowed_ips=("10.9.0.0/16",),
                ),
            )
        ),
    )
    peers = peers_by_key(backend, ifname)
    assert set(peers) == {PEER_A, PEER_B}
    a, b = peers[PEER_A], peers[PEER_B]
    assert a.endpoint == ("10.0.0.2", 51821)
    assert set(a.allowed_ips) == {"10.1.2.0/24", "fd00::/64"}
    assert a.persistent_keepalive_s == 25
    assert b.endpoint == ("fd00::2", 51822)
    assert b.allowed_ips == ("10.9.0.0/16",)
    assert b.persistent_keepalive_s == 0
    for peer in (a, b):
        assert (peer.rx_bytes, peer.tx_bytes, peer.last_handshake) == (0, 0, None)

    # A partial update changes only what it names.
    backend.configure(
        ifname, DeviceUpdate(peers=(PeerUpdate(public_key=PEER_A, endpoint=("10.0.0.3", 1)),))
    )
    a = peers_by_key(backend, ifname)[PEER_A]
    assert a.endpoint == ("10.0.0.3", 1)
    assert set(a.allowed_ips) == {"10.1.2.0/24", "fd00::/64"}
    assert a.persistent_keepalive_s == 25

    # allowed_ips replaces the list; a prefix belongs to one peer, so it moves.
    backend.configure(
        ifname,
        DeviceUpdate(peers=(PeerUpdate(public_key=PEER_A, allowed_ips=("10.9.0.0/16",)),)),
    )
    peers = peers_by_key(backend, ifname)
    assert peers[PEER_A].allowed_ips == ("10.9.0.0/16",)
    assert peers[PEER_B].allowed_ips == ()
    backend.configure(ifname, DeviceUpdate(peers=(PeerUpdate(public_key=PEER_A, allowed_ips=()),)))
    assert peers_by_key(backend, ifname)[PEER_A].allowed_ips == ()

    # update_only never creates; it does change an existing peer.
    backend.configure(
        ifname,
        DeviceUpdate(
            peers=(
                PeerUpdate(public_key=PEER_C, endpoint=("10.0.0.9", 9), update_only=True),
                PeerUpdate(public_key=PEER_A, persistent_keepalive_s=5, update_only=True),
            )
        ),
    )
    peers = peers_by_key(backend, ifname)
    assert set(peers) == {PEER_A, PEER_B}
    assert peers[PEER_A].persistent_keepalive_s == 5

    # remove: a known peer goes, an unknown one is no error.
    backend.configure(
        ifname,
        DeviceUpdate(
            peers=(PeerUpdate(public_key=PEER_B, remove=True), PeerUpdate(PEER_C, remove=True))
        ),
    )
    assert set(peers_by_key(backend, ifname)) == {PEER_A}

    # replace_peers: only the named peers remain, and they start afresh.
    backend.configure(
        ifname,
        DeviceUpdate(
            replace_peers=True,
            peers=(
                PeerUpdate(public_key=PEER_D, allowed_ips=("0.0.0.0/0", "::/0")),
                PeerUpdate(public_key=PEER_A, endpoint=("10.0.0.4", 4)),
            ),
        ),
    )
    peers = peers_by_key(backend, ifname)
    assert set(peers) == {PEER_A, PEER_D}
    assert set(peers[PEER_D].allowed_ips) == {"0.0.0.0/0", "::/0"}
    assert peers[PEER_A].endpoint == ("10.0.0.4", 4)
    assert peers[PEER_A].persistent_keepalive_s == 0  # reset: A was created again
    backend.configure(ifname, DeviceUpdate(replace_peers=True))
    assert backend.show(ifname).peers == ()

    # Bad values are refused before anything is applied.
    backend.configure(ifname, DeviceUpdate(peers=(PeerUpdate(public_key=PEER_A),)))
    before = backend.show(ifname)
    for bad in (
        DeviceUpdate(private_key=b"short"),
        DeviceUpdate(listen_port=70000),
        DeviceUpdate(peers=(PeerUpdate(public_key=PEER_A, allowed_ips=("10.0.0.1",)),)),
        DeviceUpdate(peers=(PeerUpdate(public_key=PEER_A, endpoint=("example.org", 1)),)),
        DeviceUpdate(
            listen_port=listen_port + 1,
            peers=(
                PeerUpdate(public_key=PEER_B),
                PeerUpdate(public_key=PEER_A, persistent_keepalive_s=-1),
            ),
        ),
    ):
        with pytest.raises(ValueError):
            backend.configure(ifname, bad)
    assert backend.show(ifname) == before

    # An all-zero private key clears the identity.
    backend.configure(ifname, DeviceUpdate(private_key=bytes(32)))
    assert backend.show(ifname).public_key is None
