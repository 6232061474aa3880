"""Bytes each exit user moves through this gateway, counted by nftables (kernel thread only).

Table ``inet meshd_meter``, apart from meshd's firewall table (which is replaced whole
whenever it changes, and would reset counters): two sets of exit users' mesh addresses,
each element with a counter, matched after the firewall's filter chain so that refused
packets are not counted. Users are added and removed one element at a time; reading turns
the counters into deltas since the last read (a removed user's last bytes included), so
nothing is counted twice and nothing counted is lost while meshd runs.
"""

from __future__ import annotations

import ipaddress

from meshd.adapters.net import command
from meshd.adapters.net.nft_counters import set_counters
from meshd.core.receipts.counting import grown

TABLE = "meshd_meter"
SETS = ("exit_up", "exit_down")  # from the user (into the uplink), to the user


def render(gateway_interface: str) -> str:
    return (
        "\n".join(
            [
                f"table inet {TABLE} {{}}",
                f"delete table inet {TABLE}",
                f"table inet {TABLE} {{",
                *(f"\tset {name} {{ type ipv4_addr; counter; }}" for name in SETS),
                "\tchain forward {",
                "\t\ttype filter hook forward priority filter + 10; policy accept;",
                f'\t\tiifname "{gateway_interface}" ip saddr @exit_up',
                f'\t\toifname "{gateway_interface}" ip daddr @exit_down',
                "\t}",
                "}",
            ]
        )
        + "\n"
    )


def counters(listing: str) -> dict[ipaddress.IPv4Address, int]:
    """Bytes per address, both sets summed, from ``nft -j list table inet meshd_meter``."""
    out: dict[ipaddress.IPv4Address, int] = {}
    for name, counts in set_counters(listing)[1].items():
        if name in SETS:
            for value, count in counts.items():
                address = ipaddress.IPv4Address(value)
                out[address] = out.get(address, 0) + count
    return out


class ExitMeter:
    def __init__(self) -> None:
        self.seen: dict[ipaddress.IPv4Address, int] = {}  # counted so far, per user
        self.pending: dict[ipaddress.IPv4Address, int] = {}  # removed users' last bytes

    def open(self, gateway_interface: str) -> None:
        command.run("nft", "-f", "-", stdin=render(gateway_interface))
        self.seen.clear()

    def close(self) -> None:
        command.run_ok("nft", "delete", "table", "inet", TABLE)

    def add(self, address: ipaddress.IPv4Address) -> None:
        if address in self.seen:
            return
        for name in SETS:
            command.run("nft", "add", "element", "inet", TABLE, name, f"{{ {address} }}")
        self.seen[address] = 0

    def remove(self, address: ipaddress.IPv4Address) -> None:
        if address not in self.seen:
            return
        self._collect()  # its last bytes first
        for name in SETS:
            command.run_ok("nft", "delete", "element", "inet", TABLE, name, f"{{ {address} }}")
        del self.seen[address]

    def deltas(self) -> dict[ipaddress.IPv4Address, int]:
        """Bytes per user since the last call (users removed meanwhile included)."""
        if self.seen:
            self._collect()
        out, self.pending = self.pending, {}
        return {a: n for a, n in out.items() if n > 0}

    def _collect(self) -> None:
        now = counters(command.run("nft", "-j", "list", "table", "inet", TABLE))
        for address, total in now.items():
            if address in self.seen:
                delta = grown(total, self.seen[address])
                self.seen[address] = total
                self.pending[address] = self.pending.get(address, 0) + delta
