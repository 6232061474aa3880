"""meshd leave on a scratch root (--root): provision, then leave, leaves nothing of
provision behind; a second leave changes nothing; a dry run writes nothing; the receipts
are saved first (a failed export removes nothing); a node holding the admin key refuses.
The kernel part needs a node that ran: tests/netns/test_leave.py."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from meshd.cli import build_parser
from meshd.cli import main as meshd
from meshd.cli.commands import ADMIN_KEY
from tests.local_privilege import plant, untouched
from tests.provisioning.test_provision import HOUSEHOLD, _run, _snapshot
from tests.unit.cli.test_receipts_export_command import provider_config  # noqa: F401 (fixture)

STATE = "var/lib/meshd"


def _leave(root: Path, *args: str) -> tuple[int, str]:
    from provisioning.leave import main as leave

    out = io.StringIO()
    parsed = build_parser().parse_args(["leave", "--root", str(root), *args])
    return leave(parsed, out=out), out.getvalue()


def _provisioned(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("pi\n")  # the system's own: leave keeps it
    before = _snapshot(root)
    code, out = _run(root, *HOUSEHOLD)
    assert code == 0, out
    return root, before


def test_provision_then_leave_leaves_nothing_of_provision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, before = _provisioned(tmp_path)
    provisioned = _snapshot(root)
    code, out = _leave(root, "--dry-run")
    assert code == 0, out
    assert "would remove /etc/meshd and everything in it" in out
    assert "would remove /var/lib/meshd and everything in it" in out
    assert "receipts: no ledger to export" in out  # not joined: no receipts yet
    assert _snapshot(root) == provisioned

    code, out = _leave(root, "--yes")
    assert code == 0, capsys.readouterr().err
    assert "leave: done" in out
    assert "the kernel: nothing of this node's here" in out
    after = _snapshot(root)
    # provision made etc/meshd, etc/sysctl.d, ...: their emptied parents may stay, no file
    left = {p for p in after if p not in before and not (root / p).is_dir()}
    assert left == set(), left
    assert not (root / STATE).exists() and not (root / "etc/meshd").exists()
    assert (root / "etc/hostname").read_text() == "pi\n"

    code, out = _leave(root, "--yes")
    assert code == 0 and "nothing of meshd here" in out, out
    assert _snapshot(root) == after


def test_the_receipts_are_saved_before_anything_is_removed(
    tmp_path: Path,
    provider_config: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = _provisioned(tmp_path / "box")
    # The node has joined and holds receipts: the fixture's files and config, in place.
    for name in ("ledger.sqlite", "mesh.cert", "membership.cert"):
        shutil.copyfile(provider_config.parent / "p" / name, root / STATE / name)
    text = provider_config.read_text()
    (root / "etc/meshd/meshd.toml").write_text(
        text.replace(str(provider_config.parent / "p"), "/var/lib/meshd")
    )
    capsys.readouterr()
    assert meshd(["receipts", "export", "--config", str(provider_config)]) == 0
    expected = capsys.readouterr().out

    export = tmp_path / "receipts.jsonl"
    code, out = _leave(root, "--yes", "--export", str(export))
    assert code == 0, capsys.readouterr().err
    assert export.read_text() == expected
    # The fixture's three receipts are of one epoch: the ledger keeps the latest.
    assert sum(json.loads(line)["type"] == "receipt" for line in expected.splitlines()) == 1
    assert f"meshd receipts verify {export}" in out
    assert not (root / STATE).exists()


def test_a_failed_export_or_the_admin_key_stops_leave_with_nothing_removed(
    tmp_path: Path,
    provider_config: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = _provisioned(tmp_path / "box")
    for name in ("ledger.sqlite", "mesh.cert", "membership.cert"):
        shutil.copyfile(provider_config.parent / "p" / name, root / STATE / name)
    provisioned = _snapshot(root)
    # The provisioned config pins the invite's admin key, not the one of these receipts.
    export = tmp_path / "receipts.jsonl"
    code, _ = _leave(root, "--yes", "--export", str(export))
    assert code == 1
    assert "cannot save the receipts" in capsys.readouterr().err
    assert _snapshot(root) == provisioned and not export.exists()
    # Into the directory that goes: refused too.
    code, _ = _leave(root, "--yes", "--export", str(root / STATE / "r.jsonl"))
    assert code == 1 and "would be removed with the node" in capsys.readouterr().err

    (root / STATE / ADMIN_KEY).write_text("key\n")
    code, _ = _leave(root, "--yes", "--purge")
    assert code == 0
    assert not (root / STATE).exists()


def test_the_admin_key_is_not_removed_by_accident(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = _provisioned(tmp_path)
    (root / STATE / ADMIN_KEY).write_text("key\n")
    provisioned = _snapshot(root)
    code, _ = _leave(root, "--yes")
    assert code == 1
    assert "holds the mesh's admin key" in capsys.readouterr().err
    assert _snapshot(root) == provisioned


def test_without_a_terminal_leave_asks_for_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = _provisioned(tmp_path)
    provisioned = _snapshot(root)
    code, out = _leave(root)
    assert code == 1
    assert "give --yes" in capsys.readouterr().err
    assert "leaves the mesh for good" in out
    assert _snapshot(root) == provisioned


def test_links_planted_in_the_state_directory_stop_leave_untouched(
    tmp_path: Path,
    provider_config: Path,  # noqa: F811 (the fixture)
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The meshd user owns the state directory; root's leave neither reads a key nor opens
    the ledger through a link planted there (and removes nothing when it stops)."""
    root, _ = _provisioned(tmp_path / "box")
    state = root / STATE
    for name in ("mesh.cert", "membership.cert"):
        shutil.copyfile(provider_config.parent / "p" / name, state / name)
    text = provider_config.read_text()
    (root / "etc/meshd/meshd.toml").write_text(
        text.replace(str(provider_config.parent / "p"), "/var/lib/meshd")
    )
    ledger = plant(state, "ledger.sqlite")
    provisioned = _snapshot(root)
    code, _ = _leave(root, "--yes", "--export", str(tmp_path / "receipts.jsonl"))
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot save the receipts" in err and "ledger.sqlite: is a symbolic link" in err
    assert _snapshot(root) == provisioned
    untouched(ledger)

    (state / "identity.key").unlink()
    key = plant(state, "identity.key")
    assert _leave(root, "--yes", "--purge")[0] == 1
    assert "identity.key: is a symbolic link: not following it" in capsys.readouterr().err
    assert (state / "wireguard.key").exists()
    untouched(key)
