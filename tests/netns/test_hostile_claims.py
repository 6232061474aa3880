"""A provider that lies in its claims (issue 28, item 2), on a star around b (a and c its
neighbours). a's meshd is stopped and a's keys speak for it (tests/netns/hostile_peer.py):
1,000 CLAIMs to b, 40 a second, each in a new epoch (a rising Unix time, as a provider
that lost its ledger would choose), each for the whole tolerance (256 KiB) both ways of
traffic b never saw: the most a new epoch gave before (a larger claim is signed at b's own
count, in every epoch: tests/unit/core/receipts/test_receipts_exchange.py).

Before this issue b judged every one: an nft read, a signature and a synchronous write
each, on the thread that also reads the links' liveness; and every new epoch came with a
fresh tolerance (256 KiB each way), which the treasurer's summary adds up: 1,000 epochs,
a quarter of a gigabyte signed for traffic b never saw, and a receipt and a dispute more
in b's ledger for each claim. Now b takes a claim from a neighbour at most every 2.5 s
(a burst of 4) and one at a time (``claim_rate``, ``claim_pending``), a new epoch at most
every ``receipts.epoch_interval_s`` (10 s here; an hour by default: ``claim_epoch_too_soon``),
and carries the tolerance across epochs: over all of a's epochs b signs at most its own
count plus one tolerance. Its ledger keeps one receipt per epoch and one dispute per
epoch; its link to c never goes down."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import meshbed
from tests.netns.test_hostile_input import Bed, disturbances, membership_message
from tests.netns.test_hostile_member import session_as

pytestmark = [*meshbed.NEEDS_ROOT_AND_WIREGUARD, pytest.mark.timed]
CLAIMS = 1000
FLOOD_S = 25.0  # 40 claims a second
EPOCH_INTERVAL_S = 10
TOPOLOGY = f"""
[nodes.a]
[nodes.b]
receipts = {{ epoch_interval_s = {EPOCH_INTERVAL_S} }}
[nodes.c]
[[links]]
between = ["a", "b"]
[[links]]
between = ["b", "c"]
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    topology = tmp_path_factory.mktemp("claims") / "topology.toml"
    topology.write_text(TOPOLOGY)
    with meshbed.testbed(topology, "hcl", Bed) as b:
        yield b


def ledger_rows(bed: Bed, provider: str) -> dict[str, int]:
    """b's ledger: its rows about ``provider`` (read only, beside the running daemon)."""
    path = bed.state("b") / "ledger.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {
            "receipts": db.execute(
                "SELECT count(*) FROM receipts WHERE provider = ?", [provider]
            ).fetchone()[0],
            "disputes": db.execute(
                "SELECT count(*) FROM disputes WHERE neighbour = ?", [provider]
            ).fetchone()[0],
            "receipt_days": db.execute(
                "SELECT count(*) FROM receipt_days WHERE provider = ?", [provider]
            ).fetchone()[0],
        }


def ledger_bytes(bed: Bed) -> int:
    state = bed.state("b")
    return sum(p.stat().st_size for p in state.glob("ledger.sqlite*"))


def test_a_thousand_forged_claims_in_rising_epochs_get_one_tolerance_at_most(
    bed: Bed, tmp_path: Path
) -> None:
    from meshd.core.proto import session

    a, b, c = (bed.status(n) for n in "abc")
    b_id, a_id = b["node_id"], a["node_id"]
    tolerance = b["receipts"]
    a_cert = (bed.state("a") / "membership.cert").read_bytes()
    bed.run("kill", "a")
    before_rows, before_bytes = ledger_rows(bed, a_id), ledger_bytes(bed)
    first_epoch = int(time.time())
    edge = tolerance["tolerance_bytes"]  # b counts nothing of a's: a is stopped
    claims = [session.encode(session.Claim(first_epoch + k, 1, edge, edge)) for k in range(CLAIMS)]
    b_pid = bed.pid("b")
    assert b_pid is not None
    log_start = bed.log_size("b")
    with bed.hostile_peer("a", bed.underlay_address("b", towards="a"), b_id) as liar:
        start = time.monotonic()
        result = session_as(
            liar,
            bed.state("a"),
            [membership_message(a_cert)],
            flood=[m.hex() for m in claims],
            per_second=CLAIMS / FLOOD_S,
            seconds=FLOOD_S,
            cpu_of=b_pid,
        )
    took = time.monotonic() - start
    cpu = result["cpu_of"] * FLOOD_S
    assert result["up"] and result["flooded"] >= CLAIMS, result
    time.sleep(1)  # the last claim judged
    after = bed.status("b")
    (a_seen,) = [n for n in after["neighbours"] if n["node_id"] == a_id]
    refusals = a_seen["refusals"]
    receipts_sent = result["received_kinds"].count(11)
    print(f"{CLAIMS} claims in {took:.1f} s: b's refusals of a {refusals}, "
          f"{receipts_sent} receipts to a, b's meshd {cpu:.2f} s CPU")  # fmt: skip

    # The treasurer's view: b's export, added up.
    export = tmp_path / "b.jsonl"
    export.write_text(bed.sh("b", "meshd", "receipts", "export"))
    summary = json.loads(bed.sh("b", "meshd", "receipts", "summary", str(export), "--json"))
    assert not summary["refused"], summary
    (pair,) = [p for p in summary["pairs"] if p["provider"] == a_id]
    (usage,) = [u for u in after["usage"] if u["node_id"] == a_id]
    own = (usage["sent_bytes"], usage["received_bytes"])
    most = [int(n * (1 + tolerance["tolerance_percent"] / 100)) + tolerance["tolerance_bytes"]
            for n in own]  # fmt: skip
    signed = (pair["relayed_for_bytes"], pair["relayed_to_bytes"])
    print(f"signed for a over {pair['epochs']} epochs: {signed} B; b's own count {own} B, "
          f"one tolerance above it {most} B; before: {pair['epochs']} tolerances")  # fmt: skip
    assert signed[0] <= most[0] and signed[1] <= most[1], (signed, most)
    assert pair["epochs"] >= 2, pair  # a new epoch was taken, and got nothing more
    # Each epoch b took is one that a claimed after the interval; the rest refused.
    assert 1 <= pair["epochs"] <= took / EPOCH_INTERVAL_S + 2, pair
    judged = pair["epochs"] + refusals.get("claim_epoch_too_soon", 0)
    assert judged <= 4 + took / 2.5 + 1, refusals  # the gate: every 2.5 s, a burst of 4
    # The rest: beyond the metering messages' budget (meshd/core/proto/session/budget.py:
    # 64, then 8 a second), or past the gate.
    dropped = refusals.get("rate_metering", 0) + refusals.get("claim_rate", 0)
    assert dropped >= CLAIMS - judged - refusals.get("claim_pending", 0), refusals
    assert refusals.get("claim_epoch_too_soon", 0) >= 1, refusals

    rows = ledger_rows(bed, a_id)
    print(f"b's ledger rows about a: before {before_rows}, after {rows}; "
          f"ledger files {before_bytes} -> {ledger_bytes(bed)} B")  # fmt: skip
    assert rows["receipts"] == pair["epochs"] and rows["disputes"] <= pair["epochs"], rows
    assert rows["receipt_days"] <= 2 * pair["epochs"], rows  # (a day may turn meanwhile)

    # c's link never went down, nor b's meshd.
    log = bed.log_since("b", log_start)
    assert bed.pid("b") == b_pid
    assert bed.link_states("b", "c") == {"c": "up"}
    assert not disturbances(log, "c", c["node_id"]), log
    assert "Traceback" not in log, log
