"""The userspace backend against real wireguard-go, in throwaway network namespaces.

Every namespace and interface is named ``tw`` + random hex, so that nothing else on the
machine is touched; the sandbox fixture removes them all and asserts that no namespace,
daemon or socket is left, whatever the test did.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from nacl.public import PrivateKey

from meshd.adapters.wg.model import DeviceUpdate, PeerUpdate
from meshd.adapters.wg.userspace import DEFAULT_SOCKET_DIR, UserspaceBackend, find_listener_pid
from tests.wg_contract import exercise_backend

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and TUN"),
    pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="wireguard-go not installed"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) not installed"),
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the block in ``namespace``: wireguard-go puts its TUN in its starter's namespace."""
    from pyroute2 import netns

    netns.pushns(namespace)
    try:
        yield
    finally:
        netns.popns()


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20)


def ip(namespace: str, *args: str) -> None:
    done = run("ip", "-n", namespace, *args)
    assert done.returncode == 0, f"ip -n {namespace} {' '.join(args)}: {done.stderr}"


def link_exists(namespace: str, ifname: str) -> bool:
    return run("ip", "-n", namespace, "link", "show", "dev", ifname).returncode == 0


def daemon_pids(ifname: str) -> list[int]:
    """Live wireguard-go processes serving ``ifname`` (zombies have no cmdline: skipped)."""
    wanted = f"wireguard-go\0{ifname}\0".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    if cmdline.read() == wanted:
                        pids.append(int(entry.name))
            except OSError:  # exited meanwhile
                continue
    return pids


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout_s)[0])
    finally:
        os.close(pidfd)


class Sandbox:
    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.ifnames: list[str] = []

    def namespace(self) -> str:
        name = f"tw{secrets.token_hex(5)}"
        done = run("ip", "netns", "add", name)
        assert done.returncode == 0, done.stderr
        self.namespaces.append(name)
        ip(name, "link", "set", "lo", "up")
        return name

    def ifname(self) -> str:
        name = f"tw{secrets.token_hex(6)}"  # 14 characters: fits IFNAMSIZ
        self.ifnames.append(name)
        return name

    def clean(self) -> None:
        backend = UserspaceBackend()
        for ifname in self.ifnames:
            try:
                backend.delete(ifname)
            finally:  # whatever delete did, leave no daemon and no socket of ours
                for pid in daemon_pids(ifname):
                    os.kill(pid, signal.SIGKILL)
                    wait_for_exit(pid, 3)
                if os.path.lexists(backend.socket_path(ifname)):
                    os.unlink(backend.socket_path(ifname))
        for namespace in self.namespaces:
            run("ip", "netns", "del", namespace)

    def assert_clean(self) -> None:
        listed = run("ip", "netns", "list").stdout.split()
        assert not set(self.namespaces) & set(listed), "namespace left behind"
        for ifname in self.ifnames:
            assert daemon_pids(ifname) == [], f"wireguard-go {ifname} left behind"
            assert not os.path.lexists(os.path.join(DEFAULT_SOCKET_DIR, f"{ifname}.sock"))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    try:
        yield box
    finally:
        box.clean()
        box.assert_clean()


@pytest.fixture
def backend() -> UserspaceBackend:
    return UserspaceBackend()


def test_real_wireguard_go_follows_the_contract(
    sandbox: Sandbox, backend: UserspaceBackend
) -> None:
    namespace = sandbox.namespace()
    with inside(namespace):
        exercise_backend(backend, sandbox.ifname())


def test_tun_is_made_in_the_callers_namespace_and_deleted_from_another(
    sandbox: Sandbox, backend: UserspaceBackend
) -> None:
    namespace, ifname = sandbox.namespace(), sandbox.ifname()
    with inside(namespace):
        started = time.monotonic()
        backend.create(ifname)
        created_s = time.monotonic() - started
    assert link_exists(namespace, ifname)
    assert run("ip", "link", "show", "dev", ifname).returncode != 0  # not in ours
    assert backend.exists(ifname)  # the socket is visible from every namespace
    assert backend.list_interfaces(ifname) == [ifname]
    (pid,) = daemon_pids(ifname)
    assert find_listener_pid(backend.socket_path(ifname), "wireguard-go") == pid
    # The daemon has a session of its own: our terminal's signals do not reach it.
    assert os.getsid(pid) != os.getsid(0)

    started = time.monotonic()
    backend.delete(ifname)  # from the host namespace
    deleted_s = time.monotonic() - started
    assert daemon_pids(ifname) == []
    assert not os.path.lexists(backend.socket_path(ifname))
    assert not link_exists(namespace, ifname)
    assert not backend.exists(ifname)
    assert created_s < 2 and deleted_s < 2, (created_s, deleted_s)


def test_two_namespaces_handshake_and_carry_traffic(
    sandbox: Sandbox, backend: UserspaceBackend
) -> None:
    ns_a, ns_b = sandbox.namespace(), sandbox.namespace()
    if_a, if_b = sandbox.ifname(), sandbox.ifname()
    ip(ns_a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", ns_b)
    for namespace, underlay in ((ns_a, "10.203.0.1"), (ns_b, "10.203.0.2")):
        ip(namespace, "addr", "add", f"{underlay}/24", "dev", "veth0")
        ip(namespace, "link", "set", "veth0", "up")
    key_a, key_b = PrivateKey.generate(), PrivateKey.generate()
    sides = (
        (ns_a, if_a, key_a, key_b, "10.203.0.2", "10.204.0.1"),
        (ns_b, if_b, key_b, key_a, "10.203.0.1", "10.204.0.2"),
    )
    for namespace, ifname, own, other, other_underlay, overlay in sides:
        with inside(namespace):
            backend.create(ifname)
        backend.configure(  # the socket works from any namespace
            ifname,
            DeviceUpdate(
                private_key=bytes(own),
                listen_port=51820,
                peers=(
                    PeerUpdate(
                        public_key=bytes(other.public_key),
                        endpoint=(other_underlay, 51820),
                        allowed_ips=("0.0.0.0/0", "::/0"),
                        persistent_keepalive_s=1,
                    ),
                ),
            ),
        )
        ip(namespace, "addr", "add", f"{overlay}/24", "dev", ifname)
        ip(namespace, "link", "set", ifname, "up")
    assert backend.show(if_a).public_key == bytes(key_a.public_key)

    started = time.time()
    ping = run("ip", "netns", "exec", ns_a, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.204.0.2")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    (peer,) = backend.show(if_a).peers
    assert peer.public_key == bytes(key_b.public_key)
    assert peer.endpoint == ("10.203.0.2", 51820)
    assert peer.last_handshake is not None
    assert started - 1 <= peer.last_handshake <= time.time() + 1
    assert peer.rx_bytes > 0 and peer.tx_bytes > 0
    (peer_b,) = backend.show(if_b).peers
    assert peer_b.last_handshake is not None

    before = peer
    ping = run(
        "ip", "netns", "exec", ns_a, "ping", "-c", "2", "-i", "0.2", "-s", "1000", "10.204.0.2"
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    (after,) = backend.show(if_a).peers
    # Two 1000-byte pings each way, plus WireGuard's own overhead.
    assert after.tx_bytes - before.tx_bytes >= 2 * 1000
    assert after.rx_bytes - before.rx_bytes >= 2 * 1000


def test_a_killed_daemons_stale_socket_is_cleaned_by_create(
    sandbox: Sandbox, backend: UserspaceBackend
) -> None:
    namespace, ifname = sandbox.namespace(), sandbox.ifname()
    with inside(namespace):
        backend.create(ifname)
    (pid,) = daemon_pids(ifname)
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid, 3)
    assert os.path.lexists(backend.socket_path(ifname))  # left behind...
    assert not backend.exists(ifname)  # ...but not reported
    assert backend.list_interfaces(ifname) == []
    assert not link_exists(namespace, ifname)  # the TUN died with its fd

    with inside(namespace):
        backend.create(ifname)
    assert backend.exists(ifname)
    assert backend.show(ifname).peers == ()
    assert link_exists(namespace, ifname)


def test_the_daemon_outlives_its_starter_and_is_adopted(
    sandbox: Sandbox, backend: UserspaceBackend
) -> None:
    namespace, ifname = sandbox.namespace(), sandbox.ifname()
    code = (
        "from meshd.adapters.wg.userspace import UserspaceBackend\n"
        "from meshd.adapters.wg.model import DeviceUpdate\n"
        f"b = UserspaceBackend(); b.create({ifname!r})\n"
        f"b.configure({ifname!r}, DeviceUpdate(listen_port=51999))\n"
    )
    starter = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert starter.returncode == 0, starter.stderr
    # A new process (a restarted meshd) finds the interface and its configuration.
    assert backend.list_interfaces(ifname) == [ifname]
    assert backend.show(ifname).listen_port == 51999
    backend.delete(ifname)
    assert not link_exists(namespace, ifname)
