"""The daemon's kernel logic against the fake WireGuard backend and an in-memory netlink."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from meshd import addressing, config, identity
from meshd.net.netlink import Route
from meshd.node import Node
from meshd.routing.liveness import LinkState
from meshd.wg.fake import FakeBackend
from meshd.wg.model import PeerUpdate
from tests.unit.fake_netlink import FakeNetlink

PROTO = 176


@pytest.fixture
def sysctl_root(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    for key in (
        "net/ipv4/ip_forward",
        "net/ipv6/conf/all/forwarding",
        "net/ipv4/conf/all/rp_filter",
        "net/ipv4/conf/default/rp_filter",
    ):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text("0\n")
    return root


def make_config(tmp_path: Path, peers: list[identity.Identity]) -> config.Config:
    text = f"""
[node]
name = "a"
state_dir = "{tmp_path / "a"}"
mesh_ipv4 = "10.77.0.1"
"""
    for i, p in enumerate(peers):
        text += f"""
[[neighbours]]
name = "n{i}"
node_id = "{p.node_id}"
wireguard_key = "{p.wireguard_public_b64}"
endpoint = "100.64.{i}.2:{51100 + i}"
listen_port = {51000 + i}
mesh_ipv4 = "10.77.0.{i + 2}"
"""
    return config.parse(text, "a.toml")


@pytest.fixture
def world(tmp_path: Path, sysctl_root: Path):  # type: ignore[no-untyped-def]
    me = identity.generate(tmp_path / "a")
    peers = [identity.generate(tmp_path / f"p{i}") for i in range(2)]
    cfg = make_config(tmp_path, peers)
    backend, netlink = FakeBackend(), FakeNetlink(sysctl_root)

    def new_node() -> Node:
        return Node(cfg, me, backend, netlink, sysctl_root)  # type: ignore[arg-type]

    return me, peers, cfg, backend, netlink, new_node


def ifname(me: identity.Identity, peer: identity.Identity) -> str:
    return addressing.link_interface_name("mw", me.node_id, peer.node_id)


def test_setup_builds_one_link_per_neighbour(world, sysctl_root: Path) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = new_node()
    node.setup(0.0)
    assert backend.list_interfaces("mw") == sorted(ifname(me, p) for p in peers)
    for i, p in enumerate(peers):
        dev = backend.show(ifname(me, p))
        assert dev.listen_port == 51000 + i
        assert dev.public_key == me.wireguard_public
        (peer,) = dev.peers
        assert peer.public_key == p.wireguard_public
        assert peer.endpoint == (f"100.64.{i}.2", 51100 + i)
        assert set(peer.allowed_ips) == {"0.0.0.0/0", "::/0"}
        assert peer.persistent_keepalive_s == 1
        assert (addressing.link_local(me.node_id), 64) in netlink.addrs[ifname(me, p)]
    assert (ipaddress.ip_address("10.77.0.1"), 32) in netlink.addrs["lo"]
    assert (node.mesh_ipv6, 128) in netlink.addrs["lo"]
    routes = netlink.routes(PROTO)
    assert len(routes) == 4
    assert {str(r.src) for r in routes} == {"10.77.0.1", str(node.mesh_ipv6)}
    assert (sysctl_root / "net/ipv4/ip_forward").read_text().strip() == "1"
    assert (sysctl_root / "net/ipv4/conf/all/rp_filter").read_text().strip() == "2"
    rp = sysctl_root / f"net/ipv4/conf/{ifname(me, peers[0])}/rp_filter"
    assert rp.read_text().strip() == "2"


def test_liveness_follows_the_receive_counter(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = new_node()
    node.setup(0.0)
    name, key = ifname(me, peers[0]), peers[0].wireguard_public
    link = node.links[name]
    node.poll(0.0)
    assert link.liveness.state is LinkState.CONNECTING
    backend.set_peer_stats(name, key, rx_bytes=92)
    node.poll(0.25)
    assert link.liveness.state is LinkState.UP
    assert node.status()["neighbours"][0]["state"] == "up"
    node.poll(2.7)
    assert link.liveness.state is LinkState.UP
    node.poll(2.8)
    assert link.liveness.state is LinkState.DOWN
    assert node.links[ifname(me, peers[1])].liveness.state is LinkState.CONNECTING


def test_restart_adopts_without_duplicates_or_resetting_peers(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    new_node().setup(0.0)
    name, key = ifname(me, peers[0]), peers[0].wireguard_public
    backend.set_peer_stats(name, key, rx_bytes=5000, tx_bytes=7000, last_handshake=1.0)
    # Leftovers of ours that the new config no longer wants:
    stale = addressing.own_interface_prefix("mw", me.node_id) + "ffffff"
    backend.create(stale)
    netlink.add_link(stale)
    netlink.replace_route(Route(ipaddress.ip_network("10.77.9.9/32"), stale, None, 100), PROTO)
    before = len(backend.updates)

    new_node().setup(0.0)  # as after kill -9
    assert backend.list_interfaces("mw") == sorted(ifname(me, p) for p in peers)
    assert len(netlink.routes(PROTO)) == 4
    assert len(backend.updates) == before  # nothing differed, nothing re-set
    (peer,) = backend.show(name).peers
    assert (peer.rx_bytes, peer.tx_bytes) == (5000, 7000)


def test_adoption_repairs_a_changed_peer(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    new_node().setup(0.0)
    name = ifname(me, peers[0])
    intruder = identity.generate(Path(cfg.node.state_dir).parent / "x")
    backend.configure(name, _add(intruder.wireguard_public))
    new_node().setup(0.0)
    assert [p.public_key for p in backend.show(name).peers] == [peers[0].wireguard_public]


def _add(key: bytes):  # type: ignore[no-untyped-def]
    from meshd.wg.model import DeviceUpdate

    return DeviceUpdate(peers=(PeerUpdate(public_key=key, allowed_ips=("10.0.0.0/8",)),))


def test_a_vanished_interface_is_rebuilt(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = new_node()
    node.setup(0.0)
    name = ifname(me, peers[0])
    backend.delete(name)  # wireguard-go killed under us
    node.poll(10.0)
    assert not node.links[name].ready
    node.poll(10.0 + 2.1)
    assert node.links[name].ready and backend.exists(name)


def test_teardown_leaves_nothing(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = new_node()
    node.setup(0.0)
    node.teardown()
    assert backend.list_interfaces("") == []
    assert netlink.routes(PROTO) == []
    assert netlink.addrs["lo"] == set()
