"""Bringing a testbed up and tearing it down: keys and configs, the internet's servers,
the daemons, and the removal of everything (also of a half-built or half-removed testbed)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nstestbed import build, procs, state
from nstestbed.env import child_env
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


def write_configs(plan: Plan) -> dict[str, dict[str, str]]:
    """Generate every node's keys, the mesh's admin key and definition, every node's
    membership certificate and invite delegation, then its meshd config (checked with
    meshd's own parser)."""
    from meshd import config, identity

    keys: dict[str, NodeKeys] = {}
    try:
        admin = identity.generate(plan.state_dir / "admin")
        idents = {}
        for node in plan.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            ident = identity.generate(node.meshd_state_dir)
            idents[node.name] = ident
            keys[node.name] = NodeKeys(ident.node_id, ident.wireguard_public_b64)
        write_memberships(plan, admin, idents)
        for node in plan.nodes:
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
    certificate and a delegation to issue invites (and memberships from a pool of its own)."""
    import ipaddress

    from meshd import trust
    from meshd.membership import SCOPE_ALL, create_mesh, issue_delegation, issue_membership

    now = int(time.time())
    mesh = create_mesh(
        admin.signing_key,
        mesh_id=os.urandom(16),
        name=f"testbed {plan.testbed_id}",
        ipv4_prefix=MESH_PREFIX,
        ipv6_prefix=ipaddress.IPv6Network(MESH_IPV6_PREFIX),
        issued_at=now,
    )
    for i, node in enumerate(plan.nodes):
        ident = idents[node.name]
        cert = issue_membership(
            admin.signing_key,
            mesh=mesh,
            node_id=ident.node_id,
            name=node.name,
            wireguard_public=ident.wireguard_public,
            mesh_ipv4=node.mesh_ipv4,
            not_before=now - 60,
            expires_at=now + MEMBERSHIP_DAYS * 86400,
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
        from meshd.addressing import own_interface_prefix
        from meshd.config import WireGuardSettings
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
    half-removed: processes, wireguard-go sockets, namespaces (with their links), state."""
    summary = TeardownSummary()
    existing = build.existing_namespaces()
    pattern = namespace_pattern(tb_id)
    recorded = st.namespaces if st else []
    namespaces = [ns for ns in recorded if ns in existing]
    namespaces += sorted(ns for ns in existing if pattern.fullmatch(ns) and ns not in namespaces)
    tuns: set[str] = set()
    for ns in namespaces:
        tuns |= build.tun_interfaces(ns)

    # meshd first, alone, so it can take down its links while wireguard-go still runs.
    meshd: list[int] = []
    if st is not None:
        plan_nodes = {n: Path(directory) / "nodes" / n / "meshd.toml" for n in st.meshd_pids}
        meshd = [
            pid
            for name, pid in st.meshd_pids.items()
            if pid and procs.is_alive(pid, str(plan_nodes[name]))
        ]
    procs.stop(meshd, MESHD_TERM_GRACE_S)
    for ns in namespaces:
        tuns |= build.tun_interfaces(ns)
    others = sorted({pid for ns in namespaces for pid in procs.namespace_pids(ns)})
    stuck = procs.stop(others, OTHERS_TERM_GRACE_S)
    summary.processes = len(meshd) + len(others)

    summary.sockets = len(build.remove_wireguard_sockets(tuns, _own_interface_prefixes(st)))
    for ns in namespaces:
        build.delete_namespace(ns)
    summary.namespaces = len(namespaces)
    remaining = state.remove(directory)

    left = [f"namespace {ns}" for ns in namespaces if ns in build.existing_namespaces()]
    left += [f"pid {pid}" for pid in stuck]
    left += [str(path) for path in remaining]
    summary.left = tuple(left)
    return summary
