"""Releases over the mesh (issue 20), on a - b - c (netns-testbed/topologies/line3.toml): a
wheel of this build, signed by the mesh's admin key and published on a, reaches c through b
with no uplink involved, each node fetching it from its neighbour part by part and holding
it byte for byte; a restarted c still holds and serves it, and a fetch a restart cut goes
on from where it had come; a manifest no admin signed is
refused by the daemon it is handed to. (What a member lying about a release over a session
gets: tests/netns/test_hostile_member.py.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.adapters import identity
from meshd.api.client import ControlClient, ControlError
from meshd.core.membership import MeshDefinition
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.proto.release import ReleaseManifest
from meshd.core.proto.session import MAX_RELEASE_PART
from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
FETCHED_WITHIN_S = 120.0


class Bed(meshbed.Bed):
    def state(self, node: str) -> Path:
        return self.dir / "nodes" / node / "state"

    def releases(self, node: str) -> dict:  # type: ignore[type-arg]
        return dict(self.status(node)["releases"])


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("line3.toml", "rl", Bed) as b:
        yield b


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this build, made as provisioning's bundle makes it: what a release ships."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(out),
            str(meshbed.REPO),
        ],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("meshd-*.whl")
    return found


def manifest_for(bed: Bed, artifact: Path, serial: int, key: str = "admin") -> ReleaseManifest:
    """A manifest for ``artifact`` signed with the testbed's admin key (or a's own node key:
    ``key="a"``)."""
    signer = identity.load(bed.dir / "admin" if key == "admin" else bed.state(key))
    mesh = MeshDefinition.decode((bed.state("a") / "mesh.cert").read_bytes())
    data = artifact.read_bytes()
    return ReleaseManifest(
        mesh_id=mesh.mesh_id,
        issuer=signer.node_id,
        serial=serial,
        issued_at=int(time.time()),
        meshd_version="0.2.0",
        artifact_name=artifact.name,
        artifact_size=len(data),
        artifact_sha256=hashlib.sha256(data).digest(),
        stage_interval_s=3600,
        health_window_s=600,
        signature=NO_SIGNATURE,
    ).sign(signer.signing_key)


def test_a_release_published_on_a_reaches_c_through_b_byte_for_byte(
    bed: Bed, wheel: Path, tmp_path: Path
) -> None:
    manifest = manifest_for(bed, wheel, serial=1)
    (tmp_path / "release.manifest").write_bytes(manifest.encode())
    out = bed.sh("a", "meshd", "release", "publish", str(tmp_path / "release.manifest"), str(wheel))
    assert "published" in out, out
    assert bed.releases("a")["held"]["serial"] == 1
    took = bed.wait(
        "c holds release 1",
        lambda: (bed.releases("c").get("held") or {}).get("serial") == 1,
        FETCHED_WITHIN_S,
    )
    print(f"\nreleases.a_to_c_s={took:.1f} ({manifest.artifact_size} bytes, two hops)")
    for node in "bc":
        held = (bed.state(node) / "releases" / "1.artifact").read_bytes()
        assert held == wheel.read_bytes(), node
        assert sorted(p.name for p in (bed.state(node) / "releases").iterdir()) == [
            "1.artifact",
            "1.manifest",
        ]
    shown = bed.sh("c", "meshd", "update", "status")
    assert "holds and serves: release 1 (meshd 0.2.0" in shown, shown
    assert "its stage takes it from" in shown, shown  # normal: an interval after issued_at
    # A restarted c holds it again, checked against its manifest, and still serves it.
    bed.run("kill", "c")
    bed.run("start", "c")
    bed.wait(
        "c answers", lambda: bed.sh("c", "meshd", "status", check=False).startswith("node"), 60
    )
    assert bed.releases("c")["held"]["sha256"] == manifest.artifact_sha256.hex()


def test_a_fetch_cut_by_a_restart_goes_on_from_where_it_had_come(bed: Bed, tmp_path: Path) -> None:
    """c killed in the middle of fetching release 2 from b: started again, it keeps the
    parts it had written (up to the last whole one) and asks b only for the rest."""
    artifact = tmp_path / "release-2.bin"
    artifact.write_bytes(os.urandom(12 * MAX_RELEASE_PART))  # about 6 s a hop
    manifest = manifest_for(bed, artifact, serial=2)
    (tmp_path / "2.manifest").write_bytes(manifest.encode())
    bed.sh("a", "meshd", "release", "publish", str(tmp_path / "2.manifest"), str(artifact))

    def received_at_c() -> int:
        fetching = bed.releases("c").get("fetching") or {}
        return int(fetching.get("received", 0)) if fetching.get("serial") == 2 else 0

    bed.wait("c has fetched 3 parts of 12", lambda: received_at_c() >= 3 * MAX_RELEASE_PART,
             FETCHED_WITHIN_S)  # fmt: skip
    bed.run("kill", "c")
    on_disk = (bed.state("c") / "releases" / "2.part").stat().st_size
    bed.run("start", "c")
    bed.wait(
        "c answers", lambda: bed.sh("c", "meshd", "status", check=False).startswith("node"), 60
    )
    goes_on_at = received_at_c()
    kept = min(on_disk, 11 * MAX_RELEASE_PART) // MAX_RELEASE_PART * MAX_RELEASE_PART
    assert goes_on_at >= kept >= 3 * MAX_RELEASE_PART, (goes_on_at, on_disk)
    log = (bed.dir / "nodes" / "c" / "meshd.log").read_text()
    assert f"release.resumed serial=2 received={kept} " in log, (kept, on_disk)
    print(f"\nreleases.resumed_at={goes_on_at} of {manifest.artifact_size} ({on_disk} on disk)")
    bed.wait(
        "c holds release 2",
        lambda: (bed.releases("c").get("held") or {}).get("serial") == 2,
        FETCHED_WITHIN_S,
    )
    assert (bed.state("c") / "releases" / "2.artifact").read_bytes() == artifact.read_bytes()
    assert sorted(p.name for p in (bed.state("c") / "releases").iterdir()) == [
        "2.artifact",
        "2.manifest",
    ]


def test_a_manifest_no_admin_signed_is_refused_where_it_is_handed_in(
    bed: Bed, wheel: Path, tmp_path: Path
) -> None:
    forged = manifest_for(bed, wheel, serial=5, key="a")
    (tmp_path / "forged.manifest").write_bytes(forged.encode())
    res = subprocess.run(
        [str(meshbed.TESTBED), "exec", "b", "--", "meshd", "release", "publish"]
        + [str(tmp_path / "forged.manifest"), str(wheel)],
        env=bed.env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "no admin" in res.stderr, res
    # Past the command's own check, the daemon refuses it too, with its reason.
    client = ControlClient(bed.dir / "nodes" / "b" / "meshd.sock")
    with pytest.raises(ControlError, match="release_not_admin"):
        client.publish_release(forged.encode())
    held = bed.releases("b")["held"]
    assert held is None or held["serial"] != 5
