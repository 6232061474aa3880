"""The discovery core (meshd.core.discovery.beacons): several nodes wired together in memory on
simulated LAN segments, a simulated clock, no sockets."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from meshd.core.discovery import (
    BeaconScheduler,
    BeaconSettings,
    BeaconState,
    Discovered,
    DiscoveryReason,
    Rejected,
)
from meshd.core.proto.beacon import BeaconReason, make_beacon, parse_beacon

MESH_ID = bytes.fromhex("a2e8efa88f9a2fc610601fc30b9f0e1d")
WALL0 = 1_767_225_600.0  # wall clock at simulated time 0
EPS = 1e-9
ETH0 = ipaddress.IPv4Network("192.0.2.0/24")  # the segment every test node is on
WLAN0 = ipaddress.IPv4Network("198.51.100.0/24")


def key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


def state(n: int, *, seed: int | None = None, **kwargs: Any) -> BeaconState:
    return BeaconState(
        mesh_id=MESH_ID,
        signing_key=key(n),
        quic_port=6000 + n,
        random=random.Random(n if seed is None else seed).random,
        settings=BeaconSettings(**kwargs),
    )


@dataclass
class Node:
    name: str
    state: BeaconState
    ip: str
    ifname: str = "eth0"
    sent: list[tuple[float, bool]] = field(default_factory=list)  # (time, solicit)
    events: list[tuple[float, Discovered | Rejected]] = field(default_factory=list)

    def discovered(self) -> dict[str, tuple[float, Discovered]]:
        """node id -> (when first discovered, the event)."""
        out: dict[str, tuple[float, Discovered]] = {}
        for t, event in self.events:
            if isinstance(event, Discovered):
                out.setdefault(event.node_id, (t, event))
        return out

    def rejects(self) -> list[Rejected]:
        return [e for _, e in self.events if isinstance(e, Rejected)]


class Segment:
    """One broadcast LAN: every beacon reaches every node on it (itself included, as a
    real broadcast loops back), unless ``loss`` drops it."""

    def __init__(self, loss: float = 0.0, seed: int = 0) -> None:
        self.nodes: list[Node] = []
        self.now = 0.0
        self.loss = loss
        self._rng = random.Random(seed)

    def add(self, n: int, **kwargs: Any) -> Node:
        node = Node(f"n{n}", state(n, **kwargs), ip=f"192.0.2.{n}")
        node.state.set_interfaces({node.ifname: ETH0}, self.now)
        self.nodes.append(node)
        return node

    def remove(self, node: Node) -> None:
        self.nodes.remove(node)

    def run_until(self, end: float) -> None:
        while True:
            timers = [t for n in self.nodes if (t := n.state.get_timer()) is not None]
            if not timers:
                break
            at = min(timers)
            if at > end:
                break
            self.now = max(self.now, at)
            for node in list(self.nodes):
                for ifname, data in node.state.beacons_to_send(self.now, WALL0 + self.now):
                    node.sent.append((self.now, parse_beacon(data).solicit))
                    self.broadcast(node, ifname, data)
        self.now = max(self.now, end)

    def broadcast(self, sender: Node, ifname: str, data: bytes) -> None:
        for node in list(self.nodes):
            if node is not sender and self._rng.random() < self.loss:
                continue
            event = node.state.receive(data, sender.ip, node.ifname, self.now, WALL0 + self.now)
            node.events.append((self.now, event))


# -- the schedule ----------------------------------------------------------------------


def test_a_lone_node_bursts_then_beacons_every_interval_with_jitter() -> None:
    seg = Segment()
    node = seg.add(1)
    seg.run_until(300)
    times = [t for t, _ in node.sent]
    assert times[:3] == [0.0, 1.0, 2.0]
    assert [solicit for _, solicit in node.sent[:3]] == [True, True, True]
    assert not any(solicit for _, solicit in node.sent[3:])
    gaps = [b - a for a, b in zip(times[2:], times[3:], strict=False)]
    assert len(gaps) >= 9
    assert all(22.5 - EPS <= gap <= 30.0 + EPS for gap in gaps)
    assert len(set(gaps)) > 1  # jitter
    # and its own beacons, looped back, are rejected quietly
    assert {e.reason for e in node.rejects()} == {DiscoveryReason.OWN_BEACON}
    assert all(e.quiet for e in node.rejects())


def test_jitter_comes_from_the_injected_random_value() -> None:
    for value, gap in ((0.0, 30.0), (0.5, 26.25), (0.999, 30.0 * (1 - 0.25 * 0.999))):
        sched = BeaconScheduler(BeaconSettings(), lambda v=value: v)  # type: ignore[misc]
        sched.set_interfaces(["eth0"], 0.0)
        for t in (0.0, 1.0, 2.0):
            assert sched.get_timer() == t
            assert sched.due(t) == [("eth0", True)]
        assert sched.get_timer() == pytest.approx(2.0 + gap)
        assert sched.due(2.0 + gap - 0.001) == []


def test_no_interfaces_no_timer_and_interfaces_come_and_go() -> None:
    sched = BeaconScheduler(BeaconSettings(), lambda: 0.0)
    assert sched.get_timer() is None and sched.due(100.0) == []
    sched.set_interfaces(["eth0", "wlan0"], 10.0)
    assert sched.due(10.0) == [("eth0", True), ("wlan0", True)]
    sched.set_interfaces(["wlan0"], 10.5)
    assert sched.interfaces == {"wlan0"}
    assert sched.due(11.0) == [("wlan0", True)]
    sched.set_interfaces(["wlan0", "eth0"], 11.5)  # back: a burst of its own
    assert sched.due(11.5) == [("eth0", True)]
    assert sched.due(12.0) == [("wlan0", True)]


def test_a_prompt_beacon_is_delayed_at_random_and_rate_limited() -> None:
    sched = BeaconScheduler(BeaconSettings(burst_offsets_s=(0.0,)), lambda: 0.5)
    sched.set_interfaces(["eth0"], 0.0)
    assert sched.due(0.0) == [("eth0", True)]
    sched.trigger("eth0", 0.2)  # 1 s after the last send at the soonest
    assert sched.get_timer() == 1.0
    sched.trigger("eth0", 0.3)
    assert sched.get_timer() == 1.0
    assert sched.due(1.0) == [("eth0", False)]
    assert sched.get_timer() == pytest.approx(1.0 + 30 * (1 - 0.25 * 0.5))  # periodic
    sched.trigger("eth0", 20.0)  # long after: only the random delay, 0.5 * 0.2 s
    assert sched.get_timer() == pytest.approx(20.1)
    sched.trigger("nope", 20.0)  # an interface we do not beacon on: nothing
    assert sched.due(20.1) == [("eth0", False)]
    sched.trigger("eth0", 20.5)  # nothing sooner than the periodic one would come
    assert sched.get_timer() == pytest.approx(20.1 + 1.0)


def test_settings_refuse_nonsense() -> None:
    for bad in (
        {"interval_s": 0},
        {"jitter": 1.0},
        {"burst_offsets_s": (2.0, 1.0)},
        {"max_skew_s": 0},
        {"max_peers": 0},
    ):
        with pytest.raises(ValueError):
            BeaconSettings(**bad)


# -- discovery between nodes -----------------------------------------------------------


def test_nodes_started_together_find_each_other_at_once() -> None:
    seg = Segment()
    a, b, c = seg.add(1), seg.add(2), seg.add(3)
    seg.run_until(5)
    for node in (a, b, c):
        found = node.discovered()
        others = {o.state.node_id for o in (a, b, c) if o is not node}
        assert set(found) == others
        for other in (a, b, c):
            if other is not node:
                when, event = found[other.state.node_id]
                assert when == 0.0
                assert event.address == (other.ip, other.state.quic_port)
                assert event.ifname == "eth0" and event.new


def test_a_newcomer_is_found_within_a_second_although_beacons_are_rare() -> None:
    seg = Segment()
    a, b = seg.add(1), seg.add(2)
    seg.run_until(100.3)
    sent_before = len(a.sent) + len(b.sent)
    c = seg.add(3)
    seg.run_until(102.9)
    found = c.discovered()
    assert set(found) == {a.state.node_id, b.state.node_id}
    assert all(when <= 100.3 + 0.25 for when, _ in found.values())  # a prompt answer
    assert a.discovered()[c.state.node_id][0] == 100.3
    # each old node answered each of C's three soliciting burst beacons, once, no more
    answers = [(t, s) for t, s in a.sent + b.sent if t > 100.0]
    assert len(answers) == len(a.sent) + len(b.sent) - sent_before == 6
    assert not any(solicit for _, solicit in answers)


def test_a_restarted_node_is_answered_at_once_because_it_solicits() -> None:
    seg = Segment()
    a, b = seg.add(1), seg.add(2)
    seg.run_until(200)
    seg.remove(b)
    b2 = seg.add(2)  # same key: A still holds it, not new to A
    seg.run_until(203)
    first = [e for _, e in a.events if isinstance(e, Discovered) and e.node_id == b2.state.node_id]
    assert first[0].new and not first[-1].new and first[-1].solicit
    when, _ = b2.discovered()[a.state.node_id]
    assert when <= 200.25


def test_a_node_at_a_new_address_is_reported_as_changed() -> None:
    seg = Segment()
    a, b = seg.add(1), seg.add(2)
    seg.run_until(5)
    b.ip = "192.0.2.99"
    seg.run_until(40)
    last = [e for _, e in a.events if isinstance(e, Discovered)][-1]
    assert last.address == ("192.0.2.99", 6002) and last.address_changed and not last.new


def test_a_node_silent_past_forget_after_is_new_again() -> None:
    seg = Segment()
    a, b = seg.add(1), seg.add(2)
    seg.run_until(5)
    seg.remove(b)
    seg.run_until(200)
    seg.nodes.append(b)  # B back, without restarting (its burst is long over)
    seg.run_until(240)
    events = [(t, e) for t, e in a.events if isinstance(e, Discovered)]
    assert events[0][1].new
    after = [e.new for t, e in events if t >= 200]
    assert after[0] and not any(after[1:]) and len(after) >= 2


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.floats(0.0, 0.3), st.integers(0, 2**32))
def test_with_loss_everyone_finds_everyone_within_a_few_intervals(
    count: int, loss: float, seed: int
) -> None:
    seg = Segment(loss=loss, seed=seed)
    nodes = [seg.add(n, seed=seed + n) for n in range(1, count + 1)]
    seg.run_until(200)
    for node in nodes:
        assert len(node.discovered()) == count - 1
        assert all(isinstance(e, Discovered) or e.quiet for _, e in node.events)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 500.0), max_size=200), st.integers(0, 2**32))
def test_sends_are_never_closer_than_the_gap_nor_farther_than_the_interval(
    triggers: list[float], seed: int
) -> None:
    sched = BeaconScheduler(BeaconSettings(), random.Random(seed).random)
    sched.set_interfaces(["eth0"], 0.0)
    sends: list[float] = []
    for t in sorted(triggers) + [600.0]:
        while (at := sched.get_timer()) is not None and at <= t:
            sends += [at for _ in sched.due(at)]
        sched.trigger("eth0", t)
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    assert all(1.0 - EPS <= gap <= 30.0 + EPS for gap in gaps)
    assert len(sends) <= 3 + 600  # at most one per second


# -- what is rejected ------------------------------------------------------------------


def beacon_from(
    n: int, timestamp_s: float, mesh_id: bytes = MESH_ID, solicit: bool = False
) -> bytes:
    return make_beacon(
        key(n),
        mesh_id=mesh_id,
        quic_port=6000 + n,
        timestamp_ms=int((WALL0 + timestamp_s) * 1000),
        solicit=solicit,
    ).encode()


def receive(st_: BeaconState, data: bytes, now: float = 0.0) -> Discovered | Rejected:
    return st_.receive(data, "192.0.2.7", "eth0", now, WALL0 + now)


def test_rejects_with_reasons() -> None:
    me = state(1)
    me.set_interfaces({"eth0": ETH0}, 0.0)
    garbage = receive(me, b"garbage")
    assert isinstance(garbage, Rejected) and garbage.reason is BeaconReason.BAD_MAGIC
    assert receive(me, beacon_from(1, 0)) == Rejected(DiscoveryReason.OWN_BEACON)
    other_mesh = receive(me, beacon_from(2, 0, mesh_id=bytes(16)))
    assert isinstance(other_mesh, Rejected) and other_mesh.reason == "other_mesh"
    for skew in (-601, 601):
        stale = receive(me, beacon_from(2, skew))
        assert isinstance(stale, Rejected) and stale.reason is DiscoveryReason.STALE
    good = beacon_from(2, 0)
    assert isinstance(receive(me, good), Discovered)
    replay = receive(me, good, now=1.0)
    assert isinstance(replay, Rejected) and replay.reason is DiscoveryReason.REPLAY
    older = receive(me, beacon_from(2, -1), now=1.0)
    assert isinstance(older, Rejected) and older.reason is DiscoveryReason.REPLAY
    tampered = bytearray(beacon_from(2, 5))
    tampered[55] ^= 1  # the QUIC port
    bad = receive(me, bytes(tampered), now=5.0)
    assert isinstance(bad, Rejected) and bad.reason is BeaconReason.BAD_SIGNATURE
    assert not bad.quiet and "bad_signature" not in bad.detail and bad.detail


def test_a_forged_beacon_changes_nothing() -> None:
    me = state(1)
    me.set_interfaces({"eth0": ETH0}, 0.0)
    forged = bytearray(beacon_from(2, 100))
    forged[-1] ^= 1
    assert isinstance(receive(me, bytes(forged)), Rejected)
    assert me.known() == []
    # had the forged timestamp been recorded, this older genuine one would be a replay
    found = receive(me, beacon_from(2, 50))
    assert isinstance(found, Discovered) and found.new
    assert me.get_timer() == 0.0  # burst, unchanged by the rejects


def test_skew_check_can_be_turned_off_for_nodes_without_a_clock() -> None:
    me = state(1, max_skew_s=None)
    me.set_interfaces({"eth0": ETH0}, 0.0)
    assert isinstance(receive(me, beacon_from(2, -86400 * 365)), Discovered)


def test_only_beacons_from_inside_the_interfaces_subnet_are_read() -> None:
    """A beacon's source address is not signed and we dial where it says: one from
    beyond the segment (or its network or broadcast address) is refused before it is
    even parsed, and counted by reason."""
    me = state(1)
    me.set_interfaces({"eth0": ETH0, "wlan0": WLAN0}, 0.0)
    data = beacon_from(2, 0)
    for source, ifname in [
        ("203.0.113.9", "eth0"),  # the internet
        ("198.51.100.2", "eth0"),  # wlan0's segment, heard on eth0
        ("192.0.2.0", "eth0"),  # network address
        ("192.0.2.255", "eth0"),  # broadcast address
        ("192.0.2.2", "lan0"),  # an interface we do not beacon on
        ("fe80::2", "eth0"),
        ("not an address", "eth0"),
    ]:
        event = me.receive(data, source, ifname, 0.0, WALL0)
        assert event == Rejected(DiscoveryReason.OFF_SUBNET, f"{source} on {ifname}")
    assert me.known() == []
    assert me.refusals == {"off_subnet": 7}
    assert isinstance(me.receive(b"junk", "192.0.2.2", "eth0", 0.0, WALL0), Rejected)
    assert me.refusals == {"off_subnet": 7, "bad_magic": 1}
    found = me.receive(data, "192.0.2.2", "eth0", 0.0, WALL0)
    assert isinstance(found, Discovered) and found.address == ("192.0.2.2", 6002)
    me.receive(beacon_from(1, 1), "192.0.2.1", "eth0", 0.0, WALL0)  # our own: not counted
    assert me.refusals == {"off_subnet": 7, "bad_magic": 1}


def test_both_ends_of_a_point_to_point_slash_31_are_hosts() -> None:
    """RFC 3021: a /31 has no network or broadcast address; its other end beacons too."""
    import ipaddress

    me = state(1)
    me.set_interfaces({"p2p0": ipaddress.IPv4Network("10.9.0.0/31")}, 0.0)
    assert me.in_subnet("10.9.0.0", "p2p0") and me.in_subnet("10.9.0.1", "p2p0")
    assert not me.in_subnet("10.9.0.2", "p2p0")


def test_one_beacon_heard_on_two_interfaces_counts_on_both() -> None:
    me = state(1)
    me.set_interfaces({"eth0": ETH0, "wlan0": WLAN0}, 0.0)
    data = beacon_from(2, 0)
    first = me.receive(data, "192.0.2.2", "eth0", 0.0, WALL0)
    second = me.receive(data, "198.51.100.2", "wlan0", 0.0, WALL0)
    assert isinstance(first, Discovered) and isinstance(second, Discovered)
    assert second.new and second.address == ("198.51.100.2", 6002)
    me.set_interfaces({"eth0": ETH0}, 1.0)  # what was heard on wlan0 is forgotten
    assert [(d.node_id, d.ifname) for d in me.known()] == [(first.node_id, "eth0")]


def test_peer_table_is_bounded_and_evicts_the_least_recently_heard() -> None:
    me = state(1, max_peers=4)
    me.set_interfaces({"eth0": ETH0}, 0.0)
    for n in range(2, 8):
        assert isinstance(receive(me, beacon_from(n, n), now=n), Discovered)
    assert [d.address[1] for d in me.known()] == [6004, 6005, 6006, 6007]
    again = receive(me, beacon_from(2, 10), now=10)
    assert isinstance(again, Discovered) and again.new  # evicted, so new again
    assert len(me.known()) == 4


def test_own_timestamps_only_go_up_even_when_the_clock_steps_back() -> None:
    me = state(1)
    first = parse_beacon(me.beacon(WALL0 + 10)).timestamp_ms
    second = parse_beacon(me.beacon(WALL0)).timestamp_ms
    assert second == first + 1


@given(st.binary(max_size=200), st.text(max_size=20), st.floats(allow_nan=False))
def test_receive_never_raises(data: bytes, source: str, now: float) -> None:
    me = state(1)
    me.set_interfaces({"eth0": ETH0}, 0.0)
    event = me.receive(data, source, "eth0", now, WALL0)
    assert isinstance(event, Rejected)


@given(st.integers(0, 127), st.integers(1, 255), st.floats(-1000, 1000))
def test_receive_of_a_mutated_beacon_never_raises_nor_discovers(
    index: int, mask: int, now: float
) -> None:
    me = state(1, max_skew_s=None)
    me.set_interfaces({"eth0": ETH0}, 0.0)
    data = bytearray(beacon_from(2, 0))
    data[index] ^= mask
    event = me.receive(bytes(data), "192.0.2.2", "eth0", now, WALL0 + now)
    assert isinstance(event, Rejected) and not event.quiet


# -- which interfaces beacon (the adapter's pure helper) -------------------------------

IP_ADDR = [  # trimmed `ip -j addr` output
    {
        "ifindex": 1,
        "ifname": "lo",
        "flags": ["LOOPBACK", "UP", "LOWER_UP"],
        "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}],
    },
    {
        "ifindex": 2,
        "ifname": "eth0",
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "addr_info": [
            {"family": "inet6", "local": "fe80::1", "prefixlen": 64},
            {
                "family": "inet",
                "local": "192.168.1.20",
                "prefixlen": 24,
                "broadcast": "192.168.1.255",
            },
            {"family": "inet", "local": "10.0.0.20", "prefixlen": 24, "broadcast": "10.0.0.255"},
        ],
    },
    {
        "ifindex": 3,
        "ifname": "wlan0",
        "flags": ["NO-CARRIER", "BROADCAST", "UP"],
        "addr_info": [
            {
                "family": "inet",
                "local": "192.168.2.2",
                "prefixlen": 24,
                "broadcast": "192.168.2.255",
            }
        ],
    },
    {
        "ifindex": 4,
        "ifname": "eth1",
        "flags": ["BROADCAST"],
        "addr_info": [
            {
                "family": "inet",
                "local": "192.168.3.2",
                "prefixlen": 24,
                "broadcast": "192.168.3.255",
            }
        ],
    },
    {
        "ifindex": 5,
        "ifname": "mw3",
        "flags": ["POINTOPOINT", "NOARP", "UP", "LOWER_UP"],
        "addr_info": [{"family": "inet", "local": "10.77.0.5", "prefixlen": 32}],
    },
    {
        "ifindex": 6,
        "ifname": "mwlan",
        "flags": ["BROADCAST", "UP", "LOWER_UP"],
        "addr_info": [
            {"family": "inet", "local": "10.9.0.1", "prefixlen": 24, "broadcast": "10.9.0.255"}
        ],
    },
    {
        "ifindex": 7,
        "ifname": "br-lan",
        "flags": ["BROADCAST", "UP", "LOWER_UP"],
        "addr_info": [
            {
                "family": "inet",
                "local": "192.168.50.1",
                "prefixlen": 24,
                "broadcast": "192.168.50.255",
            }
        ],
    },
    {
        "ifindex": 8,
        "ifname": "eth2",
        "flags": ["BROADCAST", "UP", "LOWER_UP"],
        "addr_info": [{"family": "inet6", "local": "2001:db8::2", "prefixlen": 64}],
    },
    {
        "ifindex": 9,
        "ifname": "usb0",
        "flags": ["BROADCAST", "UP", "LOWER_UP"],
        "addr_info": [{"family": "inet", "local": "172.16.0.9", "prefixlen": 31}],
    },
    {
        "ifindex": 10,
        "ifname": "eth3",
        "flags": ["BROADCAST", "UP", "LOWER_UP"],
        "addr_info": [
            {"family": "inet", "local": "10.1.1.1", "prefixlen": 24, "broadcast": "not-an-ip"}
        ],
    },
]


def test_candidate_interfaces_from_ip_addr() -> None:
    from meshd.adapters.beacon_socket import Underlay, candidate_interfaces

    picked = candidate_interfaces(IP_ADDR, wireguard_prefix="mw", exclude={"br-lan"})
    assert picked == [Underlay("eth0", "192.168.1.255", "192.168.1.20", ifindex=2, prefixlen=24)]
    assert picked[0].subnet == ipaddress.IPv4Network("192.168.1.0/24")
    everything = candidate_interfaces(IP_ADDR, wireguard_prefix="")
    assert [u.ifname for u in everything] == ["eth0", "mwlan", "br-lan"]
    assert candidate_interfaces([{"ifname": 5}, {}, {"flags": "UP"}], wireguard_prefix="mw") == []


def test_candidate_interfaces_without_brd_get_their_subnets_broadcast() -> None:
    from meshd.adapters.beacon_socket import candidate_interfaces

    def link(ifname: str, local: str, plen: int) -> dict[str, object]:
        return {
            "ifindex": 2,
            "ifname": ifname,
            "flags": ["BROADCAST", "UP", "LOWER_UP"],
            "addr_info": [{"family": "inet", "local": local, "prefixlen": plen}],
        }

    picked = candidate_interfaces(
        [link("s0", "100.127.0.1", 24), link("p2p", "100.64.0.1", 31)], wireguard_prefix="mw"
    )
    assert [(u.ifname, u.broadcast) for u in picked] == [("s0", "100.127.0.255")]
