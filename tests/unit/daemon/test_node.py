"""The daemon's kernel logic against the fake WireGuard backend and an in-memory netlink."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from meshd import config
from meshd.adapters import identity
from meshd.adapters.net import command, sysctl
from meshd.adapters.net.netlink import MAIN_TABLE, Route, Rule
from meshd.adapters.wg.fake import FakeBackend
from meshd.adapters.wg.model import PeerUpdate
from meshd.config.settings import UplinkSettings
from meshd.core import addressing
from meshd.core.control.peer import LinkSpec
from meshd.core.routing.babel import RouteAction, RouteChange
from meshd.core.routing.liveness import ECHOES_PER_PROBE, LinkState
from meshd.daemon.links import ADOPT_GRACE_S, ROUTE_GRACE_S
from meshd.daemon.node import Node
from meshd.daemon.status import kernel_status
from tests.unit.fake_netlink import FakeNetlink

PROTO = 176
TABLE = 176  # the mesh's own routing table (config: routing.table)
V4, V6 = ipaddress.ip_network("10.77.0.0/16"), ipaddress.ip_network("fd6d:6573:6864::/48")
MESH_RULES = [Rule(V4, TABLE, 1050), Rule(V6, TABLE, 1050)]


@pytest.fixture
def sysctl_root(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    # What a fresh Debian has: no forwarding, loose reverse-path filters everywhere.
    for key, value in (
        ("net/ipv4/ip_forward", "0"),
        ("net/ipv6/conf/all/forwarding", "0"),
        ("net/ipv4/conf/all/rp_filter", "2"),
        ("net/ipv4/conf/default/rp_filter", "2"),
        ("net/netfilter/nf_conntrack_acct", "0"),
    ):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(value + "\n")
    return root


ADMIN = "A" * 43


def make_config(tmp_path: Path, more: str = "") -> config.Config:
    text = f"""
[node]
name = "a"
state_dir = "{tmp_path / "a"}"
mesh_ipv4 = "10.77.0.1"
[mesh]
admin_keys = ["{ADMIN}"]
{more}"""
    return config.parse(text, "a.toml")


@pytest.fixture(autouse=True)
def no_host_commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The node's ip/nft/tc calls are recorded, never run: a unit test must not change the
    host's rules and tables (tests/netns runs them for real, inside namespaces)."""
    calls: list[tuple[str, ...]] = []

    def run(*cmd: str, stdin: str | None = None) -> str:
        calls.append(cmd)
        return ""

    def run_ok(*cmd: str) -> bool:
        calls.append(cmd)
        return False  # nothing there to delete

    monkeypatch.setattr(command, "run", run)
    monkeypatch.setattr(command, "run_ok", run_ok)
    return calls


@pytest.fixture
def world(tmp_path: Path, sysctl_root: Path):  # type: ignore[no-untyped-def]
    me = identity.generate(tmp_path / "a")
    peers = [identity.generate(tmp_path / f"p{i}") for i in range(2)]
    cfg = make_config(tmp_path)
    backend, netlink = FakeBackend(), FakeNetlink(sysctl_root)

    def new_node() -> Node:
        return Node(cfg, me, backend, netlink, sysctl_root)  # type: ignore[arg-type]

    return me, peers, cfg, backend, netlink, new_node


def ifname(me: identity.Identity, peer: identity.Identity) -> str:
    return addressing.link_interface_name("mw", me.node_id, peer.node_id)


def spec(node: Node, me: identity.Identity, peer: identity.Identity, i: int) -> LinkSpec:
    """What the control plane hands the node once the session said the peer's port."""
    return LinkSpec(
        node_id=peer.node_id,
        name=f"n{i}",
        ifname=ifname(me, peer),
        wireguard_public=peer.wireguard_public,
        endpoint=(f"100.64.{i}.2", 51820 + i),
        listen_port=node.links.link_port(peer.node_id),
    )


def linked(new_node, me, peers) -> Node:  # type: ignore[no-untyped-def]
    node = new_node()
    node.setup(0.0)
    for i, p in enumerate(peers):
        node.links._ensure_link(spec(node, me, p, i), 0.0)
    return node


def test_setup_holds_the_mesh_addresses(world, sysctl_root: Path) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = new_node()
    node.setup(0.0)
    assert (ipaddress.ip_address("10.77.0.1"), 32) in netlink.addrs["lo"]
    assert (node.mesh_ipv6, 128) in netlink.addrs["lo"]
    assert (sysctl_root / "net/ipv4/ip_forward").read_text().strip() == "1"
    # No reverse-path filter on the links: a reply may come back another way (sysctl.py).
    assert (sysctl_root / "net/ipv4/conf/all/rp_filter").read_text().strip() == "0"
    assert backend.list_interfaces("mw") == []
    assert netlink.rules(TABLE) == MESH_RULES


@pytest.mark.parametrize(("before", "after"), [("1", "2"), ("0", "0"), ("2", "2")])
def test_the_uplink_keeps_taking_router_advertisements_with_forwarding_on(
    tmp_path: Path, sysctl_root: Path, before: str, after: str
) -> None:
    """IPv6 forwarding on makes the kernel ignore RAs where accept_ra is 1: the uplink's
    SLAAC address and default route would lapse (issue 24); an operator's 0 stays."""
    ra = sysctl_root / "net/ipv6/conf/upl/accept_ra"
    ra.parent.mkdir(parents=True)
    ra.write_text(before + "\n")
    cfg = dataclasses.replace(make_config(tmp_path), uplink=UplinkSettings(interface="upl"))
    me = identity.generate(tmp_path / "a")
    node = Node(cfg, me, FakeBackend(), FakeNetlink(sysctl_root), sysctl_root)  # type: ignore[arg-type]
    node.setup(0.0)
    assert (sysctl_root / "net/ipv6/conf/all/forwarding").read_text().strip() == "1"
    assert ra.read_text().strip() == after
    assert sysctl.keep_router_advertisements("gone", sysctl_root) is None  # no IPv6 there


def test_routes_go_into_the_mesh_table_only(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = linked(new_node, me, peers)
    prefix = ipaddress.ip_network("10.77.0.9/32")
    node.links._apply_routes([RouteChange(prefix, RouteAction.INSTALL, peers[0].node_id, 96)])
    assert [r.dst for r in netlink.routes(PROTO, table=TABLE)] == [prefix]
    assert netlink.routes(PROTO, table=MAIN_TABLE) == []
    assert [r.dst for r, _ in kernel_status(node)["routes"]] == [prefix]
    node.links._apply_routes([RouteChange(prefix, RouteAction.REMOVE, peers[0].node_id, 96)])
    assert netlink.routes(PROTO, table=TABLE) == []


def test_links_are_built_from_what_the_session_says(world, sysctl_root: Path) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = linked(new_node, me, peers)
    assert backend.list_interfaces("mw") == sorted(ifname(me, p) for p in peers)
    for i, p in enumerate(peers):
        dev = backend.show(ifname(me, p))
        assert dev.listen_port == 51820 + i  # the lowest free ports of the range
        assert dev.public_key == me.wireguard_public
        (peer,) = dev.peers
        assert peer.public_key == p.wireguard_public
        assert peer.endpoint == (f"100.64.{i}.2", 51820 + i)
        assert set(peer.allowed_ips) == {"0.0.0.0/0", "::/0"}
        assert peer.persistent_keepalive_s == 25
        assert (addressing.link_local(me.node_id), 64) in netlink.addrs[ifname(me, p)]
    rp = sysctl_root / f"net/ipv4/conf/{ifname(me, peers[0])}/rp_filter"
    assert rp.read_text().strip() == "0"
    # A new endpoint (the neighbour moved) changes the peer in place.
    moved = LinkSpec(**{**spec(node, me, peers[0], 0).__dict__, "endpoint": ("100.64.7.2", 9)})
    node.links._ensure_link(moved, 1.0)
    assert backend.show(ifname(me, peers[0])).peers[0].endpoint == ("100.64.7.2", 9)


def test_ports_stay_with_their_link_and_are_reused_after_removal(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = linked(new_node, me, peers)
    assert [node.links.link_port(p.node_id) for p in peers] == [51820, 51821]
    node.links.remove_link(peers[0].node_id)
    node._kernel.shutdown(wait=True)  # the removal ran on the kernel thread
    assert not backend.exists(ifname(me, peers[0]))
    assert node.links.link_port(peers[0].node_id) == 51820  # free again


def test_no_free_port_is_an_answer_not_an_exception(world) -> None:  # type: ignore[no-untyped-def]
    """The control plane refuses the newcomer (``no_free_port``); nothing raises inside
    the session's handler (issue 28, item 4)."""
    me, peers, cfg, backend, netlink, new_node = world
    node = linked(new_node, me, peers)
    node.links.wg_settings = dataclasses.replace(node.links.wg_settings, listen_port_max=51821)
    assert [node.links.link_port(p.node_id) for p in peers] == [51820, 51821]
    assert node.links.link_port("x" * 43) is None
    assert node.links.link_port(peers[1].node_id) == 51821  # held ports still answer


def test_liveness_follows_the_receive_counter(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = linked(new_node, me, peers)
    name, key = ifname(me, peers[0]), peers[0].wireguard_public
    link = node.links.by_ifname[name]
    node.links.poll(0.0)
    assert link.liveness.state is LinkState.CONNECTING
    every: list[tuple[str, str]] = []
    node.links.echo = type("Echo", (), {"send": lambda self, a, i: every.append((a, i)) or True})()

    def sent(to: str = name) -> list[tuple[str, str]]:
        return [e for e in every if e[1] == to]

    backend.set_peer_stats(name, key, rx_bytes=92)
    assert node.links.poll(0.25) == [(link, LinkState.UP)]
    assert kernel_status(node)["links"][peers[0].node_id]["liveness"] == "up"
    node.links.poll(10.0)
    assert sent() == []
    node.links.poll(26.4)  # idle, silent longer than a keepalive: echoes through the tunnel
    echoes = [(str(addressing.link_local(peers[0].node_id)), name)] * ECHOES_PER_PROBE
    assert sent() == echoes
    node.links.poll(26.7)
    assert link.liveness.state is LinkState.UP and sent() == echoes
    assert node.links.poll(27.3) == [(link, LinkState.DOWN)]
    node.links.poll(27.6)
    assert sent() == [*echoes, echoes[0]]  # down: asked every second, once, whether it is back
    node.links.poll(28.0)
    assert len(sent()) == ECHOES_PER_PROBE + 1
    backend.set_peer_stats(name, key, rx_bytes=184)
    assert node.links.poll(28.4) == [(link, LinkState.UP)]
    # Never heard (a restart, a peer whose tunnel stays quiet): asked once a second too.
    other = ifname(me, peers[1])
    assert sent(other) == [(str(addressing.link_local(peers[1].node_id)), other)] * 3  # at
    # 10.0, 26.4 and 27.6 (one a second at most; the one at 0.0 went before the socket)
    assert node.links.by_ifname[ifname(me, peers[1])].liveness.state is LinkState.CONNECTING


def test_restart_adopts_without_duplicates_or_resetting_peers(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    old = linked(new_node, me, peers)
    name, key = ifname(me, peers[0]), peers[0].wireguard_public
    # A link's own packets carry the exit's mark: they leave by the uplink even while the
    # node leaves by an exit (whose default route takes unmarked packets only).
    assert backend.show(name).fwmark == cfg.exit.fwmark != 0
    backend.set_peer_stats(name, key, rx_bytes=5000, tx_bytes=7000, last_handshake=1.0)
    kept = Route(ipaddress.ip_network("10.77.9.9/32"), name, None, 100)
    netlink.replace_route(kept, PROTO, table=TABLE)
    # Leftovers of ours that no neighbour will claim:
    stale = addressing.own_interface_prefix("mw", me.node_id) + "ffffff"
    backend.create(stale)
    netlink.add_link(stale)
    netlink.add_link("eth9")  # not ours: a route of our protocol over it is a leftover
    gone = Route(ipaddress.ip_network("10.77.9.8/32"), "eth9", None, 100)
    relearnt = Route(ipaddress.ip_network("10.77.9.7/32"), name, None, 100)
    for route in (gone, relearnt):
        netlink.replace_route(route, PROTO, table=TABLE)
    # A meshd from before the mesh's own table left one in the main table.
    legacy = Route(ipaddress.ip_network("10.77.9.6/32"), name, None, 100)
    netlink.replace_route(legacy, PROTO, table=MAIN_TABLE)
    # Its rules, twice over, and one of an older config's preference.
    netlink.rule_list = [*MESH_RULES, MESH_RULES[0], Rule(V4, TABLE, 1099)]
    before = len(backend.updates)
    ports = [old.links.link_port(p.node_id) for p in peers]

    node = new_node()  # as after kill -9
    node.setup(0.0)
    # The routes over its links stay while Babel learns them again: the kernel goes on
    # forwarding. Those Babel does not install again within the grace period go then.
    assert sorted(r.dst for r in netlink.routes(PROTO, table=TABLE)) == [relearnt.dst, kept.dst]
    assert netlink.routes(PROTO, table=MAIN_TABLE) == []
    assert netlink.rules(TABLE) == MESH_RULES  # once each
    node.links._apply_routes([RouteChange(relearnt.dst, RouteAction.INSTALL, peers[0].node_id, 96)])
    node.links.poll(ROUTE_GRACE_S + 0.1)
    assert netlink.routes(PROTO, table=TABLE) == [relearnt]
    # The neighbours' sessions come back: each interface keeps its port (the neighbour's
    # endpoint for us stays right), its peer and its counters.
    assert [node.links.link_port(p.node_id) for p in reversed(peers)] == list(reversed(ports))
    for i, p in enumerate(peers):
        node.links._ensure_link(spec(node, me, p, i), 1.0)
    assert len(backend.updates) == before  # nothing differed, nothing re-set
    (peer,) = backend.show(name).peers
    assert (peer.rx_bytes, peer.tx_bytes) == (5000, 7000)
    # What no neighbour claimed goes after the grace period.
    node.links.poll(1.0)
    assert backend.exists(stale)
    node.links.poll(ADOPT_GRACE_S + 0.1)
    assert backend.list_interfaces("mw") == sorted(ifname(me, p) for p in peers)


def test_adoption_repairs_a_changed_peer(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    linked(new_node, me, peers)
    name = ifname(me, peers[0])
    intruder = identity.generate(Path(cfg.node.state_dir).parent / "x")
    backend.configure(name, _add(intruder.wireguard_public))
    linked(new_node, me, peers)
    assert [p.public_key for p in backend.show(name).peers] == [peers[0].wireguard_public]


def _add(key: bytes):  # type: ignore[no-untyped-def]
    from meshd.adapters.wg.model import DeviceUpdate

    return DeviceUpdate(peers=(PeerUpdate(public_key=key, allowed_ips=("10.0.0.0/8",)),))


def test_a_vanished_interface_is_rebuilt(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = linked(new_node, me, peers)
    name = ifname(me, peers[0])
    backend.delete(name)  # wireguard-go killed under us
    node.links.poll(10.0)
    assert not node.links.by_ifname[name].ready
    node.links.poll(10.0 + 2.1)
    assert node.links.by_ifname[name].ready and backend.exists(name)


def test_teardown_leaves_nothing(world) -> None:  # type: ignore[no-untyped-def]
    me, peers, cfg, backend, netlink, new_node = world
    node = linked(new_node, me, peers)
    stale = addressing.own_interface_prefix("mw", me.node_id) + "ffffff"
    backend.create(stale)
    node.setup(0.0)  # found, not yet claimed
    prefix = ipaddress.ip_network("10.77.0.9/32")
    node.links._apply_routes([RouteChange(prefix, RouteAction.INSTALL, peers[0].node_id, 96)])
    assert netlink.routes(PROTO, table=TABLE) != [] and netlink.rules(TABLE) != []
    node.teardown()
    assert backend.list_interfaces("") == []
    assert netlink.routes(PROTO, table=TABLE) == []
    assert netlink.rules(TABLE) == []
    assert netlink.addrs["lo"] == set()


def _link(ifname: str, local: str) -> dict[str, object]:
    return {
        "ifindex": 2,
        "ifname": ifname,
        "flags": ["BROADCAST", "UP", "LOWER_UP"],
        "addr_info": [{"family": "inet", "local": local, "prefixlen": 24}],
    }


@pytest.mark.parametrize("named", [False, True])
def test_beacons_never_go_on_the_household_lan(
    world,
    tmp_path: Path,
    named: bool,  # type: ignore[no-untyped-def]
) -> None:
    """The household LAN is no segment of the mesh: no beacons there, none read there,
    even where ``[discovery] beacon_interfaces`` names it."""
    me, _, _, backend, netlink, _ = world
    extra = '[discovery]\nbeacon_interfaces = ["s0", "lan0"]\n' if named else ""
    cfg = make_config(tmp_path, f'[lan]\ninterfaces = ["lan0"]\n{extra}')
    links = [_link("s0", "100.127.0.1"), _link("lan0", "172.20.1.1"), _link("upl", "198.51.100.11")]
    netlink.underlay = lambda: (links, {"upl"})
    node = Node(cfg, me, backend, netlink, tmp_path / "sys")
    underlays, subnets, internet, home = node.underlay()
    assert [u.ifname for u in underlays] == ["s0"] and internet  # upl holds a default route
    assert home == [ipaddress.IPv4Interface("198.51.100.11/24")]  # where upl is
    assert subnets == [ipaddress.IPv4Network("100.127.0.0/24")]
    assert underlays[0].subnet == ipaddress.IPv4Network("100.127.0.0/24")
