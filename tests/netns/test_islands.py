"""Two islands joined over the internet (netns-testbed/topologies/islands.toml, issue 25):
a (public uplink) and b share a cable; c, behind its household's masquerading router, and
d share another. c dials a over the internet; nothing else joins the islands, so b and d
reach each other only through a and c (relayed by routing), over a link opened through
the NAT from inside."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
A_PUBLIC, C_PUBLIC = "198.51.100.10", "198.51.100.12"  # c's: its router's
SERVER = "203.0.113.1"
MARK = "0x4d58"  # [exit] fwmark, the default


class Bed(meshbed.Bed):
    def neighbour(self, node: str, peer: str) -> dict[str, Any]:
        found = self.neighbours(node)
        assert peer in found, f"{node} has no neighbour {peer}"
        return found[peer]

    def reaches(self, node: str, address: str) -> bool:
        out = self.sh(node, "ping", "-n", "-c", "1", "-W", "1", address, check=False)
        return " 1 received" in out


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("islands.toml", "i", Bed) as b:
        b.learn("abcd")
        yield b


def test_a_node_behind_nat_links_to_a_public_one_over_the_internet(bed: Bed) -> None:
    bed.wait("a's link to c is up", lambda: bed.neighbour("a", "c")["state"] == "up", 15)
    c = bed.neighbour("a", "c")
    # a sees c's session and tunnel come from c's router, at the port its mapping kept.
    assert c["control"]["address"].startswith(f"{C_PUBLIC}:"), c
    assert c["endpoint"].startswith(f"{C_PUBLIC}:"), c
    assert c["control"]["reached"] == "internet", c  # c dialled a
    a = bed.neighbour("c", "a")
    assert a["state"] == "up" and "bootstrap" in a["control"]["found_by"], a
    assert a["control"]["reached"] == "bootstrap", a
    assert a["endpoint"].startswith(f"{A_PUBLIC}:"), a
    # Nothing from the internet reaches c but replies: c's router has no way in.
    inet = json.loads(bed.run("status", "--json"))["internet"]["namespace"]
    probe = subprocess.run(
        ["ip", "netns", "exec", inet, "ping", "-n", "-c", "1", "-W", "1", "192.168.2.2"],
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0, probe.stdout


def test_the_islands_reach_each_other_through_the_link_across_the_nat(bed: Bed) -> None:
    """b and d share no medium and no uplink: Babel routes them over a and c."""
    route = bed.route("b", f"{bed.ips['d']}/32")
    assert route is not None and route["via"] == bed.ids["a"], route
    assert meshbed.metric_is_hops(route["metric"], 3), route
    assert bed.reaches("b", bed.ips["d"]) and bed.reaches("d", bed.ips["b"])


def test_a_node_leaving_by_an_exit_keeps_its_internet_link_out_of_the_tunnel(
    bed: Bed,
) -> None:
    """c's router stops reaching the testbed's server (c's uplink fails its health check)
    while a stays reachable: c leaves by a's exit, whose tunnel runs over the link c
    opened to a across the internet. That link's own packets carry the exit's mark and
    keep leaving by the uplink (the exit's default route would take them into the
    tunnel that runs over them); d, across c's island, leaves by a's exit throughout."""
    nat = json.loads(bed.run("status", "--json"))["nodes"]["c"]["namespace"] + "-nat"
    curl = ("curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}")
    curl += (f"http://{SERVER}/hello.txt",)
    bed.wait("d leaves by a's exit", lambda: bed.status("d")["gateway"]["using"] == "exit", 20)
    assert bed.sh("d", *curl, check=False) == "200"
    lose = (
        "table inet lost {\n\tchain forward {\n"
        "\t\ttype filter hook forward priority -10; policy accept;\n"
        f"\t\tip daddr {SERVER} drop\n\t}}\n}}\n"
    )
    nft = ["ip", "netns", "exec", nat, "nft"]
    subprocess.run([*nft, "-f", "-"], input=lose, text=True, check=True)
    try:
        took = bed.wait(
            "c leaves by a's exit",
            lambda: bed.status("c")["gateway"]["using"] == "exit",
            within=30,
        )
        print(f"c left by a's exit {took:.1f} s after its router lost the server")
        assert bed.sh("c", *curl, check=False) == "200"  # through the tunnel, out of a
        # The link's packets are marked, and marked packets to a leave by the uplink
        # (unmarked, the exit's default route would take them). wireguard-go's sticky
        # sockets keep a link's replies on the interface they came in by anyway; the mark
        # holds for a link's first packet too, and under the kernel's WireGuard.
        link = bed.neighbour("c", "a")["interface"]
        assert f"fwmark: {MARK}" in bed.sh("c", "wg", "show", link)
        route = bed.sh("c", "ip", "route", "get", A_PUBLIC, "mark", MARK)
        assert " dev upl " in route, route
        assert " dev upl " not in bed.sh("c", "ip", "route", "get", A_PUBLIC)  # the exit's
        time.sleep(5)  # long enough for a link carried into its own tunnel to die
        assert bed.neighbour("c", "a")["state"] == "up"
        assert bed.reaches("b", bed.ips["d"]) and bed.sh("d", *curl, check=False) == "200"
    finally:
        subprocess.run([*nft, "delete", "table", "inet", "lost"], check=True)
    bed.wait(
        "c back on its own uplink", lambda: bed.status("c")["gateway"]["using"] == "own_uplink", 30
    )


def test_a_mapping_the_nat_forgets_comes_back_on_its_own(bed: Bed) -> None:
    """c's router forgets every mapping (its conntrack table flushed: as a short UDP
    timeout or a router's restart does); what a sends to c is dropped until c sends
    again, which its next keepalive or liveness probe does. Measured: how long b cannot
    reach d."""
    nat = json.loads(bed.run("status", "--json"))["nodes"]["c"]["namespace"] + "-nat"
    flush = "from pyroute2 import Conntrack\nConntrack().flush()\n"
    assert bed.reaches("b", bed.ips["d"])
    subprocess.run(["ip", "netns", "exec", nat, sys.executable, "-c", flush], check=True)
    start = time.monotonic()
    took = bed.wait("b reaches d again", lambda: bed.reaches("b", bed.ips["d"]), within=60)
    print(f"after the NAT forgot its mappings, b reached d again in {took:.1f} s")
    assert time.monotonic() - start < 60


def test_a_new_public_address_of_the_nat_heals_on_its_own(bed: Bed) -> None:
    """c's router gets a new public address (a dynamic IP that changed; its old mappings
    go with it): a hears c from the new one and the islands reach each other again.
    Measured: how long b cannot reach d."""
    nat = json.loads(bed.run("status", "--json"))["nodes"]["c"]["namespace"] + "-nat"
    new = "198.51.100.112"
    flush = "from pyroute2 import Conntrack\nConntrack().flush()\n"
    assert bed.reaches("b", bed.ips["d"])
    for cmd in (
        ["ip", "-n", nat, "addr", "del", f"{C_PUBLIC}/24", "dev", "wan0"],
        ["ip", "-n", nat, "addr", "add", f"{new}/24", "dev", "wan0"],
        ["ip", "-n", nat, "route", "replace", "default", "via", "198.51.100.1"],
        ["ip", "netns", "exec", nat, sys.executable, "-c", flush],
    ):
        subprocess.run(cmd, check=True, capture_output=True)
    took = bed.wait("b reaches d again", lambda: bed.reaches("b", bed.ips["d"]), within=90)
    print(f"after c's router changed its public address, b reached d again in {took:.1f} s")
    # WireGuard on a follows c to the new address (its QUIC session migrated with it).
    ifname = bed.neighbour("a", "c")["interface"]
    assert f"\t{new}:" in bed.sh("a", "wg", "show", ifname, "endpoints")
