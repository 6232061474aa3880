"""Reconciling certificate directories (meshd.core.membership.directory_sync), pumped in memory
through the wire encoding: neighbours converge to the same set over several hops, a
settled pair exchanges digests only, a lost message delays agreement but never prevents
it, and a neighbour asking too often is answered at most once per round."""

from __future__ import annotations

import pytest

from meshd.core.membership import MeshTrust
from meshd.core.membership.directory import Directory, Entry
from meshd.core.membership.directory_sync import (
    MIN_ROUND_S,
    RESEND_S,
    DirectoryMessage,
    DirectorySync,
    Outgoing,
)
from meshd.core.proto import session
from tests.unit.core.membership.test_membership_directory import NOW
from tests.unit.receipt_fixtures import (
    ADMIN,
    CONSUMER_CERT,
    DELEGATION,
    LATE_CERT,
    PROVIDER_CERT,
    nid,
)

ENTRIES = [Entry(PROVIDER_CERT), Entry(CONSUMER_CERT), Entry(LATE_CERT, (DELEGATION,))]


def node(*entries: Entry) -> DirectorySync:
    from tests.unit.receipt_fixtures import MESH

    directory = Directory(MeshTrust.from_definition(MESH, [nid(ADMIN)]))
    for entry in entries:
        directory.add(entry, NOW)
    return DirectorySync(directory)


class Net:
    """Nodes by name, messages delivered in order through encode/decode."""

    def __init__(self, **nodes: DirectorySync) -> None:
        self.nodes = nodes
        self.queue: list[tuple[str, str, DirectoryMessage]] = []
        self.sent: list[str] = []

    def post(self, sender: str, outgoing: Outgoing) -> None:
        for to, message in outgoing:
            decoded = session.decode(session.encode(message))
            assert isinstance(decoded, DirectoryMessage)
            self.queue.append((sender, to, decoded))
            self.sent.append(type(message).__name__)

    def link(self, a: str, b: str) -> None:
        self.post(a, self.nodes[a].peer_up(b))
        self.post(b, self.nodes[b].peer_up(a))

    def run(self, now: float = 0.0, drop: int | None = None) -> None:
        count = 0
        while self.queue:
            sender, to, message = self.queue.pop(0)
            count += 1
            if count == drop:
                continue
            sync = self.nodes[to]
            if isinstance(message, session.DirectoryDigest):
                self.post(to, sync.on_digest(sender, message, now))
            elif isinstance(message, session.DirectoryFingerprints):
                self.post(to, sync.on_fingerprints(sender, message))
            else:
                learned, refused = sync.on_entries(sender, message, NOW)
                assert refused == []
                if learned:
                    self.post(to, sync.changed())

    def digests(self) -> set[bytes]:
        return {n.directory.digest() for n in self.nodes.values()}

    def settle(self, start: float, until: float, step: float = 1.0) -> float:
        """Deliver and tick from ``start`` until every digest agrees: the time it took."""
        now = start
        while now <= until:
            for name, sync in self.nodes.items():
                self.post(name, sync.tick(now))
            self.run(now)
            if len(self.digests()) == 1:
                return now - start
            now += step
        raise AssertionError(f"no agreement within {until - start} s")


def test_a_line_converges_to_every_entry_and_then_only_digests_flow() -> None:
    net = Net(a=node(ENTRIES[0]), b=node(ENTRIES[1]), c=node(ENTRIES[2]))
    net.link("a", "b")
    net.link("b", "c")
    net.run()
    took = net.settle(0.0, until=30.0)
    assert took <= 2 * MIN_ROUND_S  # two hops, each at most one round late
    assert all(len(n.directory) == 3 for n in net.nodes.values())
    net.sent.clear()
    for name, sync in net.nodes.items():  # a minute later: digests again, and nothing else
        net.post(name, sync.tick(100.0))
    net.run(100.0)
    assert set(net.sent) == {"DirectoryDigest"}


def test_a_lost_message_delays_agreement_but_the_next_round_repairs_it() -> None:
    for drop in range(1, 8):
        net = Net(a=node(*ENTRIES[:2]), b=node(ENTRIES[2]))
        net.link("a", "b")
        net.run(drop=drop)
        assert net.settle(1.0, until=70.0) <= RESEND_S, drop


def test_a_neighbour_asking_too_often_gets_one_answer_per_round() -> None:
    a = node(*ENTRIES)
    a.peer_up("b")
    other = session.DirectoryDigest(1, bytes(32))
    round_s = MIN_ROUND_S
    first = a.on_digest("b", other, 10.0)
    assert [type(m).__name__ for _, m in first] == ["DirectoryFingerprints"]
    assert a.on_digest("b", other, 10.0 + round_s / 4) == []  # put off, not forgotten
    half = 10.0 + round_s / 2
    assert a.tick(half) == [] or all(
        isinstance(m, session.DirectoryDigest) for _, m in a.tick(half)
    )
    later = [
        m for _, m in a.tick(10.0 + 1.25 * round_s) if isinstance(m, session.DirectoryFingerprints)
    ]
    assert len(later) == 1 and later[0].total == 3


def test_an_entry_held_as_it_is_is_skipped_before_it_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A neighbour sending what we hold again (an honest resend, or a flood of it) costs a
    hash: the held entry is not decoded again; a renewed one still is."""
    sync = node(*ENTRIES[:2])
    again = session.DirectoryEntries(tuple(e.encoded for e in ENTRIES[:2]) * 40)
    decoded: list[bytes] = []
    real = Entry.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Entry], data: bytes) -> Entry:
        decoded.append(data)
        return real(cls, data)

    monkeypatch.setattr(Entry, "decode", classmethod(counting))
    assert sync.on_entries("b", again, NOW) == ([], [])
    assert decoded == []
    learned, refused = sync.on_entries("b", session.DirectoryEntries((ENTRIES[2].encoded,)), NOW)
    assert [m.node_id for m in learned] == [ENTRIES[2].node_id] and refused == []
    assert decoded == [ENTRIES[2].encoded]
    assert sync.directory.holds(ENTRIES[2].encoded)
