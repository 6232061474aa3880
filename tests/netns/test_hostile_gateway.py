"""A gateway that grants exit sessions and then drops its users' traffic (issue 28, item 3),
on the demo neighbourhood (netns-testbed/topologies/demo.toml: a and d share their uplinks;
e, with a LAN host and no uplink, is two hops from either).

The gateway e leaves by drops everything its exit interface forwards (a table of its own
in its namespace's nftables: the stand-in for its modified code) while its own uplink
check, its advert and its grants go on as before. e's LAN traffic goes unanswered, so e
checks the internet through its exit tunnel (meshd.core.routing.exit_check: the testbed's
internet server, as the gateways check theirs), counts the gateway as refusing it
(``exit_no_internet``) after two failed checks in a row, and leaves by the other one:
its LAN host's requests are answered again within the gateway failover target (3 s,
netns-testbed/benchmarks/failover.py). Before, e kept that gateway, and its LAN lost
the internet, for as long as the gateway liked.

An idle exit is not checked (after the one check of a new grant). And no false failover:
with the gateway healthy, traffic its far end does not answer plus one lost check (its
SYN dropped), and short blips of everything while the LAN host browses (0.4 s: less than
a check's interval, so each costs at most one check), move nobody."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.netns import meshbed
from tests.netns.test_mesh_exits import GATEWAYS, SERVER
from tests.netns.test_mesh_exits import Bed as ExitsBed

pytestmark = [*meshbed.NEEDS_ROOT_AND_WIREGUARD, pytest.mark.timed]
TARGET_S = 3.0  # failover.gateway.median_s's target
HOSTILE = "hostile"
BLIPS = 5  # the nftables table standing in for the gateway's modified code


class Bed(ExitsBed):
    def exit_interface(self, gateway: str) -> str:
        links = json.loads(self.sh(gateway, "ip", "-j", "link", "show"))
        return next(link["ifname"] for link in links if link["ifname"].endswith("xg"))

    def drop(self, gateway: str, rule: str = "") -> None:
        """From now on ``gateway`` drops what its exit users send (or what ``rule``
        says, within it), before meshd's own forward chain sees it."""
        xg = self.exit_interface(gateway)
        hook = "{ type filter hook forward priority -10 ; policy accept ; }"
        self.sh(gateway, "nft", "add", "table", "inet", HOSTILE)
        self.sh(gateway, "nft", "add", "chain", "inet", HOSTILE, "forward", hook)
        verdict = rule.split() or ["drop"]
        self.sh(gateway, "nft", "add", "rule", "inet", HOSTILE, "forward", "iifname", xg, *verdict)

    def blip(self, gateway: str, seconds: float) -> None:
        """``gateway`` drops what its exit users send for ``seconds``, timed in its own
        namespace (not across the testbed's exec)."""
        xg = self.exit_interface(gateway)
        hook = "{ type filter hook forward priority -10 ; policy accept ; }"
        self.sh(
            gateway,
            "sh",
            "-c",
            f"nft add table inet {HOSTILE}"
            f" && nft 'add chain inet {HOSTILE} forward {hook}'"
            f" && nft add rule inet {HOSTILE} forward iifname {xg} drop"
            f" && sleep {seconds}; nft delete table inet {HOSTILE}",
        )

    def allow(self, gateway: str) -> None:
        self.sh(gateway, "nft", "delete", "table", "inet", HOSTILE, check=False)

    def exit_check(self, node: str) -> dict[str, object]:
        check = self.gateway(node)["exit_check"]
        assert isinstance(check, dict), check
        return check

    def reasons(self, node: str) -> dict[str | None, str]:
        return {self.name_of(c["node_id"]): c["reason"] for c in self.gateway(node)["candidates"]}


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("demo.toml", "hg", Bed) as b:
        for node in "bce":
            b.wait(f"{node} leaves by a gateway", lambda n=node: b.exit_of(n) is not None, 15)
        # e's new exit is checked once, and passes.
        b.wait("e's exit check passes", lambda: b.exit_check("e")["last"] == "connected", 10)
        yield b


# Requests from the LAN host, one started every 0.1 s in a thread of its own (a request
# waits at most 1 s): a line "start end" (wall clock) for each answered one.
PROBER = """
import sys, threading, time, urllib.request
def get():
    start = time.time()
    try:
        urllib.request.urlopen("http://%s/hello.txt", timeout=1).read()
    except OSError:
        return
    print(f"{start:.3f} {time.time():.3f}", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    threading.Thread(target=get, daemon=True).start()
    time.sleep(0.1)
time.sleep(1.2)
"""


def _lan_prober(bed: Bed, node: str, seconds: float) -> subprocess.Popen[str]:
    ns = json.loads(bed.run("status", "--json"))["nodes"][node]["lan_namespace"]
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", PROBER % SERVER, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_an_idle_exit_is_not_checked_and_doubts_that_pass_move_nobody(bed: Bed) -> None:
    first = bed.exit_of("e")
    assert first in GATEWAYS
    e_mesh = bed.status("e")["mesh_ipv4"]
    before = bed.exit_check("e")
    assert bed.name_of(str(before["gateway"])) == first and before["no_internet"] == {}
    time.sleep(3)
    idle = bed.exit_check("e")
    assert idle["checks"] == before["checks"], (before, idle)
    # Pings that the far end does not answer (the gateway drops e's pings only) put the
    # exit in doubt; the first check is lost too (its SYN dropped, once): the next passes.
    bed.drop(first, f"ip saddr {e_mesh} icmp type echo-request drop")
    syn = f"ip saddr {e_mesh} ip daddr {SERVER} tcp dport 80 tcp flags syn"
    bed.sh(first, "nft", "add", "rule", "inet", HOSTILE, "forward", *syn.split(),
           "quota", "until", "100", "bytes", "drop")  # fmt: skip
    try:
        bed.sh("e", "ping", "-n", "-q", "-c", "5", "-i", "0.2", "-W", "1", SERVER, check=False)
        bed.wait(
            "e checks its exit, loses one and passes the next",
            lambda: (
                int(str((c := bed.exit_check("e"))["failed"])) > int(str(idle["failed"]))
                and int(str(c["checks"])) >= int(str(idle["checks"])) + 2
                and c["failed_in_a_row"] == 0
            ),
            within=10,
        )
    finally:
        bed.allow(first)
    doubted = bed.exit_check("e")
    assert bed.exit_of("e") == first and doubted["no_internet"] == {}, doubted
    print(f"pings unanswered through {first}, one check lost: e stays ({doubted})")
    # Blips of everything e sends through it, shorter than a check's interval, while its
    # LAN host browses.
    prober = _lan_prober(bed, "e", seconds=BLIPS * 2 + 1)
    try:
        for _ in range(BLIPS):
            time.sleep(1.6)
            bed.blip(first, 0.4)
        prober.communicate(timeout=30)
    finally:
        prober.kill()
    after = bed.exit_check("e")
    assert bed.exit_of("e") == first, after
    assert after["no_internet"] == {} and bed.reasons("e")[first].startswith("selected")
    lost_in_blips = int(str(after["failed"])) - int(str(doubted["failed"]))
    checks = int(str(after["checks"])) - int(str(doubted["checks"]))
    print(
        f"{BLIPS} blips of 0.4 s through {first}: e stays, {lost_in_blips} of {checks} checks lost"
    )


def test_a_gateway_that_drops_its_users_traffic_loses_them_within_the_target(bed: Bed) -> None:
    first = bed.exit_of("e")
    assert first in GATEWAYS
    other = next(g for g in GATEWAYS if g != first)
    first_id = bed.status(first)["node_id"]
    prober = _lan_prober(bed, "e", seconds=8)
    try:
        time.sleep(1.5)  # the LAN host's requests are answered
        bed.drop(first)
        dropped_at = time.time()
        bed.wait(f"e moves to {other}", lambda: bed.exit_of("e") == other, within=10)
        out, _ = prober.communicate(timeout=30)
        # The gateway's own uplink check kept passing: it still announces, and grants.
        hostile = bed.gateway(first)
        assert hostile["uplink"]["state"] == "up" and hostile["sharing"]["announced"]
        assert bed.reasons("e")[first] == "refused us: exit_no_internet"
        check = bed.exit_check("e")
        print(f"e's checks through {other}: {check}")
        # Only first's count: the checks through the new one pass from the start.
        assert check["no_internet"] == {first_id: 1}, check
        assert bed.name_of(str(check["gateway"])) == other
        # The household itself is online again too.
        bed.sh("e", "curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{SERVER}/hello.txt")
    finally:
        prober.kill()
        bed.allow(first)
    answered = [tuple(map(float, line.split())) for line in out.splitlines()]
    assert [s for s, _ in answered if s < dropped_at], out  # it worked before the drop
    after = [end for start, end in answered if start > dropped_at]
    assert after, out
    took = min(after) - dropped_at
    print(
        f"{first} dropped its users' traffic: e's LAN host was answered again through "
        f"{other} {took:.2f} s later"
    )
    assert took < TARGET_S
