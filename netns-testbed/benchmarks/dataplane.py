"""dataplane.ratio.1hop: iperf3 over one meshd link against the same link hand-configured
with `wg` on the same backend, in the same namespaces and the same run, interleaved
(A B A B ...), compared by medians. The raw underlay is measured too, for reference."""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.results import Result, at_least
from benchmarks.testbed import HERE, Testbed

TARGET_RATIO = 0.95
BASE_V4 = ("10.254.0.1", "10.254.0.2")
BASE_PORTS = (52001, 52002)


def _ns(ns: str, *cmd: str, **kw: object) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, text=True, **kw
    ).stdout


def iperf3(client_ns: str, server_ns: str, server: str, seconds: float, port: int) -> float:
    """One TCP upload client -> server; bits per second as the receiver counted them."""
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        out = ""
        for _ in range(20):  # the server needs a moment to listen
            res = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    client_ns,
                    "iperf3",
                    "-c",
                    server,
                    "-p",
                    str(port),
                    "-t",
                    str(seconds),
                    "-J",
                ],
                capture_output=True,
                text=True,
                timeout=seconds + 30,
            )
            out = res.stdout
            try:
                doc = json.loads(out)
            except ValueError:
                doc = {}
            received = doc.get("end", {}).get("sum_received")
            if res.returncode == 0 and received and "error" not in doc:
                return float(received["bits_per_second"])
            time.sleep(0.2)
        raise RuntimeError(f"iperf3 to {server} failed: {out[-300:]}")
    finally:
        srv.kill()
        srv.wait()


def underlay_peer(tb: Testbed, node: str, peer: str) -> str:
    """The peer's underlay IPv4 on the a-b link, read from its interface u-<node>."""
    out = tb.exec(peer, "ip", "-4", "-j", "addr", "show", "dev", f"u-{node}")
    return str(json.loads(out)[0]["addr_info"][0]["local"])


@contextmanager
def hand_configured_wg(a_ns: str, b_ns: str, b_underlay: str) -> Iterator[tuple[str, str]]:
    """wireguard-go + `wg` by hand, as an operator would, beside meshd's own link."""
    tag = secrets.token_hex(3)
    names = (f"bwa{tag}", f"bwb{tag}")
    keys = [
        subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
        for _ in names
    ]
    pubs = [
        subprocess.run(
            ["wg", "pubkey"], input=k, capture_output=True, text=True, check=True
        ).stdout.strip()
        for k in keys
    ]
    a_underlay = None
    try:
        for ns, name, key, port in zip((a_ns, b_ns), names, keys, BASE_PORTS, strict=True):
            # In a session of its own, as meshd (and wg-quick under systemd) start it: with
            # the kernel's autogroup scheduling, a daemon left in the benchmark's session
            # shares one CPU group with iperf3 and measures about 12 % faster.
            _ns(
                ns,
                "setsid",
                "wireguard-go",
                name,
                env={**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"},
            )
            _ns(
                ns,
                "wg",
                "set",
                name,
                "private-key",
                "/dev/stdin",
                "listen-port",
                str(port),
                input=key,
            )
        a_underlay = json.loads(_ns(a_ns, "ip", "-4", "-j", "route", "get", b_underlay))[0][
            "prefsrc"
        ]
        plan = (
            (a_ns, names[0], pubs[1], b_underlay, BASE_PORTS[1], BASE_V4[0], BASE_V4[1]),
            (b_ns, names[1], pubs[0], a_underlay, BASE_PORTS[0], BASE_V4[1], BASE_V4[0]),
        )
        for ns, name, peer_pub, peer_ip, peer_port, local, remote in plan:
            _ns(
                ns,
                "wg",
                "set",
                name,
                "peer",
                peer_pub,
                "endpoint",
                f"{peer_ip}:{peer_port}",
                "allowed-ips",
                "0.0.0.0/0,::/0",
                "persistent-keepalive",
                "1",
            )
            _ns(ns, "ip", "link", "set", name, "mtu", "1420", "up")
            _ns(ns, "ip", "addr", "add", f"{local}/32", "peer", f"{remote}/32", "dev", name)
        yield BASE_V4
    finally:
        for ns, name in zip((a_ns, b_ns), names, strict=True):
            subprocess.run(
                ["ip", "netns", "exec", ns, "ip", "link", "del", name], capture_output=True
            )


def ratio_1hop(quick: bool) -> list[Result]:
    seconds = 2 if quick else 5
    reps = 5
    tb = Testbed()
    with tb.up(HERE / "topologies" / "line2.toml"):
        a_ns, b_ns = tb.namespace("a"), tb.namespace("b")
        a_mesh = tb.meshd_status("a")
        b_mesh = tb.meshd_status("b")
        b_underlay = underlay_peer(tb, "a", "b")
        assert a_mesh["neighbours"][0]["state"] == "up"
        mesh, base, raw = [], [], []
        with hand_configured_wg(a_ns, b_ns, b_underlay) as (_, b_base):
            for _ in range(reps):  # interleaved: meshd, hand-made wg, meshd, ...
                mesh.append(iperf3(a_ns, b_ns, b_mesh["mesh_ipv4"], seconds, 5301))
                base.append(iperf3(a_ns, b_ns, b_base, seconds, 5302))
                if not quick:
                    raw.append(iperf3(a_ns, b_ns, b_underlay, seconds, 5303))
    mbit = 1e6
    results = [
        at_least(
            "dataplane.ratio.1hop",
            round(statistics.median(mesh) / statistics.median(base), 3),
            "ratio",
            TARGET_RATIO,
        ),
        Result("dataplane.meshd.1hop_mbit", round(statistics.median(mesh) / mbit, 1), "Mbit/s"),
        Result("dataplane.wg.1hop_mbit", round(statistics.median(base) / mbit, 1), "Mbit/s"),
    ]
    if raw:
        results.append(
            Result(
                "dataplane.underlay.1hop_mbit", round(statistics.median(raw) / mbit, 1), "Mbit/s"
            )
        )
    return results
