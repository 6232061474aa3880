"""Reading the per-element counters of nftables sets (``nft -j list table ...``)."""

from __future__ import annotations

import json


def set_counters(listing: str) -> tuple[int, dict[str, dict[str, int]]]:
    """(the table's handle, or -1; bytes per element value, per set name) of the sets
    whose elements carry counters. ValueError (or KeyError, TypeError) on a listing that is
    not nft's JSON."""
    handle = -1
    out: dict[str, dict[str, int]] = {}
    for item in json.loads(listing).get("nftables", []):
        if "table" in item:
            handle = int(item["table"].get("handle", -1))
        found = item.get("set")
        if not found:
            continue
        counts = out.setdefault(str(found.get("name")), {})
        for elem in found.get("elem", []):
            value = elem.get("elem", {}) if isinstance(elem, dict) else {}
            if "val" in value and "counter" in value:
                counts[str(value["val"])] = int(value["counter"]["bytes"])
    return handle, out
