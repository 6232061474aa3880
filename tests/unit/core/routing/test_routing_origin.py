"""Route origin validation: only mesh host routes, only from the router-id their certificate
names (meshd.core.routing.origin), and the Babel core storing nothing it refuses."""

from __future__ import annotations

import ipaddress

import pytest

from meshd.core.routing.babel import BabelParams, BabelRouter, RefusedUpdate
from meshd.core.routing.origin import OriginPolicy, OriginRefusal, Owner
from tests.unit.core.routing.test_routing_babel import update

V4 = ipaddress.ip_network("10.77.0.0/16")
V6 = ipaddress.ip_network("fd77::/64")
ME = bytes.fromhex("00000000000000aa")
B_RID, C_RID = bytes.fromhex("00000000000000bb"), bytes.fromhex("00000000000000cc")
B = Owner("b", B_RID, (ipaddress.ip_address("10.77.0.2"), ipaddress.ip_address("fd77::2")))
C = Owner("c", C_RID, (ipaddress.ip_address("10.77.0.3"), ipaddress.ip_address("fd77::3")))
B4, B6 = ipaddress.ip_network("10.77.0.2/32"), ipaddress.ip_network("fd77::2/128")
C4, C6 = ipaddress.ip_network("10.77.0.3/32"), ipaddress.ip_network("fd77::3/128")


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


@pytest.fixture
def policy() -> OriginPolicy:
    policy = OriginPolicy(V4, V6)
    policy.learn(B)
    policy.learn(C)
    return policy


@pytest.mark.parametrize(
    ("prefix", "router_id", "reason"),
    [
        ("0.0.0.0/0", B_RID, OriginRefusal.PREFIX_NOT_HOST),
        ("0.0.0.0/1", B_RID, OriginRefusal.PREFIX_NOT_HOST),
        ("128.0.0.0/1", B_RID, OriginRefusal.PREFIX_NOT_HOST),
        ("10.77.0.0/24", B_RID, OriginRefusal.PREFIX_NOT_HOST),  # inside the mesh, not a host
        ("::/0", B_RID, OriginRefusal.PREFIX_NOT_HOST),
        ("::/1", B_RID, OriginRefusal.PREFIX_NOT_HOST),
        ("192.168.1.10/32", B_RID, OriginRefusal.PREFIX_OUTSIDE_MESH),  # a LAN host
        ("172.31.0.2/32", B_RID, OriginRefusal.PREFIX_OUTSIDE_MESH),  # an underlay address
        ("2001:db8::1/128", B_RID, OriginRefusal.PREFIX_OUTSIDE_MESH),
        ("10.77.0.3/32", B_RID, OriginRefusal.WRONG_ORIGIN),  # c's, under b's router-id
        ("fd77::3/128", B_RID, OriginRefusal.WRONG_ORIGIN),
        ("10.77.0.99/32", B_RID, OriginRefusal.NOT_ITS_ADDRESS),  # nobody's, under b's
        ("fd77::99/128", B_RID, OriginRefusal.NOT_ITS_ADDRESS),
        ("10.77.0.3/32", bytes(8), OriginRefusal.WRONG_ORIGIN),  # c's, under a stranger's
    ],
)
def test_refused(policy: OriginPolicy, prefix: str, router_id: bytes, reason: str) -> None:
    assert policy.refusal(net(prefix), router_id) is reason


def test_owners_pass_and_unknown_ones_are_held_until_the_directory_knows_them(
    policy: OriginPolicy,
) -> None:
    for prefix, router_id in [(B4, B_RID), (B6, B_RID), (C4, C_RID), (C6, C_RID)]:
        assert policy.refusal(prefix, router_id) is None
    assert policy.refusal(net("10.77.0.99/32"), bytes(8)) is OriginRefusal.UNKNOWN_ORIGIN
    # A node that still takes meshd/1's unsigned routes (no directory there) lets them pass.
    legacy = OriginPolicy(V4, V6, accept_unsigned=True)
    assert legacy.refusal(net("10.77.0.99/32"), bytes(8)) is None


def test_forget_and_a_renewed_certificate_replace_what_was_known(policy: OriginPolicy) -> None:
    policy.forget("c")
    assert policy.refusal(C4, B_RID) is OriginRefusal.NOT_ITS_ADDRESS  # still not b's
    assert policy.refusal(C4, bytes(8)) is OriginRefusal.UNKNOWN_ORIGIN
    moved = Owner("b", B_RID, (ipaddress.ip_address("10.77.0.9"),))
    policy.learn(moved)
    assert policy.refusal(B4, B_RID) is OriginRefusal.NOT_ITS_ADDRESS
    assert policy.refusal(net("10.77.0.9/32"), B_RID) is None
    policy.forget("nobody")  # nothing to forget: nothing happens


def test_a_certificate_outside_the_mesh_prefixes_is_our_own_misuse() -> None:
    with pytest.raises(ValueError, match="outside"):
        OriginPolicy(V4, V6).learn(Owner("x", B_RID, (ipaddress.ip_address("192.168.0.1"),)))


def _router(policy: OriginPolicy) -> BabelRouter:
    router = BabelRouter(ME, 1, 0.0, BabelParams())
    router.check_origins(policy.refusal)
    router.link_up("b", 96, 0.0)
    router.drain_outgoing()
    return router


def test_the_router_stores_nothing_the_policy_refuses(policy: OriginPolicy) -> None:
    router = _router(policy)
    attacks = [net("0.0.0.0/1"), net("128.0.0.0/1"), net("::/1"), net("192.168.1.10/32"), C4, C6]
    for prefix in attacks:
        router.receive("b", update(prefix, 5, 0, router_id=B_RID), 1.0)
    router.receive("b", update(B4, 5, 0, router_id=B_RID), 1.0)
    assert set(router.selected()) == {B4}
    assert [c.prefix for c in router.drain_route_changes()] == [B4]
    refused = router.drain_refused()
    assert [(r.neighbour, r.prefix) for r in refused] == [("b", p) for p in attacks]
    assert {r.reason for r in refused} == {"prefix_not_host", "prefix_outside_mesh", "wrong_origin"}
    assert router.drain_refused() == []
    # Retractions of what was refused are no offence and change nothing.
    router.receive("b", update(net("0.0.0.0/1"), 6, 0xFFFF, router_id=B_RID), 2.0)
    assert router.drain_refused() == [] and router.drain_route_changes() == []
    # Nothing refused is passed on to other neighbours either.
    router.link_up("d", 96, 3.0)
    router.tick(3.0)
    sent_prefixes = {
        tlv.prefix
        for _, packet in router.drain_outgoing()
        for tlv in packet
        if hasattr(tlv, "seqno")
    }
    assert sent_prefixes <= {B4}


def test_revalidate_drops_a_route_learned_before_its_owner_was_known() -> None:
    policy = OriginPolicy(V4, V6, accept_unsigned=True)  # unknown origins pass: meshd/1
    policy.learn(B)
    router = _router(policy)
    router.receive("b", update(C4, 5, 0, router_id=bytes(8)), 1.0)  # an unknown origin for c's
    assert C4 in router.selected()
    router.drain_route_changes()
    policy.learn(C)  # c's certificate arrives: the route was never c's
    router.revalidate(2.0)
    assert C4 not in router.selected()
    assert [(c.prefix, c.action.value) for c in router.drain_route_changes()] == [(C4, "remove")]
    assert router.drain_refused() == [RefusedUpdate("b", C4, bytes(8), "wrong_origin")]


# --- limits: a neighbour beyond its share is refused, the rest keep being served ---------


def _hosts(first: int, count: int) -> list[ipaddress.IPv4Network]:
    return [net(f"10.77.1.{i}/32") for i in range(first, first + count)]


def test_routes_beyond_the_limits_are_refused_and_the_others_served() -> None:
    router = BabelRouter(ME, 1, 0.0, BabelParams(max_routes_per_neighbour=3, max_routes=5))
    for neighbour in ("b", "d"):
        router.link_up(neighbour, 96, 0.0)
    for i, prefix in enumerate(_hosts(1, 5)):  # a flood from b, each under its own router-id
        router.receive("b", update(prefix, 1, 0, router_id=bytes([1, i]) * 4), 1.0)
    assert set(router.selected()) == set(_hosts(1, 3))
    assert [r.reason for r in router.drain_refused()] == ["route_limit"] * 2
    for i, prefix in enumerate(_hosts(20, 3)):  # d's routes fit in what is left in all
        router.receive("d", update(prefix, 1, 0, router_id=bytes([2, i]) * 4), 1.0)
    assert set(router.selected()) == set(_hosts(1, 3)) | set(_hosts(20, 2))
    assert [(r.neighbour, r.reason) for r in router.drain_refused()] == [("d", "route_limit")]
    # An update of a route already kept is no new entry: it is always taken.
    router.receive("b", update(_hosts(1, 1)[0], 2, 0, router_id=bytes([1, 0]) * 4), 2.0)
    assert router.drain_refused() == []
    router.link_down("b", 3.0)  # b's entries go: room for d's again
    router.receive("d", update(_hosts(22, 1)[0], 1, 0, router_id=bytes([2, 2]) * 4), 4.0)
    assert set(router.selected()) == set(_hosts(20, 3))
    assert router.drain_refused() == []


def test_limits_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="max_routes"):
        BabelParams(max_routes_per_neighbour=10, max_routes=5)
