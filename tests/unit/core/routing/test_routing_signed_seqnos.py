"""Origin-signed seqnos (meshd.core.routing.origin; issue 19): the originator signs (router-id,
prefix, seqno, time), relays pass the signature on, and no relay can make a newer seqno for
someone else's router-id count. Also the updates held while their owner is unknown."""

from __future__ import annotations

import ipaddress

import pytest
from nacl.signing import SigningKey

from meshd.core.control.routes import forged
from meshd.core.proto.babel import (
    TLV,
    OriginSignature,
    RouteRequest,
    RouterId,
    SeqnoRequest,
    Update,
    decode_packet_detail,
    encode_packet,
)
from meshd.core.routing.babel import BabelParams, BabelRouter, RefusedUpdate
from meshd.core.routing.babel_tables import IPNetwork
from meshd.core.routing.origin import (
    MAX_AGE_S,
    MAX_AHEAD_S,
    RESIGN_AFTER_S,
    OriginPolicy,
    OriginRefusal,
    OriginSigner,
    Owner,
    signed_message,
)

V4 = ipaddress.ip_network("10.77.0.0/16")
V6 = ipaddress.ip_network("fd77::/64")
T0 = 1_800_000_000.0
KEYS = {name: SigningKey(bytes([i + 1]) * 32) for i, name in enumerate("abcx")}
RID = {name: bytes([0, 0, 0, 0, 0, 0, 0, i + 1]) for i, name in enumerate("abcx")}
ADDR = {name: ipaddress.ip_network(f"10.77.0.{i + 1}/32") for i, name in enumerate("abcx")}


def owner(name: str) -> Owner:
    address = ADDR[name].network_address
    return Owner(name, RID[name], (address,), KEYS[name].verify_key.encode())


def policy(*names: str, accept_unsigned: bool = False) -> OriginPolicy:
    p = OriginPolicy(V4, V6, accept_unsigned=accept_unsigned)
    for name in names:
        p.learn(owner(name))
    return p


def sign(
    name: str, seqno: int, time: float = T0, prefix: IPNetwork | None = None
) -> OriginSignature:
    return OriginSigner(KEYS[name], RID[name]).proof(prefix or ADDR[name], seqno, time)


# --- the signature and its checks ---------------------------------------------------------


def test_the_signed_message_is_the_documented_layout() -> None:
    message = signed_message(RID["c"], ADDR["c"], 0x1234, 0x5678ABCD)
    assert message == (
        b"meshd origin v1\x00" + RID["c"] + bytes((4, 32, 10, 77, 0, 3)) + bytes.fromhex("1234")
        + bytes.fromhex("5678abcd")
    )  # fmt: skip
    v6 = signed_message(RID["c"], ipaddress.ip_network("fd77::3/128"), 1, 2)
    assert v6[24:26] == bytes((6, 128)) and len(v6) == 16 + 8 + 2 + 16 + 2 + 4


def test_the_signer_signs_once_per_seqno_and_again_when_old() -> None:
    signer = OriginSigner(KEYS["c"], RID["c"])
    first = signer.proof(ADDR["c"], 7, T0)
    assert signer.proof(ADDR["c"], 7, T0 + 60) is first  # a periodic update: no new signature
    assert signer.signed == 1
    newer = signer.proof(ADDR["c"], 8, T0 + 61)
    assert newer != first and newer.time == int(T0 + 61)
    later = signer.proof(ADDR["c"], 8, T0 + 61 + RESIGN_AFTER_S)
    assert later.time == int(T0 + 61 + RESIGN_AFTER_S) and signer.signed == 3
    # A clock corrected backwards by hours (a Pi that booted in the future) signs again too.
    assert signer.proof(ADDR["c"], 8, T0 - RESIGN_AFTER_S).time == int(T0 - RESIGN_AFTER_S)


def test_a_valid_signature_is_verified_once_and_passed_on() -> None:
    p = policy("a", "c")
    proof = sign("c", 5)
    assert p.seqno_refusal(ADDR["c"], RID["c"], 5, proof, T0) is None
    assert p.seqno_refusal(ADDR["c"], RID["c"], 5, proof, T0 + 1) is None
    assert p.verified == 1
    assert p.proof(ADDR["c"], RID["c"], 5) == proof
    assert p.proof(ADDR["c"], RID["c"], 6) is None


@pytest.mark.parametrize(
    ("seqno", "proof", "reason"),
    [
        (6, sign("c", 5), OriginRefusal.BAD_SIGNATURE),  # a relay's newer seqno, c's signature
        (5, sign("x", 5, prefix=ADDR["c"]), OriginRefusal.BAD_SIGNATURE),  # signed by another
        (5, sign("c", 5, prefix=ADDR["a"]), OriginRefusal.BAD_SIGNATURE),  # another prefix's
        (5, sign("c", 5, time=T0 - MAX_AGE_S - 1), OriginRefusal.STALE_SIGNATURE),  # replayed
        (5, sign("c", 5, time=T0 + MAX_AHEAD_S + 1), OriginRefusal.STALE_SIGNATURE),
        (5, None, OriginRefusal.UNSIGNED),
    ],
)
def test_a_seqno_its_originator_did_not_sign_is_refused(
    seqno: int, proof: OriginSignature | None, reason: OriginRefusal
) -> None:
    assert policy("a", "c", "x").seqno_refusal(ADDR["c"], RID["c"], seqno, proof, T0) is reason


def test_unsigned_updates_pass_only_up_to_a_signed_seqno_or_from_the_originator() -> None:
    p = policy("c")
    assert p.seqno_refusal(ADDR["c"], RID["c"], 9, None, T0, from_originator=True) is None
    assert p.seqno_refusal(ADDR["c"], RID["c"], 9, sign("c", 9), T0) is None
    for older_or_same in (9, 8, 1):
        assert p.seqno_refusal(ADDR["c"], RID["c"], older_or_same, None, T0) is None
    assert p.seqno_refusal(ADDR["c"], RID["c"], 10, None, T0) is OriginRefusal.UNSIGNED
    # Relays still on an older seqno pass its proof on: the newest few are kept.
    for seqno in (10, 11):
        assert p.seqno_refusal(ADDR["c"], RID["c"], seqno, sign("c", seqno), T0) is None
    assert [p.proof(ADDR["c"], RID["c"], s) is not None for s in (8, 9, 10, 11)] == [
        False, True, True, True,
    ]  # fmt: skip
    # A newer signature of the same seqno (re-signed) replaces the older one.
    resigned = sign("c", 11, time=T0 + RESIGN_AFTER_S)
    assert p.seqno_refusal(ADDR["c"], RID["c"], 11, resigned, T0 + RESIGN_AFTER_S) is None
    assert p.proof(ADDR["c"], RID["c"], 11) == resigned
    p.forget("c")
    assert p.proof(ADDR["c"], RID["c"], 11) is None


def test_accepting_meshd1_routes_never_takes_an_unsigned_one_after_a_signed_one() -> None:
    p = policy("c", accept_unsigned=True)
    assert p.seqno_refusal(ADDR["c"], RID["c"], 3, None, T0) is None  # a meshd/1 originator
    assert p.seqno_refusal(ADDR["c"], RID["c"], 4, sign("c", 4), T0) is None
    # Once c is seen signing, a relay that strips its signature cannot pass a newer seqno.
    assert p.seqno_refusal(ADDR["c"], RID["c"], 5, None, T0) is OriginRefusal.UNSIGNED
    # An origin no certificate names cannot be checked: taken, as meshd/1 did.
    unknown = OriginPolicy(V4, V6, accept_unsigned=True)
    assert unknown.seqno_refusal(ADDR["c"], RID["c"], 5, sign("c", 5), T0) is None


# --- in the Babel core: a line a - b - c, every node signing -------------------------------


class Node:
    def __init__(self, name: str, knows: str, params: BabelParams | None = None) -> None:
        self.name = name
        self.now = T0
        self.policy = policy(*knows)
        self.signer = OriginSigner(KEYS[name], RID[name])
        self.router = BabelRouter(RID[name], 100, 0.0, params or BabelParams())
        self.router.check_origins(self.policy.refusal, self._seqnos, self._proof)
        self.router.announce(ADDR[name])

    def _seqnos(
        self,
        neighbour: str,
        prefix: IPNetwork,
        origin: bytes,
        seqno: int,
        proof: OriginSignature | None,
    ) -> str | None:
        direct = origin == RID[neighbour]
        return self.policy.seqno_refusal(
            prefix, origin, seqno, proof, self.now, from_originator=direct
        )

    def _proof(self, prefix: IPNetwork, origin: bytes, seqno: int) -> OriginSignature | None:
        if origin == RID[self.name]:
            return self.signer.proof(prefix, seqno, self.now)
        return self.policy.proof(prefix, origin, seqno)


def deliver(
    nodes: dict[str, Node], t: float, forge: int = 0, by: str = ""
) -> list[tuple[str, str, TLV]]:
    """One round: every node's output to its neighbours, through the codec. ``by`` adds
    ``forge`` to the seqno of every route it relays (a hostile member's wire)."""
    carried: list[tuple[str, str, TLV]] = []
    for name, node in nodes.items():
        for neighbour, tlvs in node.router.drain_outgoing():
            if name == by and forge:
                tlvs = forged(tlvs, RID[name], forge)
            decoded = decode_packet_detail(encode_packet(tlvs)).tlvs
            carried += [
                (name, neighbour, d.tlv) for d in decoded if not isinstance(d.tlv, RouterId)
            ]
            nodes[neighbour].router.receive(name, decoded, t)
    return carried


def line(knows: str = "abc", params: BabelParams | None = None) -> dict[str, Node]:
    nodes = {n: Node(n, knows, params) for n in "abc"}
    for x, y in (("a", "b"), ("b", "c")):
        nodes[x].router.link_up(y, 96, 0.0)
        nodes[y].router.link_up(x, 96, 0.0)
    return nodes


def settle(
    nodes: dict[str, Node], t: float = 1.0, rounds: int = 6, **kw: object
) -> list[tuple[str, str, TLV]]:
    carried: list[tuple[str, str, TLV]] = []
    for i in range(rounds):
        carried += deliver(nodes, t + i * 0.01, **kw)  # type: ignore[arg-type]
    return carried


def proofs_in(carried: list[tuple[str, str, TLV]], src: str, dst: str) -> list[OriginSignature]:
    return [
        s
        for f, to, tlv in carried
        if f == src and to == dst and isinstance(tlv, Update)
        for s in tlv.sub_tlvs
        if isinstance(s, OriginSignature)
    ]


def test_a_signed_route_crosses_a_relay_and_the_signature_is_sent_once() -> None:
    nodes = line()
    carried = settle(nodes)
    assert ADDR["c"] in nodes["a"].router.selected() and ADDR["a"] in nodes["c"].router.selected()
    assert (
        len(
            [
                p
                for p in proofs_in(carried, "b", "a")
                if p == nodes["c"].signer.proof(ADDR["c"], 100, T0)
            ]
        )
        == 1
    )
    for node in nodes.values():
        assert node.router.drain_refused() == []
    # A periodic update repeats the routes, not the signatures the neighbour has.
    t = 1.0 + BabelParams().update_interval_s
    for node in nodes.values():
        node.router.tick(t)
    carried = settle(nodes, t)
    assert any(isinstance(tlv, Update) for f, to, tlv in carried if (f, to) == ("b", "a"))
    assert proofs_in(carried, "b", "a") == []
    assert nodes["a"].signer.signed == 1 and nodes["a"].policy.verified == 2  # b's and c's


def test_a_relay_cannot_make_a_newer_seqno_for_someone_else() -> None:
    nodes = line()
    settle(nodes)
    before = nodes["a"].router.selected()[ADDR["c"]]
    wildcard = decode_packet_detail(encode_packet([RouteRequest(ae=0, prefix=None)])).tlvs
    nodes["b"].router.receive("a", wildcard, 3.0)  # b sends a its whole table again
    settle(nodes, 3.0, forge=1000, by="b")
    after = nodes["a"].router.selected()[ADDR["c"]]
    assert after.seqno == before.seqno == 100  # c's own, not b's invention
    # A wildcard request starts over: b's answer carries c's signature again, of the old
    # seqno: bad.
    refused = nodes["a"].router.drain_refused()
    assert {(r.neighbour, r.prefix, r.reason) for r in refused} == {
        ("b", ADDR["c"], "bad_signature")
    }


def test_a_relay_that_strips_the_signature_of_a_newer_seqno_is_refused_and_asked() -> None:
    nodes = line()
    settle(nodes)
    stripped = [
        RouterId(router_id=RID["c"]),
        Update(ae=1, prefix=ADDR["c"], interval=100, seqno=101, metric=96),
    ]
    nodes["a"].router.receive("b", decode_packet_detail(encode_packet(stripped)).tlvs, 2.0)
    assert nodes["a"].router.selected()[ADDR["c"]].seqno == 100
    assert nodes["a"].router.drain_refused() == [
        RefusedUpdate("b", ADDR["c"], RID["c"], "unsigned")
    ]
    carried = deliver(nodes, 2.0)  # a asks b for the route again: b's answer is c's own
    assert [(f, tlv.prefix) for f, to, tlv in carried if isinstance(tlv, RouteRequest)] == [
        ("a", ADDR["c"])
    ]
    settle(nodes, 2.1)
    assert nodes["a"].router.selected()[ADDR["c"]].seqno == 100
    assert nodes["a"].router.drain_refused() == []


def test_a_seqno_request_is_answered_with_a_fresh_signed_seqno() -> None:
    nodes = line()
    settle(nodes)
    request = SeqnoRequest(ae=1, prefix=ADDR["c"], seqno=101, hop_count=64, router_id=RID["c"])
    nodes["c"].router.receive("b", decode_packet_detail(encode_packet([request])).tlvs, 2.0)
    settle(nodes, 2.0)
    assert nodes["a"].router.selected()[ADDR["c"]].seqno == 101
    assert nodes["c"].signer.signed == 2
    assert all(n.router.drain_refused() == [] for n in nodes.values())


def test_an_update_of_an_unknown_origin_is_held_then_asked_for_again() -> None:
    nodes = line(knows="ab")  # a does not know c's certificate yet (the directory is behind)
    nodes["b"].policy.learn(owner("c"))
    nodes["c"].policy.learn(owner("a"))
    nodes["c"].policy.learn(owner("b"))
    settle(nodes)
    a = nodes["a"].router
    assert ADDR["c"] not in a.selected() and a.held() == 1 and a.drain_refused() == []
    nodes["a"].policy.learn(owner("c"))  # the directory brings it
    a.revalidate(2.0)
    assert a.held() == 0
    carried = settle(nodes, 2.0)
    assert [(f, to, tlv.prefix) for f, to, tlv in carried if isinstance(tlv, RouteRequest)] == [
        ("a", "b", ADDR["c"])
    ]
    assert ADDR["c"] in a.selected() and a.drain_refused() == []


def test_held_updates_are_bounded_and_expire_as_refusals() -> None:
    params = BabelParams(max_held_per_neighbour=2, max_held=3, hold_s=10.0)
    router = BabelRouter(RID["a"], 1, 0.0, params)
    p = policy("a")
    router.check_origins(p.refusal)
    router.link_up("b", 96, 0.0)
    router.link_up("d", 96, 0.0)
    strangers = [ipaddress.ip_network(f"10.77.9.{i}/32") for i in range(1, 5)]

    def offer(neighbour: str, prefix: IPNetwork, n: int) -> None:
        tlvs = [RouterId(router_id=bytes([9, n]) * 4),
                Update(ae=1, prefix=prefix, interval=100, seqno=1, metric=0)]  # fmt: skip
        router.receive(neighbour, decode_packet_detail(encode_packet(tlvs)).tlvs, 1.0)

    for n, prefix in enumerate(strangers[:3]):
        offer("b", prefix, n)
    assert router.held() == 2
    assert [(r.neighbour, r.reason) for r in router.drain_refused()] == [("b", "hold_full")]
    offer("d", strangers[3], 3)
    assert router.held() == 3
    offer("d", strangers[0], 0)  # within d's share, but the total is full
    assert [(r.neighbour, r.reason) for r in router.drain_refused()] == [("d", "hold_full")]
    router.tick(12.0)
    assert router.held() == 0
    assert sorted((r.neighbour, r.reason) for r in router.drain_refused()) == [
        ("b", "unknown_origin"), ("b", "unknown_origin"), ("d", "unknown_origin"),
    ]  # fmt: skip
    assert router.selected().keys() == set()


def test_an_unsigned_update_asks_for_the_proof_at_most_once_an_interval() -> None:
    router = BabelRouter(RID["a"], 1, 0.0, BabelParams())
    p = policy("a", "b", "c")
    router.check_origins(
        p.refusal,
        lambda n, prefix, o, s, proof: p.seqno_refusal(prefix, o, s, proof, T0),
        lambda prefix, o, s: p.proof(prefix, o, s),
    )
    router.link_up("b", 96, 0.0)
    router.drain_outgoing()
    bare = [
        RouterId(router_id=RID["c"]),
        Update(ae=1, prefix=ADDR["c"], interval=100, seqno=1, metric=0),
    ]
    for t in (1.0, 2.0):
        router.receive("b", decode_packet_detail(encode_packet(bare)).tlvs, t)
    assert router.drain_refused() == [RefusedUpdate("b", ADDR["c"], RID["c"], "unsigned")] * 2
    asked = [
        tlv
        for _, packet in router.drain_outgoing()
        for tlv in packet
        if isinstance(tlv, RouteRequest)
    ]
    assert [r.prefix for r in asked] == [ADDR["c"]]
    assert ADDR["c"] not in router.selected()
