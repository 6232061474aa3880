"""meshd release make|check: an admin node signs a manifest for an artifact; a member of
the mesh checks it and the artifact; a changed artifact, a member without the admin key
and another mesh's node are refused; meshd decode prints the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshd.cli import main as meshd
from meshd.core.proto.release import ReleaseManifest
from tests.unit.cli.test_invite_command import _node


def test_an_admin_signs_a_release_and_a_member_checks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = _node(tmp_path / "admin", admin=True)
    artifact = tmp_path / "meshd-0.2.0-py3-none-any.whl"
    artifact.write_bytes(b"a wheel" * 1000)
    manifest = tmp_path / "release.manifest"
    make = ["release", "make", str(artifact), "--version", "0.2.0", "--serial", "3"]
    assert meshd([*make, "--out", str(manifest), "--config", str(admin)]) == 0
    out = capsys.readouterr().out
    assert "release 3 (meshd 0.2.0, meshd-0.2.0-py3-none-any.whl, 7000 bytes) signed" in out
    assert "normal from " in out and "manual when applied" in out
    m = ReleaseManifest.decode(manifest.read_bytes())
    assert (m.serial, m.artifact_size, m.stage_interval_s, m.health_window_s) == (
        3,
        7000,
        86_400,
        600,
    )
    assert meshd([*make, "--out", str(manifest), "--config", str(admin)]) == 1
    assert "exists: not overwriting it" in capsys.readouterr().err

    check = ["release", "check", str(manifest), "--config", str(admin)]
    assert meshd([*check, "--artifact", str(artifact)]) == 0
    assert "signed for this mesh by 1 of its admins (1 needed)" in capsys.readouterr().out
    artifact.write_bytes(b"a wheel" * 999 + b"a whelk")
    assert meshd([*check, "--artifact", str(artifact)]) == 1
    assert "SHA-256 " in capsys.readouterr().err

    member = _node(tmp_path / "member", admin=False)  # a mesh of the same id, another admin
    assert meshd([*make, "--out", str(tmp_path / "m2"), "--config", str(member)]) == 1
    assert "admin" in capsys.readouterr().err  # it holds no admin key
    assert meshd(["release", "check", str(manifest), "--config", str(member)]) == 1
    assert f"signed by {m.issuer}, no admin" in capsys.readouterr().err

    decoded = subprocess.run(
        [sys.executable, "-m", "meshd", "decode", manifest.read_bytes().hex()],
        capture_output=True,
        text=True,
    )
    assert decoded.returncode == 0 and json.loads(decoded.stdout)["serial"] == 3
