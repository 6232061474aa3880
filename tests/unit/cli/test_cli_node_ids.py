"""A node id that begins with "-" (one in 64) reaches the command as a node id, not as an
unknown option (meshd.cli.node_ids_as_arguments): as an option's value, as a command's
NODE, before or after a flag."""

from __future__ import annotations

import pytest

from meshd.cli import build_parser, node_ids_as_arguments
from meshd.core.keys import node_id_from_public

DASH = node_id_from_public(bytes([0xF8]) + bytes(31))  # "-AAA...": a valid node id
PLAIN = node_id_from_public(bytes(32))


def parsed(*argv: str) -> dict[str, object]:
    parser = build_parser()
    return vars(parser.parse_args(node_ids_as_arguments(parser, list(argv))))


def test_the_id_begins_with_a_dash() -> None:
    assert DASH.startswith("-") and len(DASH) == 43


@pytest.mark.parametrize("node", [DASH, PLAIN])
def test_a_commands_node(node: str) -> None:
    assert parsed("block", node)["node_id"] == node
    assert parsed("block", node, "--undo") == parsed("block", "--undo", node)
    assert parsed("block", "--undo", node)["undo"] is True
    assert parsed("revoke", node)["node"] == node
    assert parsed("block", "--", node)["node_id"] == node


@pytest.mark.parametrize("node", [DASH, PLAIN])
def test_an_options_value(node: str) -> None:
    assert parsed("receipts", "verify", "f", "--admin-key", node)["admin_key"] == [node]
    rotated = parsed("admin-key", "rotate", "--add", node, "--remove", PLAIN)
    assert (rotated["add"], rotated["remove"]) == ([node], [PLAIN])


def test_without_the_rewrite_argparse_refuses_it() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["block", DASH])


def test_everything_else_is_left_as_it_is() -> None:
    parser = build_parser()
    for argv in (["status", "--json"], ["block", "-x"], ["invite", "--name", "-n"]):
        assert node_ids_as_arguments(parser, argv) == argv
