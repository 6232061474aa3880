"""The kernel backend, on a kernel without WireGuard: pyroute2's objects are replaced by fakes
that speak pyroute2's own message classes.

``FakeGenlWireGuard.set`` builds the very wgmsg that ``pyroute2.WireGuard.set`` would send
(with pyroute2's own peer encoder), encodes it to bytes, decodes it as the kernel would
receive it and applies it with the kernel's rules (drivers/net/wireguard/netlink.c);
``info`` answers with wgmsg objects encoded and decoded by pyroute2, as a dump arrives.
So the mapping is checked against pyroute2's real encoders and decoders, not our guesses.
Also here: backend selection.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from base64 import b64decode
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.wireguard import (
    WGDEVICE_F_REPLACE_PEERS,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    AsyncWireGuard,
    wgmsg,
)
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from meshd.adapters.wg import kernel as kernel_module
from meshd.adapters.wg.kernel import KernelBackend, device_status_from_info, peer_request
from meshd.adapters.wg.model import (
    DeviceStatus,
    DeviceUpdate,
    PeerStatus,
    PeerUpdate,
    WireGuardError,
    normalise_prefix,
    public_key_from_private,
)
from meshd.adapters.wg.select import kernel_module_available, select_backend
from meshd.adapters.wg.userspace import UserspaceBackend
from tests.wg_contract import PEER_A, PEER_B, PRIVATE_KEY, exercise_backend

IFNAME = "twkern0"
GENL_TYPE = 0x20  # any family id: the fakes never reach a socket


def decoded(message: Any) -> Any:
    """``message`` as it comes out of a netlink socket: encoded, then parsed by pyroute2."""
    message.encode()
    parsed = type(message)(message.data)
    parsed.decode()
    return parsed


# --- the fakes ---------------------------------------------------------------------------


class FakeIPRoute:
    """``pyroute2.IPRoute.link`` over an in-memory link table."""

    def __init__(self, has_wireguard: bool = True) -> None:
        self.has_wireguard = has_wireguard
        self.links: dict[str, tuple[int, str | None]] = {"lo": (1, None), "eth0": (2, "veth")}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._next_index = 3

    def link(self, command: str, **kwarg: Any) -> Any:
        self.calls.append((command, kwarg))
        if command == "add":
            if kwarg["ifname"] in self.links:
                raise NetlinkError(errno.EEXIST, "File exists")
            if kwarg["kind"] == "wireguard" and not self.has_wireguard:
                raise NetlinkError(errno.EOPNOTSUPP, "Operation not supported")
            self.links[kwarg["ifname"]] = (self._next_index, kwarg["kind"])
            self._next_index += 1
            return []
        if command == "get":
            if kwarg["ifname"] not in self.links:
                raise NetlinkError(errno.ENODEV, "No such device")
            return [self._message(kwarg["ifname"])]
        if command == "del":
            for name, (index, _) in list(self.links.items()):
                if index == kwarg["index"]:
                    del self.links[name]
                    return []
            raise NetlinkError(errno.ENODEV, "No such device")
        if command == "dump":
            return (self._message(name) for name in list(self.links))  # a generator, as 0.9's
        raise AssertionError(f"unexpected link command {command}")

    def _message(self, ifname: str) -> Any:
        index, kind = self.links[ifname]
        message = ifinfmsg()
        message["index"] = index
        message["attrs"] = [["IFLA_IFNAME", ifname]]
        if kind is not None:
            message["attrs"].append(["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", kind]]}])
        message["header"]["type"] = 16  # RTM_NEWLINK
        return decoded(message)


@dataclass
class KernelPeer:
    endpoint: dict[str, Any] | None = None
    allowed_ips: list[str] = field(default_factory=list)
    keepalive: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    handshake: tuple[int, int] = (0, 0)


@dataclass
class KernelDevice:
    private_key: bytes | None = None
    listen_port: int = 0
    peers: dict[bytes, KernelPeer] = field(default_factory=dict)


class FakeGenlWireGuard:
    """``pyroute2.WireGuard`` over devices that follow the kernel's set/get rules."""

    # pyroute2's own peer encoding, bound to this object.
    _wg_test_key = AsyncWireGuard._wg_test_key
    _wg_set_peer = AsyncWireGuard._wg_set_peer
    _wg_build_allowedips = AsyncWireGuard._wg_build_allowedips

    def __init__(self, links: FakeIPRoute) -> None:
        self.links = links
        self.devices: dict[str, KernelDevice] = {}
        self.calls: list[dict[str, Any]] = []
        self.sent: list[Any] = []  # the decoded set messages

    def set(
        self,
        interface: str,
        listen_port: int | None = None,
        fwmark: int | None = None,
        private_key: str | None = None,
        peer: dict[str, Any] | None = None,
    ) -> Any:
        self.calls.append(
            {
                "interface": interface,
                "listen_port": listen_port,
                "fwmark": fwmark,
                "private_key": private_key,
                "peer": peer,
            }
        )
        # As AsyncWireGuard.set builds it.
        message = wgmsg()
        message["attrs"].append(["WGDEVICE_A_IFNAME", interface])
        if private_key is not None:
            self._wg_test_key(private_key)
            message["attrs"].append(["WGDEVICE_A_PRIVATE_KEY", private_key])
        if listen_port is not None:
            message["attrs"].append(["WGDEVICE_A_LISTEN_PORT", listen_port])
        if fwmark is not None:
            message["attrs"].append(["WGDEVICE_A_FWMARK", fwmark])
        if peer is not None:
            self._wg_set_peer(message, peer)
        message["cmd"] = 1  # WG_CMD_SET_DEVICE
        message["version"] = 1
        message["header"]["type"] = GENL_TYPE
        received = decoded(message)
        self.sent.append(received)
        self._apply(received)
        return received

    def info(self, interface: str) -> tuple[Any, ...]:
        device = self._device(interface)
        attrs: list[list[Any]] = [
            ["WGDEVICE_A_IFINDEX", self.links.links[interface][0]],
            ["WGDEVICE_A_IFNAME", interface],
        ]
        if device.private_key is not None:
            public_key = public_key_from_private(device.private_key)
            attrs.append(["WGDEVICE_A_PRIVATE_KEY", _b64(device.private_key)])
            attrs.append(["WGDEVICE_A_PUBLIC_KEY", _b64(public_key)])
        attrs += [["WGDEVICE_A_LISTEN_PORT", device.listen_port], ["WGDEVICE_A_FWMARK", 0]]
        attrs.append(
            ["WGDEVICE_A_PEERS", [peer_nla(key, peer) for key, peer in device.peers.items()]]
        )
        return (dump_message(attrs),)

    def _device(self, interface: str) -> KernelDevice:
        if self.links.links.get(interface, (0, None))[1] != "wireguard":
            raise NetlinkError(errno.ENODEV, "No such device")
        return self.devices.setdefault(interface, KernelDevice())

    def _apply(self, message: Any) -> None:
        """drivers/net/wireguard/netlink.c: wg_set_device and set_peer."""
        device = self._device(message.get_attr("WGDEVICE_A_IFNAME"))
        private_key = message.get_attr("WGDEVICE_A_PRIVATE_KEY")
        if private_key is not None:
            key = b64decode(private_key)
            device.private_key = None if key == bytes(32) else key  # a zero key: no identity
        if message.get_attr("WGDEVICE_A_LISTEN_PORT") is not None:
            device.listen_port = message.get_attr("WGDEVICE_A_LISTEN_PORT")
        if (message.get_attr("WGDEVICE_A_FLAGS") or 0) & WGDEVICE_F_REPLACE_PEERS:
            device.peers.clear()
        for nla in message.get_attr("WGDEVICE_A_PEERS") or ():
            key = b64decode(nla.get_attr("WGPEER_A_PUBLIC_KEY"))
            flags = nla.get_attr("WGPEER_A_FLAGS") or 0
            peer = device.peers.get(key)
            if peer is None:
                if flags & (WGPEER_F_REMOVE_ME | WGPEER_F_UPDATE_ONLY):
                    continue
                peer = device.peers[key] = KernelPeer()
            if flags & WGPEER_F_REMOVE_ME:
                del device.peers[key]
                continue
            endpoint = nla.get_attr("WGPEER_A_ENDPOINT")
            if endpoint is not None:
                peer.endpoint = {"addr": endpoint["addr"], "port": endpoint["port"]}
            keepalive = nla.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
            if keepalive is not None:
                peer.keepalive = keepalive
            if flags & WGPEER_F_REPLACE_ALLOWEDIPS:
                peer.allowed_ips = []
            for allowed in nla.get_attr("WGPEER_A_ALLOWEDIPS") or ():
                prefix = normalise_prefix(allowed["addr"])
                for other in device.peers.values():  # one prefix, one peer
                    if prefix in other.allowed_ips:
                        other.allowed_ips.remove(prefix)
                peer.allowed_ips.append(prefix)


def _b64(key: bytes) -> str:
    from base64 import b64encode

    return b64encode(key).decode()


def allowed_ip_nla(prefix: str) -> dict[str, Any]:
    address, length = prefix.split("/")
    family = AF_INET6 if ":" in address else AF_INET
    return {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", family],
            ["WGALLOWEDIP_A_IPADDR", inet_pton(family, address)],
            ["WGALLOWEDIP_A_CIDR_MASK", int(length)],
        ]
    }


def peer_nla(key: bytes, peer: KernelPeer, with_fields: bool = True) -> dict[str, Any]:
    """A peer of a dump; without fields, as the kernel continues one in the next message."""
    attrs: list[list[Any]] = [["WGPEER_A_PUBLIC_KEY", _b64(key)]]
    if with_fields:
        if peer.endpoint is not None:
            attrs.append(["WGPEER_A_ENDPOINT", dict(peer.endpoint)])
        attrs += [
            ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.keepalive],
            [
                "WGPEER_A_LAST_HANDSHAKE_TIME",
                {"tv_sec": peer.handshake[0], "tv_nsec": peer.handshake[1]},
            ],
            ["WGPEER_A_RX_BYTES", peer.rx_bytes],
            ["WGPEER_A_TX_BYTES", peer.tx_bytes],
            ["WGPEER_A_PROTOCOL_VERSION", 1],
        ]
    if peer.allowed_ips:
        attrs.append(["WGPEER_A_ALLOWEDIPS", [allowed_ip_nla(p) for p in peer.allowed_ips]])
    return {"attrs": attrs}


def dump_message(attrs: list[list[Any]]) -> Any:
    message = wgmsg()
    message["cmd"] = 0  # WG_CMD_GET_DEVICE
    message["version"] = 1
    message["attrs"] = attrs
    message["header"]["type"] = GENL_TYPE
    return decoded(message)


@pytest.fixture
def links() -> FakeIPRoute:
    return FakeIPRoute()


@pytest.fixture
def genl(links: FakeIPRoute) -> FakeGenlWireGuard:
    return FakeGenlWireGuard(links)


@pytest.fixture
def backend(links: FakeIPRoute, genl: FakeGenlWireGuard) -> KernelBackend:
    return KernelBackend(iproute=links, wireguard=genl)


# --- behaviour ---------------------------------------------------------------------------


def test_kernel_backend_follows_the_contract(backend: KernelBackend) -> None:
    exercise_backend(backend, IFNAME)


def test_links_are_added_and_deleted_as_wireguard_by_index(
    backend: KernelBackend, links: FakeIPRoute
) -> None:
    backend.create(IFNAME)
    assert links.calls[-1] == ("add", {"ifname": IFNAME, "kind": "wireguard"})
    index = links.links[IFNAME][0]
    backend.delete(IFNAME)
    assert links.calls[-1] == ("del", {"index": index})


def test_only_wireguard_links_are_listed_or_deleted(backend: KernelBackend) -> None:
    backend.create("twb")
    backend.create("twa")
    assert backend.list_interfaces("") == ["twa", "twb"]  # not lo, not the veth eth0
    assert not backend.exists("eth0")
    with pytest.raises(WireGuardError) as error:
        backend.delete("eth0")
    assert error.value.errno == errno.EINVAL


def test_create_without_the_module_says_so() -> None:
    backend = KernelBackend(iproute=FakeIPRoute(has_wireguard=False))
    with pytest.raises(WireGuardError) as error:
        backend.create(IFNAME)
    assert error.value.errno == errno.EOPNOTSUPP
    assert "no WireGuard module" in str(error.value)


def test_configure_sends_device_fields_then_one_peer_per_call(
    backend: KernelBackend, genl: FakeGenlWireGuard
) -> None:
    backend.create(IFNAME)
    backend.configure(
        IFNAME,
        DeviceUpdate(
            private_key=PRIVATE_KEY,
            listen_port=51820,
            peers=(PeerUpdate(PEER_A, allowed_ips=("0.0.0.0/0",)), PeerUpdate(PEER_B)),
        ),
    )
    assert [call["peer"] is None for call in genl.calls] == [True, False, False]
    first = genl.calls[0]
    assert first["listen_port"] == 51820
    assert b64decode(first["private_key"]) == PRIVATE_KEY
    assert genl.sent[0].get_attr("WGDEVICE_A_LISTEN_PORT") == 51820
    assert [b64decode(call["peer"]["public_key"]) for call in genl.calls[1:]] == [PEER_A, PEER_B]


def test_replace_peers_removes_the_current_peers_first(
    backend: KernelBackend, genl: FakeGenlWireGuard
) -> None:
    backend.create(IFNAME)
    backend.configure(IFNAME, DeviceUpdate(peers=(PeerUpdate(PEER_A), PeerUpdate(PEER_B))))
    genl.calls.clear()
    backend.configure(IFNAME, DeviceUpdate(replace_peers=True, peers=(PeerUpdate(PEER_B),)))
    peers = [call["peer"] for call in genl.calls[1:]]
    assert [(b64decode(p["public_key"]), p.get("remove", False)) for p in peers] == [
        (PEER_A, True),
        (PEER_B, True),
        (PEER_B, False),
    ]


def test_configure_a_missing_interface_raises_enodev(backend: KernelBackend) -> None:
    with pytest.raises(WireGuardError) as error:
        backend.configure(IFNAME, DeviceUpdate())
    assert error.value.errno == errno.ENODEV


# --- the pure mapping ---------------------------------------------------------------------


def test_peer_request_with_every_field() -> None:
    request = peer_request(
        PeerUpdate(
            PEER_A,
            endpoint=("fd00::1", 51820),
            allowed_ips=("10.1.2.3/24", "::/0"),
            persistent_keepalive_s=1,
            update_only=True,
        )
    )
    assert request == {
        "public_key": "oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaE=",
        "update_only": True,
        "endpoint_addr": "fd00::1",
        "endpoint_port": 51820,
        "persistent_keepalive": 1,
        "replace_allowed_ips": True,
        "allowed_ips": ["10.1.2.0/24", "::/0"],
    }


def test_peer_request_for_partial_remove_and_cleared_updates() -> None:
    assert peer_request(PeerUpdate(PEER_A)) == {"public_key": _b64(PEER_A)}
    assert peer_request(PeerUpdate(PEER_A, remove=True, endpoint=("10.0.0.1", 1))) == {
        "public_key": _b64(PEER_A),
        "remove": True,
    }
    assert peer_request(PeerUpdate(PEER_A, allowed_ips=())) == {
        "public_key": _b64(PEER_A),
        "replace_allowed_ips": True,
    }


def test_scoped_ipv6_endpoints_are_refused() -> None:
    with pytest.raises(ValueError, match="scope id"):
        peer_request(PeerUpdate(PEER_A, endpoint=("fe80::1%eth0", 1)))


def test_status_from_a_dump_with_traffic() -> None:
    attrs: list[list[Any]] = [
        ["WGDEVICE_A_IFINDEX", 5],
        ["WGDEVICE_A_IFNAME", IFNAME],
        ["WGDEVICE_A_PRIVATE_KEY", _b64(PRIVATE_KEY)],
        ["WGDEVICE_A_PUBLIC_KEY", _b64(public_key_from_private(PRIVATE_KEY))],
        ["WGDEVICE_A_LISTEN_PORT", 51820],
        [
            "WGDEVICE_A_PEERS",
            [
                peer_nla(
                    PEER_A,
                    KernelPeer(
                        endpoint={"addr": "10.0.0.2", "port": 51821},
                        allowed_ips=["0.0.0.0/0", "::/0"],
                        keepalive=1,
                        rx_bytes=100,
                        tx_bytes=200,
                        handshake=(1700000000, 250000000),
                    ),
                ),
                peer_nla(PEER_B, KernelPeer(endpoint={"addr": "fd00::2", "port": 1})),
            ],
        ],
    ]
    assert device_status_from_info(IFNAME, [dump_message(attrs)]) == DeviceStatus(
        name=IFNAME,
        public_key=public_key_from_private(PRIVATE_KEY),
        listen_port=51820,
        peers=(
            PeerStatus(
                public_key=PEER_A,
                endpoint=("10.0.0.2", 51821),
                allowed_ips=("0.0.0.0/0", "::/0"),
                persistent_keepalive_s=1,
                rx_bytes=100,
                tx_bytes=200,
                last_handshake=1700000000.25,
            ),
            PeerStatus(
                public_key=PEER_B,
                endpoint=("fd00::2", 1),
                allowed_ips=(),
                persistent_keepalive_s=0,
                rx_bytes=0,
                tx_bytes=0,
                last_handshake=None,
            ),
        ),
    )


def test_a_peer_continued_in_the_next_message_is_merged() -> None:
    peer = KernelPeer(allowed_ips=["10.0.0.0/8"], rx_bytes=7)
    rest = KernelPeer(allowed_ips=["10.1.0.0/16", "fd00::/8"])
    first = dump_message(
        [["WGDEVICE_A_LISTEN_PORT", 1], ["WGDEVICE_A_PEERS", [peer_nla(PEER_A, peer)]]]
    )
    second = dump_message(
        [
            ["WGDEVICE_A_LISTEN_PORT", 1],
            ["WGDEVICE_A_PEERS", [peer_nla(PEER_A, rest, with_fields=False)]],
        ]
    )
    third = dump_message(
        [["WGDEVICE_A_LISTEN_PORT", 1], ["WGDEVICE_A_PEERS", [peer_nla(PEER_B, KernelPeer())]]]
    )
    status = device_status_from_info(IFNAME, [first, second, third])
    assert [p.public_key for p in status.peers] == [PEER_A, PEER_B]
    assert status.peers[0].allowed_ips == ("10.0.0.0/8", "10.1.0.0/16", "fd00::/8")
    assert status.peers[0].rx_bytes == 7
    assert status.public_key is None


def test_empty_or_malformed_dumps_raise_eproto() -> None:
    with pytest.raises(WireGuardError) as empty:
        device_status_from_info(IFNAME, [])
    assert empty.value.errno == errno.EPROTO

    class ShortKeyPeer:
        def get_attr(self, name: str) -> Any:
            return "c2hvcnQ=" if name == "WGPEER_A_PUBLIC_KEY" else None

    class Message:
        def get_attr(self, name: str) -> Any:
            return [ShortKeyPeer()] if name == "WGDEVICE_A_PEERS" else None

    with pytest.raises(WireGuardError) as malformed:
        device_status_from_info(IFNAME, [Message()])
    assert malformed.value.errno == errno.EPROTO


def test_netlink_errors_keep_their_errno(backend: KernelBackend) -> None:
    with pytest.raises(WireGuardError) as error:
        backend.show(IFNAME)
    assert error.value.errno == errno.ENODEV


def test_missing_genl_family_says_no_module(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoFamily:
        @staticmethod
        def WireGuard() -> Any:  # noqa: N802 - pyroute2's class name
            raise NetlinkError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(kernel_module, "_pyroute2", lambda: NoFamily)
    backend = KernelBackend(iproute=FakeIPRoute())
    with pytest.raises(WireGuardError) as error:
        backend.show(IFNAME)
    assert error.value.errno == errno.ENOENT
    assert "no WireGuard module" in str(error.value)


def test_pyroute2_is_not_imported_until_used() -> None:
    code = (
        "import sys, meshd.adapters.wg.kernel, meshd.adapters.wg.select\n"
        "import meshd.adapters.wg.userspace, meshd.adapters.wg.fake\n"
        "meshd.adapters.wg.kernel.KernelBackend()\n"
        "assert 'pyroute2' not in sys.modules, 'pyroute2 imported'\n"
    )
    root = str(Path(__file__).resolve().parents[4])
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


# --- selection ----------------------------------------------------------------------------


def yes() -> bool:
    return True


def no() -> bool:
    return False


@pytest.fixture
def fake_wireguard_go(tmp_path: Any) -> Iterator[str]:
    binary = tmp_path / "wireguard-go"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    yield str(binary)


def test_auto_prefers_the_kernel(fake_wireguard_go: str) -> None:
    chosen = select_backend("auto", kernel_available=yes, userspace_binary=fake_wireguard_go)
    assert isinstance(chosen, KernelBackend)
    assert chosen.name == "kernel"


def test_auto_falls_back_to_userspace(fake_wireguard_go: str) -> None:
    chosen = select_backend("auto", kernel_available=no, userspace_binary=fake_wireguard_go)
    assert isinstance(chosen, UserspaceBackend)
    assert chosen.binary == fake_wireguard_go


def test_userspace_is_used_even_with_the_module(fake_wireguard_go: str) -> None:
    chosen = select_backend("userspace", kernel_available=yes, userspace_binary=fake_wireguard_go)
    assert isinstance(chosen, UserspaceBackend)


def test_kernel_without_module_is_a_clear_error() -> None:
    with pytest.raises(WireGuardError, match="no wireguard module") as error:
        select_backend("kernel", kernel_available=no)
    assert error.value.errno == errno.ENOENT


def test_userspace_without_wireguard_go_is_a_clear_error() -> None:
    with pytest.raises(WireGuardError, match="not on PATH"):
        select_backend("auto", kernel_available=no, userspace_binary="/nonexistent/wireguard-go")


def test_unknown_preference_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, kernel, userspace"):
        select_backend("wg")


def test_module_detection(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = tmp_path / "wireguard"
    loaded.mkdir()
    assert kernel_module_available(str(loaded), modprobe=no)
    missing = str(tmp_path / "missing")
    assert not kernel_module_available(missing, modprobe=no)
    assert kernel_module_available(missing, modprobe=yes)
    # Without modprobe on PATH (containers), the answer is a quiet no.
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not kernel_module_available(missing)
