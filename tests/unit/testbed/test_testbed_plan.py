"""The netns testbed's pure parts: topology files, the address/port plan, generated meshd
configs, nftables rulesets and the convergence judgement. No root needed."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TESTBED_DIR = REPO / "netns-testbed"
sys.path[:0] = [p for p in (str(REPO), str(TESTBED_DIR)) if p not in sys.path]

from nstestbed import converge, plan, rules, topology  # noqa: E402

from meshd import config  # noqa: E402
from meshd.adapters import identity  # noqa: E402

TOPOLOGIES = TESTBED_DIR / "topologies"
STATE = Path("/run/meshd-testbed-unit")

DEMO = """
[nodes.a]
uplink = true
uplink_rate = "50mbit"
share = true
lan = true
[nodes.b]
[nodes.c]
lan = true
[nodes.d]
uplink = true
[[links]]
between = ["a", "b"]
rate = "100Mbit"
loss = 2.5
mtu = 1400
[[links]]
between = ["c", "a"]
[[segments]]
members = ["b", "c", "d"]
"""


def make(text: str = DEMO, tb_id: str = "mtb") -> plan.Plan:
    return plan.make_plan(topology.parse(text, "demo.toml"), tb_id, STATE)


def fake_keys(p: plan.Plan) -> dict[str, plan.NodeKeys]:
    return {
        n.name: plan.NodeKeys(
            identity.node_id_from_public(bytes([n.index + 1]) * 32),
            identity.encode_key(bytes([n.index + 101]) * 32),
        )
        for n in p.nodes
    }


# -- topology files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["line3.toml", "ring5.toml", "demo.toml"])
def test_shipped_topologies_parse_and_plan(name: str) -> None:
    topo = topology.load(TOPOLOGIES / name)
    p = plan.make_plan(topo, "mtb", STATE)
    assert len(p.nodes) >= 3
    assert all(n.adjacencies for n in p.nodes)  # nobody is isolated


def test_ring5_is_a_ring() -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "ring5.toml"), "mtb", STATE)
    assert [len(n.adjacencies) for n in p.nodes] == [2] * 5
    assert converge.reachable(p, "a", {link.key for link in p.links}) == {"b", "c", "d", "e"}


def test_demo_has_shared_uplinks_a_lan_a_segment_and_links() -> None:
    topo = topology.load(TOPOLOGIES / "demo.toml")
    assert sum(n.share for n in topo.nodes) >= 1
    assert any(n.lan for n in topo.nodes)
    assert topo.segments and topo.links


def test_parse_reads_every_field() -> None:
    topo = topology.parse(DEMO, "demo.toml")
    a = topo.node("a")
    assert (a.uplink, a.share, a.lan) == (True, True, True)
    assert a.uplink_rate == topology.Rate("50mbit", 50_000_000)
    assert topo.node("b") == topology.NodeSpec("b")
    assert topo.links[0] == topology.LinkSpec(
        "a", "b", topology.Rate("100mbit", 100_000_000), 2.5, 1400
    )
    assert topo.segments == (topology.SegmentSpec(("b", "c", "d")),)


@pytest.mark.parametrize(
    ("text", "rate", "bits"),
    [
        ("50mbit", "50mbit", 50_000_000),
        ("1Gbit", "1gbit", 10**9),
        ("500kbps", "500kbps", 4 * 10**6),
    ],
)
def test_parse_rate(text: str, rate: str, bits: int) -> None:
    assert topology.parse_rate(text) == topology.Rate(rate, bits)


AB = '[nodes.a]\n[nodes.b]\n[[links]]\nbetween = ["a", "b"]\n'
BAD = [
    ("[nodes.a]\n[other]\n", "other", "unknown key"),
    ("x = 1\n[nodes.a]\n", "x", "unknown key"),
    ("[nodes.a]\nuplnk = true\n", "nodes.a.uplnk", "unknown key"),
    ("[nodes.A]\n", "nodes.A", "1-8 characters"),
    ("[nodes.abcdefghi]\n", "nodes.abcdefghi", "1-8 characters"),
    ("[nodes.inet]\n", "nodes.inet", "reserved"),
    ("[nodes.a]\nuplink = 1\n", "nodes.a.uplink", "true or false"),
    ('[nodes.a]\nlan = "yes"\n', "nodes.a.lan", "true or false"),
    ('[nodes.a]\nuplink_rate = "5mbit"\n', "nodes.a.uplink_rate", "needs uplink = true"),
    ("[nodes.a]\nshare = true\n", "nodes.a.share", "needs uplink = true"),
    ("[nodes.a]\nuplink = true\nmonthly_quota_mb = 5\n", "nodes.a.monthly_quota_mb", "share"),
    (
        "[nodes.a]\nuplink = true\nshare = true\nmonthly_quota_mb = -5\n",
        "nodes.a.monthly_quota_mb",
        "0 or more",
    ),
    ('[nodes.a]\nuplink = true\nuplink_rate = "fast"\n', "nodes.a.uplink_rate", "rate"),
    ("[nodes.a]\nuplink = true\nuplink_rate = 5\n", "nodes.a.uplink_rate", "rate"),
    ("nodes = 3\n", "nodes", "expected a table"),
    ("[[links]]\nbetween = []\n", "nodes", "missing"),
    ('[nodes.a]\n[[links]]\nbetween = ["a", "z"]\n', "links[0].between", "unknown node 'z'"),
    ('[nodes.a]\n[[links]]\nbetween = ["a", "a"]\n', "links[0].between", "each node once"),
    ('[nodes.a]\n[nodes.b]\n[[links]]\nbetween = ["a"]\n', "links[0].between", "2 node names"),
    ('[nodes.a]\n[[links]]\nrate = "1mbit"\n', "links[0].between", "missing"),
    (AB + "loss = 101\n", "links[0].loss", "0 to 100"),
    (AB + "loss = true\n", "links[0].loss", "0 to 100"),
    (AB + "mtu = 100\n", "links[0].mtu", "576"),
    (AB + "jitter = 1\n", "links[0].jitter", "unknown"),
    (
        AB + '[[links]]\nbetween = ["b", "a"]\n',
        "links[1].between",
        "already share links[0]",
    ),
    (
        AB + '[[segments]]\nmembers = ["a", "b"]\n',
        "segments[0].members",
        "already share links[0]",
    ),
    ('[nodes.a]\n[[segments]]\nmembers = ["a"]\n', "segments[0].members", "2 to"),
    ("[nodes.a]\n[[segments]]\n", "segments[0].members", "missing"),
    ("[nodes.a]\nlinks = 3\n", "nodes.a.links", "unknown key"),
    ("[nodes.a]\n[[links]]\n[links.x]\n", "links[0].x", "unknown key"),
    ("[nodes.a]\nuplink = \n", "", "not valid TOML"),
    ("[nodes.a]\n[nodes.a]\n", "", "not valid TOML"),
    ("links = 3\n[nodes.a]\n", "links", "array of tables"),
    ('[nodes.a]\ncontrol = { socket = "/x" }\n', "nodes.a.control.socket", "by the testbed"),
    ("[nodes.a]\ncontrol = { protocols = [1] }\n", "nodes.a.control.protocols", "list of"),
    ("[nodes.a]\ninvited = true\ncontrol = { quic_port = 7 }\n", "nodes.a.control", "its own"),
    ('[nodes.a]\nuplink = true\nnat = "cone"\n', "nodes.a.nat", "masquerade"),
    ('[nodes.a]\nnat = "masquerade"\n', "nodes.a.nat", "needs uplink = true"),
    ('[nodes.a]\nuplink = true\nbootstrap = ["a"]\n', "nodes.a.bootstrap", "other nodes"),
    ('[nodes.a]\nbootstrap = ["b"]\n[nodes.b]\nuplink = true\n', "nodes.a.bootstrap", "uplink"),
    (
        '[nodes.a]\nuplink = true\nbootstrap = ["b"]\n'
        '[nodes.b]\nuplink = true\nnat = "masquerade"\n',
        "nodes.a.bootstrap[0]",
        "b has no uplink the internet reaches",
    ),
    ("threshold = 2\n[nodes.a]\n", "threshold", "1 to 1 (the mesh's admins)"),
    ("threshold = 0\n[nodes.a]\nadmin = true\n", "threshold", "1 to 2"),
    ('threshold = "2"\n[nodes.a]\n', "threshold", "an integer"),
    ("emergency_threshold = 2\n[nodes.a]\nadmin = true\n", "emergency_threshold", "0 to 1"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD)
def test_topology_errors_name_the_file_and_the_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(topology.TopologyError) as info:
        topology.parse(text, "/x/bad.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("/x/bad.toml: " + (f"{key}: " if key else ""))
    assert problem in message


def test_cli_refuses_a_bad_topology_with_exit_2_and_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nodes.a]\nuplink = 'yes'\n")
    env = {**os.environ, "MESHD_TESTBED_DIR": str(tmp_path / "state")}
    res = subprocess.run(
        [str(TESTBED_DIR / "testbed"), "up", str(bad)], env=env, capture_output=True, text=True
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == f"testbed: {bad}: nodes.a.uplink: expected true or false, got a string"
    )
    assert not (tmp_path / "state").exists()


def test_cli_status_without_a_testbed_fails(tmp_path: Path) -> None:
    env = {**os.environ, "MESHD_TESTBED_DIR": str(tmp_path)}
    res = subprocess.run(
        [str(TESTBED_DIR / "testbed"), "status", "--json"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 1
    assert "no testbed is up" in res.stderr


# -- the plan ------------------------------------------------------------------------------


def test_names_and_addresses() -> None:
    p = make()
    a, b, c, d = p.nodes
    assert [n.namespace for n in p.nodes] == ["mtb-a", "mtb-b", "mtb-c", "mtb-d"]
    assert p.namespaces() == [
        "mtb-a", "mtb-b", "mtb-c", "mtb-d", "mtb-a-lan", "mtb-c-lan", "mtb-inet", "mtb-sw"
    ]  # fmt: skip
    assert [str(n.mesh_ipv4) for n in p.nodes] == [
        "10.77.0.1",
        "10.77.0.2",
        "10.77.0.3",
        "10.77.0.4",
    ]
    # p2p link k: 100.64.0.0 + 256*k, first of `between` .1, second .2, named u-<peer>.
    l0, l1 = p.links
    assert (l0.a.node, l0.a.ifname, str(l0.a.address)) == ("a", "u-b", "100.64.0.1/24")
    assert (l0.b.node, l0.b.ifname, str(l0.b.address)) == ("b", "u-a", "100.64.0.2/24")
    assert (l1.a.node, l1.a.ifname, str(l1.a.address)) == ("c", "u-a", "100.64.1.1/24")
    assert (l1.b.node, l1.b.ifname, str(l1.b.address)) == ("a", "u-c", "100.64.1.2/24")
    # segment s: bridge seg<s>, member i on s<s> with 100.127.<s>.<i+1>/24 and a fixed MAC.
    (seg,) = p.segments
    assert seg.bridge == "seg0" and p.switch_namespace == "mtb-sw"
    assert [(pt.endpoint.node, pt.endpoint.ifname, str(pt.endpoint.address), pt.switch_port)
            for pt in seg.ports] == [
        ("b", "s0", "100.127.0.1/24", "s0-b"),
        ("c", "s0", "100.127.0.2/24", "s0-c"),
        ("d", "s0", "100.127.0.3/24", "s0-d"),
    ]  # fmt: skip
    assert len({pt.endpoint.mac for pt in seg.ports}) == 3
    # uplinks: 198.51.100.<10+i>; LANs: 172.20.<i>.0/24, node .1, host .2.
    assert a.uplink and str(a.uplink.address) == "198.51.100.10/24"
    assert a.uplink.rate == topology.Rate("50mbit", 50_000_000)
    assert d.uplink and str(d.uplink.address) == "198.51.100.13/24" and d.uplink.rate is None
    assert b.uplink is None and c.uplink is None
    assert a.lan and (a.lan.namespace, str(a.lan.node_address), str(a.lan.host_address)) == (
        "mtb-a-lan", "172.20.0.1/24", "172.20.0.2/24"
    )  # fmt: skip
    assert c.lan and str(c.lan.host_address) == "172.20.2.2/24"
    assert b.lan is None
    assert p.internet_namespace == "mtb-inet"
    assert a.socket == STATE / "nodes" / "a" / "meshd.sock"


def test_no_switch_namespace_without_segments() -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "line3.toml"), "x1", STATE)
    assert p.switch_namespace is None
    assert p.namespaces() == ["x1-a", "x1-b", "x1-c", "x1-inet"]


def test_every_neighbour_pair_has_matching_endpoints_and_ports() -> None:
    p = make()
    for node in p.nodes:
        ports = [adj.listen_port for adj in node.adjacencies]
        assert ports == list(range(51000, 51000 + len(ports)))  # a per-node counter
        for adj in node.adjacencies:
            back = p.node(adj.peer).adjacency(node.name)
            assert back is not None and back.medium == adj.medium
            assert back.listen_port == adj.peer_port and back.peer_port == adj.listen_port
            assert back.local == adj.remote and back.remote == adj.local
            assert adj.local.address.network == adj.remote.address.network
    assert {(n.name, a.peer) for n in p.nodes for a in n.adjacencies} == {
        ("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"),
        ("b", "c"), ("c", "b"), ("b", "d"), ("d", "b"), ("c", "d"), ("d", "c"),
    }  # fmt: skip


def test_plan_errors() -> None:
    topo = topology.parse(DEMO)
    with pytest.raises(plan.PlanError, match="MESHD_TESTBED_ID"):
        plan.make_plan(topo, "has-dash", STATE)
    with pytest.raises(plan.PlanError, match="absolute"):
        plan.make_plan(topo, "mtb", Path("relative"))
    with pytest.raises(plan.PlanError, match="control socket"):
        plan.make_plan(topo, "mtb", Path("/" + "x" * 100))


def test_namespace_pattern_only_matches_its_own_id() -> None:
    pattern = plan.namespace_pattern("mtb")
    assert all(pattern.fullmatch(ns) for ns in make().namespaces())
    for other in ("mtb", "mtbx-a", "mtb-a-b", "xmtb-a", "mtb-abcdefghi", "twexp1"):
        assert not pattern.fullmatch(other)


# -- generated meshd configs ---------------------------------------------------------------


ADMIN = "A" * 43


def test_generated_configs_are_accepted_by_meshd(tmp_path: Path) -> None:
    p = plan.make_plan(topology.parse(DEMO), "mtb", tmp_path)
    keys = fake_keys(p)
    for node in p.nodes:
        path = tmp_path / f"{node.name}.toml"
        path.write_text(plan.render_config(p, node, keys, ADMIN))
        cfg = config.load(path)
        assert cfg.node.name == node.name
        assert cfg.node.mesh_ipv4 == node.mesh_ipv4
        assert cfg.node.state_dir == tmp_path / "nodes" / node.name / "state"
        assert cfg.control.socket == node.socket
        assert cfg.mesh.ipv4_prefix == ipaddress.IPv4Network("10.77.0.0/16")
        assert cfg.mesh.admin_keys == (ADMIN,)
        iperf = config.parse_port_range(plan.MESH_IPERF_PORTS)
        assert cfg.isolation.open_tcp_ports == cfg.isolation.open_udp_ports == (iperf,)
        if node.uplink:
            assert cfg.uplink.resolver == str(plan.INTERNET_ADDRESS)
        links = [a for a in node.adjacencies if not a.is_segment]  # segments: beacons
        assert len(cfg.bootstrap) == len(links)
        for b, adj in zip(cfg.bootstrap, links, strict=True):
            assert (b.name, b.node_id) == (adj.peer, keys[adj.peer].node_id)
            assert b.address == (str(adj.remote.address.ip), cfg.control.quic_port)


def test_bootstrap_addresses_are_on_a_shared_medium(tmp_path: Path) -> None:
    """A's bootstrap address for B is B's address on a link they share."""
    p = plan.make_plan(topology.load(TOPOLOGIES / "demo.toml"), "mtb", tmp_path)
    keys = fake_keys(p)
    by_id = {keys[name].node_id: name for name in keys}
    for node in p.nodes:
        path = tmp_path / f"{node.name}.toml"
        path.write_text(plan.render_config(p, node, keys, ADMIN))
        for b in config.load(path).bootstrap:
            peer = by_id[b.node_id]
            host, _ = b.address
            mine = {str(a.local.address.network) for a in node.adjacencies if a.peer == peer}
            assert any(ipaddress.ip_address(host) in ipaddress.ip_network(n) for n in mine)


# -- rules ---------------------------------------------------------------------------------


def test_initial_impairments_come_from_the_links() -> None:
    imp = rules.Impairments.initial(make())
    assert imp.loss == {"a-b": 2.5} and imp.rate == {"a-b": "100mbit"}
    assert rules.Impairments.from_json(imp.to_json()) == imp


def test_node_ruleset_drops_on_arrival_from_the_peer() -> None:
    p = make()
    imp = rules.Impairments().with_cut("a-b", True).with_loss("b-c", 30).with_uplink("a", False)
    text = rules.node_ruleset(p.node("b"), imp)
    assert text.startswith("table inet testbed {}\ndelete table inet testbed\n")
    assert 'iifname "u-a" drop comment "cut a"' in text
    mac_c = p.segments[0].ports[1].endpoint.mac
    assert f'iifname "s0" ether saddr {mac_c} numgen random mod 10000 < 3000 drop' in text
    assert "hook output" not in text  # never on the sending side: that would be EPERM
    text_a = rules.node_ruleset(p.node("a"), imp)
    assert 'iifname "u-b" drop comment "cut b"' in text_a
    assert 'iifname "upl" drop comment "uplink down"' in text_a
    assert 'ip saddr 172.20.0.0/24 oifname "upl" masquerade' in text_a
    assert 'oifname "upl" masquerade' not in rules.node_ruleset(p.node("d"), imp)  # no LAN
    inet = rules.internet_ruleset(p, imp)
    assert 'iifname "n-a" meta protocol { ip, ip6 } drop' in inet and "n-d" not in inet


def test_cut_wins_over_loss_and_heal_restores_it() -> None:
    p = make()
    imp = rules.Impairments.initial(p).with_cut("a-b", True)
    assert "numgen" not in rules.node_ruleset(p.node("a"), imp)
    healed = imp.with_cut("a-b", False)
    assert "mod 10000 < 250 drop" in rules.node_ruleset(p.node("a"), healed)
    assert rules.node_ruleset(p.node("a"), healed.with_loss("a-b", 0)).count("drop") == 0
    assert 'comment "loss b 100%"' in rules.node_ruleset(p.node("a"), healed.with_loss("a-b", 100))


def test_shaping_covers_link_ends_and_the_internet_side_of_uplinks() -> None:
    p = make()
    shaped = rules.shaped_interfaces(p, rules.Impairments.initial(p))
    rate = topology.Rate("100mbit", 100_000_000)
    assert shaped[("mtb-a", "u-b")] == shaped[("mtb-b", "u-a")] == rate
    assert shaped[("mtb-c", "u-a")] is None
    up = topology.Rate("50mbit", 50_000_000)
    # Download on the bridge port, upload on the ifb; upl is meshd's own to shape.
    assert shaped[("mtb-inet", "n-a")] == shaped[("mtb-inet", "ifb-a")] == up
    assert shaped[("mtb-inet", "n-d")] is None and ("mtb-inet", "ifb-d") not in shaped
    assert not any(ifname == "upl" for _, ifname in shaped)
    args = rules.tbf_args(up)
    assert args[:3] == ["tbf", "rate", "50mbit"] and int(args[4]) == 25_000


def test_upload_is_redirected_to_an_ifb_only_for_shaped_uplinks() -> None:
    p = make()
    assert p.node("a").uplink.ifb == "ifb-a"
    assert rules.upload_redirects(p) == [("n-a", "ifb-a")]  # d's uplink has no rate
    assert rules.upload_redirects(make(DEMO.replace('uplink_rate = "50mbit"\n', ""))) == []
    args = rules.redirect_args("ifb-a")
    assert args[:2] == ["parent", "ffff:"]  # the ingress qdisc
    assert " ".join(args[2:]) == (
        "protocol all u32 match u32 0 0 action mirred egress redirect dev ifb-a"
    )
    longest = make('[nodes.abcdefgh]\nuplink = true\nuplink_rate = "1mbit"\n')
    assert len(longest.node("abcdefgh").uplink.ifb) <= 15  # IFNAMSIZ - 1


# -- convergence ---------------------------------------------------------------------------


def status(p: plan.Plan, name: str, states: dict[str, str], routes: list[str] | None) -> dict:
    ids = {n.name: f"id-{n.name}" for n in p.nodes}
    out: dict = {
        "node_id": ids[name],
        "neighbours": [
            {"node_id": ids[peer], "name": peer, "state": st} for peer, st in states.items()
        ],
    }
    if routes is not None:
        out["routes"] = [{"prefix": r} for r in routes]
    return out


def host_routes(p: plan.Plan, *names: str) -> list[str]:
    return [f"{p.node(n).mesh_ipv4}/32" for n in names]


def test_converged_line_needs_routes_beyond_neighbours() -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "line3.toml"), "mtb", STATE)
    ids = {n.name: f"id-{n.name}" for n in p.nodes}
    imp = rules.Impairments()
    neighbour_only = {
        "a": status(p, "a", {"b": "up"}, host_routes(p, "b")),
        "b": status(p, "b", {"a": "up", "c": "up"}, host_routes(p, "a", "c")),
        "c": status(p, "c", {"b": "up"}, host_routes(p, "b")),
    }
    problems = converge.missing(p, imp, neighbour_only, ids, {})
    assert problems == {
        "a": ["no route to c (10.77.0.3/32)"],
        "c": ["no route to a (10.77.0.1/32)"],
    }
    assert converge.missing(p, imp, neighbour_only, ids, {}, routes="neighbours") == {}
    full = dict(neighbour_only)
    full["a"] = status(p, "a", {"b": "up"}, host_routes(p, "b", "c"))
    full["c"] = status(p, "c", {"b": "up"}, host_routes(p, "b", "a"))
    assert converge.missing(p, imp, full, ids, {}) == {}
    # IPv6 host routes are required when the mesh IPv6 addresses are known.
    v6 = {"c": "fd6d::3"}
    assert converge.missing(p, imp, full, ids, v6)["a"] == ["no route to c (fd6d::3/128)"]


def test_convergence_ignores_stopped_nodes_and_cut_links() -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "line3.toml"), "mtb", STATE)
    ids = {n.name: f"id-{n.name}" for n in p.nodes}
    # c stopped: b must not wait for c, nor anyone for routes to c.
    statuses = {
        "a": status(p, "a", {"b": "up"}, host_routes(p, "b")),
        "b": status(p, "b", {"a": "up", "c": "down"}, host_routes(p, "a")),
    }
    assert converge.missing(p, rules.Impairments(), statuses, ids, {}) == {}
    # a-b cut: a alone is converged with no neighbour; b still needs c.
    imp = rules.Impairments().with_cut("a-b", True)
    statuses = {
        "a": status(p, "a", {"b": "down"}, []),
        "b": status(p, "b", {"a": "down", "c": "connecting"}, []),
        "c": "no_daemon: nothing listens",
    }
    assert converge.missing(p, imp, statuses, ids, {}) == {
        "b": ["neighbour c: connecting", "no route to c (10.77.0.3/32)"],
        "c": ["no status: no_daemon: nothing listens"],
    }


def test_convergence_without_routes_in_status_checks_links_only() -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "line3.toml"), "mtb", STATE)
    ids = {n.name: f"id-{n.name}" for n in p.nodes}
    statuses = {
        "a": status(p, "a", {"b": "up"}, None),
        "b": status(p, "b", {"a": "up"}, None),  # c missing from the list
        "c": status(p, "c", {"b": "up"}, None),
    }
    assert converge.missing(p, rules.Impairments(), statuses, ids, {}) == {
        "b": ["neighbour c: not listed"]
    }


def test_islands_behind_a_nat_dial_each_other_over_the_internet(tmp_path: Path) -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "islands.toml"), "mti", tmp_path)
    a, c = p.node("a"), p.node("c")
    assert a.uplink and a.uplink.nat is None
    assert str(a.uplink.node_address) == "198.51.100.10/24"
    assert str(a.uplink.gateway) == "198.51.100.1"
    assert c.uplink and c.uplink.nat and c.uplink.nat.namespace == "mti-c-nat"
    assert str(c.uplink.address) == "198.51.100.12/24"  # the router's, on the internet
    assert str(c.uplink.node_address) == "192.168.2.2/24"
    assert str(c.uplink.gateway) == "192.168.2.1"
    assert "mti-c-nat" in p.namespaces()
    keys = fake_keys(p)
    path = tmp_path / "c.toml"
    path.write_text(plan.render_config(p, c, keys, ADMIN))
    by_name = {b.name: b.address for b in config.load(path).bootstrap}
    assert by_name == {"d": ("100.64.1.2", 6697), "a": ("198.51.100.10", 6697)}
    ruleset = rules.nat_ruleset(c.uplink.nat)
    assert 'oifname "wan0" masquerade' in ruleset
    assert 'iifname "wan0" oifname "in0" ct state { established, related } accept' in ruleset


def test_two_nodes_behind_one_router_and_one_behind_a_carriers_nat(tmp_path: Path) -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "punch.toml"), "mtp", tmp_path)
    c, d, h = p.node("c"), p.node("d"), p.node("h")
    assert c.uplink and c.uplink.nat and d.uplink and h.uplink and h.uplink.nat
    assert d.uplink.nat == c.uplink.nat and d.uplink.behind == "c"
    assert d.uplink.address == c.uplink.address  # the router's public address
    assert (str(c.uplink.node_address), str(d.uplink.node_address)) == (
        "192.168.1.2/24",
        "192.168.1.3/24",
    )
    carrier = h.uplink.nat.carrier
    assert carrier is not None and carrier.namespace == "mtp-h-cgn"
    assert (str(carrier.inside_address), str(carrier.router_address)) == (
        "100.96.6.1/24",
        "100.96.6.2/24",
    )
    names = p.namespaces()
    assert names.count("mtp-c-nat") == 1 and "mtp-d-nat" not in names and "mtp-h-cgn" in names
    assert 'iifname "in0" oifname "wan0" accept' in rules.carrier_ruleset(carrier)
    b = p.node("b")
    assert b.uplink and b.uplink.nat and b.uplink.nat.kind == "ranged"
    ranged = rules.nat_ruleset(b.uplink.nat)
    assert "masquerade to :udp sport map { 6697 : 16697, 51820 : 61820," in ranged
    assert ranged.rstrip().endswith('oifname "wan0" masquerade\n\t}\n}')


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ('[nodes.a]\nuplink = true\n[nodes.b]\nuplink = true\nbehind = "a"\n', "behind", "no home"),
        (
            '[nodes.a]\nuplink = true\nnat = "masquerade"\n[nodes.b]\nbehind = "a"\n',
            "behind",
            "uplink",
        ),
    ],
)
def test_behind_needs_a_home_router_and_an_uplink(text: str, where: str, says: str) -> None:
    with pytest.raises(topology.TopologyError, match=f"nodes.b.{where}.*{says}"):
        topology.parse(text)


def test_a_gateways_quota_reaches_its_config(tmp_path: Path) -> None:
    text = (REPO / "netns-testbed/topologies/quota.toml").read_text()
    p = plan.make_plan(topology.parse(text), "mtq", tmp_path)
    keys = fake_keys(p)
    path = tmp_path / "a.toml"
    path.write_text(plan.render_config(p, p.node("a"), keys, ADMIN))
    assert config.load(path).uplink.monthly_quota_mb == 3


def test_a_node_plays_an_older_version_through_its_control_section(tmp_path: Path) -> None:
    text = '[nodes.a]\n[nodes.b]\ncontrol = { protocols = ["meshd/1"] }\n'
    text += '[[links]]\nbetween = ["a", "b"]\n'
    p = plan.make_plan(topology.parse(text), "mtv", tmp_path)
    assert p.node("b").control == (("protocols", ("meshd/1",)),)
    keys = fake_keys(p)
    for name, protocols in (("a", ("meshd/2", "meshd/1")), ("b", ("meshd/1",))):
        path = tmp_path / f"{name}.toml"
        path.write_text(plan.render_config(p, p.node(name), keys, ADMIN))
        cfg = config.load(path)
        assert cfg.control.protocols == protocols
        assert cfg.control.socket == p.node(name).socket  # the testbed's, still


def test_a_node_gets_a_small_port_range_through_its_wireguard_section(tmp_path: Path) -> None:
    """How the netns tests exhaust a node's link ports quickly (issue 28, item 4)."""
    text = "[nodes.a]\nwireguard = { listen_port_max = 51821, issuer_link_share = 1.0 }\n"
    p = plan.make_plan(topology.parse(text), "mwg", tmp_path)
    path = tmp_path / "a.toml"
    path.write_text(plan.render_config(p, p.node("a"), fake_keys(p), ADMIN))
    cfg = config.load(path)
    assert (cfg.wireguard.listen_port_min, cfg.wireguard.listen_port_max) == (51820, 51821)
    assert cfg.wireguard.issuer_link_limit == 2
    with pytest.raises(topology.TopologyError, match="an invited node's config is its own"):
        topology.parse("[nodes.a]\n[nodes.b]\ninvited = true\nwireguard = { mtu = 1400 }\n")


def test_a_node_serves_metrics_on_its_mesh_address_to_the_nodes_named(tmp_path: Path) -> None:
    text = '[nodes.a]\nmetrics = ["b"]\n[nodes.b]\nmetrics = []\n[nodes.c]\n'
    p = plan.make_plan(topology.parse(text), "mpm", tmp_path)
    keys = fake_keys(p)
    for name, allow in (("a", (keys["b"].node_id,)), ("b", ())):
        path = tmp_path / f"{name}.toml"
        path.write_text(plan.render_config(p, p.node(name), keys, ADMIN))
        cfg = config.load(path)
        assert cfg.metrics.listen == (str(p.node(name).mesh_ipv4), plan.METRICS_PORT)
        assert cfg.metrics.allow == allow
    path = tmp_path / "c.toml"
    path.write_text(plan.render_config(p, p.node("c"), keys, ADMIN))
    assert config.load(path).metrics.listen is None
    for bad in ('["x"]', '"b"', "true"):
        with pytest.raises(topology.TopologyError, match="expected a list of node names"):
            topology.parse(f"[nodes.a]\nmetrics = {bad}\n[nodes.b]\n")


def test_a_node_s_map_section_with_its_export_dir_in_its_testbed_directory(
    tmp_path: Path,
) -> None:
    text = '[nodes.a]\nmap = { name = "Bakery", export_dir = "www" }\n[nodes.b]\n'
    p = plan.make_plan(topology.parse(text), "mpm", tmp_path)
    path = tmp_path / "a.toml"
    path.write_text(plan.render_config(p, p.node("a"), fake_keys(p), ADMIN))
    shown = config.load(path).map
    assert shown.name == "Bakery"
    assert shown.export_dir == str(tmp_path / "nodes" / "a" / "www")
    with pytest.raises(topology.TopologyError, match="an invited node's config is its own"):
        topology.parse('[nodes.a]\n[nodes.b]\ninvited = true\nmap = { name = "x" }\n')


def test_a_node_s_certificate_may_be_given_a_past() -> None:
    topo = topology.parse("[nodes.a]\ncert_age_s = 86400\n[nodes.b]\n")
    assert topo.node("a").cert_age_s == 86400 and topo.node("b").cert_age_s == 0
    for bad in ("-1", "true", '"1"'):
        with pytest.raises(topology.TopologyError, match="cert_age_s"):
            topology.parse(f"[nodes.a]\ncert_age_s = {bad}\n")
    with pytest.raises(topology.TopologyError, match="its issuer decides"):
        topology.parse("[nodes.a]\n[nodes.b]\ninvited = true\ncert_age_s = 60\n")


# -- invited nodes (they join by `testbed join NODE --invite TOKEN`) -------------------------


def test_an_invited_node_is_planned_but_not_configured(tmp_path: Path) -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "join.toml"), "mtb", tmp_path)
    invited = {n.name for n in p.nodes if n.invited}
    assert invited == {"n", "m"}
    m = p.node("m")
    assert {a.peer for a in m.adjacencies} == {"a", "b"}
    assert m.meshd_state_dir == tmp_path / "nodes" / "m" / "root" / "var" / "lib" / "meshd"
    keys = {k: v for k, v in fake_keys(p).items() if k not in invited}  # none until they join
    path = tmp_path / "a.toml"
    path.write_text(plan.render_config(p, p.node("a"), keys, ADMIN))
    assert [b.name for b in config.load(path).bootstrap] == ["b"]  # not n nor m
    with pytest.raises(topology.TopologyError, match="invited"):
        topology.parse("[nodes.a]\n[nodes.b]\ninvited = 1\n")


def test_convergence_takes_an_invited_node_s_address_from_its_status() -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "join.toml"), "mtb", STATE)
    ids = {n.name: f"id-{n.name}" for n in p.nodes}
    joined = "10.77.1.1/32"  # from a's pool, not the plan's
    statuses = {
        "a": status(p, "a", {"b": "up", "n": "up"}, [*host_routes(p, "b", "c"), joined]),
        "b": status(p, "b", {"a": "up", "c": "up"}, [*host_routes(p, "a", "c"), joined]),
        "c": status(p, "c", {"b": "up"}, [*host_routes(p, "a", "b"), joined]),
        "n": status(p, "n", {"a": "up"}, host_routes(p, "a", "b", "c")),
    }
    v4 = {"n": "10.77.1.1"}
    assert converge.missing(p, rules.Impairments(), statuses, ids, {}, mesh_ipv4=v4) == {}
    statuses["c"] = status(p, "c", {"b": "up"}, host_routes(p, "a", "b"))
    problems = converge.missing(p, rules.Impairments(), statuses, ids, {}, mesh_ipv4=v4)
    assert problems == {"c": ["no route to n (10.77.1.1/32)"]}


def test_a_forwarded_nat_lets_meshds_ports_in_to_its_node(tmp_path: Path) -> None:
    p = plan.make_plan(topology.load(TOPOLOGIES / "punch.toml"), "mtp", tmp_path)
    g = p.node("g")
    assert g.uplink and g.uplink.nat and g.uplink.nat.kind == "forwarded"
    ruleset = rules.nat_ruleset(g.uplink.nat)
    node = g.uplink.node_address.ip
    assert f'iifname "wan0" udp dport {{ 6697, 51820-52819 }} dnat ip to {node}' in ruleset
    assert 'iifname "wan0" oifname "in0" ct status dnat accept' in ruleset
    assert 'oifname "wan0" masquerade' in ruleset
    assert "dnat" not in rules.nat_ruleset(p.node("c").uplink.nat)  # type: ignore[union-attr]
