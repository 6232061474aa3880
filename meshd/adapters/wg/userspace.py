"""WireGuard in userspace: wireguard-go, driven through its UAPI Unix socket.

The protocol is the cross-platform one (https://www.wireguard.com/xplatform/): a request
``get=1\\n\\n`` or ``set=1\\n<key=value lines>\\n\\n``, keys in hex, and an answer that ends
with ``errno=N\\n\\n``. The encoders and parsers below are pure; ``UserspaceBackend`` only
adds the socket and the daemon's life cycle.

wireguard-go creates its TUN device in the network namespace of the process that starts it,
but its socket lives in ``/var/run/wireguard``, shared by every namespace: interface names
are therefore unique machine-wide for this backend, and ``delete`` works from anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from meshd.adapters.wg.model import (
    DeviceStatus,
    DeviceUpdate,
    PeerStatus,
    WireGuardError,
    check_ifname,
    check_update,
    normalise_prefix,
    public_key_from_private,
)
from meshd.core.endpoints import format_endpoint, parse_endpoint

DEFAULT_SOCKET_DIR = "/var/run/wireguard"
GET_REQUEST = "get=1\n\n"

# wireguard-go refuses to start where the kernel module exists unless told otherwise; the
# other variables are its own daemonising handshake and would confuse the launcher if
# inherited, and LOG_LEVEL would hand the daemon our stdout pipe, so that waiting for the
# launcher's output would last as long as the daemon.
_LAUNCH_ENV_SET = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
_LAUNCH_ENV_DROP = ("LOG_LEVEL", "WG_PROCESS_FOREGROUND", "WG_TUN_FD", "WG_UAPI_FD")
_SO_ACCEPTCON = 0x10000  # /proc/net/unix flag of a listening socket


# --- UAPI text: pure encode / parse ---------------------------------------------------------


def _parse_endpoint(text: str) -> tuple[str, int]:
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise WireGuardError(f"malformed UAPI endpoint: {text!r}", errno.EPROTO) from exc


def encode_set(update: DeviceUpdate) -> str:
    """The ``set=1`` request for ``update``; ValueError before anything is sent."""
    # wireguard-go applies a set line by line and stops at the first bad one, leaving the
    # lines before it applied: every value is checked here instead.
    check_update(update)
    lines = ["set=1"]
    if update.private_key is not None:
        lines.append(f"private_key={update.private_key.hex()}")
    if update.listen_port is not None:
        lines.append(f"listen_port={update.listen_port}")
    if update.fwmark is not None:
        lines.append(f"fwmark={update.fwmark}")
    if update.replace_peers:
        lines.append("replace_peers=true")
    for peer in update.peers:
        lines.append(f"public_key={peer.public_key.hex()}")
        # update_only must come before any other line of the peer: it turns the peer that
        # the public_key line may have just created back into a placeholder.
        if peer.update_only:
            lines.append("update_only=true")
        if peer.remove:
            lines.append("remove=true")
            continue
        if peer.endpoint is not None:
            lines.append(f"endpoint={format_endpoint(peer.endpoint)}")
        if peer.persistent_keepalive_s is not None:
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive_s}")
        if peer.allowed_ips is not None:
            lines.append("replace_allowed_ips=true")
            lines.extend(f"allowed_ip={normalise_prefix(p)}" for p in peer.allowed_ips)
    return "\n".join(lines) + "\n\n"


def parse_set_answer(text: str, ifname: str) -> None:
    """Check the answer to a ``set``: ``errno=0\\n\\n`` and nothing else."""
    if _answer_lines(text, ifname, "set"):
        raise WireGuardError(f"{ifname}: unexpected lines in UAPI set answer", errno.EPROTO)


@dataclass
class _PeerFields:
    """A peer section of a ``get`` answer while it is being read."""

    public_key: bytes
    endpoint: tuple[str, int] | None = None
    allowed_ips: list[str] = field(default_factory=list)
    persistent_keepalive_s: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    handshake_sec: int = 0
    handshake_nsec: int = 0

    def freeze(self) -> PeerStatus:
        never = self.handshake_sec == 0 and self.handshake_nsec == 0
        return PeerStatus(
            public_key=self.public_key,
            endpoint=self.endpoint,
            allowed_ips=tuple(self.allowed_ips),
            persistent_keepalive_s=self.persistent_keepalive_s,
            rx_bytes=self.rx_bytes,
            tx_bytes=self.tx_bytes,
            last_handshake=None if never else self.handshake_sec + self.handshake_nsec / 1e9,
        )


def parse_get(text: str, ifname: str) -> DeviceStatus:
    """The device described by the answer to ``get=1``.

    WireGuardError carries the UAPI's errno when it is not 0, and EPROTO when the answer is
    malformed. Keys this parser does not know (preshared_key, forks' extras) are
    skipped, so that a newer wireguard-go still parses.
    """
    private_key: bytes | None = None
    listen_port = fwmark = 0
    peers: list[PeerStatus] = []
    peer: _PeerFields | None = None
    for line in _answer_lines(text, ifname, "get"):
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise WireGuardError(f"{ifname}: malformed UAPI line {line!r}", errno.EPROTO)
        if key == "public_key":
            if peer is not None:
                peers.append(peer.freeze())
            peer = _PeerFields(public_key=_parse_key(value))
        elif peer is None:
            if key == "private_key":
                private_key = _parse_key(value)
            elif key == "listen_port":
                listen_port = _parse_uint(value, key)
            elif key == "fwmark":
                fwmark = _parse_uint(value, key)
        elif key == "endpoint":
            peer.endpoint = _parse_endpoint(value)
        elif key == "allowed_ip":
            try:
                peer.allowed_ips.append(normalise_prefix(value))
            except ValueError as exc:
                raise WireGuardError(f"{ifname}: bad allowed_ip {value!r}", errno.EPROTO) from exc
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive_s = _parse_uint(value, key)
        elif key == "rx_bytes":
            peer.rx_bytes = _parse_uint(value, key)
        elif key == "tx_bytes":
            peer.tx_bytes = _parse_uint(value, key)
        elif key == "last_handshake_time_sec":
            peer.handshake_sec = _parse_uint(value, key)
        elif key == "last_handshake_time_nsec":
            peer.handshake_nsec = _parse_uint(value, key)
    if peer is not None:
        peers.append(peer.freeze())
    return DeviceStatus(
        name=ifname,
        public_key=None if private_key is None else public_key_from_private(private_key),
        listen_port=listen_port,
        peers=tuple(peers),
        fwmark=fwmark,
    )


def _answer_lines(text: str, ifname: str, operation: str) -> list[str]:
    """The lines before ``errno=N``; WireGuardError with that errno when N is not 0."""
    if not text.endswith("\n\n"):
        raise WireGuardError(f"{ifname}: truncated UAPI {operation} answer", errno.EPROTO)
    lines = text[:-2].split("\n")
    key, sep, value = lines[-1].partition("=")
    if key != "errno" or not sep:
        raise WireGuardError(f"{ifname}: UAPI {operation} answer without errno", errno.EPROTO)
    try:
        code = int(value)
    except ValueError as exc:
        raise WireGuardError(f"{ifname}: malformed UAPI errno {value!r}", errno.EPROTO) from exc
    if code != 0:
        # wireguard-go sends negated errnos (-22 for EINVAL); keep the usual positive value.
        code = abs(code)
        reason = os.strerror(code)
        raise WireGuardError(f"{ifname}: UAPI {operation} failed: {reason} ({code})", code)
    return lines[:-1]


def _parse_key(value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError as exc:
        raise WireGuardError(f"malformed UAPI key {value!r}", errno.EPROTO) from exc
    if len(key) != 32:
        raise WireGuardError(f"UAPI key of {len(key)} bytes", errno.EPROTO)
    return key


def _parse_uint(value: str, what: str) -> int:
    if not value.isdigit():  # int() would accept signs, spaces and underscores
        raise WireGuardError(f"malformed UAPI {what}: {value!r}", errno.EPROTO)
    return int(value)


# --- finding the daemon behind a socket ------------------------------------------------------


def find_listener_pid(socket_path: str, comm: str) -> int | None:
    """The pid of the process named ``comm`` listening on the Unix socket ``socket_path``.

    SO_PEERCRED cannot tell: it reports whoever called listen(), and wireguard-go's launcher
    binds the socket and exits, handing it to the daemon. So match the socket's inode instead,
    read from each candidate's own ``/proc/PID/net/unix`` (the socket is only listed in the
    network namespace it was bound in, which may not be ours).
    """
    target = os.path.realpath(socket_path)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        proc = f"/proc/{entry.name}"
        try:
            with open(f"{proc}/comm", encoding="utf-8", errors="replace") as comm_file:
                if comm_file.read().rstrip("\n") != comm:
                    continue
            if _holds_listener(proc, target):
                return int(entry.name)
        except OSError:  # the process exited while we looked, or it is not ours to read
            continue
    return None


def _holds_listener(proc: str, target: str) -> bool:
    inodes = set()
    with open(f"{proc}/net/unix", encoding="utf-8", errors="replace") as table:
        next(table, None)  # header
        for row in table:
            # Num RefCount Protocol Flags Type St Inode Path
            fields = row.split(maxsplit=7)
            if len(fields) == 8 and int(fields[3], 16) & _SO_ACCEPTCON:
                path = fields[7].rstrip("\n")
                # realpath only for the rare candidate: /var/run is often a link to /run
                same_name = os.path.basename(path) == os.path.basename(target)
                if same_name and os.path.realpath(path) == target:
                    inodes.add(fields[6])
    if not inodes:
        return False
    links = {f"socket:[{inode}]" for inode in inodes}
    for fd in os.listdir(f"{proc}/fd"):
        try:
            if os.readlink(f"{proc}/fd/{fd}") in links:
                return True
        except OSError:  # closed while we looked
            continue
    return False


def _wait_for_exit(pidfd: int, timeout_s: float) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)  # a pidfd turns readable when the process exits
    return bool(poller.poll(int(timeout_s * 1000)))


# --- the backend -------------------------------------------------------------------------


class UserspaceBackend:
    """WireGuard interfaces served by wireguard-go daemons.

    ``socket_dir`` must be where the daemons put their sockets (wireguard-go's is built in:
    ``/var/run/wireguard``); tests point it elsewhere to exercise the socket handling alone.
    """

    name: str = "userspace"

    def __init__(
        self,
        socket_dir: str | os.PathLike[str] = DEFAULT_SOCKET_DIR,
        *,
        binary: str = "wireguard-go",
        timeout_s: float = 5.0,
        stop_timeout_s: float = 3.0,
    ) -> None:
        self.socket_dir = os.fspath(socket_dir)
        self.binary = binary
        self.timeout_s = timeout_s
        self.stop_timeout_s = stop_timeout_s
        # The daemon's /proc/PID/comm: the executable's name cut to TASK_COMM_LEN - 1.
        self._comm = os.path.basename(binary)[:15]

    def socket_path(self, ifname: str) -> str:
        check_ifname(ifname)
        return os.path.join(self.socket_dir, f"{ifname}.sock")

    # -- life cycle --

    def create(self, ifname: str) -> None:
        """Start ``wireguard-go IFNAME`` in the caller's network namespace.

        The daemon outlives this process on purpose: a restarted meshd adopts it.
        """
        path = self.socket_path(ifname)
        if self._is_live(path):
            raise WireGuardError(f"{ifname} already exists", errno.EEXIST)
        self._unlink_stale(path)
        env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV_DROP}
        env.update(_LAUNCH_ENV_SET)
        deadline = time.monotonic() + self.timeout_s
        try:
            # The launcher opens the TUN and the socket, hands them to a daemonised child and
            # exits. A session of its own keeps the daemon away from our terminal's signals.
            launched = subprocess.run(
                [self.binary, ifname],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self.timeout_s,
                start_new_session=True,
                check=False,
            )
        except FileNotFoundError as exc:
            raise WireGuardError(f"{self.binary} not found", errno.ENOENT) from exc
        except subprocess.TimeoutExpired as exc:
            raise WireGuardError(
                f"{self.binary} {ifname} did not return within {self.timeout_s} s", errno.ETIMEDOUT
            ) from exc
        if launched.returncode != 0:
            output = _without_banner(launched.stdout.decode("utf-8", errors="replace"))
            raise WireGuardError(
                f"{self.binary} {ifname} exited with status {launched.returncode}: {output}"
            )
        self._wait_until_answering(ifname, deadline)

    def delete(self, ifname: str) -> None:
        """Stop the daemon of ``ifname`` (which removes its TUN); a missing one is a no-op."""
        path = self.socket_path(ifname)
        if not os.path.lexists(path):
            return
        pid = find_listener_pid(path, self._comm)
        if pid is not None:
            self._stop(ifname, pid, path)
        elif self._is_live(path):
            # Its process is out of sight (another PID namespace): wireguard-go also shuts
            # down when its socket file is removed, which it watches with inotify.
            os.unlink(path)
            return
        self._unlink_stale(path)
        if self._is_live(path):
            raise WireGuardError(f"{ifname}: {self.binary} still answers after delete", errno.EBUSY)

    def exists(self, ifname: str) -> bool:
        return self._is_live(self.socket_path(ifname))

    def list_interfaces(self, prefix: str) -> list[str]:
        try:
            names = sorted(
                entry.name.removesuffix(".sock")
                for entry in os.scandir(self.socket_dir)
                if entry.name.endswith(".sock") and entry.name.startswith(prefix)
            )
        except FileNotFoundError:  # no daemon has run since boot
            return []
        return [name for name in names if _valid_ifname(name) and self.exists(name)]

    # -- configuration --

    def configure(self, ifname: str, update: DeviceUpdate) -> None:
        parse_set_answer(self._exchange(ifname, encode_set(update)), ifname)

    def show(self, ifname: str) -> DeviceStatus:
        return parse_get(self._exchange(ifname, GET_REQUEST), ifname)

    # -- plumbing --

    def _exchange(self, ifname: str, request: str) -> str:
        """Send one request on a fresh connection and return the whole answer."""
        path = self.socket_path(ifname)
        answer = bytearray()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(path)
                sock.sendall(request.encode("ascii"))
                # wireguard-go keeps the connection open for the next request: the answer
                # ends at its first blank line, since no line of it is ever empty.
                while not answer.endswith(b"\n\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise WireGuardError(f"{ifname}: no such interface", errno.ENODEV) from exc
        except TimeoutError as exc:
            raise WireGuardError(f"{ifname}: UAPI socket timed out", errno.ETIMEDOUT) from exc
        except OSError as exc:
            raise WireGuardError(f"{ifname}: UAPI socket: {exc.strerror}", exc.errno) from exc
        try:
            return answer.decode("ascii")
        except UnicodeDecodeError as exc:
            raise WireGuardError(f"{ifname}: non-ASCII UAPI answer", errno.EPROTO) from exc

    def _is_live(self, path: str) -> bool:
        """A daemon listens on ``path``; a stale file (its daemon was killed) is not live."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError as exc:
            raise WireGuardError(f"{path}: {exc.strerror}", exc.errno) from exc
        return True

    def _unlink_stale(self, path: str) -> None:
        if os.path.lexists(path) and not self._is_live(path):
            with contextlib.suppress(FileNotFoundError):  # someone else cleaned it first
                os.unlink(path)

    def _wait_until_answering(self, ifname: str, deadline: float) -> None:
        while True:
            try:
                parse_get(self._exchange(ifname, GET_REQUEST), ifname)
                return
            except WireGuardError as exc:
                if exc.errno != errno.ENODEV or time.monotonic() >= deadline:
                    raise WireGuardError(
                        f"{self.binary} {ifname} started but its socket does not answer: {exc}",
                        exc.errno,
                    ) from exc
            time.sleep(0.01)

    def _stop(self, ifname: str, pid: int, path: str) -> None:
        """SIGTERM the daemon, SIGKILL it after ``stop_timeout_s``; return once it is gone."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            # The pid could have been reused between the /proc scan and pidfd_open; the pidfd
            # pins the process now, so check once more that it is the one on the socket.
            if not _holds_listener(f"/proc/{pid}", os.path.realpath(path)):
                return
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            if _wait_for_exit(pidfd, self.stop_timeout_s):
                return
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            if not _wait_for_exit(pidfd, self.stop_timeout_s):
                raise WireGuardError(
                    f"{ifname}: {self.binary} (pid {pid}) survives SIGKILL", errno.ETIMEDOUT
                )
        except (ProcessLookupError, FileNotFoundError):  # it exited on its own meanwhile
            return
        except OSError as exc:  # not ours to signal, most likely
            raise WireGuardError(
                f"{ifname}: cannot stop {self.binary} (pid {pid}): {exc.strerror}", exc.errno
            ) from exc
        finally:
            os.close(pidfd)


def _valid_ifname(name: str) -> bool:
    try:
        check_ifname(name)
    except ValueError:
        return False
    return True


def _without_banner(output: str) -> str:
    """wireguard-go's output without its boxed "kernel has first class support" banner."""
    kept = [line for line in output.splitlines() if line.strip() and line.lstrip()[0] not in "┌│└"]
    return " / ".join(line.strip() for line in kept) or "(no output)"
