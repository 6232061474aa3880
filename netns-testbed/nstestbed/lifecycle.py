"""Bringing a testbed up and tearing it down: keys and configs, the internet's servers,
the daemons, and the removal of everything (also of a half-built or half-removed testbed)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nstestbed import build, procs, state
from nstestbed.env import REPO_ROOT, child_env
from nstestbed.plan import (
    DNS_SUFFIX,
    HTTP_PORT,
    INTERNET_ADDRESS,
    IPERF_PORTS,
    MESH_IPV6_PREFIX,
    MESH_PREFIX,
    SERVER_ADDRESS,
    SMTP_PORT,
    NodeKeys,
    NodePlan,
    Plan,
    namespace_pattern,
    render_config,
)
from nstestbed.state import State

HELLO_TEXT = "hello from the meshd testbed internet\n"
BIG_FILE_BYTES = 4 * 1024 * 1024
MESHD_TERM_GRACE_S = 3.0
OTHERS_TERM_GRACE_S = 2.0
# Exited processes leave the process table once their parent (init, for the testbed's
# orphans) reaps them: at once on most machines, up to a second or so on some.
REAP_TIMEOUT_S = 10.0


def write_configs(plan: Plan) -> dict[str, dict[str, str]]:
    """Generate every node's keys, the mesh's admin key and definition, every node's
    membership certificate and invite delegation, then its meshd config (checked with
    meshd's own parser). Invited nodes get a directory only: `testbed join` provisions them."""
    from meshd import config
    from meshd.adapters import identity

    keys: dict[str, NodeKeys] = {}
    try:
        admin = identity.generate(plan.state_dir / "admin")
        idents = {}
        for node in plan.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            if node.invited:
                continue
            ident = identity.generate(node.meshd_state_dir)
            idents[node.name] = ident
            keys[node.name] = NodeKeys(ident.node_id, ident.wireguard_public_b64)
        write_memberships(plan, admin, idents)
        for node in plan.nodes:
            if node.invited:
                continue
            node.config_path.write_text(render_config(plan, node, keys, admin.node_id))
            config.load(node.config_path)
    except (config.ConfigError, identity.KeyFileError) as exc:
        raise build.BuildError(f"meshd config: {exc}") from None
    return {
        name: {"node_id": k.node_id, "wireguard_public": k.wireguard_public}
        for name, k in keys.items()
    }


MEMBERSHIP_DAYS = 30


def write_memberships(plan: Plan, admin: Any, idents: dict[str, Any]) -> None:
    """The testbed is the mesh's admin: a mesh definition, and for every node a membership
    certificate and a delegation to issue invites (and memberships from a pool of its own).
    Nodes with ``admin = true`` are admins too (listed in the definition the testbed signs,
    with the topology's ``threshold``);
    ``cert_validity_s`` makes a node's certificate short-lived (renewal tests), and
    ``cert_age_s`` gives it (and the mesh's definition, as old as the oldest) a past."""
    import ipaddress

    from meshd.adapters import trust
    from meshd.core.membership import SCOPE_ALL, create_mesh, issue_delegation, issue_membership

    now = int(time.time())
    mesh = create_mesh(
        admin.signing_key,
        mesh_id=os.urandom(16),
        name=f"testbed {plan.testbed_id}",
        ipv4_prefix=MESH_PREFIX,
        ipv6_prefix=ipaddress.IPv6Network(MESH_IPV6_PREFIX),
        issued_at=now - max((n.cert_age_s for n in plan.nodes), default=0),
        other_admins=[idents[n.name].node_id for n in plan.nodes if n.admin],
        threshold=plan.topology.threshold,
        emergency_threshold=plan.topology.emergency_threshold,
    )
    for i, node in enumerate(plan.nodes):
        if node.name not in idents:  # invited: it joins with an invite from a member
            continue
        ident = idents[node.name]
        cert = issue_membership(
            admin.signing_key,
            mesh=mesh,
            node_id=ident.node_id,
            name=node.name,
            wireguard_public=ident.wireguard_public,
            mesh_ipv4=node.mesh_ipv4,
            not_before=now - node.cert_age_s - 60,
            expires_at=now + (node.cert_validity_s or MEMBERSHIP_DAYS * 86400),
            serial=i + 1,
        )
        delegation = issue_delegation(
            admin.signing_key,
            mesh=mesh,
            delegate=ident.node_id,
            scope=SCOPE_ALL,
            not_before=now - 60,
            expires_at=now + MEMBERSHIP_DAYS * 86400,
            serial=1000 + i,
            ipv4_pool=ipaddress.IPv4Network(f"10.77.{i + 1}.0/24"),
        )
        state = node.meshd_state_dir
        (state / trust.MESH_FILE).write_bytes(mesh.encode())
        (state / trust.MEMBERSHIP_FILE).write_bytes(cert.encode())
        (state / trust.DELEGATION_FILE).write_bytes(delegation.encode())


def start_internet(plan: Plan) -> list[int]:
    """HTTP on port 80 (hello.txt, big.bin), iperf3 servers on 5201-5210, a listener on the
    SMTP port, and DNS (dnsmasq: every name under .test is the server) on the uplinks'
    router and the server."""
    www = plan.internet_dir / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "hello.txt").write_text(HELLO_TEXT)
    big = random.Random(0x6D657368).randbytes(BIG_FILE_BYTES)  # same bytes every time
    (www / "big.bin").write_bytes(big)
    (www / "big.bin.sha256").write_text(f"{hashlib.sha256(big).hexdigest()}  big.bin\n")
    ns, env = plan.internet_namespace, child_env()
    pids = [
        procs.start(
            ns,
            [
                sys.executable,
                "-m",
                "http.server",
                str(HTTP_PORT),
                "--bind",
                str(SERVER_ADDRESS),
                "--directory",
                str(www),
            ],
            plan.internet_dir / "http.log",
            env,
        )
    ]
    dnsmasq = [
        "dnsmasq",
        "--keep-in-foreground",
        "--log-facility=-",
        "--log-queries",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        f"--listen-address={INTERNET_ADDRESS},{SERVER_ADDRESS}",
        f"--address=/{DNS_SUFFIX}/{SERVER_ADDRESS}",
        "--user=root",
        "--pid-file",
    ]
    pids.append(procs.start(ns, dnsmasq, plan.internet_dir / "dns.log", env))
    for port in (*IPERF_PORTS, SMTP_PORT):
        pids.append(
            procs.start(
                ns, ["iperf3", "-s", "-p", str(port)], plan.internet_dir / f"iperf3-{port}.log", env
            )
        )
    return pids


def wait_listening(namespace: str, ports: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = build.run(["ss", "-N", namespace, "-Hltn"], check=False)
        listening = set()
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                listening.add(fields[3].rpartition(":")[2])
        absent = [p for p in ports if str(p) not in listening]
        if not absent:
            return
        if time.monotonic() > deadline:
            raise build.BuildError(f"nothing listens on port(s) {absent} in {namespace}")
        time.sleep(0.05)


PROVISION = REPO_ROOT / "provisioning" / "provision"
PROVISIONED_CONFIG = Path("etc/meshd/meshd.toml")
PROVISIONED_STATE_DIR = 'state_dir = "/var/lib/meshd"'


def provision_invited(node: NodePlan, token: str) -> str:
    """Provision an invited node as a Pi is provisioned: provisioning/provision with the
    household's options (its underlay, uplink and LAN interfaces), run in the node's
    namespace, into the node's scratch root (``--root``: no packages, user or service).
    The testbed then starts meshd instead of systemd, with the provisioned config but for
    its state directory, which lives under the root. Returns what provision printed;
    BuildError with its refusal (a bad invite) when it refused."""
    # No --name: the meshd node takes the invite's, as on a Pi where it is left out.
    argv = [sys.executable, str(PROVISION), "--root", str(node.root), "--invite", token]
    underlay = sorted({adj.local.ifname for adj in node.adjacencies})
    if underlay:
        argv += ["--underlay", *underlay]
    # Through the exit tunnel, as through the uplink: the testbed internet's server.
    argv += ["--check-target", f"{SERVER_ADDRESS}:{HTTP_PORT}"]
    if node.uplink:
        argv += ["--uplink", node.uplink.ifname, "--health-target", f"{SERVER_ADDRESS}:{HTTP_PORT}"]
        if node.share:
            argv.append("--share")
        if node.rate_cap:
            argv += ["--rate-cap", node.rate_cap.text]
    if node.lan:
        argv += ["--lan", node.lan.node_ifname]
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", node.namespace, *argv],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise build.BuildError(f"provision: {exc}") from None
    if proc.returncode != 0:
        raise build.BuildError((proc.stderr or proc.stdout).strip() or "provision failed")
    text = (node.root / PROVISIONED_CONFIG).read_text()
    if PROVISIONED_STATE_DIR not in text:
        raise build.BuildError(f"{node.root / PROVISIONED_CONFIG}: no {PROVISIONED_STATE_DIR}")
    state_dir = f"state_dir = {json.dumps(str(node.meshd_state_dir))}"
    node.config_path.write_text(
        f"# {PROVISIONED_CONFIG} as provisioning/provision wrote it under {node.root}, the\n"
        "# state directory moved there too (the testbed starts meshd, not systemd)\n"
        + text.replace(PROVISIONED_STATE_DIR, state_dir)
    )
    from meshd import config

    try:
        config.load(node.config_path)
    except config.ConfigError as exc:
        raise build.BuildError(f"meshd config: {exc}") from None
    return proc.stdout


def node_keys(node: NodePlan) -> dict[str, str]:
    """A node's public keys as ``state.json`` keeps them (provisioning made an invited one's)."""
    from meshd.adapters import identity

    ident = identity.load(node.meshd_state_dir)
    return {"node_id": ident.node_id, "wireguard_public": ident.wireguard_public_b64}


def start_meshd(st: State, node: NodePlan) -> int:
    assert st.daemon is not None
    argv = [*st.daemon, "run", "--config", str(node.config_path)]
    return procs.start(node.namespace, argv, node.log, child_env(node.socket))


def meshd_running(st: State, node: NodePlan) -> int | None:
    pid = st.meshd_pids.get(node.name)
    return pid if procs.is_alive(pid, str(node.config_path)) else None


@dataclass
class TeardownSummary:
    processes: int = 0
    namespaces: int = 0
    sockets: int = 0
    left: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = (
            f"stopped {self.processes} process(es), deleted {self.namespaces} namespace(s), "
            f"removed {self.sockets} wireguard socket(s)"
        )
        return text + (f"; STILL PRESENT: {', '.join(self.left)}" if self.left else "")


def _own_interface_prefixes(st: State | None) -> list[str]:
    if st is None or not st.keys:
        return []
    try:
        from meshd.config import WireGuardSettings
        from meshd.core.addressing import own_interface_prefix
    except ImportError:
        return []
    prefix = WireGuardSettings().interface_prefix
    out = []
    for keys in st.keys.values():
        with contextlib.suppress(ValueError, KeyError):
            out.append(own_interface_prefix(prefix, keys["node_id"]))
    return out


def teardown(directory: Path, tb_id: str, st: State | None) -> TeardownSummary:
    """Remove everything a testbed made, whether it is complete, half-built or already
    half-removed: processes (wireguard-go included), wireguard-go sockets, namespaces (with
    their links), state. Returns once all of it is gone, or, past the waits below, with what
    is still there in ``left``: every process it stopped out of the process table (reaped,
    not only exited), every socket of its interfaces removed."""
    summary = TeardownSummary()
    existing = build.existing_namespaces()
    pattern = namespace_pattern(tb_id)
    recorded = st.namespaces if st else []
    namespaces = [ns for ns in recorded if ns in existing]
    namespaces += sorted(ns for ns in existing if pattern.fullmatch(ns) and ns not in namespaces)
    prefixes = _own_interface_prefixes(st)
    tuns: set[str] = set()
    for ns in namespaces:
        tuns |= build.tun_interfaces(ns)

    # Every process to wait for, by pid and start time, noted while it runs: meshd takes
    # its wireguard-go daemons down with it, and a zombie has neither a namespace nor a
    # command line left to know it by.
    tracked: dict[int, int] = {}

    def track(pids: Iterable[int]) -> None:
        for pid in pids:
            started = procs.start_time(pid)
            if started is not None:
                tracked.setdefault(pid, started)

    # meshd first, alone, so it can take down its links while wireguard-go still runs.
    meshd: list[int] = []
    if st is not None:
        plan_nodes = {n: Path(directory) / "nodes" / n / "meshd.toml" for n in st.meshd_pids}
        meshd = [
            pid
            for name, pid in st.meshd_pids.items()
            if pid and procs.is_alive(pid, str(plan_nodes[name]))
        ]
    track(meshd)
    for ns in namespaces:
        track(procs.namespace_pids(ns))
    track(procs.wireguard_go(tuns, prefixes))
    stuck = procs.stop(meshd, MESHD_TERM_GRACE_S)
    for ns in namespaces:
        tuns |= build.tun_interfaces(ns)
    # What still runs in the namespaces, and wireguard-go daemons of our interfaces
    # wherever they are (one whose namespace lost its name in an earlier `down`).
    others = {pid for ns in namespaces for pid in procs.namespace_pids(ns)}
    others |= set(procs.wireguard_go(tuns, prefixes))
    track(others)
    stuck += procs.stop(sorted(others), OTHERS_TERM_GRACE_S)
    summary.processes = len(meshd) + len(others)

    # None of our daemons runs any more: a socket still there is one a killed daemon left.
    summary.sockets = len(build.remove_wireguard_sockets(tuns, prefixes))
    for ns in namespaces:
        build.delete_namespace(ns)
    summary.namespaces = len(namespaces)
    remaining = state.remove(directory)
    unreaped = procs.wait_reaped(
        {pid: t for pid, t in tracked.items() if pid not in stuck}, REAP_TIMEOUT_S
    )

    left = [f"namespace {ns}" for ns in namespaces if ns in build.existing_namespaces()]
    left += [procs.describe(pid) for pid in sorted({*stuck, *unreaped})]
    left += [f"socket {path}" for path in build.wireguard_sockets(tuns, prefixes)]
    left += [str(path) for path in remaining]
    summary.left = tuple(left)
    return summary
