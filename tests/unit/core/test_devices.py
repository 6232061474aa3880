"""The device book and the configs it hands out (meshd.core.devices)."""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest

from meshd.core import devices
from meshd.core.devices import ClientConfig, DeviceBook, DeviceError

POOL = ipaddress.IPv4Network("10.254.0.0/29")  # hosts .1-.6; the node holds .1


def key(n: int) -> bytes:
    return bytes([n]) * 32


def test_devices_get_the_lowest_free_address_after_the_nodes_own() -> None:
    book = DeviceBook(POOL)
    assert [str(book.add(f"d{i}", key(i), 0).address) for i in range(3)] == [
        "10.254.0.2",
        "10.254.0.3",
        "10.254.0.4",
    ]
    book.remove("d1")
    assert str(book.add("again", key(9), 0).address) == "10.254.0.3"


def test_a_full_pool_a_taken_name_a_taken_key_and_a_bad_name_are_refused() -> None:
    book = DeviceBook(POOL)
    for i in range(5):
        book.add(f"d{i}", key(i), 0)
    with pytest.raises(DeviceError, match="full"):
        book.add("one-more", key(7), 0)
    book.remove("d4")
    with pytest.raises(DeviceError, match="exists"):
        book.add("d0", key(8), 0)
    with pytest.raises(DeviceError, match="another device"):
        book.add("new", key(0), 0)
    for bad in ("", "Phone", "a b", "-x", "x" * 33, "ph/one"):
        with pytest.raises(DeviceError, match="device name"):
            book.add(bad, key(8), 0)
    with pytest.raises(DeviceError, match="no device"):
        book.remove("nobody")


def test_the_book_reads_back_what_it_wrote() -> None:
    book = DeviceBook(POOL)
    book.add("phone", key(1), 1_700_000_000)
    book.add("laptop", key(2), 1_700_000_001)
    again = DeviceBook.from_json(json.loads(json.dumps(book.to_json())), POOL)
    assert list(again) == list(book)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update(version=2), "version 1"),
        (lambda d: d.update(devices={}), "expected a list"),
        (lambda d: d["devices"].append(7), r"devices\[1\]: expected an object"),
        (lambda d: d["devices"][0].update(name="Bad Name"), "device name"),
        (lambda d: d["devices"][0].update(address="10.254.1.2"), "not a device address"),
        (lambda d: d["devices"][0].update(address="10.254.0.1"), "not a device address"),
        (lambda d: d["devices"][0].update(public_key="AAAA"), "public_key"),
        (lambda d: d["devices"][0].update(added_at=-1), "added_at"),
        (lambda d: d["devices"].append(dict(d["devices"][0])), "twice"),
    ],
)
def test_a_bad_book_is_refused_saying_where(change: Callable[[Any], object], problem: str) -> None:
    book = DeviceBook(POOL)
    book.add("phone", key(1), 0)
    doc = json.loads(json.dumps(book.to_json()))
    change(doc)
    with pytest.raises(DeviceError, match=problem):
        DeviceBook.from_json(doc, POOL)


def test_the_wg_quick_file_has_what_a_stock_client_needs() -> None:
    config = ClientConfig(
        private_key=key(1),
        address=ipaddress.IPv4Address("10.254.0.2"),
        node_public_key=key(2),
        endpoint="198.51.100.11:52821",
        allowed_ips=devices.allowed_ips(False, [ipaddress.ip_network("10.77.0.0/16")]),
        dns=("10.77.0.1",),
    )
    text = devices.wg_quick(config)
    assert text == (
        "[Interface]\n"
        f"PrivateKey = {base64.b64encode(key(1)).decode()}\n"
        "Address = 10.254.0.2/32\n"
        "DNS = 10.77.0.1\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {base64.b64encode(key(2)).decode()}\n"
        "Endpoint = 198.51.100.11:52821\n"
        "AllowedIPs = 10.77.0.0/16\n"
        "PersistentKeepalive = 25\n"
    )
    assert devices.allowed_ips(True, []) == ("0.0.0.0/0",)


def test_endpoints_may_be_addresses_or_names() -> None:
    assert devices.check_endpoint("198.51.100.11:52821") == "198.51.100.11:52821"
    assert devices.check_endpoint("[2001:db8::1]:52821") == "[2001:db8::1]:52821"
    assert devices.check_endpoint("Home.Example.org:52821") == "home.example.org:52821"
    for bad in ("home.example.org", "home:0", "home:99999", "bad host:1", ":52821"):
        with pytest.raises(DeviceError, match="endpoint"):
            devices.check_endpoint(bad)


def test_the_interface_is_outside_the_tunnels_wildcard() -> None:
    node_id = "A" * 43
    name = devices.interface_name(node_id)
    assert len(name) <= 15 and not name.isalnum()
