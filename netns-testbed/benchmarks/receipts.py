"""receipts.*: how exact, how cheap and how fast metering and receipts are.

- ``receipts.accuracy`` (netns, topologies/relay.toml, loss-free): a sends UDP datagrams
  to c through the relay b (UDP: nothing is resent, and nothing is refused at c after b
  counted it); once b's claim of all it counted is answered, the receipted bytes over b's
  kernel count of the same transfer (both ways). Target 1.000: it says c answered every
  claim in full, since the wait ends only once b's claim equals its count.
  ``receipts.accuracy.consumer``: the receipted bytes over c's own kernel count of what it
  exchanged with b, counted independently of b: the same packets seen from c's side, so it
  should be 1 too. Target: within 1 % either way (more would be c signing for bytes it never
  got; less, b claiming fewer than it carried). ``receipts.overhead``: receipted bytes over
  the payload (headers).
- ``receipts.zero_cost``: iperf3 (TCP) a -> c through b with metering on, against the same
  path with metering off (a first rule that accepts, in every chain of ``inet
  meshd_links`` on a, b and c, so no counting rule runs), interleaved, medians. Target
  >= 0.98.
- ``receipts.verify.ratio``: ``meshd receipts verify``'s core (verify_export, with the
  admin key: membership checked) on N receipts in exports of 500, against PyNaCl verifying
  the same N signatures on one thread, side by side in this process: each export and its
  signatures back to back, which goes first taking turns, three rounds, the times summed.
  verify_export checks the signatures on every core this process may use (``.threads``),
  as ``meshd receipts verify`` does. Target >= 0.9.
  ``receipts.verify.ratio.one_thread``: the same with verify_export on one thread (what
  parsing and the checks around the signatures cost). Target >= 0.8.
- ``receipts.ledger.inserts_per_s``: receipts stored one by one, each in its own durable
  (synchronous=FULL) transaction, as the exchange stores them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.dataplane import iperf3
from benchmarks.results import Result, at_least, within
from benchmarks.testbed import HERE, Testbed

ACCURACY_TARGET = 1.0
CONSUMER_ACCURACY = (0.99, 1.01)  # the consumer's own count, either way
ZERO_COST_TARGET = 0.98
VERIFY_TARGET = 0.9
VERIFY_ONE_THREAD_TARGET = 0.8
CHUNK, ROUNDS = 500, 3  # receipts per export verified; times over all of them
CHAINS = ("forward", "output", "input")
OFF = "bench_metering_off"


def _usage(tb: Testbed, node: str, of: str) -> dict[str, Any]:
    for use in tb.meshd_status(node)["usage"]:
        if use["node_id"] == of:
            return dict(use)
    return {}


def _answered(tb: Testbed, c_id: str, at_least_to: int, within: float = 60) -> dict[str, Any]:
    """b's usage of c once b read ``at_least_to`` bytes to c and c answered its claim."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        use = _usage(tb, "b", c_id)
        p = use.get("provider") or {}
        counted = (use.get("relayed_for_bytes", 0), use.get("relayed_to_bytes", 0))
        claimed = (p.get("claimed_for_bytes", 0), p.get("claimed_to_bytes", 0))
        if counted[1] >= at_least_to and claimed == counted and p.get("unreceipted_bytes") == 0:
            return use
        time.sleep(0.5)
    raise RuntimeError(f"b's claim to c was not answered within {within} s")


def _metering(tb: Testbed, nodes: tuple[str, ...], on: bool) -> None:
    for node in nodes:
        for chain in CHAINS:
            if not on:
                tb.exec(node, "nft", "insert", "rule", "inet", "meshd_links", chain,
                        "accept", "comment", f'"{OFF}"')  # fmt: skip
                continue
            listing = json.loads(tb.exec(node, "nft", "-j", "-a", "list", "chain", "inet",
                                         "meshd_links", chain))  # fmt: skip
            for item in listing["nftables"]:
                rule = item.get("rule")
                if rule and rule.get("comment") == OFF:
                    tb.exec(node, "nft", "delete", "rule", "inet", "meshd_links", chain,
                            "handle", str(rule["handle"]))  # fmt: skip


def relay(quick: bool) -> list[Result]:
    tb = Testbed("mbr")
    reps = 3 if quick else 5
    with tb.up(HERE / "topologies" / "relay.toml"):
        ids = {n: tb.meshd_status(n)["node_id"] for n in "abc"}
        ips = {n: tb.meshd_status(n)["mesh_ipv4"] for n in "abc"}
        # Accuracy: UDP datagrams of 1,200 bytes, reps transfers.
        receipted = counted_b = counted_c = payload = 0
        before = _answered(tb, ids["c"], 0)
        before_c = _usage(tb, "c", ids["b"])
        size = "5M" if quick else "20M"
        for _ in range(reps):
            tb.exec("c", "iperf3", "-s", "-1", "-D", "-p", "5301")
            time.sleep(0.3)
            out = tb.exec("a", "iperf3", "-c", ips["c"], "-p", "5301", "-u", "-b", "50M",
                          "-n", size, "-l", "1200", "-J")  # fmt: skip
            payload += json.loads(out)["end"]["sum"]["bytes"]
        after = _answered(tb, ids["c"], before.get("relayed_to_bytes", 0) + payload)
        after_c = _usage(tb, "c", ids["b"])

        def both(use: dict[str, Any], *keys: str) -> int:
            return sum(int(use.get(k, 0)) for k in keys)

        p_keys = ("receipted_for_bytes", "receipted_to_bytes")
        receipted = both(after["provider"], *p_keys) - both(before.get("provider") or {}, *p_keys)
        b_keys = ("relayed_for_bytes", "relayed_to_bytes")
        counted_b = both(after, *b_keys) - both(before, *b_keys)
        c_keys = ("sent_bytes", "received_bytes")
        counted_c = both(after_c, *c_keys) - both(before_c, *c_keys)
        # Zero cost: TCP through b, metering on and off, interleaved.
        nodes = ("a", "b", "c")
        seconds = 3 if quick else 5
        on, off = [], []
        for _ in range(reps):
            on.append(iperf3(tb.namespace("a"), tb.namespace("c"), ips["c"], seconds, 5302))
            _metering(tb, nodes, on=False)
            try:
                off.append(iperf3(tb.namespace("a"), tb.namespace("c"), ips["c"], seconds, 5303))
            finally:
                _metering(tb, nodes, on=True)
    accuracy = round(receipted / counted_b, 4) if counted_b else 0.0
    return [
        Result(
            "receipts.accuracy",
            accuracy,
            "ratio",
            f">= {ACCURACY_TARGET}",
            accuracy >= ACCURACY_TARGET,
        ),  # fmt: skip
        within(
            "receipts.accuracy.consumer",
            round(receipted / max(1, counted_c), 4),
            "ratio",
            *CONSUMER_ACCURACY,
        ),
        Result("receipts.overhead", round(receipted / max(1, payload), 4), "ratio"),
        Result("receipts.receipted_bytes", receipted, "bytes"),
        at_least(
            "receipts.zero_cost",
            round(statistics.median(on) / statistics.median(off), 3),
            "ratio",
            ZERO_COST_TARGET,
        ),
        Result("receipts.metering_on_mbit", round(statistics.median(on) / 1e6, 1), "Mbit/s"),
        Result("receipts.metering_off_mbit", round(statistics.median(off) / 1e6, 1), "Mbit/s"),
    ]


def verify_speed(quick: bool) -> list[Result]:
    """The verifier against raw PyNaCl, and the ledger's durable insert rate."""
    from nacl.signing import SigningKey

    from meshd.adapters.identity import node_id_from_public
    from meshd.adapters.signatures import on_threads
    from meshd.core.membership import create_mesh, issue_membership
    from meshd.core.receipts import Receipt, export_lines, verify_export

    n = 10_000 if quick else 100_000
    key = lambda label: SigningKey(hashlib.sha256(label.encode()).digest())  # noqa: E731
    admin, provider, consumer = key("admin"), key("provider"), key("consumer")
    now = int(time.time())
    nid = lambda k: node_id_from_public(bytes(k.verify_key))  # noqa: E731
    mesh = create_mesh(
        admin,
        mesh_id=bytes(16),
        name="bench",
        ipv4_prefix=ipaddress.ip_network("10.99.0.0/16"),
        ipv6_prefix=ipaddress.ip_network("fd00:99::/64"),
        issued_at=now - 60,
    )
    cert = issue_membership(
        admin,
        mesh=mesh,
        node_id=nid(consumer),
        name="consumer",
        wireguard_public=bytes(32),
        mesh_ipv4=ipaddress.ip_address("10.99.0.2"),
        not_before=now - 60,
        expires_at=now + 86400,
        serial=1,
    )  # the consumer, certified by the admin itself
    receipts = [
        Receipt(
            mesh.mesh_id,
            nid(provider),
            nid(consumer),
            now,
            seq,
            seq * 1000,
            seq * 2000,
            now,
            now + 60,
        ).sign(consumer)  # fmt: skip
        for seq in range(1, n + 1)
    ]
    # Exports of CHUNK receipts, each verified right after (or before) PyNaCl checks the
    # same signatures, the sides alternating: this machine's speed swings by a third
    # within a second, and both sides must see the same swings.
    chunks = [receipts[i : i + CHUNK] for i in range(0, n, CHUNK)]
    exports = [list(export_lines(mesh, [cert], receipts=chunk)) for chunk in chunks]
    messages = [[(r.signed_bytes(), r.signature) for r in chunk] for chunk in chunks]
    verify_key, admins = consumer.verify_key, [nid(admin)]
    threads = len(os.sched_getaffinity(0))
    shared = on_threads(threads)
    took = [0.0, 0.0, 0.0]  # verify_export on every core, on one thread; PyNaCl
    for round_ in range(ROUNDS):
        for i, (lines, signed) in enumerate(zip(exports, messages, strict=True)):
            first = (i + round_) % 3
            for side in (first, (first + 1) % 3, (first + 2) % 3):
                start = time.perf_counter()
                if side < 2:
                    check = shared if side == 0 else None  # None: one by one
                    report = verify_export(lines, admins, signatures=check)
                    took[side] += time.perf_counter() - start
                    assert report.ok and len(report.receipts) == len(signed)
                    assert report.membership_checked
                else:
                    for message, signature in signed:
                        verify_key.verify(message, signature)
                    took[side] += time.perf_counter() - start
    ours, one, raw = took
    from meshd.adapters.ledger import Ledger
    from meshd.core.receipts.exchange import ProviderChain

    stored = min(n, 2_000)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.open(Path(tmp))
        start = time.perf_counter()
        for r in receipts[:stored]:
            chain = ProviderChain(r.epoch, r.seq, r.seq, (r.relayed_for_bytes,
                                  r.relayed_to_bytes), (0, 0))  # fmt: skip
            ledger.store_receipt(r, chain, None)
        inserts = stored / (time.perf_counter() - start)
        ledger.close()
    return [
        at_least("receipts.verify.ratio", round(raw / ours, 3), "ratio", VERIFY_TARGET),
        Result("receipts.verify.threads", threads, "threads"),
        at_least(
            "receipts.verify.ratio.one_thread",
            round(raw / one, 3),
            "ratio",
            VERIFY_ONE_THREAD_TARGET,
        ),
        Result("receipts.verify.per_s", round(n * ROUNDS / ours), "receipts/s"),
        Result("receipts.verify.raw_per_s", round(n * ROUNDS / raw), "signatures/s"),
        Result("receipts.ledger.inserts_per_s", round(inserts), "receipts/s"),
    ]
