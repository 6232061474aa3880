"""dataplane.kernel.ratio.1hop: iperf3 between two QEMU guests over their meshd link (kernel
WireGuard at both ends, set up by meshd as on a Pi) against a kernel WireGuard link made by
hand with `ip` and `wg` between the same guests, over the same cable, in the same run,
interleaved (A B A B ..., five each), compared by medians: dataplane.py's method, on the
kernel backend.

The guests (topologies/guests2.toml: h and k, invited, cabled to each other and to a)
provision themselves offline from a bundle (`provision bundle`) as tests/vm does, with
iperf3's packages beside it on their payload disk. Under TCG both paths pay the same
emulated crypto: the ratio is meshd's cost on the kernel path, not a Pi's speed.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from vmbed import guest as vmguest
from vmbed import image as vmimage
from vmbed import wiring

from benchmarks.dataplane import TARGET_RATIO
from benchmarks.results import Result, at_least
from benchmarks.testbed import HERE, Testbed

REPO = HERE.parent
GUESTS = ("h", "k")
IPERF3 = ("iperf3", "libiperf0", "libsctp1")
MESHD = "/opt/meshd/venv/bin/meshd"
PAYLOAD = vmimage.PAYLOAD_MOUNT
SECONDS, REPS = 5, 5
HAND = ("10.254.9.1", "10.254.9.2")  # the hand-made link's addresses, h then k
PORT = 52101
PORTS = "5301-5310"  # iperf3: meshd's link 5301, 5303, ...; the hand-made one 5302, 5304, ...


def payload(directory: Path) -> Path:
    """The bundle, and iperf3's .debs in ``extra/`` (the image has no iperf3)."""
    subprocess.run(
        [sys.executable, str(REPO / "provisioning" / "provision"), "bundle", str(directory)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    extra = directory / "extra"
    extra.mkdir()
    subprocess.run(["apt-get", "download", "-q", *IPERF3], cwd=extra, check=True, timeout=300)
    return directory


@contextmanager
def guest(tb: Testbed, node: str, files: Path, image: vmimage.Image) -> Iterator[vmguest.Guest]:
    directory = Path(tb.env["MESHD_TESTBED_DIR"]) / "vms" / node
    directory.mkdir(parents=True, exist_ok=True)
    disk = directory / "payload.img"
    vmguest.make_payload(files, disk, vmguest.payload_size(files))
    wires = wiring.take_over(tb.namespace(node))
    g = vmguest.Guest(
        node, image, directory, tb.namespace(node), wires.nics, disk, wiring.guest_setup(wires)
    )
    g.start()
    try:
        yield g
    finally:
        g.stop()


def provision(tb: Testbed, g: vmguest.Guest, underlays: list[str]) -> None:
    config = Path(tb.env["MESHD_TESTBED_DIR"]) / "nodes" / "a" / "meshd.toml"
    token = tb.exec("a", "meshd", "invite", "--name", g.name, "--config", str(config))
    g.check("umask 077; cat > /root/invite", input=token.splitlines()[0] + "\n")
    g.check(f"dpkg -i {PAYLOAD}/extra/*.deb", timeout=300)
    g.check(
        f"{PAYLOAD}/source/provisioning/provision --bundle {PAYLOAD} --invite-file "
        f"/root/invite --underlay {' '.join(underlays)}",
        timeout=900,
    )
    # The iperf3 servers' ports, open to the mesh as the testbed opens them on its nodes
    # (meshd rejects what a node does not offer the mesh): an operator's edit, a restart.
    g.check(
        f"printf '\\n[isolation]\\nopen_tcp_ports = [\"{PORTS}\"]\\n' >> /etc/meshd/meshd.toml"
        " && systemctl restart meshd"
    )


def mesh_status(g: vmguest.Guest) -> dict[str, Any]:
    return dict(json.loads(g.check(f"{MESHD} status --json", timeout=60)))


def answering(g: vmguest.Guest, within_s: float = 180.0) -> dict[str, Any]:
    """``g``'s status once its (restarted) meshd answers."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return mesh_status(g)
        except vmguest.GuestError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def linked(h: vmguest.Guest, k_id: str, k_ipv4: str) -> bool:
    """h reaches k over their own link (a neighbour up, k's /32 routed through it)."""
    try:
        status = mesh_status(h)
    except vmguest.GuestError:
        return False
    up = [n for n in status["neighbours"] if n["node_id"] == k_id and n["state"] == "up"]
    if not up:
        return False
    route = h.run(f"ip -j route get {k_ipv4}").out
    return bool(route) and json.loads(route)[0].get("dev") == up[0]["interface"]


def underlay(g: vmguest.Guest, interface: str) -> str:
    addresses = json.loads(g.check(f"ip -4 -j addr show dev {interface}"))
    return str(addresses[0]["addr_info"][0]["local"])


def hand_made(h: vmguest.Guest, k: vmguest.Guest) -> None:
    """A kernel WireGuard link between h and k over their cable, as an operator would make
    it with `ip` and `wg`; gone with the guests."""
    ends = [(h, underlay(h, "u-k"), HAND[0], HAND[1]), (k, underlay(k, "u-h"), HAND[1], HAND[0])]
    keys = [g.check("wg genkey").strip() for g, *_ in ends]
    pubs = [
        g.check("wg pubkey", input=key + "\n").strip()
        for (g, *_), key in zip(ends, keys, strict=True)
    ]
    for i, (g, _, local, remote) in enumerate(ends):
        peer_underlay = ends[1 - i][1]
        g.check(
            "ip link add bw0 type wireguard && "
            f"wg set bw0 listen-port {PORT + i} private-key /dev/stdin peer {pubs[1 - i]} "
            f"endpoint {peer_underlay}:{PORT + 1 - i} allowed-ips {remote}/32 "
            "persistent-keepalive 1 && ip link set bw0 mtu 1420 up && "
            f"ip addr add {local}/32 peer {remote}/32 dev bw0",
            input=keys[i] + "\n",
        )


def iperf3(client: vmguest.Guest, server: vmguest.Guest, address: str, port: int) -> float:
    """One TCP upload, bits per second as the receiver counted them. The server (one test,
    in the background) takes a while to listen under TCG: the client tries again."""
    server.check(f"iperf3 -s -1 -D -B {address} -p {port}")
    doc: dict[str, Any] = {}
    for _ in range(20):
        run = client.run(f"iperf3 -c {address} -p {port} -t {SECONDS} -J", SECONDS * 4 + 60)
        try:
            doc = json.loads(run.out)
        except ValueError:
            doc = {"error": run.out[-200:] or run.err[-200:]}
        received = doc.get("end", {}).get("sum_received")
        if run.rc == 0 and received and "error" not in doc:
            return float(received["bits_per_second"])
        time.sleep(1)
    raise RuntimeError(f"iperf3 to {address}:{port} failed: {doc.get('error')}")


def kernel_dataplane(quick: bool) -> list[Result]:
    """Two guests (this machine's architecture), meshd's link against the hand-made one."""
    image = vmimage.build(vmimage.host_arch())
    tb = Testbed("mbg")
    with ExitStack() as stack:
        files = payload(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "payload")
        stack.enter_context(tb.up(HERE / "topologies" / "guests2.toml", converge_s=None))
        h, k = (stack.enter_context(guest(tb, n, files, image)) for n in GUESTS)
        provision(tb, h, ["u-a", "u-k"])
        provision(tb, k, ["u-a", "u-h"])
        k_status = answering(k)
        k_id, k_ipv4 = str(k_status["node_id"]), str(k_status["mesh_ipv4"])
        deadline = time.monotonic() + 300
        while not linked(h, k_id, k_ipv4):
            if time.monotonic() > deadline:
                raise RuntimeError("h and k did not link to each other in 300 s")
            time.sleep(2)
        hand_made(h, k)
        link = next(n["interface"] for n in mesh_status(h)["neighbours"] if n["node_id"] == k_id)
        for name in (link, "bw0"):  # what differs between the two, if anything
            shown = json.loads(h.check(f"ip -j -d link show dev {name}"))[0]
            offloads = h.check(f"cat /sys/class/net/{name}/tx_queue_len").strip()
            print(f"guests: h's {name}: mtu {shown['mtu']}, qdisc {shown.get('qdisc')}, "
                  f"txqueuelen {offloads}, gso_max_size {shown.get('gso_max_size')}")  # fmt: skip
        mesh, base = [], []
        for i in range(REPS):  # interleaved: meshd, hand-made, meshd, ...
            mesh.append(iperf3(h, k, k_ipv4, 5301 + 2 * i))
            base.append(iperf3(h, k, HAND[1], 5302 + 2 * i))
    mbit = 1e6
    print(
        "guests: meshd " + shlex.join(f"{v / mbit:.1f}" for v in mesh)
        + " / hand-made " + shlex.join(f"{v / mbit:.1f}" for v in base) + " Mbit/s"
    )  # fmt: skip
    meshd, made = statistics.median(mesh), statistics.median(base)
    return [
        at_least("dataplane.kernel.ratio.1hop", round(meshd / made, 3), "ratio", TARGET_RATIO),
        Result("dataplane.kernel.meshd.1hop_mbit", round(meshd / mbit, 1), "Mbit/s"),
        Result("dataplane.kernel.wg.1hop_mbit", round(made / mbit, 1), "Mbit/s"),
    ]
