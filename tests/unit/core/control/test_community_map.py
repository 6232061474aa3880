"""The community map's records as a node keeps them (pure): what a member may put on
everyone's map, and no more; and the plane that floods them to the neighbours that speak
the feature."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from meshd.core.control import effects as fx
from meshd.core.control.community_map import (
    KEEP_S,
    MAX_WAITING,
    MIN_INTERVAL_S,
    CommunityMap,
    Publishing,
)
from meshd.core.keys import node_id_from_public
from meshd.core.proto import session
from meshd.core.proto.map_record import MapRecord, sorted_links
from tests.golden.map.make_vectors import signed
from tests.unit.core.control.test_control_core import Mesh, sent

WALL = 1_800_000_000.0
MESH_ID = bytes(16)
ME = SigningKey(bytes([1]) * 32)
OTHER = SigningKey(bytes([2]) * 32)
THIRD = SigningKey(bytes([3]) * 32)


def nid(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


def make(
    key: SigningKey, seqno: int = 1, issued_at: float = WALL, mesh_id: bytes = MESH_ID
) -> bytes:
    return signed(key, mesh_id, seqno, int(issued_at)).encode()


class Members:
    """Who holds a certificate now (the directory's ``member``)."""

    def __init__(self, *keys: SigningKey) -> None:
        self.ids = {nid(k) for k in keys}

    def __call__(self, node_id: str) -> object | None:
        return object() if node_id in self.ids else None


def table(members: Members, **kw: Any) -> tuple[CommunityMap, list[tuple[str, dict[str, Any]]]]:
    journal: list[tuple[str, dict[str, Any]]] = []
    return (
        CommunityMap(
            nid(ME),
            MESH_ID,
            lambda what, *a, **f: journal.append((what, f)),
            members,  # type: ignore[arg-type]
            signing_key=ME,
            **kw,
        ),
        journal,
    )


def test_a_members_newest_record_is_taken_once_and_passed_on() -> None:
    t, journal = table(Members(ME, OTHER))
    first = make(OTHER, seqno=5)
    assert t.heard(first, WALL, 1.0) == (first, None)
    assert t.heard(first, WALL, 50.0) == (None, None)  # known: not passed on again
    assert t.heard(make(OTHER, seqno=4), WALL, 50.0) == (None, None)  # older
    assert t.known() == [first]
    assert journal[0][0] == "map.learned"


def test_what_a_member_may_not_put_on_the_map_is_refused_with_its_reason() -> None:
    t, _ = table(Members(ME, OTHER))
    assert t.heard(make(OTHER)[:-3], WALL, 1.0) == (None, "malformed")
    forged = bytearray(make(OTHER))
    forged[40] ^= 1  # inside the seqno: well-formed, not what OTHER signed
    assert t.heard(bytes(forged), WALL, 1.0)[1] == "bad_signature"
    other_mesh = make(OTHER, mesh_id=bytes([9]) * 16)
    assert t.heard(other_mesh, WALL, 1.0) == (None, "wrong_mesh")
    future = make(OTHER, issued_at=WALL + 3600)  # would stay online for ever
    assert t.heard(future, WALL, 1.0) == (None, "from_the_future")
    assert t.entries == {}


def test_a_member_that_publishes_without_pause_is_passed_on_once_per_interval() -> None:
    t, _ = table(Members(ME, OTHER))
    assert t.heard(make(OTHER, seqno=1), WALL, 0.0)[0] is not None
    passed = 0
    for i in range(2, 200):  # a record every 0.1 s for 20 s, then 20 s of quiet
        now = i * 0.1
        passed += t.heard(make(OTHER, seqno=i), WALL, now)[0] is not None
        passed += len(t.due(WALL, now))
    assert passed == 0 and t.deferred == 198  # none before the interval is over
    (latest,) = t.due(WALL, MIN_INTERVAL_S)
    assert MapRecord.decode(latest).seqno == 199  # then only the newest
    assert t.due(WALL, MIN_INTERVAL_S + 1) == []


def test_a_record_that_outruns_its_certificate_waits_for_it() -> None:
    members = Members(ME)
    t, _ = table(members)
    record = make(OTHER)
    assert t.heard(record, WALL, 1.0) == (None, None)  # not counted against the relay
    assert t.entries == {} and t.due(WALL, 2.0) == []
    members.ids.add(nid(OTHER))
    assert t.due(WALL, 3.0) == [record]
    for i in range(MAX_WAITING + 10):  # strangers' keys cannot grow what waits
        t.heard(make(SigningKey(i.to_bytes(32, "big"))), WALL, 4.0)
    assert len(t.waiting) == MAX_WAITING


def test_a_revoked_member_leaves_the_map_and_an_offline_one_after_a_week() -> None:
    members = Members(ME, OTHER, THIRD)
    t, _ = table(members)
    t.heard(make(OTHER), WALL, 1.0)
    t.heard(make(THIRD), WALL, 1.0)
    members.ids.discard(nid(OTHER))  # revoked
    assert t.prune(WALL) == [nid(OTHER)]
    assert t.prune(WALL + 900 + KEEP_S - 1) == []
    assert t.prune(WALL + 900 + KEEP_S) == [nid(THIRD)]


def test_our_record_shows_what_the_operator_set_and_goes_out_when_links_change() -> None:
    shown = Publishing(name="Elm Street", refresh_s=300)
    t, _ = table(Members(ME), publishing=shown)
    first = t.publish({nid(OTHER): 255}, WALL, 0.0)
    assert first is not None
    record = MapRecord.decode(first)
    record.verify_signature()
    assert record.name == "Elm Street" and record.lifetime_s == 900
    assert record.links == sorted_links({nid(OTHER): 255})
    assert t.publish({nid(OTHER): 200}, WALL, 10.0) is None  # quality alone: at refresh
    assert t.publish({nid(OTHER): 200, nid(THIRD): 90}, WALL, 10.0) is None  # too soon
    again = t.publish({nid(OTHER): 200, nid(THIRD): 90}, WALL + 30, MIN_INTERVAL_S)
    assert again is not None and MapRecord.decode(again).seqno > record.seqno
    assert t.publish({nid(OTHER): 200, nid(THIRD): 90}, WALL + 330, 329.0) is None
    assert t.publish({nid(OTHER): 200, nid(THIRD): 90}, WALL + 330, 330.0) is not None
    assert t.entries[nid(ME)].encoded == t.known()[0]
    quiet, _ = table(Members(ME), publishing=Publishing(publish=False))
    assert quiet.publish({nid(OTHER): 255}, WALL, 0.0) is None


def test_the_state_file_brings_the_map_back_and_keeps_our_seqno_growing() -> None:
    t, _ = table(Members(ME, OTHER))
    t.heard(make(OTHER), WALL, 1.0)
    own = t.publish({}, WALL, 1.0)
    assert own is not None
    data = t.encode() + b"not json\n"
    back, journal = table(Members(ME, OTHER))
    assert back.load(data) == 2
    assert [what for what, _ in journal] == ["map.bad_state"]
    assert {e.record.issuer for e in back.entries.values()} == {nid(ME), nid(OTHER)}
    later = back.publish({}, WALL - 100, 2.0)  # a clock that went back
    assert later is not None
    assert MapRecord.decode(later).seqno > MapRecord.decode(own).seqno


def test_the_plane_sends_the_map_to_a_new_neighbour_that_speaks_it(tmp_path: Path) -> None:
    world = Mesh(tmp_path)  # no signing key: nothing of ours, only what we hold
    effects = world.verified()
    assert session.MapMessage not in sent(effects)  # we hold no record
    other = world.peer
    record = signed(other.signing_key, world.core.own.trust.mesh_id, 1, int(world.wall))
    effects = world.receive(session.MapMessage(record.encode()))
    assert world.core.community_map.known() == [record.encode()]
    peer = world.core.peers[other.node_id]
    forged = replace(record, seqno=2)  # signature of seqno 1
    world.receive(session.MapMessage(forged.encode()))
    assert peer.refusals == {"map_bad_signature": 1}


def test_map_nodes_are_online_while_routed_and_in_date(tmp_path: Path) -> None:
    world = Mesh(tmp_path)
    world.core.community_map.signing_key = world.me.signing_key
    world.verified()
    other = world.peer
    record = make(other.signing_key, mesh_id=world.core.own.trust.mesh_id)
    world.receive(session.MapMessage(record))
    world.core.tick(5.0)  # publishes ours, to the neighbour that speaks the feature
    ours = [
        session.decode(e.data)
        for e in world.core.drain()
        if isinstance(e, fx.Send) and e.data[0] == session.MAP
    ]
    assert [MapRecord.decode(m.record).issuer for m in ours] == [world.me.node_id]  # type: ignore[union-attr]
    nodes = {n.node_id: n for n in world.core.map_nodes()}
    assert nodes[world.me.node_id].online and nodes[world.me.node_id].hostname.startswith("node-")
    # No route to it yet (its tunnel carries nothing): on the map, offline.
    assert ipaddress.ip_network("10.77.0.2/32") not in world.core.router.selected()
    assert not nodes[other.node_id].online and not nodes[other.node_id].gateway
    world.wall += 901
    assert not {n.node_id: n for n in world.core.map_nodes()}[world.me.node_id].online
