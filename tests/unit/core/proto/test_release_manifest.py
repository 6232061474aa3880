"""The release manifest: its canonical bytes, JSON form and signature, the stages' starts,
the artifact it names, and who a node takes one from."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.membership import MembershipError
from meshd.core.membership.cosigned import Cosigned
from meshd.core.proto.release import ReleaseError, ReleaseManifest, check_for_mesh, decode_signed
from tests.golden.release.make_vectors import ADMIN, ARTIFACT, MESH_ID, SECOND, signed

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "release" / "manifest.json"
ADMINS = (node_id_from_public(bytes(ADMIN.verify_key)),)


def test_the_golden_vector_decodes_verifies_and_encodes_back() -> None:
    vector = json.loads(GOLDEN.read_text())
    decoded = ReleaseManifest.decode(bytes.fromhex(vector["hex"]))
    decoded.verify_signature()
    assert decoded.to_json() == vector["json"]
    assert decoded == signed(ADMIN, MESH_ID, 7, ARTIFACT)
    assert ReleaseManifest.from_json(vector["json"]).encode().hex() == vector["hex"]


def test_the_cosigned_golden_vector_decodes_and_both_signatures_count() -> None:
    vector = json.loads((GOLDEN.parent / "manifest_cosigned.json").read_text())
    both = decode_signed(bytes.fromhex(vector["hex"]))
    assert both.to_json() == vector["json"]
    assert both.record == signed(ADMIN, MESH_ID, 7, ARTIFACT)
    admins = (*ADMINS, node_id_from_public(bytes(SECOND.verify_key)))
    assert both.signers(admins) == frozenset(admins)
    assert Cosigned.from_json(vector["json"], ReleaseManifest).encode().hex() == vector["hex"]
    decoded = subprocess.run(
        [sys.executable, "-m", "meshd", "decode", vector["hex"]], capture_output=True, text=True
    )
    assert decoded.returncode == 0 and json.loads(decoded.stdout) == vector["json"]


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
    assert check_for_mesh(Cosigned(m), MESH_ID, ADMINS, 1, taken_serial=6) == m
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
            check_for_mesh(Cosigned(manifest), mesh, admins, 1, taken)


def test_each_refusal_carries_its_code() -> None:
    m = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    stranger = signed(SigningKey(bytes(32)), MESH_ID, 9, ARTIFACT)
    cases = [
        (m, bytes(16), 1, 0, "release_other_mesh"),
        (stranger, MESH_ID, 1, 0, "release_not_admin"),
        (replace(m, serial=8), MESH_ID, 1, 0, "release_bad_signature"),
        (m, MESH_ID, 2, 0, "release_short_of_quorum"),
        (m, MESH_ID, 1, 7, "release_not_newer"),
    ]
    for manifest, mesh, threshold, taken, code in cases:
        with pytest.raises(ReleaseError) as refused:
            check_for_mesh(Cosigned(manifest), mesh, ADMINS, threshold, taken)
        assert refused.value.code == code
    with pytest.raises(ReleaseError) as refused:
        m.check_artifact(ARTIFACT[:-1])
    assert refused.value.code == "release_bad_artifact"


def test_where_the_mesh_asks_for_two_admins_one_signature_is_not_a_release() -> None:
    other = SigningKey(bytes(range(1, 33)))
    stranger = SigningKey(bytes(32))
    admins = (*ADMINS, node_id_from_public(bytes(other.verify_key)))
    alone = Cosigned(signed(ADMIN, MESH_ID, 7, ARTIFACT))
    with pytest.raises(ReleaseError, match="signed by 1 admin\\(s\\), the mesh asks for 2"):
        check_for_mesh(alone, MESH_ID, admins, 2, taken_serial=0)
    with pytest.raises(ReleaseError, match="signed by 1 admin"):  # a stranger counts nothing
        check_for_mesh(alone.cosign(stranger), MESH_ID, admins, 2, taken_serial=0)
    both = alone.cosign(other)
    assert decode_signed(both.encode()) == both
    assert check_for_mesh(both, MESH_ID, admins, 2, taken_serial=0) == alone.record
    forged = Cosigned(alone.record, ((admins[1], bytes(64)),))
    with pytest.raises(ReleaseError, match="signature does not verify"):
        check_for_mesh(forged, MESH_ID, admins, 2, taken_serial=0)


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
