"""The release manifest: its canonical bytes, JSON form and signature, the stages' starts,
the artifact it names, and who a node takes one from."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.membership import MembershipError
from meshd.core.proto.release import ReleaseError, ReleaseManifest, check_for_mesh
from tests.golden.release.make_vectors import ADMIN, ARTIFACT, MESH_ID, signed

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "release" / "manifest.json"
ADMINS = (node_id_from_public(bytes(ADMIN.verify_key)),)


def test_the_golden_vector_decodes_verifies_and_encodes_back() -> None:
    vector = json.loads(GOLDEN.read_text())
    decoded = ReleaseManifest.decode(bytes.fromhex(vector["hex"]))
    decoded.verify_signature()
    assert decoded.to_json() == vector["json"]
    assert decoded == signed(ADMIN, MESH_ID, 7, ARTIFACT)
    assert ReleaseManifest.from_json(vector["json"]).encode().hex() == vector["hex"]


def test_each_stage_starts_one_interval_after_the_one_before() -> None:
    m = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    starts = [m.stage_start(s) for s in ("early", "normal", "late", "manual")]
    assert starts == [m.issued_at, m.issued_at + 86_400, m.issued_at + 172_800, None]
    with pytest.raises(ValueError, match="unknown stage 'soon'"):
        m.stage_start("soon")


def test_only_the_artifact_named_passes() -> None:
    m = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    m.check_artifact(ARTIFACT)
    with pytest.raises(ReleaseError, match="37 bytes, the manifest says 38"):
        m.check_artifact(ARTIFACT[:-1])
    with pytest.raises(ReleaseError, match="SHA-256 .*, the manifest says 9f50f38d"):
        m.check_artifact(ARTIFACT.upper())


def test_a_node_takes_a_newer_release_of_its_mesh_from_a_current_admin_only() -> None:
    m = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    check_for_mesh(m, MESH_ID, ADMINS, taken_serial=6)
    refused = [
        (m, bytes(16), ADMINS, 0, "for another mesh"),
        (m, MESH_ID, ("A" * 43,), 0, "no admin"),
        (m, MESH_ID, ADMINS, 7, "not newer than release 7"),
        (replace(m, serial=8), MESH_ID, ADMINS, 0, "signature does not verify"),
    ]
    stranger = signed(SigningKey(bytes(32)), MESH_ID, 9, ARTIFACT)
    refused.append((stranger, MESH_ID, ADMINS, 0, "signed by .*, no admin"))
    for manifest, mesh, admins, taken, why in refused:
        with pytest.raises(ReleaseError, match=why):
            check_for_mesh(manifest, mesh, admins, taken)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"artifact_name": "../meshd.whl"}, "a file name, not a path"),
        ({"artifact_name": ""}, "artifact_name"),
        ({"artifact_size": 0}, "artifact_size must be"),
        ({"stage_interval_s": 8 * 86_400}, "stage_interval_s must be at most"),
        ({"health_window_s": 59}, "health_window_s must be 60..3600"),
        ({"meshd_version": "x" * 33}, "meshd_version"),
        ({"artifact_sha256": b"\0" * 31}, "artifact_sha256 must be 32 bytes"),
    ],
)
def test_a_manifest_refuses_impossible_fields(change: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        replace(signed(ADMIN, MESH_ID, 7, ARTIFACT), **change)


def test_bytes_that_are_no_manifest_are_malformed() -> None:
    data = signed(ADMIN, MESH_ID, 7, ARTIFACT).encode()
    for mangled in (data[:-1], data + b"\0", data[:40]):
        with pytest.raises(MembershipError):
            ReleaseManifest.decode(mangled)
