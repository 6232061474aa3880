"""Uplink sharing on the demo neighbourhood (netns-testbed/topologies/demo.toml): a and d
share shaped uplinks; b, c and e have none, and e is two hops from either gateway, over a
1400-byte underlay link. Every household without a working uplink leaves through an exit
tunnel to the gateway it chose, with its LAN NATed behind it. A stranger on the shared
segment gets none of it (issue 22)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
SERVER = "203.0.113.1"
GATEWAYS = ("a", "d")


class Bed(meshbed.Bed):
    def gateway(self, node: str) -> dict[str, Any]:
        return dict(self.status(node)["gateway"])

    def name_of(self, node_id: str | None) -> str | None:
        names = {self.status(n)["node_id"]: n for n in GATEWAYS}
        return names.get(node_id) if node_id else None

    def lan(self, node: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        ns = json.loads(self.run("status", "--json"))["nodes"][node]["lan_namespace"]
        return subprocess.run(
            ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout
        )

    def exit_of(self, node: str) -> str | None:
        return self.name_of(self.gateway(node).get("exit_gateway"))


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("demo.toml", "x", Bed) as b:
        for node in "bce":
            b.wait(f"{node} leaves by a gateway", lambda n=node: b.exit_of(n) is not None, 15)
        yield b


def _sha256_of_big(out: bytes) -> str:
    return hashlib.sha256(out).hexdigest()


def test_a_household_without_uplink_and_its_lan_get_online_through_a_gateway(bed: Bed) -> None:
    expected = (bed.dir / "inet" / "www" / "big.bin.sha256").read_text().split()[0]
    g = bed.gateway("e")
    assert g["using"] == "exit" and g["uplink"] is None and g["selected"] == g["exit_gateway"]
    reasons = {bed.name_of(c["node_id"]): c["reason"] for c in g["candidates"]}
    assert set(reasons) == set(GATEWAYS), reasons
    assert reasons[bed.exit_of("e")].startswith("selected"), reasons
    # The node itself, then the LAN host behind it; both cross e-b's 1400-byte underlay.
    out = subprocess.run(
        [
            str(meshbed.TESTBED),
            "exec",
            "e",
            "--",
            "curl",
            "-sS",
            "-m",
            "30",
            f"http://{SERVER}/big.bin",
        ],
        env=bed.env,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert _sha256_of_big(out.stdout) == expected
    lan = bed.lan("e", "curl", "-sS", "-m", "30", "-o", "/dev/null", "-w", "%{size_download}",
                  f"http://{SERVER}/big.bin")  # fmt: skip
    assert lan.returncode == 0 and lan.stdout == str(4 * 1024 * 1024), lan.stderr
    # A gateway with a working uplink uses it for its own traffic.
    for gw in GATEWAYS:
        assert bed.gateway(gw)["using"] == "own_uplink"
        assert bed.gateway(gw)["sharing"]["announced"] is True


def _tcp_probe(address: str, port: int, timeout: float = 3) -> str:
    """A Python program printing ``connected``, or the error's name."""
    return (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('{address}', {port}), timeout={timeout})\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )


def test_the_exit_policy_refuses_outbound_smtp_for_the_mesh_only(bed: Bed) -> None:
    probe = _tcp_probe(SERVER, 25, timeout=5)
    own = bed.sh("a", "python3", "-c", probe, check=False)
    assert "connected" in own  # the gateway's household is not under the exit policy
    through = bed.run("exec", "e", "--", "python3", "-c", probe, check=False)
    assert "connected" not in through


def test_gateway_failover_moves_the_households_to_the_other_gateway(bed: Bed) -> None:
    first = bed.exit_of("e")
    assert first in GATEWAYS
    other = next(g for g in GATEWAYS if g != first)
    ns = json.loads(bed.run("status", "--json"))["nodes"]["e"]["lan_namespace"]
    ping = subprocess.Popen(
        ["ip", "netns", "exec", ns, "ping", "-n", "-i", "0.05", "-W", "1", "-c", "200", SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)
        bed.run("uplink", first, "down")
        took = bed.wait(f"e moves to {other}", lambda: bed.exit_of("e") == other, within=10)
        print(f"e moved from {first} to {other} {took:.2f} s after {first}'s uplink went down")
        withdrawn = bed.gateway(first)
        assert withdrawn["uplink"]["state"] == "down" and not withdrawn["sharing"]["announced"]
        reasons = {bed.name_of(c["node_id"]): c["reason"] for c in bed.gateway("e")["candidates"]}
        assert reasons[first] == "withdrawn: its uplink is down", reasons
        # The dead gateway's own household leaves by the other one meanwhile.
        bed.wait(f"{first} uses {other}", lambda: bed.exit_of(first) == other, within=10)
        bed.sh(first, "curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{SERVER}/hello.txt")
        out, _ = ping.communicate(timeout=30)
    finally:
        ping.kill()
        bed.run("uplink", first, "up")
    received = int(out.split(" received")[0].rsplit(",", 1)[1])
    lost_s = (200 - received) * 0.05
    print(f"pings lost across the gateway failover: {200 - received} (~{lost_s:.2f} s)")
    assert received > 0 and lost_s < 5, out
    # Recovered: announced again, and its household back on its own uplink.
    bed.wait(
        f"{first} announces again",
        lambda: bed.gateway(first)["sharing"]["announced"] is True,
        within=10,
    )
    assert bed.gateway(first)["using"] == "own_uplink"


def test_a_blocked_neighbour_is_cut_off_at_once_and_moves_to_the_other_gateway(
    bed: Bed,
) -> None:
    gw = bed.exit_of("e")
    assert gw in GATEWAYS
    other = next(g for g in GATEWAYS if g != gw)
    e_id = bed.status("e")["node_id"]
    assert "blocked" in bed.sh(gw, "meshd", "block", e_id)
    try:
        assert e_id in bed.gateway(gw)["sharing"]["blocked"]
        bed.wait(f"e moves to {other}", lambda: bed.exit_of("e") == other, within=15)
        reasons = {bed.name_of(c["node_id"]): c["reason"] for c in bed.gateway("e")["candidates"]}
        assert reasons[gw] == "refused us: blocked", reasons
        bed.sh("e", "curl", "-sS", "-m", "10", "-o", "/dev/null", f"http://{SERVER}/hello.txt")
        bad = bed.sh(gw, "sh", "-c", "meshd block not-a-node-id 2>&1; echo rc=$?", check=False)
        assert "bad_args" in bad and "rc=1" in bad, bad
    finally:
        bed.sh(gw, "meshd", "block", "--undo", e_id)
    assert e_id not in bed.gateway(gw)["sharing"]["blocked"]


def test_the_mesh_cannot_reach_a_household_lan_but_its_replies_pass(bed: Bed) -> None:
    lan_host = json.loads(bed.run("status", "--json"))["nodes"]["e"]["lan_address"]
    lan_net = lan_host.rsplit(".", 1)[0] + ".0/24"
    link = next(n["interface"] for n in bed.status("b")["neighbours"] if n["name"] == "e")
    b_mesh = bed.status("b")["mesh_ipv4"]
    # A neighbour routing to e's LAN on purpose (LAN prefixes are never announced).
    bed.sh("b", "ip", "route", "add", lan_net, "dev", link)
    try:
        refused = bed.sh("b", "ping", "-c", "2", "-i", "0.2", "-W", "1", lan_host, check=False)
        assert " 0 received" in refused, refused
        # The LAN host's own connection out to b is answered: replies pass.
        ok = bed.lan("e", "ping", "-c", "2", "-i", "0.2", "-W", "2", b_mesh)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    finally:
        bed.sh("b", "ip", "route", "del", lan_net, "dev", link, check=False)


def test_the_mesh_reaches_only_meshd_open_ports_and_icmp_on_a_node(bed: Bed) -> None:
    e = bed.status("e")
    link = next(n for n in bed.status("b")["neighbours"] if n["name"] == "e")
    # Two services on e: one the operator opened to the mesh (5301), one not (8080).
    server = (
        "import socket, threading\n"
        "def serve(port):\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "    s.bind(('0.0.0.0', port)); s.listen(); s.settimeout(20)\n"
        "    try:\n"
        "        while True: s.accept()[0].close()\n"
        "    except OSError: pass\n"
        "ts = [threading.Thread(target=serve, args=(p,)) for p in (5301, 8080)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
    )
    ns = json.loads(bed.run("status", "--json"))["nodes"]["e"]["namespace"]
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", server])
    try:
        time.sleep(0.5)
        assert bed.sh("b", "python3", "-c", _tcp_probe(e["mesh_ipv4"], 5301)).strip() == "connected"
        refused = bed.sh("b", "python3", "-c", _tcp_probe(e["mesh_ipv4"], 8080)).strip()
        assert refused == "ConnectionRefusedError"  # a reset: a clear answer, not a hang
        # e's own household (its host itself) still reaches it.
        assert bed.sh("e", "python3", "-c", _tcp_probe("127.0.0.1", 8080)).strip() == "connected"
        # ICMP echo to the mesh address and the probes through the tunnel still work.
        bed.sh("b", "ping", "-c", "1", "-W", "2", e["mesh_ipv4"])
        assert link["state"] == "up"
    finally:
        proc.kill()
        proc.wait()


def _resolve(bed: Bed, node: str, resolver: str) -> str:
    return bed.sh(node, sys.executable, "-c", meshbed.dns_query(resolver), check=False).strip()


def test_names_resolve_for_a_household_whose_uplink_is_down(bed: Bed) -> None:
    isp = "198.51.100.1"  # the uplinks' router: the households' resolver from their ISP
    assert _resolve(bed, "d", isp) == SERVER
    bed.run("uplink", "d", "down")
    try:
        bed.wait("d leaves by a", lambda: bed.exit_of("d") == "a", within=10)
        assert _resolve(bed, "d", isp) == SERVER  # asked through a, not its dead uplink
        log = (bed.dir / "inet" / "dns.log").read_text()
        a_uplink = bed.sh("a", "ip", "-j", "-4", "addr", "show", "dev", "upl")
        a_address = json.loads(a_uplink)[0]["addr_info"][0]["local"]
        assert f"query[A] internet.test from {a_address}" in log, log[-500:]
    finally:
        bed.run("uplink", "d", "up")
    bed.wait("d back on its own uplink", lambda: bed.gateway("d")["using"] == "own_uplink", 10)
    assert _resolve(bed, "d", isp) == SERVER


def _capture(bed: Bed, node: str, interface: str, seconds: int) -> subprocess.Popen[str]:
    """tshark on ``node``'s ``interface`` for ``seconds``, started when this returns: one
    line per DNS or exit-tunnel packet, its UDP and TCP ports."""
    ns = json.loads(bed.run("status", "--json"))["nodes"][node]["namespace"]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "tshark", "-n", "-l", "-i", interface,
         "-a", f"duration:{seconds}", "-f", "port 53 or udp port 52820",
         "-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport",
         "-e", "tcp.srcport", "-e", "tcp.dstport"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("Capturing on"):
            return proc
    raise AssertionError(f"tshark did not start: {proc.communicate()}")


def test_dns_travels_inside_the_exit_tunnel_and_only_exit_users_get_answers(bed: Bed) -> None:
    """Issue 22: e's queries (e is two hops from either gateway, by b) go inside its exit
    tunnel, so b, the relay, sees none of them while it carries the tunnel's packets; its
    gateway answers them. A member that is not its exit user (d, on its own uplink; e
    asking the gateway it does not use) and a blocked one get no answer."""
    isp = "198.51.100.1"
    gw = bed.exit_of("e")
    assert gw in GATEWAYS
    other = next(g for g in GATEWAYS if g != gw)
    mesh = {n: bed.status(n)["mesh_ipv4"] for n in GATEWAYS}
    link = next(n["interface"] for n in bed.status("b")["neighbours"] if n["name"] == "e")
    capture = _capture(bed, "b", link, seconds=8)
    try:
        assert _resolve(bed, "e", isp) == SERVER
        lan = bed.lan("e", sys.executable, "-c", meshbed.dns_query(mesh[gw]))
        assert lan.stdout.strip() == SERVER, lan.stdout + lan.stderr
        out, err = capture.communicate(timeout=30)
    finally:
        capture.kill()
    ports = [set(line.split()) for line in out.splitlines()]
    assert ports and not [p for p in ports if "53" in p], out  # the tunnel, and no DNS
    print(f"b carried {len(ports)} packets of e's exit tunnel and no DNS")
    assert _resolve(bed, "d", mesh["a"]) == "timeout"  # a member, not an exit user
    assert _resolve(bed, "e", mesh[other]) == "timeout"  # not the gateway it uses
    e_id = bed.status("e")["node_id"]
    bed.sh(gw, "meshd", "block", e_id)
    try:
        bed.wait(f"e moves to {other}", lambda: bed.exit_of("e") == other, within=15)
        assert _resolve(bed, "e", mesh[gw]) == "timeout"  # blocked
        assert _resolve(bed, "e", mesh[other]) == SERVER
        assert _resolve(bed, "e", isp) == SERVER
    finally:
        bed.sh(gw, "meshd", "block", "--undo", e_id)


def test_a_stranger_on_a_segment_reaches_nothing_in_the_mesh_and_no_exit(bed: Bed) -> None:
    """Issue 22: a non-member plugged into the b, c, d segment, routing the mesh's prefix
    and the internet through a member, gets no answer from any mesh address, no DNS from
    the gateways' forwarders and no internet, through a node that leaves by an exit (c:
    its default route is the exit tunnel) or a gateway (d: the mesh is refused by meshd;
    the internet there is d's own uplink, which sends the stranger's packets on with its
    own address, un-NATed, and the testbed internet does not route them back); the
    segment itself, and a member's household, still work."""
    spot = json.loads(bed.run("stranger", "0"))
    members = spot["members"]

    def stranger(*cmd: str) -> str:
        return bed.run("exec", "x0", "--", *cmd, check=False)

    ping = ("ping", "-c", "1", "-W", "1")
    assert " 1 received" in stranger(*ping, members["c"])  # the segment: as before
    mesh = {n: bed.status(n)["mesh_ipv4"] for n in "abcde"}
    for via in ("c", "d"):
        for prefix in ("10.77.0.0/16", "default"):
            stranger("ip", "route", "replace", prefix, "via", members[via])
        for node, address in mesh.items():
            out = stranger(*ping, address)
            assert " 0 received" in out, (via, node, out)
        out = stranger(sys.executable, "-c", _tcp_probe(SERVER, 80, timeout=3))
        assert "connected" not in out, (via, out)
        for gw in GATEWAYS:
            out = stranger(sys.executable, "-c", meshbed.dns_query(mesh[gw])).strip()
            assert out == "timeout", (via, gw, out)
    # The household of a member on that segment: b's LAN reaches the mesh, the gateways'
    # DNS and the internet.
    lan = bed.lan("b", *ping, mesh["a"])
    assert " 1 received" in lan.stdout, lan.stdout + lan.stderr
    exit_gw = bed.exit_of("b")
    assert exit_gw is not None
    answer = bed.lan("b", sys.executable, "-c", meshbed.dns_query(mesh[exit_gw]))
    assert answer.stdout.strip() == SERVER, answer.stdout + answer.stderr
    web = bed.lan("b", sys.executable, "-c", _tcp_probe(SERVER, 80, timeout=5))
    assert "connected" in web.stdout, web.stdout + web.stderr


def test_exit_users_reach_the_internet_but_not_the_gateways_home(bed: Bed) -> None:
    """Issue 22: the uplinks' router (198.51.100.1, the gateway household's home router:
    every gateway's uplink is on its subnet) answers each gateway itself, and not e or
    its LAN, which leave by a gateway; the testbed internet still answers both."""
    router = "198.51.100.1"
    ping = ("ping", "-c", "1", "-W", "2")
    for gw in GATEWAYS:
        assert " 1 received" in bed.sh(gw, *ping, router, check=False), gw  # positive control
    assert bed.exit_of("e") in GATEWAYS
    own = bed.sh("e", *ping, router, check=False)
    assert " 0 received" in own, own
    lan = bed.lan("e", *ping, router)
    assert " 0 received" in lan.stdout, lan.stdout
    # TCP to a closed port: the router would answer with a reset (ConnectionRefusedError);
    # the gateway refuses it before it gets there (an ICMP error: no route to host).
    lan_tcp = bed.lan("e", sys.executable, "-c", _tcp_probe(router, 80, timeout=3))
    assert lan_tcp.stdout.strip() == "OSError", lan_tcp.stdout + lan_tcp.stderr
    assert bed.sh("a", sys.executable, "-c", _tcp_probe(router, 80), check=False).strip() == (
        "ConnectionRefusedError"
    )
    web = bed.lan("e", sys.executable, "-c", _tcp_probe(SERVER, 80, timeout=5))
    assert "connected" in web.stdout, web.stdout + web.stderr
    assert " 1 received" in bed.lan("e", *ping, SERVER).stdout


def test_a_new_address_on_the_uplink_joins_what_exit_users_never_reach(bed: Bed) -> None:
    """The uplink's subnets are read again as its addresses change (DHCP), with the
    gateway's meter, every few seconds."""
    extra = "192.0.2.1/24"  # TEST-NET-1: nowhere in the private ranges

    def refused() -> bool:
        return "192.0.2.0/24" in bed.sh("a", "nft", "list", "chain", "inet", "meshd", "forward")

    assert not refused()
    bed.sh("a", "ip", "addr", "add", extra, "dev", "upl")
    try:
        bed.wait("a refuses its new uplink subnet to exit users", refused, within=15)
    finally:
        bed.sh("a", "ip", "addr", "del", extra, "dev", "upl", check=False)
    bed.wait("and forgets it once the address goes", lambda: not refused(), within=15)


@contextlib.contextmanager
def _phone_on_the_internet(bed: Bed, address: str) -> Iterator[str]:
    """A namespace playing a phone away from home: one port on the testbed internet's
    bridge, nothing else."""
    inet = json.loads(bed.run("status", "--json"))["internet"]["namespace"]
    ns, port = f"{inet[:-5]}-phone", f"ph{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    try:
        for cmd in (
            ["ip", "netns", "add", ns],
            ["ip", "-n", inet, "link", "add", port, "type", "veth", "peer", "eth0", "netns", ns],
            ["ip", "-n", inet, "link", "set", port, "master", "inet0", "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", "198.51.100.1"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_roaming_phone_with_a_stock_client_reaches_the_mesh_and_the_internet(
    bed: Bed, tmp_path: Path
) -> None:
    """Issue 25: `meshd device add` on a writes a wg-quick file; `wg-quick up` with it, in a
    namespace on the testbed internet, reaches e's mesh address (two hops from a) and the
    testbed internet through a's uplink (the bytes come through a's device interface);
    `meshd device remove` cuts it off at once."""
    bed.learn("ae")
    iface = f"ph{os.getpid() % 10000}"  # wg-quick names the interface after the file
    conf = tmp_path / f"{iface}.conf"
    for bad in (["add", "Bad Name"], ["remove", "nobody"]):
        res = subprocess.run(
            [str(meshbed.TESTBED), "exec", "a", "--", "meshd", "device", *bad],
            env=bed.env,
            capture_output=True,
            text=True,
        )
        assert res.returncode == 1 and "bad_args" in res.stderr, res.stderr
    said = bed.sh("a", "meshd", "device", "add", "phone", "--all", "--out", str(conf))
    assert f"its config is in {conf}" in said and conf.stat().st_mode & 0o777 == 0o600
    text = conf.read_text()
    assert "Address = 10.254.0.2/32" in text and "AllowedIPs = 0.0.0.0/0" in text, text
    with _phone_on_the_internet(bed, "198.51.100.250") as ns:
        up = subprocess.run(
            ["ip", "netns", "exec", ns, "wg-quick", "up", str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert up.returncode == 0, up.stderr
        try:
            ping = ["ip", "netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "2", bed.ips["e"]]
            bed.wait(
                "the phone reaches e's mesh address through a",
                lambda: subprocess.run(ping, capture_output=True).returncode == 0,
                within=20,
            )
            expected = (bed.dir / "inet" / "www" / "big.bin.sha256").read_text().split()[0]
            got = subprocess.run(
                ["ip", "netns", "exec", ns, "curl", "-sS", "-m", "30", f"http://{SERVER}/big.bin"],
                capture_output=True,
                timeout=60,
            )
            assert got.returncode == 0, got.stderr
            assert _sha256_of_big(got.stdout) == expected
            (phone,) = json.loads(bed.sh("a", "meshd", "device", "list", "--json"))
            print(f"the phone as a lists it: {phone}")
            assert phone["name"] == "phone" and phone["last_handshake"] is not None, phone
            assert phone["tx_bytes"] > len(got.stdout), phone  # it came through a
            (shown,) = bed.status("a")["devices"]["items"]
            assert shown["name"] == "phone" and shown["tx_bytes"] >= phone["tx_bytes"], shown
            removed = bed.sh("a", "meshd", "device", "remove", "phone")
            assert "cut off now" in removed
            cut = subprocess.run(ping[:-2] + ["1", bed.ips["e"]], capture_output=True, text=True)
            assert cut.returncode != 0, cut.stdout
            assert json.loads(bed.sh("a", "meshd", "device", "list", "--json")) == []
        finally:
            subprocess.run(
                ["ip", "netns", "exec", ns, "wg-quick", "down", str(conf)], capture_output=True
            )
