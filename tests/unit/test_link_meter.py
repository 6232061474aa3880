"""The link meter's table and its reading of nft's JSON (pure parts; the kernel's counting
is in tests/netns/test_mesh_line3.py)."""

from __future__ import annotations

import json

from meshd.net.link_meter import parse, render


def test_the_table_counts_after_the_firewall_on_every_hook_it_needs() -> None:
    text = render()
    assert text.startswith("table inet meshd_links {")  # never replaced: adopted
    assert text.count("priority filter + 20;") == 3  # forward, output, input
    assert "iifname @relayed_for" in text and "oifname @relayed_to" in text
    assert "oifname . ip daddr != @peer4 oifname @sent" in text
    assert "iifname . ip6 saddr != @peer6 iifname @received" in text


def test_a_reading_has_the_tables_handle_and_four_counters_per_interface() -> None:
    def counter_set(name: str, counts: dict[str, int]) -> dict[str, object]:
        elems = [
            {"elem": {"val": k, "counter": {"packets": 1, "bytes": v}}} for k, v in counts.items()
        ]
        return {"set": {"name": name, "elem": elems}}

    listing = {
        "nftables": [
            {"metainfo": {}},
            {"table": {"family": "inet", "name": "meshd_links", "handle": 42}},
            counter_set("relayed_for", {"mwx1": 10, "mwx2": 1}),
            counter_set("relayed_to", {"mwx1": 20}),
            counter_set("sent", {"mwx1": 30}),
            counter_set("received", {"mwx1": 40}),
            {"set": {"name": "peer4", "elem": [{"concat": ["mwx1", "10.77.0.2"]}]}},
        ]
    }
    reading = parse(json.dumps(listing))
    assert reading.table == 42
    assert reading.counts == {"mwx1": (10, 20, 30, 40), "mwx2": (1, 0, 0, 0)}
