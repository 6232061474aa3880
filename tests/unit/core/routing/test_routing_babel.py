"""Unit tests of the Babel route-selection rules (RFC 8966 section 3), one router at a time."""

from __future__ import annotations

import ipaddress

import pytest

from meshd.core.proto.babel import (
    AE_IPV4,
    AE_WILDCARD,
    METRIC_INFINITY,
    TLV,
    DecodedTLV,
    RouteRequest,
    RouterId,
    SeqnoRequest,
    Update,
    decode_packet_detail,
    encode_packet,
)
from meshd.core.routing.babel import (
    BabelParams,
    BabelRouter,
    RouteAction,
    RouteChange,
    with_parser_state,
)
from meshd.core.routing.babel_tables import IPNetwork, Source, add_metric

PARAMS = BabelParams()
ME = bytes(8)
ORIGIN = bytes.fromhex("00000000000000aa")
OTHER = bytes.fromhex("00000000000000bb")
P = ipaddress.ip_network("10.7.0.9/32")
Q = ipaddress.ip_network("fd00:7::9/128")
OWN = ipaddress.ip_network("10.7.0.1/32")


def rid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def update(
    prefix: IPNetwork, seqno: int, metric: int, router_id: bytes = ORIGIN, interval: int = 800
) -> list[DecodedTLV]:
    ae = AE_IPV4 if prefix.version == 4 else 2
    tlv = Update(ae=ae, prefix=prefix, interval=interval, seqno=seqno, metric=metric)
    return with_parser_state([RouterId(router_id=router_id), tlv])


def sent(router: BabelRouter) -> list[tuple[str, TLV, bytes | None]]:
    """(neighbour, TLV, router-id in force) for every TLV drained, Router-Ids left out."""
    out: list[tuple[str, TLV, bytes | None]] = []
    for neighbour, packet in router.drain_outgoing():
        for decoded in decode_packet_detail(encode_packet(packet)).tlvs:
            if not isinstance(decoded.tlv, RouterId):
                out.append((neighbour, decoded.tlv, decoded.state.router_id))
    return out


def updates_for(router: BabelRouter, prefix: IPNetwork) -> dict[str, Update]:
    found: dict[str, Update] = {}
    for neighbour, tlv, _ in sent(router):
        if isinstance(tlv, Update) and tlv.prefix == prefix:
            assert neighbour not in found, "one update per prefix per drain"
            found[neighbour] = tlv
    return found


def router_with(*links: tuple[str, int], now: float = 0.0) -> BabelRouter:
    router = BabelRouter(ME, 100, now, PARAMS)
    router.announce(OWN)
    for neighbour, cost in links:
        router.link_up(neighbour, cost, now)
    router.drain_outgoing()
    return router


# --- feasibility (RFC 8966 3.5.1) and metrics (3.5.2) ------------------------------------


@pytest.mark.parametrize(
    ("seqno", "metric", "feasible"),
    [
        (11, 500, True),  # newer seqno, whatever the metric
        (10, 99, True),  # same seqno, strictly smaller metric
        (10, 100, False),  # same seqno, equal metric
        (10, 101, False),
        (9, 1, False),  # older seqno
    ],
)
def test_feasibility_condition(seqno: int, metric: int, feasible: bool) -> None:
    assert Source(seqno=10, metric=100, last_used=0).is_feasible(seqno, metric) is feasible


def test_feasibility_wraps_around_seqno_space() -> None:
    source = Source(seqno=0xFFFF, metric=100, last_used=0)
    assert source.is_feasible(0, 1000)  # 0 is newer than 65535 (RFC 8966 3.2.1)
    assert not source.is_feasible(0x7FFF, 1)  # half the space away: older


def test_advertising_lowers_the_feasibility_distance_only() -> None:
    source = Source(seqno=10, metric=100, last_used=0)
    source.advertised(10, 300, 1.0)
    assert (source.seqno, source.metric) == (10, 100)
    source.advertised(10, 50, 2.0)
    assert (source.seqno, source.metric) == (10, 50)
    source.advertised(11, 400, 3.0)
    assert (source.seqno, source.metric) == (11, 400)


def test_metric_is_additive_and_capped_at_infinity() -> None:
    assert add_metric(100, 96) == 196
    assert add_metric(65000, 1000) == METRIC_INFINITY
    assert add_metric(METRIC_INFINITY, 1) == METRIC_INFINITY
    assert add_metric(0, METRIC_INFINITY) == METRIC_INFINITY
    router = router_with(("a", 96))
    router.receive("a", update(P, 1, 100), 1.0)
    assert router.selected()[P].metric == 196


# --- selection (3.6) ---------------------------------------------------------------------


def test_selects_the_best_route_and_installs_it() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 1, 300), 1.0)
    assert router.drain_route_changes() == [RouteChange(P, RouteAction.INSTALL, "a", 396)]
    router.receive("b", update(P, 1, 100), 1.0)
    assert router.drain_route_changes() == [RouteChange(P, RouteAction.REPLACE, "b", 196)]
    assert router.selected()[P].next_hop == "b"


def test_hysteresis_keeps_the_route_unless_clearly_better() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 1, 100), 1.0)
    router.receive("b", update(P, 1, 100 - PARAMS.switch_margin), 1.0)
    assert router.selected()[P].next_hop == "a"  # better, but not by more than the margin
    router.receive("b", update(P, 1, 99 - PARAMS.switch_margin), 2.0)
    assert router.selected()[P].next_hop == "b"


def test_unfeasible_route_is_never_selected() -> None:
    router = router_with(("a", 96), ("b", 96), ("c", 96))
    router.receive("a", update(P, 5, 100), 1.0)
    router.drain_outgoing()  # advertised: feasibility distance (5, 196)
    assert [c.action for c in router.drain_route_changes()] == [RouteAction.INSTALL]
    router.receive("b", update(P, 5, 196), 1.0)  # equal to the distance: unfeasible
    router.link_down("a", 2.0)
    assert P not in router.selected()
    assert [r.feasible for r in router.routes() if r.prefix == P] == [False]
    assert [c.action for c in router.drain_route_changes()] == [RouteAction.REMOVE]


def test_infinite_link_cost_makes_routes_unusable() -> None:
    router = router_with(("a", METRIC_INFINITY))
    router.receive("a", update(P, 1, 10), 1.0)
    assert P not in router.selected()
    router.link_cost("a", 96, 2.0)
    assert router.selected()[P].metric == 106


def test_cost_change_reselects() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 1, 100), 1.0)
    router.receive("b", update(P, 1, 150), 1.0)
    router.drain_route_changes()
    router.link_cost("a", 1000, 2.0)
    assert router.drain_route_changes() == [RouteChange(P, RouteAction.REPLACE, "b", 246)]


def test_own_router_id_and_own_prefix_are_never_learned() -> None:
    router = router_with(("a", 96))
    router.receive("a", update(P, 1, 10, router_id=ME), 1.0)
    router.receive("a", update(OWN, 1, 10), 1.0)
    assert router.drain_route_changes() == []
    assert router.selected()[OWN].next_hop is None


def test_update_without_router_id_is_ignored() -> None:
    router = router_with(("a", 96))
    tlv = Update(ae=AE_IPV4, prefix=P, interval=800, seqno=1, metric=10)
    router.receive("a", with_parser_state([tlv]), 1.0)
    assert router.routes() == []


# --- triggered updates (3.7.2), split horizon (3.7.4) ------------------------------------


def test_new_route_is_announced_to_all_but_its_next_hop() -> None:
    router = router_with(("a", 96), ("b", 96), ("c", 96))
    router.receive("a", update(P, 3, 100), 1.0)
    sent_updates = updates_for(router, P)
    assert set(sent_updates) == {"b", "c"}  # split horizon: never back to "a"
    assert sent_updates["b"].metric == 196 and sent_updates["b"].seqno == 3


def test_small_metric_changes_wait_for_the_periodic_update() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 3, 100), 1.0)
    router.drain_outgoing()
    router.link_cost("a", 96 + PARAMS.metric_change_threshold - 1, 2.0)  # worse, trivially
    assert updates_for(router, P) == {}
    router.link_cost("a", 96 + PARAMS.metric_change_threshold, 3.0)
    assert updates_for(router, P)["b"].metric == 196 + PARAMS.metric_change_threshold
    # Better by less than improvement_threshold: kept for the periodic update.
    router.link_cost("a", 96 + PARAMS.metric_change_threshold - 300, 4.0)
    assert updates_for(router, P) == {}
    router.tick(1.0 + PARAMS.update_interval_s)
    assert updates_for(router, P)["b"].metric == 196 + PARAMS.metric_change_threshold - 300


def test_route_changes_are_net_since_the_last_drain() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 5, 100), 1.0)
    router.link_down("a", 1.5)  # installed and removed before anyone asked: nothing
    router.receive("b", update(Q, 5, 100), 1.6)
    assert router.drain_route_changes() == [RouteChange(Q, RouteAction.INSTALL, "b", 196)]
    router.link_up("a", 96, 2.0)
    router.receive("a", update(Q, 6, 10), 2.0)  # a newer seqno, better by far: via a
    router.receive("a", update(Q, 6, 0xFFFF), 2.1)  # retracted: back to b
    router.receive("b", update(Q, 6, 100), 2.2)
    assert router.drain_route_changes() == []  # where it began
    router.receive("a", update(Q, 7, 10), 3.0)
    assert router.drain_route_changes() == [RouteChange(Q, RouteAction.REPLACE, "a", 106)]


def test_the_old_next_hop_hears_the_route_it_was_kept_from() -> None:
    router = router_with(("a", 96), ("b", 96), ("c", 96))
    router.receive("a", update(P, 3, 300), 1.0)
    assert set(updates_for(router, P)) == {"b", "c"}  # split horizon: not to a
    router.receive("b", update(P, 3, 100), 2.0)  # better by 200: switch to b
    assert router.selected()[P].next_hop == "b"
    sent_updates = updates_for(router, P)
    assert set(sent_updates) == {"a"} and sent_updates["a"].metric == 196


def test_large_improvement_is_sent_at_once() -> None:
    router = router_with(("a", 2000), ("b", 96))
    router.receive("a", update(P, 3, 100), 1.0)
    router.drain_outgoing()
    router.link_cost("a", 2000 - PARAMS.improvement_threshold, 2.0)
    assert updates_for(router, P)["b"].metric == 2100 - PARAMS.improvement_threshold


def test_new_source_is_sent_twice() -> None:
    router = router_with(("a", 96), ("b", 96), ("c", 96))
    router.receive("a", update(P, 3, 500), 1.0)
    router.drain_outgoing()
    router.receive("b", update(P, 9, 10, router_id=OTHER), 2.0)  # another source, better
    first = updates_for(router, P)
    assert set(first) == {"a", "c"} and first["a"].seqno == 9
    router.tick(2.0 + PARAMS.triggered_resend_s)
    assert updates_for(router, P) == first  # the second send


def test_seqno_change_is_sent_once() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 3, 100), 1.0)
    router.drain_outgoing()
    router.receive("a", update(P, 4, 100), 2.0)
    assert updates_for(router, P)["b"].seqno == 4
    router.tick(2.0 + PARAMS.triggered_resend_s)
    assert updates_for(router, P) == {}


def test_periodic_full_update() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 3, 100), 1.0)
    router.tick(PARAMS.triggered_resend_s)  # the second send of our own announcement
    router.drain_outgoing()
    assert router.next_deadline() == PARAMS.update_interval_s
    router.tick(PARAMS.update_interval_s)
    prefixes = {(n, t.prefix) for n, t, _ in sent(router) if isinstance(t, Update)}
    assert prefixes == {("a", OWN), ("b", OWN), ("b", P)}


# --- retractions and expiry (3.5.3, 3.5.4) -----------------------------------------------


def test_retraction_removes_route_and_is_propagated_twice() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 3, 100), 1.0)
    router.drain_outgoing()
    router.drain_route_changes()
    router.receive("a", update(P, 3, METRIC_INFINITY), 2.0)
    assert router.drain_route_changes() == [RouteChange(P, RouteAction.REMOVE, "a", 196)]
    retractions = updates_for(router, P)
    assert set(retractions) == {"a", "b"} and all(u.retraction for u in retractions.values())
    router.tick(2.0 + PARAMS.triggered_resend_s)
    assert set(updates_for(router, P)) == {"a", "b"}
    router.tick(10.0)
    assert P not in updates_for(router, P)  # not forever
    # The retracted route stays (RFC 8966 3.5.4) until it expires.
    [info] = [r for r in router.routes() if r.prefix == P]
    assert info.metric == METRIC_INFINITY
    router.tick(1.0 + PARAMS.route_expiry_s)
    assert [r for r in router.routes() if r.prefix == P] == []


def test_wildcard_retraction() -> None:
    router = router_with(("a", 96))
    router.receive("a", update(P, 3, 100) + update(Q, 3, 100), 1.0)
    retract_all = Update(ae=AE_WILDCARD, prefix=None, interval=800, seqno=0, metric=0xFFFF)
    router.receive("a", with_parser_state([retract_all]), 2.0)
    assert set(router.selected()) == {OWN}


def test_route_expires_without_refresh() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 3, 100, interval=400), 1.0)  # the sender's interval: 4 s
    router.drain_outgoing()
    router.drain_route_changes()
    router.tick(1.0 + 3.5 * 4 - 0.01)
    assert P in router.selected()
    router.tick(1.0 + 3.5 * 4)
    assert P not in router.selected()
    assert router.drain_route_changes()[0].action is RouteAction.REMOVE
    assert updates_for(router, P)["b"].retraction
    router.tick(1.0 + 3.5 * 4 + PARAMS.route_expiry_s)
    assert router.routes() == []


def test_withdraw_sends_retraction_twice() -> None:
    router = router_with(("a", 96))
    router.withdraw(OWN)
    assert updates_for(router, OWN)["a"].retraction
    router.tick(PARAMS.triggered_resend_s)
    assert updates_for(router, OWN)["a"].retraction
    with pytest.raises(ValueError):
        router.withdraw(OWN)


# --- link up / down ----------------------------------------------------------------------


def test_link_up_asks_for_a_full_table_and_sends_ours() -> None:
    router = BabelRouter(ME, 100, 0.0, PARAMS)
    router.announce(OWN)
    router.link_up("a", 96, 0.0)
    out = sent(router)
    assert any(isinstance(t, RouteRequest) and t.ae == AE_WILDCARD for _, t, _ in out)
    [(_, own_update, router_id)] = [x for x in out if isinstance(x[1], Update)]
    assert isinstance(own_update, Update)
    assert (own_update.prefix, own_update.seqno, own_update.metric) == (OWN, 100, 0)
    assert router_id == ME


def test_route_requests_are_answered() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 3, 100), 1.0)
    router.drain_outgoing()
    router.receive("b", with_parser_state([RouteRequest(ae=AE_WILDCARD, prefix=None)]), 2.0)
    assert {t.prefix for _, t, _ in sent(router) if isinstance(t, Update)} == {OWN, P}
    unknown = ipaddress.ip_network("10.9.9.9/32")
    router.receive("b", with_parser_state([RouteRequest(ae=AE_IPV4, prefix=unknown)]), 2.0)
    assert updates_for(router, unknown)["b"].retraction  # RFC 8966 3.8.1.1


def test_link_down_drops_its_routes_at_once() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 3, 100), 1.0)
    router.receive("b", update(P, 3, 150), 1.0)
    router.receive("a", update(Q, 3, 100), 1.0)
    router.drain_outgoing()
    router.drain_route_changes()
    router.link_down("a", 2.0)
    assert sorted(router.drain_route_changes(), key=lambda c: c.prefix.version) == [
        RouteChange(P, RouteAction.REPLACE, "b", 246),
        RouteChange(Q, RouteAction.REMOVE, "a", 196),
    ]
    assert all(r.neighbour == "b" for r in router.routes())
    assert updates_for(router, Q)["b"].retraction
    router.receive("a", update(P, 4, 1), 2.5)  # late packet of a dead link
    assert router.selected()[P].next_hop == "b"


def test_misuse_raises() -> None:
    with pytest.raises(ValueError):
        BabelRouter(b"short", 0, 0.0)
    with pytest.raises(ValueError):
        BabelRouter(ME, 70000, 0.0)
    router = router_with(("a", 96))
    with pytest.raises(ValueError):
        router.link_up("a", 96, 1.0)
    with pytest.raises(ValueError):
        router.link_down("zz", 1.0)
    with pytest.raises(ValueError):
        router.link_cost("zz", 1, 1.0)
    with pytest.raises(ValueError):
        router.link_cost("a", -1, 1.0)
    with pytest.raises(ValueError):
        BabelParams(source_gc_s=10.0)


# --- seqno requests (3.8) ----------------------------------------------------------------


def seqno_request(
    prefix: IPNetwork, seqno: int, router_id: bytes, hops: int = 127
) -> list[DecodedTLV]:
    ae = AE_IPV4 if prefix.version == 4 else 2
    tlv = SeqnoRequest(ae=ae, prefix=prefix, seqno=seqno, hop_count=hops, router_id=router_id)
    return with_parser_state([tlv])


def requests(router: BabelRouter) -> list[tuple[str, SeqnoRequest]]:
    return [(n, t) for n, t, _ in sent(router) if isinstance(t, SeqnoRequest)]


def test_lost_route_with_unfeasible_alternative_asks_for_a_new_seqno() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 5, 100), 1.0)
    router.drain_outgoing()  # feasibility distance (5, 196)
    router.receive("b", update(P, 5, 300), 1.0)
    router.link_down("a", 2.0)
    [(to, request)] = requests(router)
    assert to == "b"
    assert (request.prefix, request.seqno, request.hop_count) == (P, 6, 127)
    assert request.router_id == ORIGIN
    # Duplicates are suppressed (3.8.2.3): another unfeasible update does not ask again.
    router.receive("b", update(P, 5, 290), 2.1)
    assert requests(router) == []
    # Resent with doubling delays until answered.
    router.tick(2.0 + PARAMS.request_resend_s)
    assert [t.seqno for _, t in requests(router)] == [6]
    router.tick(2.0 + PARAMS.request_resend_s * 2)
    assert requests(router) == []  # the second resend waits twice as long
    router.tick(2.0 + PARAMS.request_resend_s * 3)
    assert len(requests(router)) == 1
    # The answer (seqno 6) is feasible; the request is satisfied and not resent again.
    router.receive("b", update(P, 6, 300), 6.0)
    assert router.selected()[P].next_hop == "b"
    router.tick(100.0)
    assert requests(router) == []


def test_request_resends_stop() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 5, 100), 1.0)
    router.drain_outgoing()
    router.receive("b", update(P, 5, 300), 1.0)
    router.link_down("a", 2.0)
    count = len(requests(router))
    now = 2.0
    for _ in range(40):
        now += PARAMS.request_resend_s
        router.tick(now)
        count += len(requests(router))
    assert count == 1 + PARAMS.request_resends


def test_request_for_own_prefix_with_newer_seqno_bumps_ours() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", seqno_request(OWN, 500, ME), 1.0)
    assert router.seqno == 500
    updates = updates_for(router, OWN)
    assert set(updates) == {"a", "b"} and updates["a"].seqno == 500


def test_a_flood_of_requests_for_our_seqno_raises_it_once_a_second() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", seqno_request(OWN, 101, ME), 1.0)
    assert router.seqno == 101  # at once: the first in a second
    raises = [router.seqno]
    for k in range(1, 400):  # 200 requests a second, each asking one more, for 2 s
        now = 1.0 + k / 200
        router.tick(now)
        router.receive("a", seqno_request(OWN, 101 + k, ME), now)
        if router.seqno != raises[-1]:
            raises.append(router.seqno)
    assert router.next_deadline() == 3.0  # the highest asked for waits for its second
    router.tick(3.0)
    raises.append(router.seqno)
    # At 1.0 s, at 2.0 s (the highest asked for until then), at 3.0 s (the last one asked).
    assert raises == [101, 300, 500]
    assert updates_for(router, OWN)["b"].seqno == 500


def test_request_for_own_prefix_with_older_seqno_only_answers() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", seqno_request(OWN, 90, ME), 1.0)
    assert router.seqno == 100
    assert set(updates_for(router, OWN)) == {"a"}


def test_seqno_survives_restart_through_the_constructor() -> None:
    router = BabelRouter(ME, 0xFFFF, 0.0)
    router.announce(OWN)
    router.link_up("a", 96, 0.0)
    router.drain_outgoing()
    router.receive("a", seqno_request(OWN, 3, ME), 1.0)  # 3 is newer than 65535
    assert router.seqno == 3
    restarted = BabelRouter(ME, router.seqno, 2.0)
    assert restarted.seqno == 3


def test_request_is_answered_when_we_have_the_seqno() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 7, 100), 1.0)
    router.drain_outgoing()
    router.receive("b", seqno_request(P, 7, ORIGIN), 1.0)
    assert updates_for(router, P)["b"].seqno == 7


def test_request_is_forwarded_toward_the_source_once() -> None:
    router = router_with(("a", 96), ("b", 96), ("c", 96))
    router.receive("a", update(P, 7, 100), 1.0)
    router.drain_outgoing()
    router.receive("b", seqno_request(P, 8, ORIGIN, hops=10), 1.0)
    [(to, forwarded)] = requests(router)
    assert to == "a" and forwarded.hop_count == 9 and forwarded.seqno == 8
    router.receive("c", seqno_request(P, 8, ORIGIN, hops=10), 1.1)
    assert requests(router) == []  # duplicate
    router.receive("c", seqno_request(P, 9, ORIGIN, hops=1), 1.1)
    assert requests(router) == []  # hop count exhausted
    # The answer reaches the requester as a triggered update.
    router.receive("a", update(P, 8, 100), 1.2)
    assert updates_for(router, P)["b"].seqno == 8


def test_request_without_route_is_ignored() -> None:
    router = router_with(("a", 96))
    router.receive("a", seqno_request(P, 8, ORIGIN), 1.0)
    assert sent(router) == []


# --- sources and timers ------------------------------------------------------------------


@pytest.mark.parametrize(("after", "selected"), [(-1.0, False), (1.0, True)])
def test_sources_are_collected(after: float, selected: bool) -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 5, 100), 1.0)
    router.drain_outgoing()  # advertised at 1.0: feasibility distance (5, 196)
    router.link_down("a", 2.0)
    now = 1.0 + PARAMS.source_gc_s + after
    assert router.next_deadline() is not None
    router.tick(now)
    router.receive("b", update(P, 5, 300), now)  # unfeasible while the source is known
    assert (P in router.selected()) is selected


def test_next_deadline_is_the_earliest_timer() -> None:
    router = BabelRouter(ME, 1, 0.0, PARAMS)
    assert router.next_deadline() is None
    router.link_up("a", 96, 0.0)
    assert router.next_deadline() == PARAMS.update_interval_s
    router.receive("a", update(P, 5, 100, interval=100), 0.5)
    router.drain_outgoing()
    assert router.next_deadline() == 0.5 + 2.0  # refresh request: two updates missed
    router.tick(2.5)
    assert [(n, t) for n, t, _ in sent(router)] == [("a", RouteRequest(ae=AE_IPV4, prefix=P))]
    assert router.next_deadline() == 0.5 + 3.5  # route expiry from the 1 s interval


def test_refreshed_route_is_not_requested() -> None:
    router = router_with(("a", 96))
    router.receive("a", update(P, 5, 100, interval=100), 1.0)
    router.receive("a", update(P, 5, 100, interval=100), 2.0)
    router.tick(3.5)
    assert not any(isinstance(t, RouteRequest) for _, t, _ in sent(router))
    router.tick(4.0)
    assert [t for _, t, _ in sent(router) if isinstance(t, RouteRequest)] == [
        RouteRequest(ae=AE_IPV4, prefix=P)
    ]


def test_packets_are_bounded_and_carry_their_router_id() -> None:
    router = router_with(("a", 96), ("b", 96))
    for i in range(60):
        prefix = ipaddress.ip_network(f"10.8.{i}.1/32")
        router.receive("a", update(prefix, 1, 10, router_id=rid(1000 + i)), 1.0)
    packets = [p for n, p in router.drain_outgoing() if n == "b"]
    assert len(packets) > 1
    total = 0
    for packet in packets:
        assert len(packet) <= PARAMS.max_tlvs_per_packet
        for decoded in decode_packet_detail(encode_packet(packet)).tlvs:
            if isinstance(decoded.tlv, Update):
                total += 1
                assert decoded.tlv.prefix is not None
                i = int(str(decoded.tlv.prefix).split(".")[2])
                assert decoded.state.router_id == rid(1000 + i)
    assert total == 60


def test_prefixes_of_one_source_share_a_router_id_tlv() -> None:
    router = router_with(("a", 96), ("b", 96))
    router.receive("a", update(P, 1, 10) + update(Q, 1, 10, router_id=OTHER), 1.0)
    router.receive("a", update(ipaddress.ip_network("10.7.0.10/32"), 1, 10), 1.0)
    router.drain_outgoing()
    router.tick(PARAMS.update_interval_s)
    [packet] = [p for n, p in router.drain_outgoing() if n == "b"]
    router_ids = [t.router_id for t in packet if isinstance(t, RouterId)]
    assert sorted(router_ids) == sorted([ME, ORIGIN, OTHER])  # 4 updates, 3 sources
