"""Black-hole detection (meshd.core.routing.progress) and the Babel core keeping a suspected
next hop out of a destination's routes (BabelRouter.penalize)."""

from __future__ import annotations

import ipaddress

import pytest

from meshd.core.routing.babel import BabelParams, BabelRouter
from meshd.core.routing.progress import TCP, FlowSample, ProgressParams, ProgressWatch
from tests.unit.core.routing.test_routing_babel import update

UDP = 17

E = ipaddress.ip_address("10.77.0.5")
E32 = ipaddress.ip_network("10.77.0.5/32")
F = ipaddress.ip_address("10.77.0.6")
HOPS = {E32: "c", ipaddress.ip_network("10.77.0.6/32"): "b"}


def flow(
    sent: int, answered: int, flow_id: int = 1, protocol: int = TCP, to: object = E
) -> FlowSample:
    return FlowSample(flow_id, protocol, to, sent, answered)  # type: ignore[arg-type]


def test_a_flow_that_keeps_sending_unanswered_suspects_its_next_hop() -> None:
    watch = ProgressWatch()
    assert watch.observe([flow(10, 10)], HOPS, 0.0) == []  # answered so far
    assert watch.observe([flow(12, 10)], HOPS, 1.0) == []  # stalled from here
    assert watch.observe([flow(13, 10)], HOPS, 2.0) == []  # not long enough
    (s,) = watch.observe([flow(15, 10)], HOPS, 3.0)
    assert (s.destination, s.next_hop, s.since, s.unanswered, s.penalty_s) == (
        E32,
        "c",
        1.0,
        5,
        60.0,
    )
    assert watch.observe([flow(16, 10)], HOPS, 3.5) == []  # once a stall: it starts over
    # The next route gets settle_s before it is suspected in turn.
    hops = {E32: "b"}
    for t, sent in ((4.0, 17), (5.0, 20), (7.0, 25), (12.0, 30)):
        assert watch.observe([flow(sent, 10)], hops, t) == []
    (s,) = watch.observe([flow(35, 10)], hops, 14.0)
    assert s.next_hop == "b"


def test_an_answer_clears_it_and_so_does_another_flow_making_progress() -> None:
    watch = ProgressWatch()
    watch.observe([flow(1, 1)], HOPS, 0.0)
    watch.observe([flow(5, 1)], HOPS, 1.0)
    assert watch.observe([flow(9, 2)], HOPS, 4.0) == []  # answered at last
    watch.observe([flow(12, 2), flow(1, 1, flow_id=2)], HOPS, 5.0)
    # flow 1 stalls, but flow 2 to the same destination is answered meanwhile
    assert watch.observe([flow(20, 2), flow(3, 3, flow_id=2)], HOPS, 8.0) == []


def test_a_tcp_connection_that_cannot_open_counts_though_its_syns_are_not_counted() -> None:
    watch = ProgressWatch()
    watch.observe([flow(1, 0)], HOPS, 0.0)  # a SYN (the kernel counts no retransmitted one)
    assert watch.observe([flow(1, 0)], HOPS, 1.0) == []
    (s,) = watch.observe([flow(1, 0)], HOPS, 2.0)
    assert s.unanswered == 1 and s.since == 0.0
    # A ping answered through the same next hop is no progress: a relay may pass probes.
    watch = ProgressWatch()
    watch.observe([FlowSample(2, 1, E, 1, 1), flow(1, 0)], HOPS, 0.0)
    assert len(watch.observe([FlowSample(2, 1, E, 3, 3), flow(1, 0)], HOPS, 2.0)) == 1
    # Nor is a TCP flow's answer in the same reading as another's stall began.
    watch = ProgressWatch()
    watch.observe([flow(5, 5, flow_id=3)], HOPS, 0.0)
    watch.observe([flow(6, 6, flow_id=3), flow(1, 0)], HOPS, 1.0)
    assert len(watch.observe([flow(6, 6, flow_id=3), flow(1, 0)], HOPS, 3.0)) == 1
    # An established flow that goes quiet is not stalled: it sends nothing unanswered.
    watch = ProgressWatch()
    for t in range(5):
        assert watch.observe([flow(9, 9)], HOPS, float(t)) == []


def test_udp_is_not_watched_and_nothing_without_a_route_is() -> None:
    watch = ProgressWatch()
    for t, sent in enumerate((5, 50, 500, 5000)):  # a one-way stream: never answered
        assert watch.observe([flow(sent, 0, protocol=UDP)], HOPS, float(t)) == []
    watch = ProgressWatch()
    for t, sent in enumerate((5, 6, 7, 8, 9)):  # an exit tunnel's unanswered keepalives
        assert watch.observe([flow(sent, 5, protocol=UDP)], HOPS, 5.0 * t) == []
    watch = ProgressWatch()
    for t, sent in enumerate((1, 2, 3, 4, 5)):
        assert watch.observe([flow(sent, 0)], {}, float(t)) == []  # not routed by the mesh


def test_penalties_double_for_the_same_next_hop_and_start_over_later() -> None:
    watch = ProgressWatch(ProgressParams(penalty_s=10, max_penalty_s=25, forget_s=100))
    penalties = []
    t = 0.0
    for _ in range(4):
        watch.observe([flow(1, 1, flow_id=int(t) + 1)], HOPS, t)
        watch.observe([flow(5, 1, flow_id=int(t) + 1)], HOPS, t + 1)
        (s,) = watch.observe([flow(9, 1, flow_id=int(t) + 1)], HOPS, t + 4)
        penalties.append(s.penalty_s)
        t += 10
    assert penalties == [10, 20, 25, 25]
    t += 200
    watch.observe([flow(1, 1, flow_id=99)], HOPS, t)
    watch.observe([flow(5, 1, flow_id=99)], HOPS, t + 1)
    (s,) = watch.observe([flow(9, 1, flow_id=99)], HOPS, t + 4)
    assert s.penalty_s == 10


def test_params_are_checked() -> None:
    with pytest.raises(ValueError):
        ProgressParams(stall_s=0)
    with pytest.raises(ValueError):
        ProgressParams(min_packets=0)


# --- BabelRouter.penalize ------------------------------------------------------------------


def _router() -> BabelRouter:
    router = BabelRouter(bytes(8), 1, 0.0, BabelParams())
    router.link_up("b", 96, 0.0)
    router.link_up("c", 96, 0.0)
    router.drain_outgoing()
    return router


def test_a_penalized_next_hop_is_left_until_the_penalty_ends() -> None:
    router = _router()
    router.receive("c", update(E32, 5, 0), 1.0)  # c claims to be next to e
    router.receive("b", update(E32, 5, 96), 1.0)
    assert router.selected()[E32].next_hop == "c"
    router.drain_route_changes()
    assert router.penalize(E32, "c", 61.0, 2.0)
    assert router.selected()[E32].next_hop == "b"
    assert [(c.action.value, c.next_hop) for c in router.drain_route_changes()] == [
        ("replace", "b")
    ]
    assert router.penalties() == [(E32, "c", 61.0)]
    for t in (20.0, 40.0):  # both keep announcing it
        router.receive("c", update(E32, 5, 0), t)
        router.receive("b", update(E32, 5, 96), t)
        router.tick(t + 5)
        assert router.selected()[E32].next_hop == "b"
    router.receive("c", update(E32, 5, 0), 60.0)
    router.receive("b", update(E32, 5, 96), 60.0)
    router.tick(61.0)
    assert router.penalties() == [] and router.selected()[E32].next_hop == "c"


def test_no_penalty_without_another_route_and_a_lone_unfeasible_one_asks_for_a_seqno() -> None:
    router = _router()
    router.receive("c", update(E32, 5, 0), 1.0)
    assert not router.penalize(E32, "c", 61.0, 2.0)  # nowhere else to go: nothing done
    assert router.selected()[E32].next_hop == "c"
    router.receive("b", update(E32, 5, 200), 3.0)
    router.drain_outgoing()
    router.tick(3.0)
    router.drain_outgoing()  # c's route was advertised at metric 96: b's (296) is unfeasible
    assert router.penalize(E32, "c", 61.0, 4.0)
    assert E32 not in router.selected()
    sent = router.drain_outgoing()
    requests = [
        tlv
        for n, packet in sent
        if n == "b"
        for tlv in packet
        if type(tlv).__name__ == "SeqnoRequest"
    ]
    assert requests and requests[0].seqno == 6  # e is asked, through b, for a newer seqno
    router.receive("b", update(E32, 6, 200), 4.5)
    assert router.selected()[E32].next_hop == "b"
    assert not router.penalize(E32, "b", 61.0, 5.0)  # c is kept out already: b stays
    assert router.selected()[E32].next_hop == "b"
    router.link_down("c", 5.0)
    assert router.penalties() == []
