"""meshd revoke's choice of NODE (pure, from a status document): a neighbour by name or
id, never this node, an ambiguous name or a typo; an unseen id only with --unseen."""

from __future__ import annotations

from typing import Any, cast

import pytest

from meshd.api.schema import Status
from meshd.cli.commands.revoke import resolve
from tests.golden.membership.make_vectors import ADMIN, NODE, node_id

OWN, B = node_id(ADMIN), node_id(NODE)
FAR = "A" * 42 + "E"  # a well-formed id nobody here has seen


def _status(*neighbours: tuple[str, str], gateways: tuple[str, ...] = ()) -> Status:
    document: dict[str, Any] = {
        "node_id": OWN,
        "name": "a",
        "neighbours": [{"node_id": i, "name": n} for i, n in neighbours],
        "gateway": {"selected": None, "candidates": [{"node_id": g} for g in gateways]},
    }
    return cast(Status, document)


def test_a_neighbour_by_name_or_id_and_a_gateway_by_id() -> None:
    status = _status((B, "b"), gateways=(FAR,))
    assert resolve("b", status, set(), unseen=False) == B
    assert resolve(B, status, set(), unseen=False) == B
    assert resolve(FAR, status, set(), unseen=False) == FAR


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a", "is this node"),
        (OWN, "is this node"),
        ("bee", "no node 'bee' known to this node (neighbours: b)"),
        (FAR, "give --unseen"),
    ],
)
def test_refusals(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        resolve(text, _status((B, "b")), set(), unseen=False)


def test_two_neighbours_of_one_name_need_the_id() -> None:
    with pytest.raises(ValueError, match="2 neighbours are named 'b'"):
        resolve("b", _status((B, "b"), (FAR, "b")), set(), unseen=False)


def test_an_unseen_or_revoked_id() -> None:
    assert resolve(FAR, _status(), set(), unseen=True) == FAR
    assert resolve(FAR, _status(), {FAR}, unseen=False) == FAR  # to say: revoked already
