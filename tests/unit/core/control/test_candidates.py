"""Nodes only heard of (meshd.core.control.neighbours): a beacon proves a key, not
membership, so a flood of beacons with fresh keys fills a small budget of its own,
never the peer table; newcomers are still admitted, verified neighbours stay; candidates
are dialled at a rationed rate, a few times each, then forgotten."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from nacl.signing import SigningKey

from meshd.adapters import identity
from meshd.core.control import effects as fx
from meshd.core.control.neighbours import (
    CANDIDATE_DIAL_BURST,
    CANDIDATE_DIALS_PER_S,
    CANDIDATE_TRIES,
    MAX_CANDIDATES,
    MAX_PEERS,
)
from meshd.core.control.peer import Source
from meshd.core.keys import node_id_from_public
from meshd.core.proto import session
from tests.unit.core.control.test_control_core import ADDR, Mesh, cert


def fresh_ids(count: int, start: int = 0) -> list[str]:
    return [
        node_id_from_public(bytes(SigningKey(n.to_bytes(32, "big")).verify_key))
        for n in range(start + 1, start + count + 1)
    ]


def dials(effects: list[fx.Effect]) -> list[fx.Dial]:
    return [e for e in effects if isinstance(e, fx.Dial)]


def flood(world: Mesh, count: int, now: float = 1.0) -> list[str]:
    ids = fresh_ids(count, start=1000)
    for n, node_id in enumerate(ids):
        address = (f"100.127.0.{2 + n % 250}", 6697)
        world.core.neighbours.discovered(node_id, address, Source.BEACON, now)
    return ids


def test_600_fresh_key_beacons_fill_only_the_candidates_budget(tmp_path: Path) -> None:
    world = Mesh(tmp_path)
    world.core.neighbours.dialling = True
    world.verified()
    flood(world, 600)
    neighbours = world.core.neighbours
    assert neighbours.candidates() == MAX_CANDIDATES
    assert len(world.core.peers) == MAX_CANDIDATES + 1  # and the verified neighbour
    assert neighbours.refusals == {"candidates_full": 600 - MAX_CANDIDATES}
    # A newcomer's handshake is admitted, and so is every one up to MAX_PEERS.
    (newcomer,) = fresh_ids(1, start=5000)
    assert world.core.authorize(newcomer) is None
    assert world.core.authorize(world.peer.node_id) is None
    established = fresh_ids(MAX_PEERS - 1, start=9000)
    for node_id in established:
        world.core.session_up(node_id, ("100.64.9.9", 6697), "meshd/2", 2.0)
    assert world.core.authorize(newcomer) == "too_many_peers"  # now the table is full


def test_candidates_are_dialled_at_a_rationed_rate_a_few_times_then_forgotten(
    tmp_path: Path,
) -> None:
    world = Mesh(tmp_path)
    world.core.neighbours.dialling = True
    world.core.drain()
    ids = flood(world, MAX_CANDIDATES)
    by_second: list[int] = []
    seen: dict[str, int] = {}
    for second in range(1, 400):
        world.core.tick(float(second))
        out = dials(world.core.drain())
        by_second.append(len(out))
        for dial in out:
            seen[dial.node_id] = seen.get(dial.node_id, 0) + 1
            # The dial fails (nobody there): the transport says so.
            world.core.session_closed(
                dial.node_id, dial.address, "handshake_timeout", False, False, second
            )
    assert by_second[0] <= CANDIDATE_DIAL_BURST
    assert sum(by_second) <= CANDIDATE_DIAL_BURST + CANDIDATE_DIALS_PER_S * len(by_second)
    assert set(seen) == set(ids) and max(seen.values()) == CANDIDATE_TRIES
    assert world.core.neighbours.candidates() == 0  # all forgotten
    # Heard again: a candidate again (a real node that was not up yet is tried again).
    world.core.neighbours.discovered(ids[0], ADDR, Source.BEACON, 500.0)
    world.core.tick(500.0)
    assert [d.node_id for d in dials(world.core.drain())] == [ids[0]]


def test_a_verified_neighbour_heard_by_beacon_is_no_candidate(tmp_path: Path) -> None:
    world = Mesh(tmp_path)
    world.core.neighbours.dialling = True
    world.verified()
    peer = world.core.peers[world.peer.node_id]
    world.core.session_closed(world.peer.node_id, ADDR, "idle_timeout", False, True, 2.0)
    assert not peer.candidate and peer.verified_once
    flood(world, 600)
    assert world.peer.node_id in world.core.peers  # not pushed out
    world.core.neighbours.discovered(world.peer.node_id, ("100.127.0.9", 6697), Source.BEACON, 3.0)
    # Dialled for as long as it is known, beyond a candidate's tries and budget.
    dialled = 0
    for second in range(3, 300):
        world.core.tick(float(second))
        for dial in dials(world.core.drain()):
            if dial.node_id == world.peer.node_id:
                dialled += 1
                world.core.session_closed(
                    dial.node_id, dial.address, "handshake_timeout", False, False, second
                )
    assert dialled > CANDIDATE_TRIES


def test_members_and_what_a_neighbour_tells_us_of_are_not_kept_out_by_a_beacon_flood(
    tmp_path: Path,
) -> None:
    world = Mesh(tmp_path)
    world.core.neighbours.dialling = True
    world.verified()
    other = identity.generate(tmp_path / "other")  # a member: its certificate is known
    _, credential = world.core.trust.check(
        other.node_id, None, session.Membership(cert(other, "10.77.0.3")), (1.0, 1)
    )
    world.core.trust.add_to_directory(credential)
    flood(world, 600)
    world.core.drain()
    world.core.neighbours.discovered(other.node_id, ("100.127.0.3", 6697), Source.BEACON, 2.0)
    assert other.node_id in world.core.peers
    assert not world.core.neighbours.is_candidate(world.core.peers[other.node_id])
    # Endpoints a verified neighbour shares have a budget of their own.
    (told,) = fresh_ids(1, start=7000)
    world.core.neighbours.set_subnets([ipaddress.IPv4Network("100.127.0.0/24")])
    world.receive(
        session.Endpoints((session.Endpoint(told, "100.127.0.4", 6697),)),
        now=2.0,
    )
    assert told in world.core.peers
    world.core.tick(2.0)
    dialled = {d.node_id for d in dials(world.core.drain())}
    assert {other.node_id, told} <= dialled


def test_shared_internet_endpoints_are_tried_only_with_an_uplink(tmp_path: Path) -> None:
    """Two nodes behind NATs meet through a neighbour that tells each where the other's
    session comes from: a node with an uplink dials such an internet address (the other,
    told at the same moment, dials too: a punched pair), never a private one beyond its
    segments, and without an uplink none."""
    world = Mesh(tmp_path)
    world.core.neighbours.dialling = True
    world.verified()
    public, private, cgnat = fresh_ids(3, start=8000)
    endpoints = session.Endpoints(
        (
            session.Endpoint(public, "198.51.100.12", 6697),
            session.Endpoint(private, "192.168.7.2", 6697),
            session.Endpoint(cgnat, "100.64.3.2", 6697),
        )
    )
    world.core.neighbours.set_subnets([ipaddress.IPv4Network("100.127.0.0/24")], internet=False)
    world.receive(endpoints, now=2.0)
    world.core.tick(2.0)
    assert not dials(world.core.drain())
    world.core.neighbours.set_subnets([ipaddress.IPv4Network("100.127.0.0/24")], internet=True)
    world.receive(endpoints, now=3.0)
    world.core.tick(3.0)
    assert {d.node_id for d in dials(world.core.drain())} == {public}


def test_two_nodes_behind_one_router_find_each_other_on_its_home_network(
    tmp_path: Path,
) -> None:
    """A home router seldom sends back what its inside sends to its public address, so
    two nodes behind it never meet there: each tells its neighbours where it is on its
    home network, they pass that on, and a node on the same network dials it there. An
    address on another household's network, or one said too often, is not taken."""
    world = Mesh(tmp_path)
    world.core.neighbours.dialling = True
    home = [ipaddress.IPv4Interface("192.168.7.2/24")]
    world.core.neighbours.set_subnets([], internet=True, home=home)
    assert world.core.neighbours.home_endpoints == ()  # until our sessions listen
    world.core.neighbours.session_port = 6697
    assert world.core.neighbours.home_endpoints == (("192.168.7.2", 6697),)
    told = [
        session.decode(e.data)
        for e in world.verified()
        if isinstance(e, fx.Send) and e.node_id == world.peer.node_id
    ]
    own = session.Endpoints((session.Endpoint(world.me.node_id, "192.168.7.2", 6697),))
    assert own in told  # where we are, to the newcomer
    beside, elsewhere = fresh_ids(2, start=9000)
    world.receive(
        session.Endpoints(
            (
                session.Endpoint(beside, "192.168.7.3", 6697),
                session.Endpoint(elsewhere, "192.168.8.3", 6697),
            )
        ),
        now=2.0,
    )
    world.core.tick(2.0)
    assert {d.node_id for d in dials(world.core.drain())} == {beside}
    # The neighbour says where it is at home: held (two at most) and passed on.
    peer = world.core.peers[world.peer.node_id]
    for host in ("192.168.9.2", "192.168.9.3", "192.168.9.4", "127.0.0.1"):
        world.receive(session.Endpoints((session.Endpoint(peer.node_id, host, 6697),)), 3.0)
    assert peer.home == (("192.168.9.2", 6697), ("192.168.9.3", 6697))
    assert peer.refusals["endpoint_addresses_full"] == 1
    assert peer.refusals["endpoint_unshareable"] == 1
    assert world.core.neighbours.reached(peer) == "internet"
    world.core.neighbours.set_subnets([], True, [ipaddress.IPv4Interface("100.64.0.9/24")])
    assert world.core.neighbours.reached(peer) == "home_network"  # its session is on it


def test_a_link_behind_a_nat_that_shifts_ports_tries_the_shifted_port_in_turn(
    tmp_path: Path,
) -> None:
    """Its session comes from port 6697 and it says it listens on 5697 at home: its NAT
    shifts ports by 1000, maybe its link's too. Until the link first carries packets, its
    port is tried as it says and shifted, in turn; ten turns at most; once up, it stays."""
    world = Mesh(tmp_path)
    world.verified()
    world.receive(session.Link(51820))
    world.receive(session.Endpoints((session.Endpoint(world.peer.node_id, "192.168.9.2", 5697),)))

    def ports(now: float) -> list[int]:
        world.core.tick(now)
        return [e.spec.endpoint[1] for e in world.core.drain() if isinstance(e, fx.EnsureLink)]

    assert ports(2.0) == []  # the first turn starts
    assert ports(5.0) == [52820]
    assert ports(6.0) == []
    assert ports(8.0) == [51820]
    turns = [ports(8.0 + 3 * k) for k in range(1, 12)]
    assert turns[:8] == [[52820], [51820]] * 4 and turns[8:] == [[], [], []], turns
    # A link that came up keeps its port; a new session starts the turns again.
    world.verified()
    world.receive(session.Link(51820))
    world.receive(session.Endpoints((session.Endpoint(world.peer.node_id, "192.168.9.2", 5697),)))
    world.core.neighbours.wireguard_state(world.peer.node_id, True, 50.0)
    assert ports(50.0) == [] and ports(60.0) == []


def test_internet_addresses_are_the_public_ones() -> None:
    from meshd.core.addressing import internet_address

    for public in ("198.51.100.12", "8.8.8.8", "2001:db8::1", "2a01:4f8::1"):
        assert internet_address(public), public
    for other in ("10.1.2.3", "100.64.0.1", "192.168.1.2", "172.20.0.1", "127.0.0.1",
                  "169.254.1.1", "224.0.0.1", "fd00::1", "fe80::1", "::1", "nope"):  # fmt: skip
        assert not internet_address(other), other


def test_a_neighbour_says_how_its_session_reaches_it(tmp_path: Path) -> None:
    """segment (our subnets), bootstrap (the config's address), punched (an internet
    address a neighbour shared), internet (any other: it dialled us); nothing without a
    session."""
    world = Mesh(tmp_path)
    world.verified()  # its session comes from ADDR, 100.64.0.2:6697
    neighbours = world.core.neighbours
    peer = world.core.peers[world.peer.node_id]
    assert neighbours.reached(peer) == "internet"
    neighbours.set_subnets([ipaddress.IPv4Network("100.64.0.0/24")])
    assert neighbours.reached(peer) == "segment"
    neighbours.set_subnets([ipaddress.IPv4Network("100.127.0.0/24")], internet=True)
    peer.addresses[ADDR].source = Source.BOOTSTRAP
    assert neighbours.reached(peer) == "bootstrap"
    peer.addresses[ADDR].source = Source.SHARED
    assert neighbours.reached(peer) == "punched"
    world.core.session_closed(world.peer.node_id, ADDR, "idle_timeout", False, True, 2.0)
    assert neighbours.reached(peer) is None
