"""A hostile member announces routes that are not its own (issue 19; DESIGN.md, trust).

On the demo neighbourhood (netns-testbed/topologies/demo.toml), c (a member with a valid
certificate, no uplink, on the b-c-d segment) is restarted with ``routing.test_announce``:
its meshd then announces, under its own router-id, a default route, both halves of the
IPv4 internet and of IPv6, b's LAN, an underlay address, and a's mesh /32 and /128. No
other node installs any of them, every household's LAN still reaches the internet by its
exit, every pair of nodes still reaches each other, and c's neighbours count what they
refused from it, with the reason, in ``meshd status --json``. Then c floods 50,000 routes,
and then relays everyone's routes with seqnos it made up (origin-signed seqnos); last, it
attracts traffic by understating its metrics and drops it (a black hole).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
SERVER = "203.0.113.1"
HONEST = ("a", "b", "d", "e")


class Bed(meshbed.Bed):
    def testbed_status(self) -> dict[str, Any]:
        return dict(json.loads(self.run("status", "--json")))

    def lan_curl(self, node: str) -> subprocess.CompletedProcess[str]:
        ns = self.testbed_status()["nodes"][node]["lan_namespace"]
        return subprocess.run(
            ["ip", "netns", "exec", ns, "curl", "-sS", "-m", "10", "-o", "/dev/null",
             "-w", "%{http_code}", f"http://{SERVER}/hello.txt"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    def kernel_routes(self, node: str) -> dict[str, str]:
        """Every route meshd installed on ``node``, in any table: ``prefix/len`` -> dev."""
        found = {}
        for family in ("-4", "-6"):
            out = self.sh(node, "ip", "-j", family, "route", "show", "table", "all", "proto", "176")
            for route in json.loads(out or "[]"):
                dst = route["dst"]
                if dst == "default":
                    dst = "0.0.0.0/0" if family == "-4" else "::/0"
                found[str(ipaddress.ip_network(dst, strict=False))] = route.get("dev", "")
        return found

    def interface_to(self, node: str, neighbour_id: str) -> str | None:
        rows = self.status(node)["neighbours"]
        return next((n["interface"] for n in rows if n["node_id"] == neighbour_id), None)

    def refusals_from(self, node: str, offender_id: str) -> dict[str, int]:
        for neighbour in self.status(node)["neighbours"]:
            if neighbour["node_id"] == offender_id:
                return dict(neighbour.get("refusals") or {})
        return {}


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("demo.toml", "ro", Bed) as b:
        yield b


def _underlay_address(bed: Bed, node: str) -> str:
    """One of ``node``'s underlay IPv4 addresses (not loopback, not a tunnel)."""
    for link in json.loads(bed.sh(node, "ip", "-j", "-4", "addr", "show")):
        for info in link.get("addr_info", []):
            if link["ifname"] != "lo" and info.get("scope") == "global":
                return str(info["local"])
    raise AssertionError(f"{node} has no underlay address")


def _hostile(bed: Bed, prefixes: list[str]) -> None:
    """c's meshd again, announcing ``prefixes`` beside its own addresses."""
    _misbehave(bed, "test_announce = [" + ", ".join(f'"{p}"' for p in prefixes) + "]")


def _misbehave(bed: Bed, line: str) -> None:
    """c's meshd again, with ``line`` (a TESTS ONLY setting) in its [routing] section."""
    config = bed.dir / "nodes" / "c" / "meshd.toml"
    text = "".join(  # what an earlier test made it do goes
        kept
        for kept in config.read_text().splitlines(True)
        if not kept.startswith(("test_announce", "test_forge_seqnos", "test_understate"))
    )
    if "[routing]" in text:
        text = text.replace("[routing]", f"[routing]\n{line}", 1)
    else:
        text += f"\n[routing]\n{line}\n"
    config.write_text(text)
    bed.run("kill", "c")
    bed.run("start", "c")


def test_a_member_cannot_take_other_households_traffic(bed: Bed) -> None:
    status = {n: bed.status(n) for n in "abcde"}
    a, c_id = status["a"], status["c"]["node_id"]
    lan_b = bed.testbed_status()["nodes"]["b"]["lan_address"]
    stolen = {
        "0.0.0.0/0": "prefix_not_host",
        "0.0.0.0/1": "prefix_not_host",
        "128.0.0.0/1": "prefix_not_host",
        "::/1": "prefix_not_host",
        "8000::/1": "prefix_not_host",
        str(ipaddress.ip_network(f"{lan_b}/24", strict=False)): "prefix_not_host",
        f"{lan_b}/32": "prefix_outside_mesh",
        f"{_underlay_address(bed, 'b')}/32": "prefix_outside_mesh",
        f"{a['mesh_ipv4']}/32": "wrong_origin",
        f"{a['mesh_ipv6']}/128": "wrong_origin",
    }
    before = {n: bed.kernel_routes(n) for n in HONEST}
    _hostile(bed, list(stolen))

    def refused_everything() -> bool:
        seen = {}
        for neighbour in ("b", "d"):
            for reason, count in bed.refusals_from(neighbour, c_id).items():
                seen[reason] = seen.get(reason, 0) + count
        return set(stolen.values()) <= set(seen)

    bed.wait("b and d count c's routes as refused", refused_everything, within=30)
    bed.run("wait-converged", "--timeout", "60")  # every pair still reaches each other
    for node in HONEST:
        installed = bed.kernel_routes(node)
        to_c = bed.interface_to(node, c_id)
        taken = {p for p in stolen if p in installed and (p not in before[node] or
                                                           installed[p] == to_c)}  # fmt: skip
        assert not taken, (node, taken)  # nothing new, nothing of a's through c
        assert set(before[node]) <= set(installed), node
    for node in ("a", "b", "e"):  # every household's LAN still reaches the internet
        res = bed.lan_curl(node)
        assert res.returncode == 0 and res.stdout == "200", (node, res.stderr)
    for neighbour in ("b", "d"):
        refusals = bed.refusals_from(neighbour, c_id)
        assert set(refusals) <= set(stolen.values()), refusals  # no session was closed
        row = next(n for n in bed.status(neighbour)["neighbours"] if n["node_id"] == c_id)
        assert row["state"] == "up", row  # c still relays and is served as any member


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError(f"no Pss for {pid}")


FLOOD = 50_000
FLOOD_PSS_KB = 5 * 1024  # the most a neighbour's meshd may grow by while it is flooded


def test_a_flood_of_routes_is_refused_without_growing_its_neighbours(bed: Bed) -> None:
    c_id = bed.status("c")["node_id"]
    first = int(ipaddress.ip_address("10.77.30.0"))
    flood = [f"{ipaddress.ip_address(first + i)}/32" for i in range(FLOOD)]
    pids = {n: bed.testbed_status()["nodes"][n]["pid"] for n in ("b", "d")}
    before_pss = {n: _pss_kb(pid) for n, pid in pids.items()}

    def refused(node: str) -> int:
        """Updates refused by the origin check, and TLVs beyond c's Babel budget (the flood's
        updates, and the few Router-Ids and Hellos among them)."""
        counts = bed.refusals_from(node, c_id)
        return counts.get("not_its_address", 0) + counts.get("rate_babel", 0)

    before = {n: refused(n) for n in ("b", "d")}
    _hostile(bed, flood)

    def all_refused() -> bool:
        return all(refused(n) - before[n] >= FLOOD for n in ("b", "d"))

    took = bed.wait(f"b and d refuse all {FLOOD} of c's routes", all_refused, within=180)
    print(f"{FLOOD} routes refused by both neighbours {took:.1f} s after c's restart")
    grown = {n: _pss_kb(pid) - before_pss[n] for n, pid in pids.items()}
    print(f"meshd PSS growth during the flood: {grown} kB")
    assert all(kb <= FLOOD_PSS_KB for kb in grown.values()), grown
    for node in HONEST:
        assert not set(flood) & set(bed.kernel_routes(node)), node
    bed.run("wait-converged", "--timeout", "60")
    for node in ("a", "b", "e"):
        res = bed.lan_curl(node)
        assert res.returncode == 0 and res.stdout == "200", (node, res.stderr)


def test_a_member_cannot_invent_newer_seqnos_for_others(bed: Bed) -> None:
    """c relays every other node's routes with seqnos 1,000 newer than their originators
    signed (``routing.test_forge_seqnos``), keeping their signatures: a newer seqno would
    make every honest route to them unfeasible. b and d refuse each, counted with the
    reason, and nothing changes: no route goes through c that did not, everyone reaches
    everyone, every LAN its exit."""
    c_id = bed.status("c")["node_id"]
    before = {n: bed.kernel_routes(n) for n in HONEST}
    _misbehave(bed, "test_forge_seqnos = 1000")

    def refused_forgeries() -> bool:
        return all(
            {"bad_signature", "unsigned"} & set(bed.refusals_from(n, c_id)) for n in ("b", "d")
        )

    took = bed.wait("b and d refuse c's forged seqnos", refused_forgeries, within=60)
    print(f"forged seqnos refused {took:.1f} s after c's restart")
    bed.run("wait-converged", "--timeout", "60")
    for node in HONEST:
        installed, to_c = bed.kernel_routes(node), bed.interface_to(node, c_id)
        c_own = {f"{bed.status('c')['mesh_ipv4']}/32", f"{bed.status('c')['mesh_ipv6']}/128"}
        through_c = {p for p, dev in installed.items() if dev == to_c and p not in c_own}
        assert through_c <= {p for p, dev in before[node].items() if dev == to_c}, (node, through_c)
    for node in ("a", "b", "e"):
        res = bed.lan_curl(node)
        assert res.returncode == 0 and res.stdout == "200", (node, res.stderr)
    for neighbour in ("b", "d"):
        refusals = bed.refusals_from(neighbour, c_id)
        print(f"{neighbour} refused from c: {refusals}")
        row = next(n for n in bed.status(neighbour)["neighbours"] if n["node_id"] == c_id)
        assert row["state"] == "up", row
    for node in HONEST:  # honest neighbours' routes are never refused
        for row in bed.status(node)["neighbours"]:
            if row["node_id"] != c_id:
                assert not row.get("refusals"), (node, row["name"], row["refusals"])


IPERF_PORT = "5301"  # opened to the mesh by the testbed's [isolation]


def _transfer(bed: Bed, src: str, dst_ip: str) -> subprocess.Popen[str]:
    """iperf3 from ``src`` to a one-shot server at ``dst_ip`` (already started), 4 s."""
    return subprocess.Popen(
        [str(meshbed.TESTBED), "exec", src, "--",
         "iperf3", "-c", dst_ip, "-p", IPERF_PORT, "-t", "4", "-J"],
        env=bed.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_relay_that_drops_what_it_attracts_is_routed_around(bed: Bed) -> None:
    """c advertises every route it relays at metric 0 (``routing.test_understate_metrics``)
    and drops every TCP packet it forwards, while it forwards ICMP: a ping through it works,
    so it looks sound to anything probe-like. d, which then routes e through c, sees its
    flows to e get no answer, keeps c out of its routes to e (``black_holes`` in its
    status), and the transfer goes through b."""
    c_id, e = bed.status("c")["node_id"], bed.status("e")
    e32 = f"{e['mesh_ipv4']}/32"
    _misbehave(bed, "test_understate_metrics = true")
    bed.sh("c", "nft", "add table inet hostile")
    bed.sh("c", "nft", "add chain inet hostile relay { type filter hook forward priority -50 ; }")
    bed.sh("c", "nft", "add rule inet hostile relay meta l4proto tcp drop")

    def through_c() -> bool:
        route = bed.route("d", e32)
        return route is not None and route["via"] == c_id

    try:
        bed.wait("d routes e through c, which claims to be next to it", through_c, within=60)
    except AssertionError as exc:  # what d saw, for the next person
        rows = [
            {k: n.get(k) for k in ("name", "state", "rtt_ms", "loss", "cost", "refusals")}
            for n in bed.status("d")["neighbours"]
        ]
        raise AssertionError(f"{exc}; d: route {bed.route('d', e32)}, neighbours {rows}") from None
    out = bed.sh("d", "ping", "-c", "3", "-i", "0.2", "-W", "2", e["mesh_ipv4"])
    assert " 0% packet loss" in out, out  # probes pass
    bed.sh("e", "iperf3", "-s", "-1", "-D", "-B", e["mesh_ipv4"], "-p", IPERF_PORT)
    time.sleep(0.3)  # -D returns before it listens
    started = time.monotonic()
    transfer = _transfer(bed, "d", e["mesh_ipv4"])

    def routed_around() -> bool:
        holes = bed.status("d")["black_holes"]
        return any(h["destination"] == e32 and h["via"] == c_id for h in holes)

    bed.wait("d keeps c out of its routes to e", routed_around, within=30)
    detected = time.monotonic() - started
    route = bed.route("d", e32)
    assert route is not None and route["via"] != c_id, route
    out, err = transfer.communicate(timeout=90)
    moved = time.monotonic() - started
    result = json.loads(out)
    assert transfer.returncode == 0 and "error" not in result, (err, result.get("error"))
    received = result["end"]["sum_received"]["bytes"]
    print(
        f"black hole: c kept out of d's routes to e {detected:.1f} s after the transfer began;"
        f" {received / 1e6:.1f} MB moved through b, done {moved:.1f} s after it began"
    )
    assert received > 1_000_000, received
    (hole,) = [h for h in bed.status("d")["black_holes"] if h["destination"] == e32]
    assert hole["reason"] == "no_progress" and hole["unanswered"] >= 1 and hole["for_s"] > 0
    log = (bed.dir / "nodes" / "d" / "meshd.log").read_text()
    assert "route.black_hole" in log and "reason=no_progress" in log
