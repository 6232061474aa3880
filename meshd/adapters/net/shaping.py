"""Owner first, then every exit user alike: tc on a sharing node's uplink and exit
interface (commands built pure, run by ``apply`` and ``FairShare``).

- Upload: HTB at the root of the uplink, just under the line's rate so that the queue
  builds here and not in the modem. The household's class (1:10, the default) has what the
  mesh's cap leaves, may borrow up to the whole line, and is served first (prio 0); the
  mesh's class (1:20) gets at most its cap.
- Download: what comes back for exit users leaves through the exit interface, all of it
  mesh traffic, so an HTB there holds it to the cap in its class 1:20; the household's
  downloads never pass through it. (Hop-by-hop exits would need the mesh links' egress
  gathered into an ifb: the exit tunnel makes one interface carry it all.)
- Every exit user alike: under 1:20, on both interfaces, each admitted user has a class
  of its own (``FairShare``), all with the same rate and quantum, so that the users that
  want more than their share split what is left byte for byte (HTB's deficit round robin),
  and each with a short queue (fq_codel where the kernel has it, else a pfifo of about
  20 ms at the cap): one user filling the mesh's share cannot starve another or make it
  wait behind its queue. nftables puts each user's packets in its class (``meta priority
  set`` from a map keyed by its mesh address: this kernel has no fw classifier or connmark
  action); a packet of no admitted user goes in 1:2f.
Without a line rate the household's class is unlimited and only the cap applies; with
neither, nothing is shaped here and the queue is wherever the line is slowest.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Collection

from meshd.adapters.net import command

OWNER_CLASS = "1:10"
MESH_CLASS = "1:20"  # the mesh's share: its users' classes are under it
MESH_OTHER = "1:2f"  # mesh traffic of no admitted user
FIRST_USER, LAST_USER = 0x100, 0xFFFF  # user classes' minor numbers
LINE_SHARE = 0.96  # of the line's rate: keep the queue on this side of the modem
UNLIMITED_KBIT = 10_000_000
USER_SHARE = 16  # a user class's assured rate: the cap over this (the rest is borrowed)
QUANTUM = 1514  # bytes a class sends in its turn, the same for all: a fair split
QUEUE_S = 0.02  # a user's pfifo holds this long at the cap
MIN_QUEUE = 8  # packets
FAIR_TABLE = "meshd_fair"


def uplink_commands(ifname: str, rate_kbit: int | None, cap_kbit: int | None) -> list[list[str]]:
    line = round(rate_kbit * LINE_SHARE) if rate_kbit else UNLIMITED_KBIT
    cap = mesh_cap_kbit(rate_kbit, cap_kbit)
    owner = max(line - cap, 1) if rate_kbit else line
    dev = ["dev", ifname]
    return [
        ["tc", "qdisc", "replace", *dev, "root", "handle", "1:", "htb", "default", "10"],
        ["tc", "class", "replace", *dev, "parent", "1:", "classid", "1:1",
         "htb", "rate", f"{line}kbit", "ceil", f"{line}kbit"],
        ["tc", "class", "replace", *dev, "parent", "1:1", "classid", OWNER_CLASS,
         "htb", "rate", f"{owner}kbit", "ceil", f"{line}kbit", "prio", "0"],
        ["tc", "class", "replace", *dev, "parent", "1:1", "classid", MESH_CLASS,
         "htb", "rate", f"{cap}kbit", "ceil", f"{cap}kbit", "prio", "1"],
        _leaf_class(ifname, MESH_OTHER, cap),
    ]  # fmt: skip


def mesh_cap_kbit(rate_kbit: int | None, cap_kbit: int | None) -> int:
    """The rate of the uplink's mesh class (what ``uplink_commands`` gives it)."""
    line = round(rate_kbit * LINE_SHARE) if rate_kbit else UNLIMITED_KBIT
    return min(cap_kbit or line, line)


def exit_commands(ifname: str, cap_kbit: int) -> list[list[str]]:
    """The exit interface: everything it sends is the mesh's, held to the cap."""
    dev = ["dev", ifname]
    return [
        ["tc", "qdisc", "replace", *dev, "root", "handle", "1:", "htb",
         "default", MESH_OTHER.split(":")[1]],
        ["tc", "class", "replace", *dev, "parent", "1:", "classid", MESH_CLASS,
         "htb", "rate", f"{cap_kbit}kbit", "ceil", f"{cap_kbit}kbit"],
        _leaf_class(ifname, MESH_OTHER, cap_kbit),
    ]  # fmt: skip


def _leaf_class(ifname: str, classid: str, cap_kbit: int) -> list[str]:
    """A class under the mesh's with the users' rate and quantum, borrowing up to the cap."""
    rate = max(cap_kbit // USER_SHARE, 8)
    return ["tc", "class", "replace", "dev", ifname, "parent", MESH_CLASS, "classid", classid,
            "htb", "rate", f"{rate}kbit", "ceil", f"{cap_kbit}kbit", "quantum", str(QUANTUM),
            "prio", "1"]  # fmt: skip


def short_queue(cap_kbit: int, fq_codel: bool) -> list[str]:
    """A user class's qdisc: fq_codel, else a pfifo of ``QUEUE_S`` at the cap."""
    if fq_codel:
        return ["fq_codel"]
    packets = math.ceil(cap_kbit * 1000 / 8 * QUEUE_S / QUANTUM)
    return ["pfifo", "limit", str(max(packets, MIN_QUEUE))]


def user_class(slot: int) -> str:
    return f"1:{slot:x}"


def user_commands(ifname: str, slot: int, cap_kbit: int, queue: list[str]) -> list[list[str]]:
    classid = user_class(slot)
    return [
        _leaf_class(ifname, classid, cap_kbit),
        ["tc", "qdisc", "replace", "dev", ifname, "parent", classid, *queue],
    ]


def render_fair(gateway_interface: str, shaped: Collection[str]) -> str:
    """Table ``inet meshd_fair``: exit users' packets into their classes by mesh address,
    on the ``shaped`` interfaces (the maps' elements added and removed one user at a time,
    as the meter's). Upload: from the exit interface to the uplink, by source; download:
    out of the exit interface, by destination."""
    rules = [
        f'\t\tiifname "{gateway_interface}" oifname "{ifname}" meta priority set ip saddr map @up'
        if ifname != gateway_interface
        else f'\t\toifname "{ifname}" meta priority set ip daddr map @down'
        for ifname in shaped
    ]
    return (
        "\n".join(
            [
                f"table inet {FAIR_TABLE} {{}}",
                f"delete table inet {FAIR_TABLE}",
                f"table inet {FAIR_TABLE} {{",
                *(f"\tmap {name} {{ type ipv4_addr : classid; }}" for name in ("up", "down")),
                "\tchain forward {",
                # After meshd's filter chain, which puts them all in MESH_OTHER.
                "\t\ttype filter hook forward priority filter + 10; policy accept;",
                *rules,
                "\t}",
                "}",
            ]
        )
        + "\n"
    )


def apply(commands: list[list[str]]) -> None:
    for cmd in commands:
        command.run(*cmd)


def remove(ifname: str) -> None:
    command.run_ok("tc", "qdisc", "del", "dev", ifname, "root")


class FairShare:
    """A class of its own for each exit user on the shaped interfaces (kernel thread only).

    ``open`` once the qdiscs of ``uplink_commands`` and ``exit_commands`` exist; ``add``
    and ``remove`` as users are admitted and released; ``close`` at the end (the classes
    go with the interfaces' qdiscs)."""

    def __init__(self) -> None:
        self.gateway_interface = ""
        self.shaped: dict[str, int] = {}  # interface -> its mesh class's rate (kbit/s)
        self.queue: dict[str, list[str]] = {}  # interface -> its user classes' qdisc
        self.slots: dict[ipaddress.IPv4Address, int] = {}

    def open(self, gateway_interface: str, shaped: dict[str, int]) -> None:
        self.close()
        if not shaped:
            return
        command.run("nft", "-f", "-", stdin=render_fair(gateway_interface, shaped))
        self.gateway_interface, self.shaped = gateway_interface, dict(shaped)
        for ifname, cap in shaped.items():
            # fq_codel where the kernel has it (tried on the class of no user's packets).
            fq = command.run_ok("tc", "qdisc", "replace", "dev", ifname, "parent", MESH_OTHER,
                                "fq_codel")  # fmt: skip
            self.queue[ifname] = queue = short_queue(cap, fq)
            if not fq:
                command.run("tc", "qdisc", "replace", "dev", ifname, "parent", MESH_OTHER, *queue)

    def close(self) -> None:
        command.run_ok("nft", "delete", "table", "inet", FAIR_TABLE)
        self.gateway_interface, self.shaped, self.queue, self.slots = "", {}, {}, {}

    def add(self, address: ipaddress.IPv4Address) -> None:
        if not self.shaped or address in self.slots:
            return
        used = set(self.slots.values())
        slot = next(n for n in range(FIRST_USER, LAST_USER + 1) if n not in used)
        for ifname, cap in self.shaped.items():
            apply(user_commands(ifname, slot, cap, self.queue[ifname]))
            element = f"{{ {address} : {user_class(slot)} }}"
            command.run("nft", "add", "element", "inet", FAIR_TABLE, self._map(ifname), element)
        self.slots[address] = slot

    def remove(self, address: ipaddress.IPv4Address) -> None:
        slot = self.slots.pop(address, None)
        if slot is None:
            return
        for ifname in self.shaped:
            element = f"{{ {address} }}"
            command.run_ok(
                "nft", "delete", "element", "inet", FAIR_TABLE, self._map(ifname), element
            )
            command.run_ok("tc", "class", "del", "dev", ifname, "classid", user_class(slot))

    def _map(self, ifname: str) -> str:
        return "down" if ifname == self.gateway_interface else "up"
