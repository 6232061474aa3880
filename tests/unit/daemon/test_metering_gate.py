"""The consumer's gate in front of the kernel thread (meshd.daemon.metering): a flood of
claims from one neighbour is judged a few at a time, one after the other, and what is not
judged, or is refused as a new epoch too soon, is counted in that neighbour's refusals;
another neighbour's claims are not held up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

from meshd.core.proto.session import Claim, ReceiptMessage
from meshd.core.receipts.exchange import EPOCH_TOO_SOON, ClaimRefused
from meshd.daemon.control import ControlService
from meshd.daemon.metering import Metering


def metering(judge: Callable[[str, Claim], ReceiptMessage | None]) -> tuple[Metering, Any]:
    in_flight = {"now": 0, "most": 0}

    async def kernel(fn: Callable[..., Any], *args: Any) -> Any:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        await asyncio.sleep(0.01)  # the kernel thread's reading, signature and write
        in_flight["now"] -= 1
        return fn(*args)

    m = Metering(None, None, None, None, kernel)  # type: ignore[arg-type]
    peers = {n: SimpleNamespace(refusals={}) for n in ("p", "q")}
    for peer in peers.values():
        peer.count_refusal = lambda reason, r=peer.refusals: (
            r.update({reason: r.get(reason, 0) + 1}) or r[reason]
        )
    sent: list[tuple[str, object]] = []
    m.control = control = SimpleNamespace(  # type: ignore[assignment]
        core=SimpleNamespace(peers=peers),
        send_to_member=lambda node_id, msg: sent.append((node_id, msg)),
    )
    control.count_refusal = partial(ControlService.count_refusal, control)  # the real one
    m.claims = object()  # type: ignore[assignment]
    m.judge_claim = judge  # type: ignore[method-assign]
    return m, SimpleNamespace(peers=peers, sent=sent, in_flight=in_flight)


def test_a_thousand_claims_at_once_are_judged_one_at_a_time_and_a_few_in_all() -> None:
    judged: list[tuple[str, int]] = []

    def judge(node_id: str, claim: Claim) -> ReceiptMessage | None:
        judged.append((node_id, claim.epoch))
        return None  # (what is answered is tests/unit/daemon/test_claims.py's)

    m, seen = metering(judge)

    async def flood() -> None:
        for k in range(1000):
            m.on_message("p", Claim(1000 + k, 1, 10**12, 10**12))
        m.on_message("q", Claim(7, 1, 1, 1))
        await m.stop()

    asyncio.run(flood())
    # The burst of 4: the first is judged, the other three each replaced the waiting one.
    assert [e for n, e in judged if n == "p"] == [1000, 1003]
    # q's claim is judged beside p's (the kernel thread takes them in turn); p's never two
    # at once.
    assert ("q", 7) in judged and seen.in_flight["most"] == 2
    assert seen.peers["p"].refusals == {"claim_rate": 996, "claim_pending": 2}
    assert seen.peers["q"].refusals == {}


def test_a_new_epoch_too_soon_is_counted_and_not_answered() -> None:
    def judge(node_id: str, claim: Claim) -> ReceiptMessage:
        raise ClaimRefused(EPOCH_TOO_SOON, "too soon")

    m, seen = metering(judge)

    async def one() -> None:
        m.on_message("p", Claim(8, 1, 1, 1))
        await m.stop()

    asyncio.run(one())
    assert seen.peers["p"].refusals == {"claim_epoch_too_soon": 1} and seen.sent == []
