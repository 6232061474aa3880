"""The exit meter's table and its reading of nft's JSON (pure parts; the kernel's counting
is in tests/netns/test_exit_meter.py)."""

from __future__ import annotations

import ipaddress
import json

from meshd.adapters.net.exit_meter import counters, render


def test_the_table_counts_after_the_firewall_and_only_on_the_exit_interface() -> None:
    text = render("mwabxg")
    assert "type filter hook forward priority filter + 10;" in text  # refused: not counted
    assert 'iifname "mwabxg" ip saddr @exit_up' in text
    assert 'oifname "mwabxg" ip daddr @exit_down' in text
    assert text.startswith("table inet meshd_meter {}\ndelete table inet meshd_meter\n")


def test_both_directions_add_up_per_address() -> None:
    def elem(address: str, count: int) -> dict[str, object]:
        return {"elem": {"val": address, "counter": {"packets": 1, "bytes": count}}}

    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"set": {"name": "exit_up", "elem": [elem("10.77.0.4", 100), elem("10.77.0.5", 1)]}},
            {"set": {"name": "exit_down", "elem": [elem("10.77.0.4", 900)]}},
            {"chain": {"name": "forward"}},
        ]
    }
    assert counters(json.dumps(listing)) == {
        ipaddress.IPv4Address("10.77.0.4"): 1000,
        ipaddress.IPv4Address("10.77.0.5"): 1,
    }
