"""What provisioning reads of a machine: its OS and its users, from files under a root."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.host import Owner, lookup_owner, read_os_release

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
RASPBIAN = 'ID=raspbian\nID_LIKE=debian\nVERSION_CODENAME=bookworm\nNAME="Raspbian"\n'
MINT = 'ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_ID="21.3"\n'
FEDORA = 'ID=fedora\nVERSION_ID=40\n# a comment\nBROKEN="unbalanced\n'


@pytest.mark.parametrize(
    ("text", "described", "supported"),
    [
        (DEBIAN, "debian 12", True),
        (DEBIAN + "VERSION_CODENAME=bookworm\n", "debian bookworm", True),
        (RASPBIAN, "raspbian bookworm", True),
        (MINT, "linuxmint 21.3", True),
        (FEDORA, "fedora 40", False),
    ],
)
def test_os_release(tmp_path: Path, text: str, described: str, supported: bool) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text(text)
    info = read_os_release(tmp_path)
    assert info is not None
    assert (info.describe(), info.supported) == (described, supported)


def test_os_release_falls_back_to_usr_lib_and_may_be_missing(tmp_path: Path) -> None:
    assert read_os_release(tmp_path) is None
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text(DEBIAN)
    info = read_os_release(tmp_path)
    assert info is not None and info.id == "debian"


def test_owner_from_passwd_and_group_under_the_root(tmp_path: Path) -> None:
    assert lookup_owner(tmp_path, "meshd") is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("meshdx:x:1:1::/:/x\nmeshd:x:998:997::/var/lib/meshd:/x\n")
    assert lookup_owner(tmp_path, "meshd") is None  # no group yet
    (tmp_path / "etc/group").write_text("meshd:x:997:\n")
    assert lookup_owner(tmp_path, "meshd") == Owner("meshd", 998, 997)
