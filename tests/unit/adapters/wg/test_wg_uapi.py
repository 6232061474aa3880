"""The wireguard-go UAPI: encoding, parsing, errors, and the socket handling against a
canned server (no daemon, no root)."""

from __future__ import annotations

import base64
import errno
import ipaddress
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshd.adapters.wg.model import (
    DeviceStatus,
    DeviceUpdate,
    PeerStatus,
    PeerUpdate,
    WireGuardError,
    public_key_from_private,
)
from meshd.adapters.wg.userspace import (
    UserspaceBackend,
    encode_set,
    parse_get,
    parse_set_answer,
)
from meshd.core.endpoints import format_endpoint, parse_endpoint

K1 = bytes([0x11]) * 32
K2 = bytes([0x22]) * 32
IFNAME = "twuapi0"

# --- golden vectors ------------------------------------------------------------------------

GOLDEN_SET_UPDATE = DeviceUpdate(
    private_key=bytes.fromhex("a0" + "33" * 31),
    listen_port=51999,
    replace_peers=True,
    peers=(
        PeerUpdate(
            public_key=K1,
            endpoint=("fd00::2", 51820),
            allowed_ips=("10.1.2.3/24", "fd00::5/64"),
            persistent_keepalive_s=7,
        ),
        PeerUpdate(public_key=K2, endpoint=("10.0.0.2", 1), update_only=True),
        PeerUpdate(public_key=bytes([0x44]) * 32, remove=True),
        PeerUpdate(public_key=bytes([0x55]) * 32, allowed_ips=()),
    ),
)
GOLDEN_SET_TEXT = (
    "set=1\n"
    "private_key=a033333333333333333333333333333333333333333333333333333333333333\n"
    "listen_port=51999\n"
    "replace_peers=true\n"
    "public_key=1111111111111111111111111111111111111111111111111111111111111111\n"
    "endpoint=[fd00::2]:51820\n"
    "persistent_keepalive_interval=7\n"
    "replace_allowed_ips=true\n"
    "allowed_ip=10.1.2.0/24\n"
    "allowed_ip=fd00::/64\n"
    "public_key=2222222222222222222222222222222222222222222222222222222222222222\n"
    "update_only=true\n"
    "endpoint=10.0.0.2:1\n"
    "public_key=4444444444444444444444444444444444444444444444444444444444444444\n"
    "remove=true\n"
    "public_key=5555555555555555555555555555555555555555555555555555555555555555\n"
    "replace_allowed_ips=true\n"
    "\n"
)

# The answer of wireguard-go v0.0.20220316 to get=1 after the set above (without the
# replace/remove), with traffic figures put in. Its private key comes back clamped.
GOLDEN_GET_TEXT = (
    "private_key=a033333333333333333333333333333333333333333333333333333333333373\n"
    "listen_port=51999\n"
    "public_key=1111111111111111111111111111111111111111111111111111111111111111\n"
    "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
    "protocol_version=1\n"
    "endpoint=[fd00::2]:51820\n"
    "last_handshake_time_sec=1700000000\n"
    "last_handshake_time_nsec=500000000\n"
    "tx_bytes=1234\n"
    "rx_bytes=5678\n"
    "persistent_keepalive_interval=7\n"
    "allowed_ip=10.1.2.0/24\n"
    "allowed_ip=fd00::/64\n"
    "public_key=2222222222222222222222222222222222222222222222222222222222222222\n"
    "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
    "protocol_version=1\n"
    "endpoint=10.0.0.2:1\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=0\n"
    "persistent_keepalive_interval=0\n"
    "errno=0\n"
    "\n"
)
# `wg show` on that daemon printed this public key.
GOLDEN_PUBLIC_KEY = base64.b64decode("baSwL9InYWGovcQAJPTAte6tHgl5VNMGJVD6rxx353o=")
GOLDEN_STATUS = DeviceStatus(
    name=IFNAME,
    public_key=GOLDEN_PUBLIC_KEY,
    listen_port=51999,
    peers=(
        PeerStatus(
            public_key=K1,
            endpoint=("fd00::2", 51820),
            allowed_ips=("10.1.2.0/24", "fd00::/64"),
            persistent_keepalive_s=7,
            rx_bytes=5678,
            tx_bytes=1234,
            last_handshake=1700000000.5,
        ),
        PeerStatus(
            public_key=K2,
            endpoint=("10.0.0.2", 1),
            allowed_ips=(),
            persistent_keepalive_s=0,
            rx_bytes=0,
            tx_bytes=0,
            last_handshake=None,
        ),
    ),
)


def test_encode_set_matches_golden_text() -> None:
    assert encode_set(GOLDEN_SET_UPDATE) == GOLDEN_SET_TEXT


def test_encode_set_of_an_empty_update_is_a_bare_set() -> None:
    assert encode_set(DeviceUpdate()) == "set=1\n\n"


def test_parse_get_matches_golden_status() -> None:
    assert parse_get(GOLDEN_GET_TEXT, IFNAME) == GOLDEN_STATUS


def test_public_key_derivation_matches_wg_show() -> None:
    # The daemon was given this key unclamped and printed it clamped; libsodium clamps too.
    assert public_key_from_private(bytes.fromhex("a0" + "33" * 31)) == GOLDEN_PUBLIC_KEY


def test_parse_get_of_a_fresh_device() -> None:
    status = parse_get("listen_port=55653\nerrno=0\n\n", IFNAME)
    assert status == DeviceStatus(name=IFNAME, public_key=None, listen_port=55653, peers=())
    assert parse_get("errno=0\n\n", IFNAME).listen_port == 0  # omitted when 0


def test_parse_get_skips_unknown_keys_and_reads_the_mark() -> None:
    text = "fwmark=5\njc=3\npublic_key=" + "11" * 32 + "\nfuture_key=x\nerrno=0\n\n"
    status = parse_get(text, IFNAME)
    assert status.peers[0].public_key == K1 and status.fwmark == 5


# --- errors -------------------------------------------------------------------------------


def test_uapi_errno_becomes_a_positive_errno() -> None:
    with pytest.raises(WireGuardError) as error:
        parse_get("errno=-22\n\n", IFNAME)
    assert error.value.errno == errno.EINVAL
    assert IFNAME in str(error.value)
    with pytest.raises(WireGuardError) as set_error:
        parse_set_answer("errno=-98\n\n", IFNAME)
    assert set_error.value.errno == errno.EADDRINUSE


def test_set_answer_ok() -> None:
    parse_set_answer("errno=0\n\n", IFNAME)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "errno=0\n",  # truncated: no blank line
        "listen_port=1\n\n",  # no errno
        "errno=zero\n\n",
        "listen_port=1\nerrno\n\n",
        "listen_port\nerrno=0\n\n",  # a line without '='
        "=1\nerrno=0\n\n",
        "private_key=zz\nerrno=0\n\n",
        "private_key=" + "11" * 31 + "\nerrno=0\n\n",  # 31 bytes
        "listen_port=-1\nerrno=0\n\n",
        "listen_port=+1\nerrno=0\n\n",
        "public_key=" + "11" * 32 + "\nrx_bytes=1.5\nerrno=0\n\n",
        "public_key=" + "11" * 32 + "\nendpoint=10.0.0.1\nerrno=0\n\n",
        "public_key=" + "11" * 32 + "\nendpoint=[fd00::1:5\nerrno=0\n\n",
        "public_key=" + "11" * 32 + "\nendpoint=host.example:5\nerrno=0\n\n",
        "public_key=" + "11" * 32 + "\nallowed_ip=10.0.0.0\nerrno=0\n\n",
    ],
)
def test_malformed_get_answers_raise_eproto(text: str) -> None:
    with pytest.raises(WireGuardError) as error:
        parse_get(text, IFNAME)
    assert error.value.errno == errno.EPROTO


def test_set_answer_with_extra_lines_is_malformed() -> None:
    with pytest.raises(WireGuardError) as error:
        parse_set_answer("listen_port=1\nerrno=0\n\n", IFNAME)
    assert error.value.errno == errno.EPROTO


@pytest.mark.parametrize(
    "update",
    [
        DeviceUpdate(private_key=bytes(31)),
        DeviceUpdate(listen_port=65536),
        DeviceUpdate(peers=(PeerUpdate(public_key=bytes(33)),)),
        DeviceUpdate(peers=(PeerUpdate(K1, endpoint=("host.example", 1)),)),
        DeviceUpdate(peers=(PeerUpdate(K1, endpoint=("10.0.0.1", 0)),)),
        DeviceUpdate(peers=(PeerUpdate(K1, allowed_ips=("10.0.0.1",)),)),
        DeviceUpdate(peers=(PeerUpdate(K1, allowed_ips=("10.0.0.0/33",)),)),
        DeviceUpdate(peers=(PeerUpdate(K1, persistent_keepalive_s=65536),)),
    ],
)
def test_encode_set_refuses_bad_values(update: DeviceUpdate) -> None:
    with pytest.raises(ValueError):
        encode_set(update)


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("10.0.0.1", 51820, "10.0.0.1:51820"),
        ("fd00::1", 1, "[fd00::1]:1"),
        ("fd00:0::1", 1, "[fd00::1]:1"),
        ("fe80::1%eth0", 7, "[fe80::1%eth0]:7"),
    ],
)
def test_endpoints(host: str, port: int, text: str) -> None:
    assert format_endpoint((host, port)) == text
    assert parse_endpoint(text) == (str(ipaddress.ip_address(host)), port)


# --- properties ---------------------------------------------------------------------------

keys = st.binary(min_size=32, max_size=32)
ipv4_prefixes = st.builds(
    lambda a, n: str(ipaddress.ip_network((a, n), strict=False)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
ipv6_prefixes = st.builds(
    lambda a, n: str(ipaddress.ip_network((a, n), strict=False)),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
endpoints = st.one_of(
    st.none(),
    st.tuples(st.ip_addresses().map(str), st.integers(1, 65535)),
)
peer_statuses = st.builds(
    PeerStatus,
    public_key=keys,
    endpoint=endpoints,
    allowed_ips=st.lists(ipv4_prefixes | ipv6_prefixes, unique=True, max_size=4).map(tuple),
    persistent_keepalive_s=st.integers(0, 65535),
    rx_bytes=st.integers(0, 2**64 - 1),
    tx_bytes=st.integers(0, 2**64 - 1),
    last_handshake=st.just(None),
)


def render_get(private_key: bytes | None, listen_port: int, peers: list[PeerStatus]) -> str:
    """A get answer as wireguard-go writes it (device.IpcGetOperation)."""
    lines = []
    if private_key is not None:
        lines.append(f"private_key={private_key.hex()}")
    if listen_port:
        lines.append(f"listen_port={listen_port}")
    for peer in peers:
        lines += [f"public_key={peer.public_key.hex()}", f"preshared_key={'0' * 64}"]
        lines.append("protocol_version=1")
        if peer.endpoint is not None:
            lines.append(f"endpoint={format_endpoint(peer.endpoint)}")
        lines += ["last_handshake_time_sec=0", "last_handshake_time_nsec=0"]
        lines += [f"tx_bytes={peer.tx_bytes}", f"rx_bytes={peer.rx_bytes}"]
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive_s}")
        lines += [f"allowed_ip={prefix}" for prefix in peer.allowed_ips]
    return "".join(line + "\n" for line in lines) + "errno=0\n\n"


@given(
    private_key=st.none() | keys,
    listen_port=st.integers(0, 65535),
    peers=st.lists(peer_statuses, max_size=4, unique_by=lambda p: p.public_key),
)
def test_parse_get_reads_back_what_wireguard_go_writes(
    private_key: bytes | None, listen_port: int, peers: list[PeerStatus]
) -> None:
    status = parse_get(render_get(private_key, listen_port, peers), IFNAME)
    assert status.listen_port == listen_port
    assert status.peers == tuple(peers)
    if private_key is not None:
        assert status.public_key == public_key_from_private(private_key)


@given(
    peers=st.lists(
        st.builds(
            PeerUpdate,
            public_key=keys,
            endpoint=endpoints,
            allowed_ips=st.none() | st.lists(ipv4_prefixes | ipv6_prefixes, max_size=3).map(tuple),
            persistent_keepalive_s=st.none() | st.integers(0, 65535),
            remove=st.booleans(),
            update_only=st.booleans(),
        ),
        max_size=4,
    ),
    replace_peers=st.booleans(),
)
def test_encode_set_is_one_well_formed_request(
    peers: list[PeerUpdate], replace_peers: bool
) -> None:
    text = encode_set(DeviceUpdate(peers=tuple(peers), replace_peers=replace_peers))
    assert text.startswith("set=1\n") and text.endswith("\n\n")
    lines = text[len("set=1\n") : -2].split("\n") if text != "set=1\n\n" else []
    assert all(line.count("=") == 1 and line.split("=")[0] for line in lines)
    assert [line[11:] for line in lines if line.startswith("public_key=")] == [
        p.public_key.hex() for p in peers
    ]
    # Device lines come before the first peer, or wireguard-go reads them as peer lines.
    first_peer = next((i for i, line in enumerate(lines) if "public_key=" in line), len(lines))
    assert ("replace_peers=true" in lines[:first_peer]) == replace_peers


# --- the socket, against a canned server ---------------------------------------------------


class CannedUapiServer:
    """Answers every request on a Unix socket with one canned answer, sent in small chunks,
    and keeps the connection open afterwards as wireguard-go does."""

    def __init__(self, path: str, answer: str, chunk: int = 7) -> None:
        self.requests: list[str] = []
        self._answer = answer.encode()
        self._chunk = chunk
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                request = b""
                while not request.endswith(b"\n\n"):
                    data = conn.recv(4096)
                    if not data:
                        break
                    request += data
                if not request:  # a liveness probe: connect and close
                    continue
                self.requests.append(request.decode())
                for start in range(0, len(self._answer), self._chunk):
                    conn.sendall(self._answer[start : start + self._chunk])
                conn.recv(1)  # until the client hangs up

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def socket_dir() -> Iterator[str]:
    # Short: a Unix socket path must fit in 108 bytes, pytest's tmp_path may not.
    path = tempfile.mkdtemp(prefix="twuapi", dir="/tmp")
    yield path
    shutil.rmtree(path)


def stale_socket(path: str) -> None:
    """A socket file whose listener is gone, as a SIGKILLed wireguard-go leaves it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        sock.listen()


def test_show_and_configure_go_through_the_socket(socket_dir: str) -> None:
    backend = UserspaceBackend(socket_dir, timeout_s=2)
    server = CannedUapiServer(os.path.join(socket_dir, f"{IFNAME}.sock"), GOLDEN_GET_TEXT)
    try:
        assert backend.show(IFNAME) == GOLDEN_STATUS
        assert server.requests == ["get=1\n\n"]
    finally:
        server.close()
    os.unlink(os.path.join(socket_dir, f"{IFNAME}.sock"))
    server = CannedUapiServer(os.path.join(socket_dir, f"{IFNAME}.sock"), "errno=0\n\n")
    try:
        backend.configure(IFNAME, GOLDEN_SET_UPDATE)
        assert server.requests == [GOLDEN_SET_TEXT]
    finally:
        server.close()


def test_an_error_answer_is_raised_with_its_errno(socket_dir: str) -> None:
    backend = UserspaceBackend(socket_dir, timeout_s=2)
    server = CannedUapiServer(os.path.join(socket_dir, f"{IFNAME}.sock"), "errno=-98\n\n")
    try:
        with pytest.raises(WireGuardError) as error:
            backend.configure(IFNAME, DeviceUpdate(listen_port=1))
        assert error.value.errno == errno.EADDRINUSE
    finally:
        server.close()


def test_a_truncated_answer_is_malformed(socket_dir: str) -> None:
    path = os.path.join(socket_dir, f"{IFNAME}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()

        def answer_half() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"listen_port=1\n")  # then hang up

        thread = threading.Thread(target=answer_half)
        thread.start()
        with pytest.raises(WireGuardError) as error:
            UserspaceBackend(socket_dir, timeout_s=2).show(IFNAME)
        thread.join()
    assert error.value.errno == errno.EPROTO


def test_live_and_stale_sockets(socket_dir: str) -> None:
    backend = UserspaceBackend(socket_dir, timeout_s=2)
    live = CannedUapiServer(os.path.join(socket_dir, "twlive.sock"), "errno=0\n\n")
    stale_socket(os.path.join(socket_dir, "twstale.sock"))
    Path(socket_dir, "twnotasock").touch()
    Path(socket_dir, "other.sock").touch()
    try:
        assert backend.exists("twlive")
        assert not backend.exists("twstale")
        assert not backend.exists("twgone")
        assert backend.list_interfaces("tw") == ["twlive"]
        assert backend.list_interfaces("twl") == ["twlive"]
        assert backend.list_interfaces("x") == []
        for op in (lambda: backend.show("twstale"), lambda: backend.show("twgone")):
            with pytest.raises(WireGuardError) as error:
                op()
            assert error.value.errno == errno.ENODEV
        # Listing and probing leave stale sockets alone: only create cleans up.
        assert stat.S_ISSOCK(os.lstat(os.path.join(socket_dir, "twstale.sock")).st_mode)
    finally:
        live.close()


def test_list_without_socket_directory_is_empty() -> None:
    assert UserspaceBackend("/nonexistent/twdir").list_interfaces("") == []


def test_create_of_a_live_interface_raises_eexist(socket_dir: str) -> None:
    live = CannedUapiServer(os.path.join(socket_dir, f"{IFNAME}.sock"), "errno=0\n\n")
    try:
        with pytest.raises(WireGuardError) as error:
            UserspaceBackend(socket_dir, binary="/nonexistent/wg").create(IFNAME)
        assert error.value.errno == errno.EEXIST
    finally:
        live.close()


def test_create_unlinks_a_stale_socket_before_launching(socket_dir: str) -> None:
    path = os.path.join(socket_dir, f"{IFNAME}.sock")
    stale_socket(path)
    with pytest.raises(WireGuardError) as error:
        UserspaceBackend(socket_dir, binary="/nonexistent/wireguard-go").create(IFNAME)
    assert error.value.errno == errno.ENOENT  # the launcher is missing...
    assert not os.path.lexists(path)  # ...but the stale socket is gone already


def test_a_failing_launcher_is_reported_with_its_output(socket_dir: str) -> None:
    launcher = os.path.join(socket_dir, "fake-wireguard-go")
    with open(launcher, "w") as script:
        script.write('#!/bin/sh\necho "Failed to create TUN device: $1 is busy"\nexit 1\n')
    os.chmod(launcher, 0o755)
    with pytest.raises(WireGuardError) as error:
        UserspaceBackend(socket_dir, binary=launcher).create(IFNAME)
    assert f"Failed to create TUN device: {IFNAME} is busy" in str(error.value)
    assert "status 1" in str(error.value)


def test_delete_of_a_stale_or_missing_socket(socket_dir: str) -> None:
    backend = UserspaceBackend(socket_dir)
    backend.delete(IFNAME)  # missing: no-op
    path = os.path.join(socket_dir, f"{IFNAME}.sock")
    stale_socket(path)
    backend.delete(IFNAME)
    assert not os.path.lexists(path)


def test_long_interface_names_are_refused(socket_dir: str) -> None:
    backend = UserspaceBackend(socket_dir)
    for op in (backend.create, backend.delete, backend.exists, backend.show):
        with pytest.raises(ValueError):
            op("a" * 16)
