"""Throttling neighbours that do not sign for what we relay (kernel thread only).

A provider whose consumer is beyond its credit (meshd.core.receipts.exchange) slows what it
relays for and to that neighbour to a fixed rate each way; the neighbour is never cut off,
and traffic between the two of them is left alone. nftables ``limit`` drops what goes over
the rate, early in the forward hook (priority filter + 5, before the link meter's filter +
20), so dropped packets are not counted as relayed and TCP settles at the rate.

Table ``inet meshd_throttle`` is rendered whole and swapped in atomically whenever the set
of throttled interfaces changes; with none, it is removed.
"""

from __future__ import annotations

from meshd.adapters.net import command

TABLE = "meshd_throttle"


def render(ifnames: list[str], rate_kbit: int) -> str:
    """The whole table for ``ifnames`` (sorted, unique), each way limited to ``rate_kbit``."""
    rate = max(1, rate_kbit * 1000 // 8 // 1024)  # nft counts kbytes of 1024
    burst = max(16, rate // 4)
    over = f"limit rate over {rate} kbytes/second burst {burst} kbytes drop"
    rules = []
    for ifname in ifnames:
        rules.append(f'\t\tiifname "{ifname}" oifname != "{ifname}" {over}')
        rules.append(f'\t\toifname "{ifname}" iifname != "{ifname}" {over}')
    return (
        "\n".join(
            [
                f"table inet {TABLE} {{}}",
                f"delete table inet {TABLE}",
                f"table inet {TABLE} {{",
                "\tchain forward {",
                "\t\ttype filter hook forward priority filter + 5; policy accept;",
                *rules,
                "\t}",
                "}",
            ]
        )
        + "\n"
    )


class Throttle:
    def __init__(self, rate_kbit: int) -> None:
        self.rate_kbit = rate_kbit
        self.applied: tuple[str, ...] = ()

    def set(self, ifnames: set[str]) -> None:
        """Throttle exactly ``ifnames``; OSError (nft's message) when the kernel refuses."""
        wanted = tuple(sorted(ifnames))
        if wanted == self.applied:
            return
        if wanted:
            command.run("nft", "-f", "-", stdin=render(list(wanted), self.rate_kbit))
        else:
            command.run_ok("nft", "delete", "table", "inet", TABLE)
        self.applied = wanted

    def remove(self) -> None:
        command.run_ok("nft", "delete", "table", "inet", TABLE)
        self.applied = ()
