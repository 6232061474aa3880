"""The in-memory WireGuard backend: the shared contract, plus its test-only knobs."""

from __future__ import annotations

import errno

import pytest

from meshd.adapters.wg.backend import WireGuardBackend
from meshd.adapters.wg.fake import FakeBackend
from meshd.adapters.wg.model import DeviceUpdate, PeerUpdate, WireGuardError
from tests.wg_contract import PEER_A, PEER_B, exercise_backend

IFNAME = "twfake0"


def test_fake_backend_follows_the_contract() -> None:
    exercise_backend(FakeBackend(), IFNAME)


def test_fake_is_a_backend() -> None:
    backend: WireGuardBackend = FakeBackend()
    assert backend.name == "fake"


def test_interfaces_are_listed_by_prefix_and_sorted() -> None:
    backend = FakeBackend()
    for name in ("twb", "twa", "other"):
        backend.create(name)
    assert backend.list_interfaces("tw") == ["twa", "twb"]
    assert backend.list_interfaces("") == ["other", "twa", "twb"]


def test_peer_stats_are_set_by_tests_and_shown() -> None:
    backend = FakeBackend()
    backend.create(IFNAME)
    backend.configure(IFNAME, DeviceUpdate(peers=(PeerUpdate(PEER_A), PeerUpdate(PEER_B))))
    backend.set_peer_stats(IFNAME, PEER_A, rx_bytes=1000, tx_bytes=2000, last_handshake=1.5)
    backend.set_peer_stats(IFNAME, PEER_A, rx_bytes=1500)  # the rest stays
    a, b = backend.show(IFNAME).peers
    assert (a.rx_bytes, a.tx_bytes, a.last_handshake) == (1500, 2000, 1.5)
    assert (b.rx_bytes, b.tx_bytes, b.last_handshake) == (0, 0, None)
    # Counters survive a partial update, as on a real device.
    backend.configure(IFNAME, DeviceUpdate(peers=(PeerUpdate(PEER_A, endpoint=("10.0.0.1", 1)),)))
    assert backend.show(IFNAME).peers[0].rx_bytes == 1500


def test_peer_stats_of_unknown_peer_or_interface_raise() -> None:
    backend = FakeBackend()
    with pytest.raises(WireGuardError) as no_device:
        backend.set_peer_stats(IFNAME, PEER_A, rx_bytes=1)
    assert no_device.value.errno == errno.ENODEV
    backend.create(IFNAME)
    with pytest.raises(WireGuardError) as no_peer:
        backend.set_peer_stats(IFNAME, PEER_A, rx_bytes=1)
    assert no_peer.value.errno == errno.ENOENT


def test_accepted_updates_are_recorded_and_refused_ones_are_not() -> None:
    backend = FakeBackend()
    backend.create(IFNAME)
    good = DeviceUpdate(listen_port=1)
    backend.configure(IFNAME, good)
    with pytest.raises(ValueError):
        backend.configure(IFNAME, DeviceUpdate(listen_port=-1))
    assert backend.updates == [(IFNAME, good)]


def test_replace_peers_resets_counters() -> None:
    backend = FakeBackend()
    backend.create(IFNAME)
    backend.configure(IFNAME, DeviceUpdate(peers=(PeerUpdate(PEER_A),)))
    backend.set_peer_stats(IFNAME, PEER_A, rx_bytes=10)
    backend.configure(IFNAME, DeviceUpdate(replace_peers=True, peers=(PeerUpdate(PEER_A),)))
    assert backend.show(IFNAME).peers[0].rx_bytes == 0


@pytest.mark.parametrize("name", ["", "a" * 16, "a/b", "a b", "a:b", ".."])
def test_invalid_interface_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        FakeBackend().create(name)
