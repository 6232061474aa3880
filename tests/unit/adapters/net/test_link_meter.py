"""The link meter's table and its reading of nft's JSON (pure parts; the kernel's counting
is in tests/netns/test_mesh_line3.py and test_mesh_receipts.py)."""

from __future__ import annotations

import ipaddress
import json

from meshd.adapters.net.link_meter import parse, render, render_link

NEIGHBOUR = (
    ipaddress.ip_address("10.77.0.3"),
    ipaddress.ip_address("fd6d::3"),
    ipaddress.ip_address("fe80::3"),
)


def test_the_table_counts_after_the_firewall_on_every_hook_it_needs() -> None:
    text = render("mwab12cd")
    assert text.startswith("table inet meshd_links {")  # never replaced: adopted
    assert text.count("priority filter + 20;") == 3  # forward, output, input
    assert "set rules_v3_mwab12cd" in text  # the marker names the rules and the prefix
    # Other interfaces (the underlay, the LAN) cost one compare, links one lookup.
    assert 'iifname "mwab12cd*" iifname vmap @forward_in' in text
    assert 'oifname "mwab12cd*" oifname vmap @local_out' in text


def test_a_link_counts_relayed_traffic_and_leaves_out_its_neighbours_own() -> None:
    script = render_link("mwab12cdef0123", NEIGHBOUR).splitlines()
    rules = {line.split()[4]: [] for line in script if line.startswith("add chain")}
    for line in script:
        if line.startswith("add rule"):
            rules[line.split()[4]].append(" ".join(line.split()[5:]))
    assert rules["fin_mwab12cdef0123"] == [
        "counter name for_mwab12cdef0123",
        "goto rx_mwab12cdef0123",
    ]
    assert rules["fout_mwab12cdef0123"][0] == "counter name to_mwab12cdef0123"
    rx, tx = rules["rx_mwab12cdef0123"], rules["tx_mwab12cdef0123"]
    assert rx[-1] == "counter name recv_mwab12cdef0123"
    assert {"ip saddr 10.77.0.3 return", "ip6 saddr fd6d::3 return"} <= set(rx)
    assert {"ip6 saddr fe80::/10 return", "ip6 daddr ff00::/8 return"} <= set(rx)
    assert tx[-1] == "counter name sent_mwab12cdef0123"
    assert {"ip daddr 10.77.0.3 return", "ip6 daddr fe80::3 return"} <= set(tx)
    # Added again (after a crash), the chains are rewritten and the counters kept.
    assert "flush chain inet meshd_links rx_mwab12cdef0123" in script
    assert "add counter inet meshd_links recv_mwab12cdef0123" in script
    assert not any(line.startswith(("delete", "reset")) for line in script)


def test_a_reading_has_the_tables_handle_and_four_counters_per_interface() -> None:
    def counter(name: str, count: int) -> dict[str, object]:
        return {"counter": {"family": "inet", "name": name, "packets": 1, "bytes": count}}

    listing = {
        "nftables": [
            {"metainfo": {}},
            {"table": {"family": "inet", "name": "meshd_links", "handle": 42}},
            counter("for_mwx1", 10),
            counter("for_mwx2", 1),
            counter("to_mwx1", 20),
            counter("sent_mwx1", 30),
            counter("recv_mwx1", 40),
            counter("other", 5),
            {"map": {"name": "local_in", "elem": [["mwx1", {"jump": {"target": "rx_mwx1"}}]]}},
        ]
    }
    reading = parse(json.dumps(listing))
    assert reading.table == 42
    assert reading.counts == {"mwx1": (10, 20, 30, 40), "mwx2": (1, 0, 0, 0)}
