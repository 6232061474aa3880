"""HelloSocket + LinkQuality between two real namespaces joined by a veth pair, with
link-local addresses: RTT and loss measured through the kernel (nftables dropping a share of
one side's probes at ingress), and the socket outliving its interface and garbage.

Every namespace and link is named ``hq`` + random hex; the fixture's finalizer removes them
and the probe processes whatever the test did.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ADDRESS_A, ADDRESS_B = "fe80::a", "fe80::b"

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) not installed"),
]


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20)
    if check:
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done


class Pair:
    """Two namespaces and a veth pair between them, link-local addresses on both ends."""

    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        self.ns_a, self.ns_b = f"hq{tag}A", f"hq{tag}B"
        self.if_a, self.if_b = f"hq{tag}a", f"hq{tag}b"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[str]] = []

    def create(self) -> None:
        for namespace in (self.ns_a, self.ns_b):
            run("ip", "netns", "add", namespace)
            self.namespaces.append(namespace)
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        self.link()

    def link(self) -> None:
        run(
            "ip", "-n", self.ns_a, "link", "add", self.if_a,
            "type", "veth", "peer", "name", self.if_b, "netns", self.ns_b,
        )  # fmt: skip
        for namespace, ifname, address in (
            (self.ns_a, self.if_a, ADDRESS_A),
            (self.ns_b, self.if_b, ADDRESS_B),
        ):
            # Only our address: no kernel-made EUI-64 one, no DAD delay (nodad).
            run("ip", "-n", namespace, "link", "set", ifname, "addrgenmode", "none")
            run("ip", "-n", namespace, "addr", "add", f"{address}/64", "dev", ifname, "nodad")
            run("ip", "-n", namespace, "link", "set", ifname, "up")

    def unlink(self) -> None:
        run("ip", "-n", self.ns_a, "link", "del", self.if_a)  # takes its peer with it

    def probe(self, side: str, start_at: float, snapshot_at: float, stop_at: float) -> None:
        namespace, ifname, peer = (
            (self.ns_a, self.if_a, ADDRESS_B) if side == "a" else (self.ns_b, self.if_b, ADDRESS_A)
        )
        argv = [
            "ip", "netns", "exec", namespace, PYTHON, "-m", "tests.netns.hello_probe",
            "--ifname", ifname, "--peer", peer, "--interval", "0.05",
            "--start-at", str(start_at), "--snapshot-at", str(snapshot_at),
            "--stop-at", str(stop_at),
        ]  # fmt: skip
        self.processes.append(
            subprocess.Popen(
                argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )

    def results(self, timeout: float) -> list[dict[str, Any]]:
        out = []
        for process in self.processes:
            stdout, stderr = process.communicate(timeout=timeout)
            assert process.returncode == 0, stderr
            out.append(json.loads(stdout))
        return out

    def clean(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
        for namespace in self.namespaces:
            run("ip", "netns", "del", namespace, check=False)
        listed = run("ip", "netns", "list").stdout.split()
        assert not set(self.namespaces) & set(listed), "namespace left behind"


@pytest.fixture
def pair() -> Iterator[Pair]:
    box = Pair()
    try:
        box.create()
        yield box
    finally:
        box.clean()


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) not installed")
def test_rtt_and_loss_are_measured_over_the_link(pair: Pair) -> None:
    drop_percent = 30
    ruleset = f"""
    table inet hqdrop {{
        chain input {{
            type filter hook input priority 0; policy accept;
            udp dport 6696 numgen random mod 100 < {drop_percent} drop
        }}
    }}
    """
    done = subprocess.run(
        ["ip", "netns", "exec", pair.ns_b, "nft", "-f", "-"],
        input=ruleset,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    start = time.time() + 1.5  # both interpreters are up by then
    pair.probe("a", start, start + 10, start + 11)
    pair.probe("b", start, start + 10, start + 11)
    a, b = pair.results(timeout=30)

    for side in (a, b):
        assert side["garbage"] == side["foreign"] == side["send_failed"] == 0
        assert side["sent"] > 150  # 20 a second
        assert side["rtt_samples"] > 50
        rtt = side["snapshot"]["rtt_ms"]
        assert rtt is not None and 0 < rtt < 50  # a veth: well under a millisecond, idle
    # b drops ~30% of what a sends; a hears everything b sends.
    missed_by_b = b["snapshot"]["hellos_missed"]
    heard_by_b = b["snapshot"]["hellos_received"]
    assert missed_by_b / (missed_by_b + heard_by_b) == pytest.approx(0.30, abs=0.1)
    assert b["snapshot"]["loss"] is not None
    missed_by_a = a["snapshot"]["hellos_missed"]
    assert missed_by_a / (missed_by_a + a["snapshot"]["hellos_received"]) < 0.05
    # Both ends pay for it: b from its own history, a from b's IHUs (its txcost).
    assert b["mean_cost"] > 110 and a["mean_cost"] > 110


def test_the_socket_outlives_its_interface_and_garbage(pair: Pair) -> None:
    start = time.time() + 1.5
    pair.probe("a", start, start + 6, start + 6.5)
    pair.probe("b", start, start + 6, start + 6.5)
    time.sleep(max(0.0, start + 1.0 - time.time()))
    # Garbage to a's probe port from b's end of the link: not Babel, a short Babel
    # header, and a datagram longer than any probe (truncated: dropped by the socket).
    sender = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "to = (sys.argv[1], 6696, 0, socket.if_nametoindex(sys.argv[2]))\n"
        "for data in (b'garbage', bytes([42, 2, 0, 16]), bytes(3000)):\n"
        "    s.sendto(data, to)\n"
    )
    run("ip", "netns", "exec", pair.ns_b, PYTHON, "-c", sender, ADDRESS_A, pair.if_b)
    time.sleep(max(0.0, start + 1.5 - time.time()))
    pair.unlink()
    time.sleep(max(0.0, start + 3.0 - time.time()))
    pair.link()
    a, b = pair.results(timeout=20)

    assert a["garbage"] == 2  # the oversized one never reached the callback
    for side in (a, b):
        per_second = {int(k): v for k, v in side["per_second"].items()}
        assert per_second.get(0, 0) > 5  # probes flowed...
        assert per_second.get(2, 0) == 0  # ...not while the link was gone...
        assert per_second.get(4, 0) + per_second.get(5, 0) > 10  # ...and again once back
        assert side["send_failed"] > 5  # sends to the vanished interface: dropped, no crash
        assert side["snapshot"]["rtt_ms"] is not None
