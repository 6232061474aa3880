"""A guest: one QEMU process in a testbed namespace, and the agent that runs commands in it.

QEMU runs inside the namespace it is given (``ip netns exec``), so its tap devices are made
there and nothing of it touches the host's network: ``-nodefaults`` and no ``-nic`` mean no
user-mode network, and every NIC is a tap the caller wires into the testbed. The root is a
qcow2 overlay on the cached image (the image is never written); a second disk, read-only,
carries the payload (what the guest installs from). The console goes to ``console.log``;
commands go through the agent (``vm-agent`` in the image) on a virtio-serial port whose
host end is a Unix socket in the guest's directory.

Under TCG (no nested KVM here) Python in the guest runs 5-7x slower than on the host:
every wait in this module is a parameter.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nstestbed import build as testbed

from vmbed.image import AGENT_PORT_NAME, PAYLOAD_MOUNT, Image

QEMU = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}
MACHINE = {
    "amd64": ["-machine", "q35", "-cpu", "max"],
    "arm64": ["-machine", "virt", "-cpu", "cortex-a72"],
}
CONSOLE = {"amd64": "ttyS0", "arm64": "ttyAMA0"}
BOOT_TIMEOUT_S = 180.0
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"  # a new one every boot


class GuestError(Exception):
    """The guest did not boot, its agent did not answer, or a command failed."""


@dataclass(frozen=True)
class Nic:
    tap: str  # the tap's name in the namespace QEMU runs in
    mac: str  # the guest's NIC


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


@dataclass
class Guest:
    name: str
    image: Image
    directory: Path  # overlay, payload, sockets, console log, pid
    namespace: str
    nics: Sequence[Nic] = ()
    payload: Path | None = None  # an ext4 image labelled "payload", mounted ro at /payload
    setup: str = ""  # run once in a fresh root after it booted (wiring.guest_setup's script)
    memory_mb: int = 1024
    cpus: int = 2
    _sock: socket.socket | None = field(default=None, repr=False)
    _buffer: bytes = field(default=b"", repr=False)
    _next_id: int = field(default=1, repr=False)

    @property
    def overlay(self) -> Path:
        return self.directory / "root.qcow2"

    @property
    def agent_socket(self) -> Path:
        return self.directory / "agent.sock"

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    def argv(self) -> list[str]:
        arch = self.image.arch
        accel = "kvm" if _kvm_works() and arch == _host_qemu_arch() else "tcg"
        argv = [
            QEMU[arch],
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            *MACHINE[arch],
            "-accel",
            accel,
            "-smp",
            str(self.cpus),
            "-m",
            str(self.memory_mb),
            "-kernel",
            str(self.image.kernel),
            "-initrd",
            str(self.image.initrd),
            "-append",
            f"console={CONSOLE[arch]} root=/dev/vda rw net.ifnames=0 quiet",
            "-drive",
            f"file={self.overlay},if=virtio,format=qcow2",
            "-serial",
            f"file:{self.console}",
            "-chardev",
            f"socket,id=agent,path={self.agent_socket},server=on,wait=off",
            "-device",
            "virtio-serial-pci",
            "-device",
            f"virtserialport,chardev=agent,name={AGENT_PORT_NAME}",
            "-pidfile",
            str(self.pidfile),
            "-daemonize",
        ]
        if self.payload:
            argv += ["-drive", f"file={self.payload},if=virtio,format=raw,readonly=on"]
        for i, nic in enumerate(self.nics):
            argv += [
                "-netdev",
                f"tap,id=n{i},ifname={nic.tap},script=no,downscript=no",
                "-device",
                f"virtio-net-pci,netdev=n{i},mac={nic.mac}",
            ]
        return argv

    def start(self, fresh: bool = True, timeout: float = BOOT_TIMEOUT_S) -> float:
        """Boot the guest, on a fresh overlay of the image (a new SD card) unless ``fresh``
        is False and it has one; return the seconds until its agent answered (and a fresh
        root was set up)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fresh = fresh or not self.overlay.exists()
        if fresh:
            self.overlay.unlink(missing_ok=True)
            testbed.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    str(self.image.root),
                    str(self.overlay),
                ]
            )
        self.console.unlink(missing_ok=True)
        self.agent_socket.unlink(missing_ok=True)
        started = time.monotonic()
        testbed.run(["ip", "netns", "exec", self.namespace, *self.argv()])
        self.wait_agent(timeout)
        if self.payload:  # fstab waits 5 s for its disk: not enough for arm64 under TCG
            mount = f"mkdir -p {PAYLOAD_MOUNT} && mount {PAYLOAD_MOUNT}"
            self.check(f"udevadm settle; mountpoint -q {PAYLOAD_MOUNT} || {{ {mount}; }}")
        if fresh and self.setup:
            self.check(self.setup)
        return time.monotonic() - started

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def wait_agent(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise GuestError(f"{self.name}: QEMU exited during boot; {self.console_tail()}")
            try:
                self.run("true", timeout=min(5.0, max(0.5, deadline - time.monotonic())))
                return
            except GuestError:
                self._close()
                time.sleep(0.5)
        raise GuestError(
            f"{self.name}: no answer from the agent in {timeout:.0f} s; {self.console_tail()}"
        )

    def run(self, cmd: str, timeout: float = 120.0, input: str | None = None) -> Result:
        """Run ``cmd`` under bash in the guest, as root; its exit status and output."""
        sock = self._connect()
        ident = self._next_id
        self._next_id += 1
        request = {"id": ident, "cmd": cmd, "timeout": timeout, "input": input}
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            deadline = time.monotonic() + timeout + 10.0
            while True:
                while b"\n" not in self._buffer:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise GuestError(
                            f"{self.name}: no reply to {cmd!r} in {timeout + 10:.0f} s"
                        )
                    sock.settimeout(left)
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise GuestError(f"{self.name}: the agent's socket closed")
                    self._buffer += chunk
                line, self._buffer = self._buffer.split(b"\n", 1)
                reply = json.loads(line)
                if reply.get("id") == ident:  # an older reply is one a timed-out call left
                    return Result(int(reply["rc"]), reply["out"], reply["err"])
        except (OSError, ValueError) as exc:
            self._close()
            raise GuestError(f"{self.name}: {cmd!r}: {exc}") from None

    def check(self, cmd: str, timeout: float = 120.0, input: str | None = None) -> str:
        """Run ``cmd``; its output, or GuestError with what it said when it failed."""
        res = self.run(cmd, timeout, input)
        if res.rc != 0:
            raise GuestError(
                f"{self.name}: {cmd!r} exited {res.rc}: {(res.err or res.out).strip()[-2000:]}"
            )
        return res.out

    def boot_id(self) -> str:
        return self.check(BOOT_ID, timeout=30).strip()

    def reboot(self, timeout: float = BOOT_TIMEOUT_S) -> float:
        """``systemctl reboot`` in the guest; the seconds until its agent answers from the
        new boot. The reboot is put off by a second, so that the agent's reply to the
        command that asks for it is out before systemd stops the agent."""
        before = self.boot_id()
        self.check("systemd-run --quiet --on-active=1 systemctl reboot", timeout=30)
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(GuestError):
                now = self.run(BOOT_ID, timeout=5).out.strip()
                if now and now != before:
                    return time.monotonic() - started
            self._close()
            time.sleep(1)
        raise GuestError(f"{self.name}: not back from a reboot in {timeout:.0f} s")

    def stop(self, grace: float = 30.0) -> None:
        """Power off cleanly (the agent asks systemd), then kill what is left."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(GuestError):
                self.run("systemd-run --quiet --on-active=1 systemctl poweroff", timeout=10)
            _wait_gone(pid, grace)
        self.kill()

    def kill(self) -> None:
        """Power cut: QEMU killed at once (what a Pi's plug does to it)."""
        self._close()
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10.0)
        self.pidfile.unlink(missing_ok=True)
        self.agent_socket.unlink(missing_ok=True)

    def console_tail(self, lines: int = 20) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "no console log"
        return "console:\n" + "\n".join(text.splitlines()[-lines:])

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.agent_socket))
            except OSError as exc:
                sock.close()
                raise GuestError(f"{self.name}: agent socket: {exc}") from None
            self._sock = sock
            self._buffer = b""
        return self._sock

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""


def make_payload(source: Path, image: Path, size: str = "200M") -> None:
    """An ext4 image of ``source`` (labelled ``payload``), without a loop device."""
    image.unlink(missing_ok=True)
    testbed.run(
        ["mke2fs", "-q", "-t", "ext4", "-L", "payload", "-d", str(source), str(image), size],
        timeout=300,
    )


def payload_size(directory: Path) -> str:
    """Room for ``directory``'s files twice over (ext4's own), at least 64 MiB."""
    used = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    return f"{max(64, used * 2 // 2**20 + 32)}M"


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _host_qemu_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "")


def _kvm_works() -> bool:
    """Nested KVM exists here but hangs guests: KVM only when MESHD_VM_KVM=1 says so."""
    return os.environ.get("MESHD_VM_KVM") == "1" and os.access("/dev/kvm", os.R_OK | os.W_OK)
