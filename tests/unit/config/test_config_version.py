"""The config's version: absent is the first release's (1), a newer one is refused with a
clear message, and an older one is carried forward in memory by the steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshd import config
from tests.unit.config.test_config import GOOD

FIRST_RELEASE = Path(__file__).parents[2] / "golden" / "state_v1"


def test_a_config_without_version_is_of_the_first_release() -> None:
    assert config.parse(GOOD).version == 1
    assert config.parse("version = 1\n" + GOOD).version == config.CONFIG_VERSION


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            f"version = {config.CONFIG_VERSION + 1}",
            f"{config.CONFIG_VERSION + 1}: written for a newer meshd; this meshd",
        ),
        ("version = 0", "expected an integer from 1 to"),
        ('version = "2"', "expected an integer from 1 to"),
        ("version = true", "expected an integer from 1 to"),
    ],
)
def test_a_version_this_meshd_cannot_read_is_refused(line: str, problem: str) -> None:
    with pytest.raises(config.ConfigError, match=problem) as caught:
        config.parse(f"{line}\n{GOOD}", "n.toml")
    assert caught.value.key == "version" and caught.value.path == "n.toml"


def test_an_older_version_is_carried_forward_by_each_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were [node] name renamed to label in version 2, and label back to a capitalised name
    in 3: a file of version 1 goes through both steps, in order, one of 3 through none."""
    seen: list[int] = []

    def rename(doc: dict[str, Any]) -> None:
        seen.append(1)
        doc["node"]["label"] = doc["node"].pop("name")

    def move(doc: dict[str, Any]) -> None:
        seen.append(2)
        doc["node"]["name"] = doc["node"].pop("label").upper()

    monkeypatch.setattr(config, "CONFIG_VERSION", 3)
    monkeypatch.setattr(config, "CONFIG_STEPS", {1: rename, 2: move})
    cfg = config.parse(GOOD)
    assert seen == [1, 2] and cfg.node.name == "A" and cfg.version == 1
    seen.clear()
    cfg = config.parse("version = 3\n" + GOOD.replace('name = "a"', 'name = "z"', 1))
    assert seen == [] and cfg.node.name == "z"


@pytest.mark.parametrize("node", ["a", "b"])
def test_the_first_releases_configs_read_as_they_were_written(node: str) -> None:
    """Written by the first release's testbed (tests/golden/state_v1/make_state.sh)."""
    cfg = config.load(FIRST_RELEASE / node / "meshd.toml")
    assert cfg.version == 1 and cfg.node.name == node
