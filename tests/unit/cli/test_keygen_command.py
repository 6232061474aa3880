"""meshd keygen: run by root in a state directory another user may own, it writes no key
through a link planted there, and replaces a planted public file's link, not its target."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from meshd.adapters import identity
from meshd.cli import main as meshd
from tests.local_privilege import plant, untouched


def test_keygen_writes_the_keys_and_prints_the_node_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert meshd(["keygen", "--state-dir", str(tmp_path / "state"), "--json"]) == 0
    printed = capsys.readouterr().out
    assert identity.load(tmp_path / "state").node_id in printed
    assert stat.S_IMODE((tmp_path / "state" / identity.IDENTITY_KEY).stat().st_mode) == 0o600


@pytest.mark.parametrize("name", [identity.IDENTITY_KEY, identity.WIREGUARD_KEY])
def test_a_planted_key_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    victim = plant(state, name)
    assert meshd(["keygen", "--state-dir", str(state)]) == 1
    assert f"{name}: already exists, not overwriting" in capsys.readouterr().err
    untouched(victim)
    assert [p.name for p in state.iterdir()] == [name]


def test_a_planted_public_file_link_is_replaced_not_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    victims = [plant(state, name) for name in (identity.IDENTITY_PUB, identity.WIREGUARD_PUB)]
    assert meshd(["keygen", "--state-dir", str(state)]) == 0
    for victim in victims:
        untouched(victim)
    ident = identity.load(state)
    assert (state / identity.IDENTITY_PUB).read_text() == f"{ident.node_id}\n"
    assert not (state / identity.WIREGUARD_PUB).is_symlink()
