"""One base for refused input (meshd.core.errors.BadInput): every kind of refusal of what a
peer, a file or a person sent is one, with a ``reason`` code and a ``message``, so each
edge catches one class."""

from __future__ import annotations

import pytest

from meshd.core.errors import BadInput
from meshd.core.invites import InviteError, InviteReason
from meshd.core.membership import MembershipError, Reason
from meshd.core.membership.directory import DirectoryError
from meshd.core.membership.renewal import RenewalError, RenewalReason
from meshd.core.proto import session
from meshd.core.proto.babel_wire import BabelDecodeError
from meshd.core.proto.beacon import BeaconError, BeaconReason
from meshd.core.proto.gateway import GatewayError, GatewayReason
from meshd.core.receipts.errors import ReceiptError, ReceiptReason
from meshd.core.receipts.exchange import ReceiptRefused
from meshd.core.session_policy import Refusal

REFUSALS: list[BadInput] = [
    MembershipError(Reason.EXPIRED, "m"),
    RenewalError(next(iter(RenewalReason)), "m"),
    DirectoryError("directory_full", "m"),
    session.SessionMessageError("bad_length", "m"),
    BabelDecodeError("truncated", "m"),
    BeaconError(next(iter(BeaconReason)), "m"),
    GatewayError(next(iter(GatewayReason)), "m"),
    Refusal("not_verified", "m"),
    InviteError(InviteReason.EXPIRED, "m"),
    ReceiptError(next(iter(ReceiptReason)), "m"),
    ReceiptRefused("stale", "m"),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda r: type(r).__name__)
def test_every_refusal_is_bad_input_with_a_reason_and_a_message(refusal: BadInput) -> None:
    assert isinstance(refusal, BadInput) and refusal.message == "m"
    assert str(refusal) == f"{refusal.reason}: m" and refusal.reason


def test_an_edge_catches_one_class() -> None:
    with pytest.raises(BadInput) as caught:
        session.decode(b"\x03\x00")  # a LINK of one octet
    assert caught.value.reason == "bad_length"
