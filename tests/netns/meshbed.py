"""A testbed driven through its CLI (the DESIGN.md contract) for the meshd netns tests:
one testbed per module, in a state directory and namespace prefix of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "netns-testbed" / "testbed"

NEEDS_ROOT_AND_WIREGUARD = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="needs wireguard-go"),
]


class Bed:
    def __init__(self, ident: str) -> None:
        self.dir = Path(f"/run/meshd-testbed-{ident}")
        self.env = {**os.environ, "MESHD_TESTBED_ID": ident, "MESHD_TESTBED_DIR": str(self.dir)}
        self.ids: dict[str, str] = {}  # node id by node name, once ``learn``ed
        self.ips: dict[str, str] = {}  # mesh IPv4 address by node name

    def learn(self, names: str) -> None:
        """The node ids and mesh addresses of the nodes ``names`` (one letter each)."""
        statuses = {n: self.status(n) for n in names}
        self.ids.update({n: s["node_id"] for n, s in statuses.items()})
        self.ips.update({n: s["mesh_ipv4"] for n, s in statuses.items()})

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        res = subprocess.run(
            [str(TESTBED), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert res.returncode == 0, f"testbed {args}: {res.stderr}{res.stdout}"
        return res.stdout

    def sh(self, node: str, *cmd: str, check: bool = True) -> str:
        return self.run("exec", node, "--", *cmd, check=check)

    def status(self, node: str) -> dict[str, Any]:
        """The node's `meshd status --json`."""
        return json.loads(self.sh(node, "meshd", "status", "--json"))

    def neighbours(self, node: str) -> dict[str, dict[str, Any]]:
        """The node's neighbours in its status, by name."""
        return {n["name"]: n for n in self.status(node)["neighbours"]}

    def name_of(self, node_id: str) -> str:
        """The name of a node ``learn``ed."""
        return next(name for name, known in self.ids.items() if known == node_id)

    def pid(self, node: str) -> int | None:
        return json.loads(self.run("status", "--json"))["nodes"][node]["pid"]

    def route(self, node: str, prefix: str) -> dict[str, Any] | None:
        return next((r for r in self.status(node)["routes"] if r["prefix"] == prefix), None)

    @contextmanager
    def pinging(self, node: str, address: str, deadline_s: int = 30) -> Iterator[None]:
        """``node`` pings ``address`` ten times a second while the block runs (a flow into
        the links on the way: what a link's liveness watches), at most ``deadline_s``."""
        ping = subprocess.Popen(
            [str(TESTBED), "exec", node, "--", "ping", "-q", "-i", "0.1", "-w", str(deadline_s)]
            + [address],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            ping.terminate()
            ping.wait(timeout=10)

    def wait(self, what: str, predicate: Callable[[], bool], within: float) -> float:
        """Poll until ``predicate``; return how long it took, fail after ``within`` s."""
        start = time.monotonic()
        while time.monotonic() - start < within:
            if predicate():
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"not within {within}s: {what}")


B = TypeVar("B", bound=Bed)


@contextmanager
def testbed(topology: str | Path, prefix: str, kind: type[B]) -> Iterator[B]:
    """``topology`` (a file in netns-testbed/topologies, or a path) up and converged, then
    down; the bed's name is ``prefix`` and this process's id, so that other runs of the
    same test can be up at once."""
    bed = kind(f"{prefix}{os.getpid() % 10000}")
    bed.run("down", check=False)
    try:
        bed.run("up", str(REPO / "netns-testbed/topologies" / topology), "--wait")
        bed.run("wait-converged", "--timeout", "30")
        yield bed
    finally:
        bed.run("down", check=False)


def metric_is_hops(metric: int, hops: int) -> bool:
    """A Babel metric of ``hops`` tunnel links: 96 each (RFC 8966 A.2.1), plus what the
    probes measured on an idle testbed link (RTT over 10 ms, a lost probe), never a whole
    hop's worth more."""
    return hops * 96 <= metric < (hops + 1) * 96


def dns_query(resolver: str) -> str:
    """A program making one lookup as a stub resolver makes it: a query, asked again once
    after 3 s without an answer (glibc's attempts:2), each from a new socket."""
    return (
        "import socket\n"
        "from scapy.layers.dns import DNS, DNSQR\n"
        "for attempt in range(2):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
        f"    s.sendto(bytes(DNS(rd=1, qd=DNSQR(qname='internet.test'))), ('{resolver}', 53))\n"
        "    try:\n"
        "        answer = DNS(s.recv(512))\n"
        "        print(answer.an.rdata if answer.an else 'no answer')\n"
        "        break\n"
        "    except TimeoutError:\n"
        "        pass\n"
        "else:\n"
        "    print('timeout')\n"
    )
