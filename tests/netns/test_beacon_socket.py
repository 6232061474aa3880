"""Discovery beacons on a real shared LAN segment: network namespaces on a Linux bridge.

Every namespace is named ``bcn`` + random hex; the bridge lives in a namespace of its own,
so the host's network is never touched beyond creating and deleting those namespaces. Each
node runs the real adapter and core (tests/netns/beacon_node.py) in a subprocess under
``ip netns exec``; the fixture kills them and deletes every namespace, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from meshd.adapters.beacon_socket import DEFAULT_PORT
from meshd.adapters.identity import node_id_from_public
from meshd.core.proto.beacon import make_beacon

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) not installed"),
]

REPO = Path(__file__).resolve().parents[2]
MESH_ID = bytes.fromhex("a2e8efa88f9a2fc610601fc30b9f0e1d")
SUBNET = "10.198.0"
BROADCAST = f"{SUBNET}.255"
NODES = {"a": 1, "b": 2, "c": 3}  # name -> seed (key, QUIC port 6000 + seed, address .seed)
ATTACKER_SEED = 66


def node_id(seed: int) -> str:
    return node_id_from_public(bytes(SigningKey(bytes([seed]) * 32).verify_key))


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20)


def ip(namespace: str, *args: str) -> None:
    done = run("ip", "-n", namespace, *args)
    assert done.returncode == 0, f"ip -n {namespace} {' '.join(args)}: {done.stderr}"


class Process:
    """A beacon node in a namespace; its JSON lines are collected by a thread."""

    def __init__(self, namespace: str, seed: int) -> None:
        self.seed = seed
        self.lines: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.proc = subprocess.Popen(
            [
                "ip",
                *("netns", "exec", namespace),
                *(sys.executable, "-m", "tests.netns.beacon_node"),
                *(str(seed), MESH_ID.hex()),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(json.loads(line))
                self.changed.notify_all()

    def wait_for(
        self, what: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    stderr = self.stop()
                    raise AssertionError(f"node {self.seed}: not {what}: {self.lines}\n{stderr}")
                self.changed.wait(min(left, 0.1))

    def ready(self) -> dict[str, Any]:
        self.wait_for("ready", lambda lines: any(x["event"] == "ready" for x in lines))
        return next(x for x in self.lines if x["event"] == "ready")

    def discovered(self) -> dict[str, dict[str, Any]]:
        """node id -> the first discovered event for it."""
        out: dict[str, dict[str, Any]] = {}
        for x in list(self.lines):
            if x["event"] == "discovered":
                out.setdefault(x["node_id"], x)
        return out

    def rejected(self) -> list[str]:
        return [x["reason"] for x in list(self.lines) if x["event"] == "rejected"]

    def wait_discovered(self, node: str) -> dict[str, Any]:
        self.wait_for(f"finding {node}", lambda _: node in self.discovered())
        return self.discovered()[node]

    def wait_rejected(self, count: int, reason: str | None = None) -> None:
        def enough(_: object) -> bool:
            rejected = [r for r in self.rejected() if reason is None or r == reason]
            return len(rejected) >= count

        self.wait_for(f"{count} rejected {reason or ''}", enough)

    def stop(self) -> str:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3)
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


class Lan:
    """A bridge in a switch namespace, and one namespace per host plugged into it."""

    def __init__(self) -> None:
        self.prefix = f"bcn{secrets.token_hex(4)}"
        self.namespaces: list[str] = []
        self.processes: list[Process] = []
        self.switch = self._namespace("sw")
        ip(self.switch, "link", "add", "br0", "type", "bridge")
        ip(self.switch, "link", "set", "br0", "up")
        self.hosts: dict[str, str] = {}

    def _namespace(self, role: str) -> str:
        name = f"{self.prefix}{role}"
        done = run("ip", "netns", "add", name)
        assert done.returncode == 0, done.stderr
        self.namespaces.append(name)
        ip(name, "link", "set", "lo", "up")
        return name

    def host(self, role: str, last_octet: int) -> str:
        """A namespace whose eth0 is on the bridge with SUBNET.last_octet/24."""
        ns = self._namespace(role)
        port = f"p{role}"
        ip(self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip(self.switch, "link", "set", port, "master", "br0", "up")
        ip(ns, "addr", "add", f"{SUBNET}.{last_octet}/24", "brd", "+", "dev", "eth0")
        ip(ns, "link", "set", "eth0", "up")
        self.hosts[role] = ns
        return ns

    def start(self, role: str, seed: int) -> Process:
        process = Process(self.hosts[role], seed)
        self.processes.append(process)
        return process

    def send_from(self, role: str, datagrams: list[bytes]) -> None:
        """Broadcast raw datagrams to the beacon port from host ``role`` (another port)."""
        script = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "for h in sys.argv[3:]:\n"
            "    s.sendto(bytes.fromhex(h), (sys.argv[1], int(sys.argv[2])))\n"
        )
        done = run(
            *("ip", "netns", "exec", self.hosts[role], sys.executable, "-c", script),
            *(BROADCAST, str(DEFAULT_PORT)),
            *(d.hex() for d in datagrams),
        )
        assert done.returncode == 0, done.stderr

    def clean(self) -> None:
        for process in self.processes:
            process.stop()
        for namespace in self.namespaces:
            run("ip", "netns", "del", namespace)


@pytest.fixture
def lan() -> Iterator[Lan]:
    made: list[Lan] = []
    try:
        made.append(Lan())
        yield made[0]
    finally:
        for bed in made:
            bed.clean()
        leftovers = [n for n in run("ip", "netns", "list").stdout.split() if n.startswith("bcn")]
        assert not [n for n in leftovers if made and n.startswith(made[0].prefix)], leftovers


def test_nodes_on_a_segment_find_each_other_and_a_newcomer_within_a_second(lan: Lan) -> None:
    for role, seed in NODES.items():
        lan.host(role, seed)
    # An interface of ours (WireGuard prefix "mw") with a broadcast address: never a candidate.
    ip(lan.hosts["a"], "link", "add", "mw0", "type", "veth", "peer", "name", "mw1")
    ip(lan.hosts["a"], "addr", "add", "10.199.0.1/24", "brd", "+", "dev", "mw0")
    ip(lan.hosts["a"], "link", "set", "mw0", "up")
    ip(lan.hosts["a"], "link", "set", "mw1", "up")

    a, b = lan.start("a", 1), lan.start("b", 2)
    for process in (a, b):
        ready = process.ready()
        assert ready["node_id"] == node_id(process.seed)
        assert ready["interfaces"] == ["eth0"]
        assert ready["underlays"] == [["eth0", BROADCAST, f"{SUBNET}.{process.seed}"]]
    found = a.wait_discovered(node_id(2))
    b.wait_discovered(node_id(1))
    assert found["address"] == [f"{SUBNET}.2", 6002] and found["ifname"] == "eth0"
    assert found["new"] is True
    assert b.discovered()[node_id(1)]["address"] == [f"{SUBNET}.1", 6001]

    # Let the startup bursts end: from here on a and b beacon only every 30 s or so.
    time.sleep(4.0)
    c = lan.start("c", 3)
    started = c.ready()["t"]
    c.wait_for("finding a and b", lambda _: {node_id(1), node_id(2)} <= set(c.discovered()))
    for seed in (1, 2):
        event = c.discovered()[node_id(seed)]
        assert event["address"] == [f"{SUBNET}.{seed}", 6000 + seed]
        assert event["t"] - started < 1.0, "a newcomer must be answered promptly"
    for process in (a, b):
        assert process.wait_discovered(node_id(3))["address"] == [f"{SUBNET}.3", 6003]

    for process in (a, b, c):
        others = {node_id(s) for s in NODES.values() if s != process.seed}
        assert set(process.discovered()) == others  # never itself
        # own broadcasts are dropped by source address in the adapter, before the core
        assert "own_beacon" not in process.rejected()
        assert process.rejected() == []


def test_garbage_and_tampered_beacons_are_rejected_and_discover_nothing(lan: Lan) -> None:
    lan.host("a", 1)
    lan.host("b", 2)
    lan.host("x", ATTACKER_SEED)
    a, b = lan.start("a", 1), lan.start("b", 2)
    for process in (a, b):
        process.ready()
    a.wait_discovered(node_id(2))

    mallory = SigningKey(bytes([ATTACKER_SEED]) * 32)
    now_ms = int(time.time() * 1000)

    def beacon(**kwargs: Any) -> bytes:
        fields: dict[str, Any] = {"mesh_id": MESH_ID, "quic_port": 7000, "timestamp_ms": now_ms}
        fields.update(kwargs)
        return make_beacon(mallory, **fields).encode()

    tampered = bytearray(beacon())
    tampered[55] ^= 0x01  # the QUIC port, after signing
    bad = {
        b"": "truncated",
        b"GET / HTTP/1.1\r\n\r\n": "bad_magic",
        beacon()[:100]: "truncated",
        beacon()[:4] + b"\x07" + beacon()[5:]: "bad_version",
        beacon() + b"\x00": "trailing_bytes",
        bytes(tampered): "bad_signature",
        beacon(mesh_id=bytes(16)): "other_mesh",
        beacon(timestamp_ms=now_ms - 3600_000): "stale",
    }
    lan.send_from("x", list(bad))
    expected = sorted(bad.values())
    for process in (a, b):
        process.wait_rejected(len(expected))
    time.sleep(0.3)  # nothing more is coming
    for process in (a, b):
        assert sorted(process.rejected()) == expected
    for process in (a, b):
        assert node_id(ATTACKER_SEED) not in process.discovered()

    # The control: the same sender, the same path, a genuine beacon is found; once.
    genuine = beacon(timestamp_ms=now_ms + 1)
    lan.send_from("x", [genuine, genuine])
    for process in (a, b):
        found = process.wait_discovered(node_id(ATTACKER_SEED))
        assert found["address"] == [f"{SUBNET}.{ATTACKER_SEED}", 7000]
        process.wait_rejected(1, "replay")
        events = [x for x in process.lines if x["event"] == "discovered"]
        assert [x["node_id"] for x in events].count(node_id(ATTACKER_SEED)) == 1
