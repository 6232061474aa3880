"""Per-neighbour byte counters on every link, kept by nftables (kernel thread only).

The counting point is DESIGN.md's (a contract), in IP packet length, after meshd's own
filtering (the chains run after the firewall's), matched by interface name so that a
recreated interface keeps counting:

- as provider for the neighbour behind interface X: ``relayed_for`` = packets in from X
  that this node forwards; ``relayed_to`` = packets it forwards out of X;
- as consumer of that neighbour: ``sent`` = packets out of X (forwarded or our own) not
  addressed to the neighbour; ``received`` = packets in from X (forwarded or for us) not
  sent by the neighbour. The neighbour's addresses (mesh IPv4 and IPv6, link-local) are
  written into X's own chains; link-scope traffic (IPv6 link-local sources, multicast such
  as MLD reports) is the link's own, for whoever is on it: never relayed, not counted.

Cheap per packet, because every user byte crosses these hooks (``receipts.zero_cost``):
a packet on any other interface (the underlay carrying WireGuard, the LAN, the uplink)
costs one compare of its interface name with this node's prefix; a packet on a link costs
one lookup in a verdict map by interface name, then a few compares and named counters in
that link's chains. (Sets of interfaces with per-element counters cost two to three hash
lookups per packet and hook, and took 3-6 % of the relayed throughput on 2 cores.)

Table ``inet meshd_links`` is created once and then adopted, never replaced: its named
counters outlive a crashed meshd, and adding a link again keeps them (its chains are
rewritten, its counters only declared). A reader tells a reset (a new table, after a
reboot or by hand) by the table's handle. An empty set named after the rules' version and
the prefix marks the table: one with other rules (an older meshd's) is made again, and the
ledger rebases on the new handle.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from meshd.adapters.net import command

TABLE = "meshd_links"
VERSION = "rules_v3"  # change it with the rules
COUNTERS = ("relayed_for", "relayed_to", "sent", "received")
_OBJECT = dict(zip(COUNTERS, ("for", "to", "sent", "recv"), strict=True))  # name: <kind>_<ifname>
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _marker(prefix: str) -> str:
    return f"{VERSION}_{prefix}"


def render(prefix: str) -> str:
    """The table without links; ``prefix`` begins the name of every interface of ours."""
    gate = {"in": f'iifname "{prefix}*" iifname', "out": f'oifname "{prefix}*" oifname'}
    chains = {
        "forward": [f"{gate['in']} vmap @forward_in", f"{gate['out']} vmap @forward_out"],
        "output": [f"{gate['out']} vmap @local_out"],
        "input": [f"{gate['in']} vmap @local_in"],
    }
    lines = [f"table inet {TABLE} {{", f"\tset {_marker(prefix)} {{ type ifname; }}"]
    lines += [
        f"\tmap {name} {{ type ifname : verdict; }}"
        for name in ("forward_in", "forward_out", "local_in", "local_out")
    ]
    for hook, rules in chains.items():
        lines += [
            f"\tchain {hook} {{",
            f"\t\ttype filter hook {hook} priority filter + 20; policy accept;",
            *(f"\t\t{rule}" for rule in rules),
            "\t}",
        ]
    return "\n".join([*lines, "}"]) + "\n"


def render_link(ifname: str, neighbour: tuple[IPAddress, ...]) -> str:
    """An nft script that adds (or, for a link already there, rewrites with its counters
    kept) the chains of ``ifname``; ``neighbour``: its addresses, which the consumer side
    leaves out."""
    t = f"inet {TABLE}"
    v4 = [a for a in neighbour if a.version == 4]
    v6 = [a for a in neighbour if a.version == 6]
    skip_tx = ["ip daddr 224.0.0.0/4", *(f"ip daddr {a}" for a in v4)]
    skip_tx += ["ip6 daddr ff00::/8", *(f"ip6 daddr {a}" for a in v6)]
    skip_rx = ["ip daddr 224.0.0.0/4", *(f"ip saddr {a}" for a in v4)]
    skip_rx += ["ip6 daddr ff00::/8", "ip6 saddr fe80::/10"]
    skip_rx += [f"ip6 saddr {a}" for a in v6 if not a.is_link_local]
    tx, rx, fin, fout = (f"{kind}_{ifname}" for kind in ("tx", "rx", "fin", "fout"))
    chains = {
        rx: [*(f"{m} return" for m in skip_rx), f"counter name recv_{ifname}"],
        tx: [*(f"{m} return" for m in skip_tx), f"counter name sent_{ifname}"],
        fin: [f"counter name for_{ifname}", f"goto {rx}"],
        fout: [f"counter name to_{ifname}", f"goto {tx}"],
    }
    lines = [f"add counter {t} {_OBJECT[name]}_{ifname}" for name in COUNTERS]
    for chain, rules in chains.items():
        lines += [f"add chain {t} {chain}", f"flush chain {t} {chain}"]
        lines += [f"add rule {t} {chain} {rule}" for rule in rules]
    jumps = {"local_in": rx, "local_out": tx, "forward_in": fin, "forward_out": fout}
    lines += [f'add element {t} {m} {{ "{ifname}" : jump {c} }}' for m, c in jumps.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Reading:
    """One read of the table: its handle (a new one means every counter restarted) and
    the four counters per interface, in COUNTERS order."""

    table: int
    counts: dict[str, tuple[int, int, int, int]]


def parse(listing: str) -> Reading:
    """``nft -j list table inet meshd_links`` -> a Reading. ValueError (or KeyError,
    TypeError) on a listing that is not nft's JSON."""
    table = -1
    by_kind: dict[str, dict[str, int]] = {kind: {} for kind in _OBJECT.values()}
    for item in json.loads(listing).get("nftables", []):
        if "table" in item:
            table = int(item["table"].get("handle", -1))
        counter = item.get("counter")
        if counter:
            kind, _, ifname = str(counter["name"]).partition("_")
            if kind in by_kind and ifname:
                by_kind[kind][ifname] = int(counter["bytes"])
    ifnames = set().union(*by_kind.values())
    counts = {}
    for ifname in ifnames:
        a, b, c, d = (by_kind[_OBJECT[name]].get(ifname, 0) for name in COUNTERS)
        counts[ifname] = (a, b, c, d)
    return Reading(table, counts)


class LinkMeter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # of every interface this node makes
        self.known: set[str] = set()

    def open(self) -> None:
        """Create the table unless it is there with these rules (then it is adopted,
        counters and all)."""
        if command.run_ok("nft", "list", "set", "inet", TABLE, _marker(self.prefix)):
            return
        command.run_ok("nft", "delete", "table", "inet", TABLE)  # older rules, if any
        command.run("nft", "-f", "-", stdin=render(self.prefix))

    def add(self, ifname: str, neighbour: tuple[IPAddress, ...]) -> None:
        """Count ``ifname``; ``neighbour``: its addresses, which the consumer side leaves out."""
        if ifname in self.known:
            return
        if not ifname.startswith(self.prefix):
            raise ValueError(f"{ifname!r} is not one of ours (prefix {self.prefix!r})")
        command.run("nft", "-f", "-", stdin=render_link(ifname, neighbour))
        self.known.add(ifname)

    def read(self) -> Reading:
        listing = command.run("nft", "-j", "list", "table", "inet", TABLE)
        try:
            return parse(listing)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OSError(f"nft gave a listing we cannot read: {exc!r}") from exc

    def remove(self) -> None:
        """Only when meshd leaves for good (``meshd leave``): a restart adopts the table."""
        command.run_ok("nft", "delete", "table", "inet", TABLE)
