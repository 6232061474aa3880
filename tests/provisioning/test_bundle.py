"""The offline bundle's pure parts: its manifest, the fit check, the flat repository's
index. Making a real bundle and installing from it with no network is the VM tier's
(tests/vm/test_guest_node.py)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning import bundle
from provisioning.cli import main

MANIFEST = bundle.Manifest("0.1.0", "arm64", "3.11", ("wireguard-tools", "nftables"))


def test_the_manifest_reads_back(tmp_path: Path) -> None:
    (tmp_path / bundle.MANIFEST).write_text(MANIFEST.to_json())
    assert bundle.read_manifest(tmp_path) == MANIFEST


@pytest.mark.parametrize(
    "text",
    ["", "{}", '{"format": 2, "meshd": "0.1.0"}', '{"format": 1, "arch": "arm64"}', "[1]"],
)
def test_what_is_not_a_bundle_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / bundle.MANIFEST).write_text(text)
    with pytest.raises(bundle.BundleError, match="bundle.json"):
        bundle.read_manifest(tmp_path)


def test_a_bundle_for_another_machine_is_refused_naming_both() -> None:
    bundle.check_fits(MANIFEST, "arm64", "3.11")
    with pytest.raises(bundle.BundleError, match="for arm64, this machine is amd64"):
        bundle.check_fits(MANIFEST, "amd64", "3.11")
    with pytest.raises(bundle.BundleError, match="Python 3.11, this is 3.13"):
        bundle.check_fits(MANIFEST, "arm64", "3.13")


def test_provision_refuses_a_foreign_bundle_before_anything_is_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = bundle.Manifest("0.1.0", "s390x", "3.11", ("nftables",))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / bundle.MANIFEST).write_text(foreign.to_json())
    root = tmp_path / "root"
    root.mkdir()
    code = main(["--bundle", str(tmp_path / "b"), "--invite", "x", "--root", str(root)])
    assert code == 1
    assert "the bundle is for s390x" in capsys.readouterr().err
    assert list(root.iterdir()) == []


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_the_packages_index_names_each_deb_with_its_hash(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: meshd-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: a test\n"
    )
    debs = tmp_path / "debs"
    debs.mkdir()
    deb = debs / "meshd-test_1.0_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(deb)], check=True, capture_output=True)
    index = bundle.packages_index(debs)
    assert "Package: meshd-test\n" in index
    assert "Filename: ./meshd-test_1.0_all.deb\n" in index
    assert f"SHA256: {hashlib.sha256(deb.read_bytes()).hexdigest()}\n" in index
    assert f"Size: {deb.stat().st_size}\n" in index


def test_apt_reads_only_the_bundle(tmp_path: Path) -> None:
    options = bundle.apt_options(tmp_path / "b", tmp_path / "scratch")
    sources = (tmp_path / "scratch" / "bundle.list").read_text()
    assert sources == f"deb [trusted=yes] file:{tmp_path / 'b' / 'debs'} ./\n"
    assert "Dir::Etc::SourceParts=/nonexistent" in options
    assert f"Dir::State::Lists={tmp_path / 'scratch' / 'lists'}" in options
