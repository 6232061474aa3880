"""Owner first: tc on a sharing node's uplink and exit interface (commands built pure,
run by ``apply``).

- Upload: HTB at the root of the uplink, just under the line's rate so that the queue
  builds here and not in the modem. The household's class (1:10, the default) has what the
  mesh's cap leaves, may borrow up to the whole line, and is served first (prio 0); the
  mesh's class (1:20) gets at most its cap. nftables puts exit users' packets in 1:20
  (``meta priority set``: this kernel has no fw classifier or connmark action).
- Download: what comes back for exit users leaves through the exit interface, all of it
  mesh traffic, so a tbf there holds it to the cap; the household's downloads never pass
  through it. (Hop-by-hop exits would need the mesh links' egress gathered into an ifb:
  the exit tunnel makes one interface carry it all.)
Without a line rate the household's class is unlimited and only the cap applies.
"""

from __future__ import annotations

from meshd.adapters.net import command

OWNER_CLASS = "1:10"
MESH_CLASS = "1:20"
LINE_SHARE = 0.96  # of the line's rate: keep the queue on this side of the modem
UNLIMITED_KBIT = 10_000_000
TBF_LATENCY = "50ms"


def uplink_commands(ifname: str, rate_kbit: int | None, cap_kbit: int | None) -> list[list[str]]:
    line = round(rate_kbit * LINE_SHARE) if rate_kbit else UNLIMITED_KBIT
    cap = min(cap_kbit or line, line)
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
    ]  # fmt: skip


def exit_commands(ifname: str, cap_kbit: int) -> list[list[str]]:
    burst = max(4 * 1514, cap_kbit * 1000 // 8 // 250)  # ~4 ms of traffic, a few frames
    return [
        ["tc", "qdisc", "replace", "dev", ifname, "root", "tbf", "rate", f"{cap_kbit}kbit",
         "burst", str(burst), "latency", TBF_LATENCY],
    ]  # fmt: skip


def apply(commands: list[list[str]]) -> None:
    for cmd in commands:
        command.run(*cmd)


def remove(ifname: str) -> None:
    command.run_ok("tc", "qdisc", "del", "dev", ifname, "root")
