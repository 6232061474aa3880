"""The device service over in-memory WireGuard and netlink (meshd.daemon.devices): the
book on disk, the interface made to match it, and a bad book left as it is.
tests/netns/test_mesh_exits.py has a stock client use what it hands out."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from meshd.adapters.identity import Identity
from meshd.adapters.wg.fake import FakeBackend
from meshd.api.server import CallError
from meshd.config import DevicesSettings, UplinkSettings
from meshd.daemon.devices import BOOK_FILE, DeviceService
from tests.unit.fake_netlink import FakeNetlink

MESH = (ipaddress.IPv4Network("10.77.0.0/16"), ipaddress.IPv6Network("fd00::/48"))
IDENTITY = Identity(SigningKey(bytes(32)), bytes(range(32)))


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def service(
    state: Path,
    backend: FakeBackend,
    netlink: FakeNetlink,
    uplink: str = "",
    endpoint: str = "",
    lan: tuple[str, ...] = (),
) -> DeviceService:
    return DeviceService(
        IDENTITY,
        backend,
        netlink,
        inline,
        DevicesSettings(endpoint=endpoint),
        UplinkSettings(interface=uplink),
        MESH,
        1420,
        state,
        lan=lan,
    )


def private_key_of(config: str) -> bytes:
    line = next(x for x in config.splitlines() if x.startswith("PrivateKey = "))
    return base64.b64decode(line.split(" = ", 1)[1])


def test_a_device_added_gets_a_peer_and_survives_a_restart(tmp_path: Path) -> None:
    backend, netlink = FakeBackend(), FakeNetlink()
    netlink.add_link("upl")
    netlink.ensure_address("upl", ipaddress.IPv4Address("198.51.100.11"), 24)
    devices = service(tmp_path, backend, netlink, uplink="upl")
    devices.load()
    assert not backend.exists(devices.ifname)  # no device, no interface
    added = asyncio.run(devices.add("phone", None, True))
    assert added["endpoint"] == "198.51.100.11:52821" and added["address"] == "10.254.0.2"
    assert "AllowedIPs = 0.0.0.0/0" in added["config"]
    public = bytes(PrivateKey(private_key_of(added["config"])).public_key)
    shown = backend.show(devices.ifname)
    assert shown.listen_port == 52821
    assert [(p.public_key, p.allowed_ips) for p in shown.peers] == [(public, ("10.254.0.2/32",))]
    assert (ipaddress.IPv4Address("10.254.0.1"), 24) in netlink.addresses(devices.ifname)
    book = tmp_path / BOOK_FILE
    assert book.stat().st_mode & 0o777 == 0o600
    assert private_key_of(added["config"]).hex() not in book.read_text()
    assert base64.b64encode(private_key_of(added["config"])).decode() not in book.read_text()

    # A restart: the interface goes with the node, and comes back from the book.
    devices.remove_interface()
    again = service(tmp_path, backend, netlink, uplink="upl")
    again.load()
    assert [p.public_key for p in backend.show(again.ifname).peers] == [public]
    (listed,) = asyncio.run(again.listing())
    assert listed["name"] == "phone" and listed["last_handshake"] is None

    removed = asyncio.run(again.remove("phone"))
    assert removed["address"] == "10.254.0.2"
    assert not backend.exists(again.ifname)  # the last one gone: the interface too
    assert json.loads(book.read_text())["devices"] == []


def test_without_an_endpoint_to_give_a_device_is_refused_saying_what_to_do(
    tmp_path: Path,
) -> None:
    devices = service(tmp_path, FakeBackend(), FakeNetlink())
    devices.load()
    with pytest.raises(CallError) as info:
        asyncio.run(devices.add("phone", None, False))
    assert info.value.code == "bad_args" and "--endpoint" in str(info.value)
    assert not (tmp_path / BOOK_FILE).exists()
    added = asyncio.run(devices.add("phone", "home.example.org:52821", False))
    assert "Endpoint = home.example.org:52821" in added["config"]
    assert "AllowedIPs = 10.77.0.0/16" in added["config"]


def test_a_pool_overlapping_the_lan_gives_no_device(tmp_path: Path) -> None:
    netlink = FakeNetlink()
    netlink.add_link("lan0")
    netlink.ensure_address("lan0", ipaddress.IPv4Address("10.254.0.77"), 16)
    devices = service(tmp_path, FakeBackend(), netlink, endpoint="192.0.2.1:52821", lan=("lan0",))
    devices.load()
    with pytest.raises(CallError) as info:
        asyncio.run(devices.add("phone", None, False))
    assert info.value.code == "bad_args" and "lan0's 10.254.0.0/16" in str(info.value)
    assert not (tmp_path / BOOK_FILE).exists()
    netlink.ensure_address("lan0", ipaddress.IPv4Address("192.168.1.1"), 24)
    netlink.remove_address("lan0", ipaddress.IPv4Address("10.254.0.77"), 16)
    assert asyncio.run(devices.add("phone", None, False))["address"] == "10.254.0.2"


def test_a_book_that_cannot_be_read_is_left_as_it_is_and_said(tmp_path: Path) -> None:
    book = tmp_path / BOOK_FILE
    book.write_text('{"version": 1, "devices": [{"name": "Phone"}]}')
    backend = FakeBackend()
    devices = service(tmp_path, backend, FakeNetlink(), endpoint="192.0.2.1:52821")
    devices.load()
    for call in (devices.listing(), devices.add("tablet", None, False), devices.remove("x")):
        with pytest.raises(CallError) as info:
            asyncio.run(call)
        assert info.value.code == "devices_unreadable" and "device name" in str(info.value)
    assert book.read_text() == '{"version": 1, "devices": [{"name": "Phone"}]}'
    assert not backend.exists(devices.ifname)
