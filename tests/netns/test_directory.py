"""The certificate directory (issue 19): on a line a - b - c, a and c are no neighbours,
yet each comes to hold every member's certificate (spread by reconciliation over b), and
the origin check knows every member's addresses. A restarted node starts from its stored
directory, not blind; a settled mesh exchanges digests only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
Bed = meshbed.Bed
NODES = "abc"


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("line3.toml", "dir", Bed) as b:
        yield b


def _directory(bed: Bed, node: str) -> dict[str, object]:
    return dict(bed.status(node)["directory"])


def test_every_node_holds_every_members_certificate(bed: Bed) -> None:
    ids = {n: bed.status(n)["node_id"] for n in NODES}

    def complete() -> bool:
        return all(_directory(bed, n)["members"] == len(NODES) for n in NODES)

    bed.wait("every directory holds the three members", complete, within=30)
    digests = {_directory(bed, n)["digest"] for n in NODES}
    assert len(digests) == 1, digests  # the same set everywhere
    # a holds c's certificate without ever having been its neighbour.
    assert ids["c"] not in {n["node_id"] for n in bed.status("a")["neighbours"]}
    for node, other in (("a", "b"), ("b", "a")):
        row = next(n for n in bed.status(node)["neighbours"] if n["node_id"] == ids[other])
        assert "directory" in row["control"]["features"], row["control"]


def test_a_restarted_node_starts_from_its_stored_directory(bed: Bed) -> None:
    bed.wait("c's directory is complete", lambda: _directory(bed, "c")["members"] == 3, 30)
    bed.run("kill", "c")
    log = bed.dir / "nodes" / "c" / "meshd.log"
    before = log.read_text().count("directory.loaded")
    bed.run("start", "c")
    bed.wait("c starts again", lambda: log.read_text().count("directory.loaded") > before, 30)
    # At start, before any session, it holds every member it stored.
    loaded = [line for line in log.read_text().splitlines() if "directory.loaded" in line][-1]
    assert "members=3" in loaded or '"members": 3' in loaded, loaded
    bed.run("wait-converged", "--timeout", "60")
