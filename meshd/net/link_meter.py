"""Per-neighbour byte counters on every link, kept by nftables (kernel thread only).

The counting point is DESIGN.md's (a contract), in IP packet length, after meshd's own
filtering (the chains run after the firewall's), matched by interface name so that a
recreated interface keeps counting:

- as provider for the neighbour behind interface X: ``relayed_for`` = packets in from X
  that this node forwards; ``relayed_to`` = packets it forwards out of X;
- as consumer of that neighbour: ``sent`` = packets out of X (forwarded or our own) not
  addressed to the neighbour; ``received`` = packets in from X (forwarded or for us) not
  sent by the neighbour. The neighbour's addresses (mesh IPv4 and IPv6, link-local) are
  kept per interface in two sets; link-scope traffic (IPv6 link-local sources, multicast
  such as MLD reports) is the link's own, for whoever is on it: never relayed, not counted.

Table ``inet meshd_links`` is created once and then adopted, never replaced: its counters
outlive a crashed meshd, and elements are only ever added (adding one again keeps its
counter). A reader tells a reset (a new table, after a reboot or by hand) by the table's
handle. An empty set named after the rules' version marks the table: one with other rules
(an older meshd's) is made again, and the ledger rebases on the new handle.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshd.net import command
from meshd.net.nft_counters import set_counters

TABLE = "meshd_links"
VERSION = "rules_v2"  # change it with the rules
COUNTERS = ("relayed_for", "relayed_to", "sent", "received")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def render() -> str:
    sets = [f"\tset {name} {{ type ifname; counter; }}" for name in COUNTERS]
    sets += [
        "\tset peer4 { type ifname . ipv4_addr; }",
        "\tset peer6 { type ifname . ipv6_addr; }",
        f"\tset {VERSION} {{ type ifname; }}",
    ]
    sent = [
        "ip daddr != 224.0.0.0/4 oifname . ip daddr != @peer4 oifname @sent",
        "ip6 daddr != ff00::/8 oifname . ip6 daddr != @peer6 oifname @sent",
    ]
    received = [
        "ip daddr != 224.0.0.0/4 iifname . ip saddr != @peer4 iifname @received",
        "ip6 saddr != fe80::/10 ip6 daddr != ff00::/8 iifname . ip6 saddr != @peer6 "
        "iifname @received",
    ]
    chains = {
        "forward": ["iifname @relayed_for", "oifname @relayed_to", *sent, *received],
        "output": sent,
        "input": received,
    }
    lines = [f"table inet {TABLE} {{", *sets]
    for hook, rules in chains.items():
        lines += [
            f"\tchain {hook} {{",
            f"\t\ttype filter hook {hook} priority filter + 20; policy accept;",
            *(f"\t\t{rule}" for rule in rules),
            "\t}",
        ]
    return "\n".join([*lines, "}"]) + "\n"


@dataclass(frozen=True)
class Reading:
    """One read of the table: its handle (a new one means every counter restarted) and
    the four counters per interface, in COUNTERS order."""

    table: int
    counts: dict[str, tuple[int, int, int, int]]


def parse(listing: str) -> Reading:
    """``nft -j list table inet meshd_links`` -> a Reading."""
    table, per_set = set_counters(listing)
    ifnames = set().union(*(per_set.get(name, {}) for name in COUNTERS))
    counts = {}
    for ifname in ifnames:
        a, b, c, d = (per_set.get(name, {}).get(ifname, 0) for name in COUNTERS)
        counts[ifname] = (a, b, c, d)
    return Reading(table, counts)


class LinkMeter:
    def __init__(self) -> None:
        self.known: set[str] = set()

    def open(self) -> None:
        """Create the table unless it is there with these rules (then it is adopted,
        counters and all)."""
        if command.run_ok("nft", "list", "set", "inet", TABLE, VERSION):
            return
        command.run_ok("nft", "delete", "table", "inet", TABLE)  # older rules, if any
        command.run("nft", "-f", "-", stdin=render())

    def add(self, ifname: str, neighbour: tuple[IPAddress, ...]) -> None:
        """Count ``ifname``; ``neighbour``: its addresses, which the consumer side leaves out."""
        if ifname in self.known:
            return
        for name in COUNTERS:
            command.run("nft", "add", "element", "inet", TABLE, name, f'{{ "{ifname}" }}')
        for address in neighbour:
            kind = "peer4" if address.version == 4 else "peer6"
            command.run(
                "nft", "add", "element", "inet", TABLE, kind, f'{{ "{ifname}" . {address} }}'
            )
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
