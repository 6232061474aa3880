"""netns-testbed/testbed on real namespaces, with the real meshd in every node: the
DESIGN.md contract (status, exec, cut/heal, impair, uplink, kill/start, wait-converged,
down leaving nothing behind)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "netns-testbed" / "testbed"

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timed,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

TOPOLOGY = """
[nodes.a]
uplink = true
uplink_rate = "20mbit"
share = true
lan = true
[nodes.b]
uplink = true
[nodes.c]
[nodes.d]
[[links]]
between = ["a", "b"]
[[links]]
between = ["b", "c"]
mtu = 1400
[[segments]]
members = ["a", "c", "d"]
"""
# Underlay addresses the plan gives this topology (checked in tests/unit).
A_B, B_A = "100.64.0.1", "100.64.0.2"
A_SEG, C_SEG, D_SEG = "100.127.0.1", "100.127.0.2", "100.127.0.3"
INTERNET = "203.0.113.1"


class Bed:
    def __init__(self, ident: str, directory: Path) -> None:
        self.ident, self.dir = ident, directory
        self.env = {
            **os.environ,
            "MESHD_TESTBED_ID": ident,
            "MESHD_TESTBED_DIR": str(directory),
        }

    def run(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(TESTBED), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert res.returncode == 0, f"testbed {' '.join(args)}: {res.stderr}{res.stdout}"
        return res

    def sh(self, node: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("exec", node, "--", *cmd, check=check)

    def status(self) -> dict[str, Any]:
        return json.loads(self.run("status", "--json").stdout)

    def ping_loss(self, node: str, address: str, count: int = 3, interval: str = "0.1") -> float:
        res = self.sh(
            node, "ping", "-q", "-c", str(count), "-i", interval, "-W", "1", address, check=False
        )
        assert "not permitted" not in res.stdout + res.stderr  # drops must be silent
        if "Network is unreachable" in res.stderr:
            return 100.0
        m = re.search(r"([\d.]+)% packet loss", res.stdout)
        assert m, res.stdout + res.stderr
        return float(m.group(1))

    def meshd_status(self, node: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(self.dir / "nodes" / node / "meshd.sock"))
            s.sendall(b'{"v": 1, "call": "status"}\n')
            return dict(json.loads(s.makefile().readline())["result"])

    def neighbour_states(self, node: str) -> dict[str, str]:
        return {n["name"]: n["state"] for n in self.meshd_status(node)["neighbours"]}

    def flow(self, node: str, address: str) -> None:
        """Two seconds of pings from ``node`` to a neighbour's mesh ``address``: a flow
        into the link between them, what its liveness watches (an idle link is not asked)."""
        self.sh(node, "ping", "-q", "-c", "20", "-i", "0.1", "-W", "1", address, check=False)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def host_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


def host_routes() -> str:
    return subprocess.run(
        ["ip", "route", "show", "table", "all"], capture_output=True, text=True
    ).stdout


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return False
    return fields[0] not in ("Z", "X")


def start_time(pid: int) -> int | None:
    """/proc/PID/stat field 22, None when the pid is not in the process table (a zombie is)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except FileNotFoundError:
        return None


def wireguard_go_pids() -> dict[int, str]:
    """Every wireguard-go in the process table, zombies included (``pgrep``), with the
    interface it serves ("" for a zombie, which has no command line left)."""
    out = subprocess.run(
        ["pgrep", "-a", "-x", "wireguard-go"], capture_output=True, text=True
    ).stdout
    pids = {}
    for line in out.splitlines():
        pid, _, args = line.partition(" ")
        pids[int(pid)] = "" if args.startswith("[") else args.split()[-1]
    return pids


def wait_for(predicate: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


SESSION = f"tb{os.getpid() % 100000}"


@pytest.fixture(scope="module")
def host_before() -> tuple[list[str], str]:
    return host_links(), host_routes()


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, host_before: Any) -> Iterator[Bed]:
    work = tmp_path_factory.mktemp("testbed")
    topo = work / "topo.toml"
    topo.write_text(TOPOLOGY)
    b = Bed(SESSION, work / "state")
    try:
        b.run("up", str(topo), "--wait")
        yield b
    finally:
        b.run("down", check=False)


def test_status_json_has_exactly_the_contract_shape(bed: Bed) -> None:
    s = bed.status()
    assert set(s) == {"nodes", "internet"}
    assert s["internet"] == {"namespace": f"{SESSION}-inet", "address": INTERNET}
    assert set(s["nodes"]) == {"a", "b", "c", "d"}
    a = s["nodes"]["a"]
    assert set(a) == {"namespace", "pid", "lan_namespace", "lan_address"}
    assert (a["namespace"], a["lan_namespace"], a["lan_address"]) == (
        f"{SESSION}-a",
        f"{SESSION}-a-lan",
        "172.20.0.2",
    )
    for name in "bcd":
        assert set(s["nodes"][name]) == {"namespace", "pid"}
        assert s["nodes"][name]["namespace"] == f"{SESSION}-{name}"
    for node in s["nodes"].values():
        assert isinstance(node["pid"], int) and alive(node["pid"])
        assert node["namespace"] in namespaces()
    assert f"{SESSION}-a-lan" in namespaces() and f"{SESSION}-inet" in namespaces()
    plain = bed.run("status").stdout
    assert "impairments: none" in plain and "198.51.100.10 20mbit shared" in plain


def test_the_host_namespace_is_untouched(bed: Bed, host_before: tuple[list[str], str]) -> None:
    assert host_links() == host_before[0]
    assert host_routes() == host_before[1]


def test_exec_runs_in_the_node_with_its_control_socket(bed: Bed) -> None:
    out = bed.sh("a", "sh", "-c", 'echo "$MESHD_SOCKET"; ip -o -4 addr show').stdout
    assert out.splitlines()[0] == str(bed.dir / "nodes" / "a" / "meshd.sock")
    assert f"u-b    inet {A_B}/24" in out and f"s0    inet {A_SEG}/24" in out
    assert "upl    inet 198.51.100.10/24" in out and "lan0    inet 172.20.0.1/24" in out
    assert "1400" in bed.sh("c", "cat", "/sys/class/net/u-b/mtu").stdout
    assert bed.sh("a-lan", "ip", "route").stdout.startswith("default via 172.20.0.1")
    assert bed.run("exec", "z", "--", "true", check=False).returncode == 2


def test_underlay_links_and_segments_carry_packets(bed: Bed) -> None:
    assert bed.ping_loss("a", B_A) == 0
    assert bed.ping_loss("a", C_SEG) == 0
    assert bed.ping_loss("d", A_SEG) == 0
    assert bed.ping_loss("a", "100.64.1.2") == 100  # c's address on b-c: no route, no leak


def test_the_planned_endpoints_and_ports_work_for_the_daemons(bed: Bed) -> None:
    """meshd brings a WireGuard link up only when both generated configs agree on keys,
    endpoints and ports: every planned neighbour pair, p2p and segment, comes up."""
    assert bed.run("wait-converged", "--timeout", "10").returncode == 0
    assert bed.neighbour_states("a") == {"b": "up", "c": "up", "d": "up"}


def test_internet_serves_http_and_iperf3(bed: Bed) -> None:
    fetch = "import urllib.request as u; print(u.urlopen('http://203.0.113.1/hello.txt').read())"
    assert "hello from the meshd testbed internet" in bed.sh("b", "python3", "-c", fetch).stdout
    # The LAN host goes out through its node's uplink (the household router's NAT).
    assert "hello from" in bed.sh("a-lan", "python3", "-c", fetch).stdout
    listening = bed.sh("inet", "ss", "-Hltn").stdout
    for port in [80, *range(5201, 5211)]:
        assert f":{port} " in listening, listening
    # c has no uplink: its way out is meshd's exit tunnel to a gateway (a shares).
    deadline = time.monotonic() + 15
    while bed.ping_loss("c", INTERNET) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert bed.ping_loss("c", INTERNET) == 0


def test_uplink_rate_shapes_both_directions_outside_the_node(bed: Bed) -> None:
    for way in ([], ["-R"]):  # upload, then download
        out = bed.sh("a", "iperf3", "-c", INTERNET, "-p", "5203", "-t", "2", "-J", *way).stdout
        mbit = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
        assert 12 < mbit < 22, (way, mbit)  # uplink_rate = "20mbit"
    # The line is in the internet namespace: meshd owns the root qdisc of upl.
    for ifname in ("n-a", "ifb-a"):
        qdisc = bed.sh("inet", "tc", "qdisc", "show", "dev", ifname).stdout
        assert "tbf" in qdisc and "rate 20Mbit" in qdisc, qdisc
    assert "tbf" not in bed.sh("a", "tc", "qdisc", "show", "dev", "upl").stdout


def test_cut_drops_silently_both_ways_and_heal_restores(bed: Bed) -> None:
    bed.run("cut", "a", "b")
    try:
        assert bed.ping_loss("a", B_A) == 100
        assert bed.ping_loss("b", A_B) == 100
        assert "state UP" in bed.sh("a", "ip", "link", "show", "u-b").stdout
        assert bed.ping_loss("b", "100.64.1.2") == 0  # b's other link untouched
        bed.flow("a", bed.meshd_status("b")["mesh_ipv4"])
        assert wait_for(lambda: bed.neighbour_states("a")["b"] == "down", 5)
        assert "cut a-b" in bed.run("status").stdout
    finally:
        bed.run("heal", "a", "b")
    assert bed.ping_loss("a", B_A) == 0
    assert wait_for(lambda: bed.neighbour_states("b")["a"] == "up", 5)


def test_cut_on_a_segment_only_separates_that_pair(bed: Bed) -> None:
    bed.run("cut", "c", "a")
    try:
        assert bed.ping_loss("a", C_SEG) == 100
        assert bed.ping_loss("c", A_SEG) == 100
        assert bed.ping_loss("a", D_SEG) == 0
        assert bed.ping_loss("c", D_SEG) == 0
    finally:
        bed.run("heal", "a", "c")
    assert bed.ping_loss("a", C_SEG) == 0
    assert bed.run("cut", "a", "z", check=False).returncode == 2
    assert "share no link" in bed.run("cut", "b", "d", check=False).stderr


def test_loss_drops_about_the_asked_share_per_direction(bed: Bed) -> None:
    bed.run("impair", "a", "b", "--loss", "30")
    try:
        loss = bed.ping_loss("a", B_A, count=400, interval="0.005")
    finally:
        bed.run("impair", "a", "b", "--loss", "0")
    # 30 % each way: a round trip survives with 0.7 * 0.7, so about 51 % of pings are lost.
    assert 38 <= loss <= 64, loss
    assert bed.ping_loss("a", B_A, count=50, interval="0.005") == 0


def test_rate_on_links_and_not_on_segments(bed: Bed) -> None:
    bed.run("impair", "a", "b", "--rate", "10mbit")
    try:
        for node, ifname in (("a", "u-b"), ("b", "u-a")):
            qdisc = bed.sh(node, "tc", "qdisc", "show", "dev", ifname).stdout
            assert "tbf" in qdisc and "rate 10Mbit" in qdisc, qdisc
    finally:
        bed.run("impair", "a", "b", "--rate", "none")
    assert "tbf" not in bed.sh("a", "tc", "qdisc", "show", "dev", "u-b").stdout
    res = bed.run("impair", "a", "c", "--rate", "1mbit", check=False)
    assert res.returncode == 2 and "p2p links only" in res.stderr
    assert bed.run("impair", "a", "b", "--loss", "150", check=False).returncode == 2


def test_uplink_down_is_silent_and_up_restores(bed: Bed) -> None:
    bed.run("uplink", "a", "down")
    try:
        assert bed.ping_loss("a", INTERNET) == 100
        assert bed.ping_loss("b", INTERNET) == 0  # another node's uplink is untouched
        assert "uplink a down" in bed.run("status").stdout
    finally:
        bed.run("uplink", "a", "up")
    assert bed.ping_loss("a", INTERNET) == 0
    assert bed.run("uplink", "c", "down", check=False).returncode == 2


def test_kill_and_start(bed: Bed) -> None:
    pid = bed.status()["nodes"]["b"]["pid"]
    bed.run("kill", "b")
    assert bed.status()["nodes"]["b"]["pid"] is None
    assert wait_for(lambda: not alive(pid), 2)
    # A stopped node is not waited for.
    assert bed.run("wait-converged", "--timeout", "5").returncode == 0
    bed.run("start", "b", "--wait")
    new = bed.status()["nodes"]["b"]["pid"]
    assert new and new != pid and alive(new)
    assert bed.run("wait-converged", "--timeout", "10").returncode == 0


def test_wait_converged_names_what_is_missing(bed: Bed) -> None:
    # Freeze node c whole (meshd and its wireguard-go daemons): running as far as the
    # testbed knows, but not answering and its tunnels silent.
    ns = bed.status()["nodes"]["c"]["namespace"]
    c_address = bed.meshd_status("c")["mesh_ipv4"]
    pids = [
        int(p)
        for p in subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True
        ).stdout.split()
    ]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        bed.flow("b", c_address)
        assert wait_for(lambda: bed.neighbour_states("b")["c"] == "down", 5)
        res = bed.run("wait-converged", "--timeout", "1.5", check=False)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert res.returncode == 1
    assert "c: no status" in res.stderr
    assert re.search(r"b: .*neighbour c: down", res.stderr), res.stderr
    assert bed.run("wait-converged", "--timeout", "10").returncode == 0


def test_up_refuses_when_a_testbed_is_up(bed: Bed) -> None:
    res = bed.run("up", str(REPO / "netns-testbed/topologies/line3.toml"), check=False)
    assert res.returncode == 1 and "already up" in res.stderr
    assert bed.status()["nodes"].keys() == {"a", "b", "c", "d"}


# -- down and failed ups, each on a testbed of its own ---------------------------------------


def test_down_leaves_nothing_behind(tmp_path: Path, host_before: tuple[list[str], str]) -> None:
    b = Bed(f"{SESSION}d", tmp_path / "state")
    try:
        b.run("up", str(REPO / "netns-testbed/topologies/line3.toml"), "--wait")
        mine = {ns for ns in namespaces() if ns.startswith(f"{b.ident}-")}
        assert mine == {f"{b.ident}-{n}" for n in ("a", "b", "c", "inet")}
        # A wireguard-go that cannot clean up after itself (stopped, then SIGKILLed).
        ifname = f"tbw{os.getpid() % 100000}"
        sock = Path(f"/var/run/wireguard/{ifname}.sock")
        b.sh("a", "wireguard-go", ifname)
        assert wait_for(sock.exists, 3)
        pids = {
            int(p)
            for ns in mine
            for p in subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True
            ).stdout.split()
        }
        wg = [p for p in pids if ifname in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(wg) == 1  # meshd's own wireguard-go daemons run beside it
        os.kill(wg[0], signal.SIGSTOP)
        # A stray command still running in a node.
        stray = subprocess.Popen(
            [str(TESTBED), "exec", "b", "--", "sleep", "600"], env=b.env, start_new_session=True
        )
        assert wait_for(
            lambda: alive(stray.pid) and "sleep" in Path(f"/proc/{stray.pid}/comm").read_text(), 3
        )
        pids.add(stray.pid)
        assert len(pids) >= 3 + 11  # three daemons, http and ten iperf3 servers, and more

        # Every wireguard-go of this testbed (others may run beside it, with their own
        # interfaces): meshd's daemons and the stopped one, by pid and start time.
        ifnames = {
            line.split(":")[1].strip()
            for ns in mine
            for line in subprocess.run(
                ["ip", "-n", ns, "-o", "link", "show", "type", "tun"],
                capture_output=True,
                text=True,
            ).stdout.splitlines()
        }
        ours = {
            pid: start_time(pid) for pid, name in wireguard_go_pids().items() if name in ifnames
        }
        assert ifname in ifnames and len(ours) >= 5, (ifnames, ours)  # four links, ifname

        started = time.monotonic()
        res = b.run("down")
        # Right as `down` returns, not a moment later: no wireguard-go of ours is left, not
        # even exited and waiting to be reaped, and neither is a socket of our interfaces.
        left = wireguard_go_pids()
        assert time.monotonic() - started < 10
        assert "down" in res.stdout
        assert [p for p in left if p in ours and start_time(p) == ours[p]] == [], left
        assert [n for n in left.values() if n in ifnames] == [], left
        assert [n for n in ifnames if Path(f"/var/run/wireguard/{n}.sock").exists()] == []
        stray.wait(timeout=5)
    finally:
        b.run("down", check=False)
    assert not {ns for ns in namespaces() if ns.startswith(f"{b.ident}-")}
    assert not b.dir.exists()
    assert not sock.exists()
    assert [p for p in pids if alive(p)] == []
    assert host_links() == host_before[0]
    again = b.run("down")
    assert "nothing to remove" in again.stdout


@pytest.mark.parametrize("step", ["namespaces", "segments", "rules"])
def test_a_failed_up_cleans_up_after_itself(tmp_path: Path, step: str) -> None:
    topo = tmp_path / "topo.toml"
    topo.write_text(TOPOLOGY)
    b = Bed(f"{SESSION}f", tmp_path / "state")
    b.env["MESHD_TESTBED_FAIL_AT"] = step
    try:
        res = b.run("up", str(topo), "--no-meshd", check=False)
        assert res.returncode == 1
        assert f"failing at step {step!r}" in res.stderr and "cleaning up" in res.stderr
        assert not {ns for ns in namespaces() if ns.startswith(f"{b.ident}-")}
        assert not b.dir.exists()
    finally:
        b.env.pop("MESHD_TESTBED_FAIL_AT")
        b.run("down", check=False)


def test_state_dir_leftovers_are_replaced_and_foreign_files_kept(tmp_path: Path) -> None:
    b = Bed(f"{SESSION}s", tmp_path / "state")
    stale = b.dir / "nodes" / "a" / "state" / "identity.key"
    stale.parent.mkdir(parents=True)
    stale.write_text("stale\n")  # left by a testbed whose state.json is gone
    foreign = b.dir / "notes.txt"
    foreign.write_text("not the testbed's\n")
    try:
        b.run("up", str(REPO / "netns-testbed/topologies/line3.toml"), "--no-meshd")
        assert stale.read_text() != "stale\n"
        assert b.status()["nodes"]["a"]["pid"] is None
    finally:
        b.run("down", check=False)
    assert sorted(p.name for p in b.dir.iterdir()) == ["notes.txt"]


def test_down_without_a_state_file_still_sweeps_the_ids_namespaces(tmp_path: Path) -> None:
    b = Bed(f"{SESSION}o", tmp_path / "state")
    try:
        b.run("up", str(REPO / "netns-testbed/topologies/line3.toml"), "--no-meshd")
        (b.dir / "state.json").unlink()  # as if the state directory were lost
        res = b.run("up", str(REPO / "netns-testbed/topologies/line3.toml"), check=False)
        assert res.returncode == 1 and "exist without a state" in res.stderr
        b.run("down")
        assert not {ns for ns in namespaces() if ns.startswith(f"{b.ident}-")}
    finally:
        b.run("down", check=False)
