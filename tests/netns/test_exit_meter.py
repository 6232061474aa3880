"""ExitMeter against the kernel: a gateway namespace forwarding between a user namespace and
a server namespace counts the user's bytes both ways, by IP length, into deltas that add up
to exactly what crossed, including the last bytes of a user removed between two reads."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) not installed"),
]
USER, SERVER = "10.9.1.2", "10.9.2.2"
PING_BYTES = 1000 + 8 + 20  # payload, ICMP and IPv4 headers

# Runs in the gateway namespace: one ExitMeter across calls, driven by lines on stdin.
DRIVER = """
import ipaddress, json, sys
from meshd.adapters.net.exit_meter import ExitMeter
meter = ExitMeter()
for line in sys.stdin:
    op, _, arg = line.strip().partition(" ")
    if op == "open": meter.open(arg)
    elif op == "add": meter.add(ipaddress.IPv4Address(arg))
    elif op == "remove": meter.remove(ipaddress.IPv4Address(arg))
    elif op == "deltas": print(json.dumps({str(a): n for a, n in meter.deltas().items()}))
    elif op == "close": meter.close()
    if op != "deltas": print("{}")  # done: the test goes on only now
    sys.stdout.flush()
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    tag = secrets.token_hex(3)
    user, gw, server = (f"em{tag}{r}" for r in "ugs")
    try:
        for ns in (user, gw, server):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "xg", "netns", gw, "type", "veth", "peer", "eth0", "netns", user)
        sh("ip", "link", "add", "upl", "netns", gw, "type", "veth", "peer", "eth0", "netns", server)
        for ns, dev, address in (
            (user, "eth0", f"{USER}/24"),
            (gw, "xg", "10.9.1.1/24"),
            (gw, "upl", "10.9.2.1/24"),
            (server, "eth0", f"{SERVER}/24"),
        ):
            sh("ip", "-n", ns, "addr", "add", address, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", user, "route", "add", "default", "via", "10.9.1.1")
        sh("ip", "-n", server, "route", "add", "default", "via", "10.9.2.1")
        sh("ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield user, gw, server
    finally:
        for ns in (user, gw, server):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_the_meter_counts_a_users_bytes_both_ways_and_loses_none_on_removal(
    namespaces: tuple[str, str, str],
) -> None:
    user, gw, _ = namespaces
    driver = subprocess.Popen(
        ["ip", "netns", "exec", gw, sys.executable, "-c", DRIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert driver.stdin is not None and driver.stdout is not None

    def ask(line: str) -> dict[str, int]:
        assert driver.stdin is not None and driver.stdout is not None
        driver.stdin.write(line + "\n")
        driver.stdin.flush()
        return dict(json.loads(driver.stdout.readline()))

    def ping(count: int) -> None:
        sh("ip", "netns", "exec", user, "ping", "-q", "-c", str(count), "-i", "0.01",
           "-s", "1000", SERVER)  # fmt: skip

    try:
        ask("open xg")
        ping(3)  # before the user is added: not counted
        ask("add " + USER)
        ping(5)
        assert ask("deltas") == {USER: 5 * 2 * PING_BYTES}  # each echo out and its reply
        assert ask("deltas") == {}  # nothing new, nothing twice
        ping(4)
        ask("remove " + USER)  # between two reads
        ping(2)  # after removal: not counted
        assert ask("deltas") == {USER: 4 * 2 * PING_BYTES}
        ask("close")
        listing = subprocess.run(
            ["ip", "netns", "exec", gw, "nft", "list", "tables"], capture_output=True, text=True
        )
        assert "meshd_meter" not in listing.stdout
    finally:
        driver.kill()
        driver.wait()
