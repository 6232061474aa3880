"""Budgets a neighbour's messages draw on (meshd.core.proto.session.budget) and the token
buckets that keep them (meshd.core.control.rates)."""

from __future__ import annotations

import ipaddress

from meshd.core.control.rates import Rates, TokenBucket
from meshd.core.proto import session
from meshd.core.proto.babel import AE_IPV4, Hello, Update, encode_packet
from meshd.core.proto.session.budget import BUDGETS, charge


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(burst=10, per_s=2)
    assert bucket.take(10, 0.0) and not bucket.take(1, 0.0)
    assert not bucket.take(2, 0.9) and bucket.take(2, 1.0)  # 2 back after 1 s (not after 0.9)
    assert bucket.take(10, 100.0) and not bucket.take(1, 100.0)  # never more than the burst


def test_messages_are_charged_from_their_headers_before_decoding() -> None:
    updates = [
        Update(ae=AE_IPV4, prefix=ipaddress.ip_network(f"10.0.0.{k}/32"), interval=400,
               seqno=1, metric=96)
        for k in range(7)
    ]  # fmt: skip
    packet = encode_packet([Hello(seqno=1, interval=400), *updates])
    babel = session.encode(session.BabelPacket(packet))
    assert charge(babel, verified=True) == ("babel", 8)  # a token a TLV
    records = session.encode(session.Revocations((b"x" * 40,) * 5))
    assert charge(records, verified=True) == ("revocations", 5)
    entries = session.encode(session.DirectoryEntries((b"\x00\x01x\x00\x00",) * 3))
    assert charge(entries, verified=True) == ("directory", len(entries))
    assert charge(session.encode(session.Link(51820)), verified=True) == ("link", 1)
    membership = session.encode(session.Membership(b"cert"))
    assert charge(membership, verified=False) is None  # the session's first: free
    assert charge(membership, verified=True) == ("membership", 1)  # a renewal
    assert charge(session.encode(session.Clock(1)), verified=True) is None
    assert charge(b"", verified=True) is None


def test_each_kind_has_its_own_bucket() -> None:
    rates = Rates()
    link = BUDGETS["link"]
    assert all(rates.take("link", 1, 0.0) for _ in range(int(link.burst)))
    assert not rates.take("link", 1, 0.0)
    assert rates.take("gateway", 1, 0.0)
    assert rates.take("link", 1, 1 / link.per_s)
