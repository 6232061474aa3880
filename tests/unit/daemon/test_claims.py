"""Two ClaimServices, a provider and a consumer, each with a real ledger file, exchanging
the session messages directly: claims are signed, stored before they are answered, refused
when tampered with, disputed beyond the tolerance; a consumer that stops signing is
throttled (the nft commands are recorded, not run) and told why."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from meshd.adapters.ledger import Ledger
from meshd.adapters.net import command
from meshd.adapters.net.throttle import Throttle
from meshd.config import ReceiptsSettings
from meshd.core.proto.session import Claim, ReceiptAck, ReceiptMessage
from meshd.core.receipts import Receipt
from meshd.core.receipts.counting import Snapshot
from meshd.daemon.claims import ClaimService, Signer
from tests.unit.receipt_fixtures import CONSUMER, CONSUMER_CERT, MESH, PROVIDER, STRANGER, nid

P, C = nid(PROVIDER), nid(CONSUMER)
WALL = 1_800_000_000.0
SETTINGS = ReceiptsSettings(claim_interval_s=10, claim_mb=1, credit_mb=1, tolerance_kb=4)
MIB = 1 << 20


@pytest.fixture(autouse=True)
def nft(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...]]]:
    calls: list[tuple[str, ...]] = []

    def record(*cmd: str, stdin: str | None = None) -> str:
        calls.append((*cmd, stdin or ""))
        return ""

    monkeypatch.setattr(command, "run", record)
    monkeypatch.setattr(command, "run_ok", lambda *cmd: record(*cmd) == "")
    yield calls


def service(tmp: Path, who: str, settings: ReceiptsSettings = SETTINGS) -> ClaimService:
    (tmp / who).mkdir(exist_ok=True)
    key = PROVIDER if who == "p" else CONSUMER
    return ClaimService(
        nid(key), key, MESH.mesh_id, Ledger.open(tmp / who), settings, Throttle(1000)
    )


def snap(relayed_for: int, relayed_to: int, sent: int = 0, received: int = 0) -> Snapshot:
    counts = (relayed_for, relayed_to, sent, received)
    return Snapshot(counts, 1, counts)


SIGNER = Signer(CONSUMER_CERT.encode(), b"")


def exchange(p: ClaimService, c: ClaimService, relayed: tuple[int, int], now: float) -> Claim:
    """One claim from p, judged by c against the same counts, answered and acknowledged."""
    claims = p.round({C: snap(*relayed)}, {C: "mwc"}, {C}, now, WALL + now)
    assert len(claims) == 1 and claims[0][0] == C
    claim = claims[0][1]
    answer = c.on_claim(P, claim, relayed, WALL + now)
    assert answer is not None
    ack = p.on_receipt(C, answer, SIGNER, WALL + now)
    assert ack == ReceiptAck(claim.epoch, claim.seq)
    c.on_ack(P, ack)
    return claim


def test_a_claim_is_signed_stored_on_both_sides_and_acknowledged(tmp_path: Path) -> None:
    p, c = service(tmp_path, "p"), service(tmp_path, "c")
    claim = exchange(p, c, (1_000, 2_000), 0)
    assert (claim.seq, claim.relayed_for_bytes, claim.relayed_to_bytes) == (1, 1_000, 2_000)
    [(_, stored, dispute)] = p.ledger.receipts()
    assert (stored.provider, stored.consumer, stored.seq) == (P, C, 1)
    assert (stored.relayed_for_bytes, stored.relayed_to_bytes, dispute) == (1_000, 2_000, "")
    stored.verify_signature()
    assert c.ledger.receipts()[0][1] == stored
    assert p.ledger.signers() == {C: (CONSUMER_CERT.encode(), b"")}
    assert p.status(C, snap(1_000, 2_000))["provider"]["unreceipted_bytes"] == 0
    assert c.status(P, None)["consumer"]["acked_seq"] == 1


def test_a_restarted_provider_never_reuses_a_seq_and_keeps_its_epoch(tmp_path: Path) -> None:
    p, c = service(tmp_path, "p"), service(tmp_path, "c")
    first = exchange(p, c, (1_000, 0), 0)
    p.round({C: snap(5_000, 0)}, {C: "mwc"}, {C}, 20, WALL + 20)  # claimed, never answered
    p.ledger.close()
    again = service(tmp_path, "p")  # kill -9: what the ledger holds is all there is
    claim = exchange(again, c, (9_000, 0), 40)
    assert claim.epoch == first.epoch and claim.seq == 3


def test_a_replayed_claim_is_answered_with_the_latest_receipt(tmp_path: Path) -> None:
    p, c = service(tmp_path, "p"), service(tmp_path, "c")
    claim = exchange(p, c, (1_000, 0), 0)
    answer = c.on_claim(P, replace(claim, relayed_for_bytes=9_999), (9_999, 0), WALL)
    assert answer is not None
    assert Receipt.decode(answer.receipt).relayed_for_bytes == 1_000
    assert len(c.ledger.receipts()) == 1


def test_beyond_the_tolerance_both_sides_record_a_dispute(tmp_path: Path) -> None:
    p, c = service(tmp_path, "p"), service(tmp_path, "c")
    [(_, claim)] = p.round({C: snap(0, 100_000)}, {C: "mwc"}, {C}, 0, WALL)
    answer = c.on_claim(P, claim, (0, 90_000), WALL)  # we saw 10 % less
    assert answer is not None and answer.dispute == "over_tolerance"
    assert Receipt.decode(answer.receipt).relayed_to_bytes == 90_000
    assert p.on_receipt(C, answer, SIGNER, WALL) is not None
    for side, role in ((p, "provider"), (c, "consumer")):
        [(_, dispute)] = side.ledger.disputes()
        assert (dispute.role, dispute.reason) == (role, "over_tolerance")
        assert (dispute.claimed, dispute.signed) == ((0, 100_000), (0, 90_000))
    assert p.status(C, snap(0, 100_000))["provider"]["unreceipted_bytes"] == 0


@pytest.mark.parametrize(
    ("change", "signer"),
    [
        ("relayed_for_bytes", CONSUMER),  # tampered after signing
        ("mesh_id", CONSUMER),
        ("consumer", STRANGER),  # someone else's receipt
    ],
)
def test_a_tampered_or_foreign_receipt_is_refused_and_nothing_is_stored(
    tmp_path: Path, change: str, signer: object
) -> None:
    p, c = service(tmp_path, "p"), service(tmp_path, "c")
    [(_, claim)] = p.round({C: snap(1_000, 0)}, {C: "mwc"}, {C}, 0, WALL)
    answer = c.on_claim(P, claim, (1_000, 0), WALL)
    assert answer is not None
    receipt = Receipt.decode(answer.receipt)
    if change == "relayed_for_bytes":
        receipt = replace(receipt, relayed_for_bytes=999)
    elif change == "mesh_id":
        receipt = replace(receipt, mesh_id=bytes(16)).sign(CONSUMER)
    else:
        receipt = replace(receipt, consumer=nid(STRANGER)).sign(STRANGER)  # type: ignore[arg-type]
    assert p.on_receipt(C, ReceiptMessage(receipt.encode()), SIGNER, WALL) is None
    assert p.ledger.receipts() == []


def test_a_consumer_that_stops_signing_is_throttled_then_let_go_when_it_signs(
    tmp_path: Path, nft: list[tuple[str, ...]]
) -> None:
    p = service(tmp_path, "p")
    quiet = service(tmp_path, "c", replace(SETTINGS, sign=False))
    [(_, claim)] = p.round({C: snap(MIB // 2, 0)}, {C: "mwc"}, {C}, 0, WALL)
    assert quiet.on_claim(P, claim, (MIB // 2, 0), WALL) is None
    [(_, claim)] = p.round({C: snap(2 * MIB, 0)}, {C: "mwc"}, {C}, 20, WALL + 20)
    assert claim.throttled == ""  # half a MiB unanswered: within its credit
    assert not any("meshd_throttle" in " ".join(call) for call in nft)
    # A round later the 2 MiB claim is unanswered too: throttled, and told at once.
    claims = p.round({C: snap(2 * MIB, 0)}, {C: "mwc"}, {C}, 25, WALL + 25)
    assert claims[0][1].throttled == "no_receipts"
    assert p.status(C, snap(2 * MIB, 0))["provider"]["state"] == "throttled"
    assert any("meshd_throttle" in " ".join(call) and "mwc" in call[-1] for call in nft)
    assert quiet.on_claim(P, claims[0][1], (2 * MIB, 0), WALL) is None
    assert quiet.status(P, None)["consumer"] == {
        "epoch": None,
        "seq": None,
        "signed_for_bytes": 0,
        "signed_to_bytes": 0,
        "acked_seq": None,
        "throttled": True,
        "reason": "no_receipts",
        "disputes": 0,
    }
    signing = service(tmp_path, "c")
    answer = signing.on_claim(P, claims[0][1], (2 * MIB, 0), WALL + 20)
    assert answer is not None and p.on_receipt(C, answer, SIGNER, WALL + 20) is not None
    [(_, told)] = p.round({C: snap(2 * MIB, 0)}, {C: "mwc"}, {C}, 26, WALL + 26)
    assert told.throttled == ""  # nothing new to sign, but the news is told at once
    assert p.status(C, snap(2 * MIB, 0))["provider"]["state"] == "ok"
    assert nft[-1][:4] == ("nft", "delete", "table", "inet")


def test_a_consumer_without_a_session_is_throttled_by_what_its_link_carried(
    tmp_path: Path, nft: list[tuple[str, ...]]
) -> None:
    p, c = service(tmp_path, "p"), service(tmp_path, "c")
    exchange(p, c, (MIB, 0), 0)  # 1 MiB signed: its credit is 1 MiB plus a tenth of that
    # Its session is gone (not reachable), its link is not: nothing can be claimed, yet
    # the bytes are on credit.
    assert p.round({C: snap(2 * MIB, 0)}, {C: "mwc"}, set(), 20, WALL + 20) == []
    assert p.status(C, snap(2 * MIB, 0))["provider"]["state"] == "ok"
    assert p.round({C: snap(3 * MIB, 0)}, {C: "mwc"}, set(), 25, WALL + 25) == []
    assert p.status(C, snap(3 * MIB, 0))["provider"]["reason"] == "no_receipts"
    assert any("meshd_throttle" in " ".join(call) and "mwc" in call[-1] for call in nft)
    # Back with a session, it is let go and asked at once (a consumer that then does not
    # sign is throttled again a round later, as any other).
    [(_, claim)] = p.round({C: snap(3 * MIB, 0)}, {C: "mwc"}, {C}, 26, WALL + 26)
    assert claim.relayed_for_bytes == 3 * MIB and claim.throttled == ""
    assert nft[-1][:4] == ("nft", "delete", "table", "inet")
    answer = c.on_claim(P, claim, (3 * MIB, 0), WALL + 26)
    assert answer is not None and p.on_receipt(C, answer, SIGNER, WALL + 26) is not None
    assert p.status(C, snap(3 * MIB, 0))["provider"]["unreceipted_bytes"] == 0
