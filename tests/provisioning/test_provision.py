"""provisioning/provision into a scratch root (--root): never the host's /etc, users or
services. The files, their modes and owners, a valid config and unit, a second run that
changes nothing, a dry run that writes nothing, and refusals before any write."""

from __future__ import annotations

import io
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from meshd.cli import main as meshd
from meshd.core.invites import BootstrapEndpoint, InviteToken, Issuer, issue_invite
from meshd.core.membership import MeshTrust
from provisioning import files
from provisioning.cli import main as provision
from tests.golden.invites import make_vectors as GEN
from tests.local_privilege import plant, untouched

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "provisioning" / "provision"
MESH, _ = GEN.mesh_and_delegation()
HOUSEHOLD = ["--uplink", "eth1", "--share", "--rate-cap", "20mbit", "--lan", "eth0"]


def _token(
    name: str = "haus", issued_at: int | None = None, lifetime_s: int = 3600, show: bool = False
) -> str:
    now = int(time.time()) if issued_at is None else issued_at
    issuer = Issuer(GEN.ADMIN, MeshTrust.from_definition(MESH, [GEN.node_id(GEN.ADMIN)]), None)
    token: InviteToken = issue_invite(
        issuer,
        name=name,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.9"),
        bootstrap=[
            BootstrapEndpoint.from_address(GEN.node_id(GEN.ADMIN), "192.0.2.10:6697"),
            BootstrapEndpoint.from_address(GEN.node_id(GEN.NODE), "192.0.2.11:6697"),
        ],
        issued_at=now,
        expires_at=now + lifetime_s,
        invite_id=secrets.token_bytes(16),
        secret=secrets.token_bytes(32),
        show_name=show,
    )
    return token.text()


TOKEN = _token()


def _run(root: Path, *args: str, token: str = TOKEN) -> tuple[int, str]:
    out = io.StringIO()
    code = provision(["--invite", token, "--root", str(root), *args], out=out)
    return code, out.getvalue()


def _snapshot(root: Path) -> dict[str, tuple[bytes, int, int, int, int]]:
    """Every path under root: bytes, mode, owner, group, mtime."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() else b""
        found[str(path.relative_to(root))] = (
            data,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
        )
    return found


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_the_entry_script_provisions_a_scratch_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--invite", TOKEN, "--root", str(root), *HOUSEHOLD],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "provision: done" in done.stdout
    assert (root / "etc/meshd/meshd.toml").is_file()


def test_files_modes_and_a_config_meshd_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    code, out = _run(root, *HOUSEHOLD, "--underlay", "wlan0", "wlan1")
    assert code == 0, out
    state = root / "var/lib/meshd"
    assert _mode(state) == 0o700
    for key in ("identity.key", "wireguard.key", "invite.token"):
        assert _mode(state / key) == 0o600, key
    for public in ("identity.pub", "wireguard.pub"):
        assert _mode(state / public) == 0o644, public
    assert (state / "invite.token").read_text() == TOKEN + "\n"
    sysctls = (root / "etc/sysctl.d/90-meshd.conf").read_text()
    for line in (
        "net.ipv4.ip_forward = 1",
        "net.ipv6.conf.all.forwarding = 1",
        "net.ipv4.conf.all.rp_filter = 0",
        "net.netfilter.nf_conntrack_acct = 1",
        "net/ipv6/conf/eth1/accept_ra = 2",  # the uplink's RAs, with forwarding on
    ):
        assert f"{line}\n" in sysctls, line  # fmt: skip
    assert "d /run/wireguard 0750 meshd meshd" in (root / "etc/tmpfiles.d/meshd.conf").read_text()
    # nf_conntrack loads at boot before systemd-sysctl sets nf_conntrack_acct, which only
    # exists once it is loaded (wireguard too where this kernel has it as a module).
    assert (root / "etc/modules-load.d/meshd.conf").read_text().startswith("nf_conntrack\n")

    config = root / "etc/meshd/meshd.toml"
    capsys.readouterr()
    assert meshd(["check-config", str(config)]) == 0, capsys.readouterr().err
    assert "ok (config version 1, 2 bootstrap peers)" in capsys.readouterr().out
    text = config.read_text()
    for line in (
        'mesh_ipv4 = "10.77.0.9"',
        'interface = "eth1"',
        "share = true",
        'rate_cap = "20mbit"',
        'interfaces = ["eth0"]',
        'beacon_interfaces = ["wlan0", "wlan1"]',
    ):
        assert line in text, line

    unit = (root / "etc/systemd/system/meshd.service").read_text()
    for line in (
        "User=meshd",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/meshd -/run/wireguard",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
    ):
        assert f"\n{line}\n" in unit, line
    assert "CAP_NET_BIND_SERVICE" not in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_unit_file_verifies(tmp_path: Path) -> None:
    assert _run(tmp_path / "root")[0] == 0
    units = tmp_path / "root/etc/systemd/system"
    # Their ExecStart is the target's virtualenv; point it at this one, which exists here.
    for name in ("meshd.service", "meshd-update.service", "meshd-update.timer"):
        here = tmp_path / name
        unit = (units / name).read_text()
        here.write_text(unit.replace(f"{files.VENV}/", f"{Path(sys.executable).parent.parent}/"))
    for name in ("meshd.service", "meshd-update.timer"):
        here = tmp_path / name
        done = subprocess.run(
            ["systemd-analyze", "verify", str(here)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0 and here.name not in done.stderr, done.stderr


def test_a_second_run_changes_nothing_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _run(root, *HOUSEHOLD)[0] == 0
    before = _snapshot(root)
    code, out = _run(root, *HOUSEHOLD)
    assert code == 0
    assert _snapshot(root) == before
    assert "+ " not in out and out.rstrip().endswith("this node is provisioned already")
    assert "= keys in /var/lib/meshd (node id" in out


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    code, out = _run(root, *HOUSEHOLD, "--dry-run")
    assert code == 0
    assert not root.exists()
    assert "would write /etc/meshd/meshd.toml" in out and "would generate keys" in out
    assert "would write /etc/systemd/system/meshd.service" in out
    assert _run(root, *HOUSEHOLD)[0] == 0
    before = _snapshot(root)
    code, out = _run(root, *HOUSEHOLD, "--dry-run")
    assert "dry run: 0 changes" in out and _snapshot(root) == before


def test_a_changed_option_rewrites_only_the_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _run(root, *HOUSEHOLD)[0] == 0
    before = _snapshot(root)
    code, out = _run(root, "--uplink", "eth1")
    assert code == 0 and "+ replace /etc/meshd/meshd.toml" in out
    after = _snapshot(root)
    changed = {k for k in after if after[k] != before.get(k) and (root / k).is_file()}
    assert changed == {"etc/meshd/meshd.toml"}  # (and its directory's mtime)


def test_files_go_to_the_meshd_user_when_the_root_has_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    uid = 4242 if os.geteuid() == 0 else os.getuid()
    gid = 4343 if os.geteuid() == 0 else os.getgid()
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\nmeshd:x:{uid}:{gid}::/:/x\n")
    (root / "etc/group").write_text(f"root:x:0:\nmeshd:x:{gid}:\n")
    code, out = _run(root)
    assert code == 0 and f"= user meshd ({uid}:{gid})" in out
    state = root / "var/lib/meshd"
    for name in ("", "identity.key", "wireguard.key", "invite.token", "identity.pub"):
        st = (state / name).stat()
        assert (st.st_uid, st.st_gid) == (uid, gid), name
    assert (root / "etc/meshd/meshd.toml").stat().st_uid == os.geteuid()


@pytest.mark.parametrize(
    ("token", "args", "message"),
    [
        (_token(show=True)[:-4] + "AAAA", [], "the invite is refused (bad_"),
        (TOKEN[:-4] + "AAAA", [], "the invite is refused (malformed)"),  # its name altered
        ("hello", [], "the invite is refused (malformed)"),
        (_token(issued_at=int(time.time()) - 7200), [], "the invite is refused (expired)"),
        (TOKEN, ["--name", "other"], "the invite is for a node named 'haus', not 'other'"),
        (TOKEN, ["--uplink", "eth1", "--rate-cap", "fast"], "uplink.rate_cap: expected a rate"),
    ],
    ids=["altered", "altered-name", "malformed", "expired", "name", "config"],
)
def test_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str, args: list[str], message: str
) -> None:
    root = tmp_path / "root"
    code, _ = _run(root, *args, token=token)
    assert code == 1
    assert message in capsys.readouterr().err
    assert not root.exists()


def test_another_invite_is_refused_once_one_is_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert _run(root)[0] == 0
    before = _snapshot(root)
    assert _run(root, token=_token())[0] == 1
    assert "holds another invite" in capsys.readouterr().err
    assert _snapshot(root) == before


def test_half_a_key_pair_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "root/var/lib/meshd"
    state.mkdir(parents=True)
    (state / "identity.key").write_text("x\n")
    assert _run(tmp_path / "root")[0] == 1
    assert "identity.key without its pair" in capsys.readouterr().err
    assert sorted(p.name for p in state.iterdir()) == ["identity.key"]


def test_every_household_checks_the_internet_through_its_exit_tunnel(tmp_path: Path) -> None:
    """docs/threat-model.md, Gateway adverts: a household with no uplink of its own checks
    through its exit tunnel too (1.1.1.1:443 unless it says)."""

    def check_target(root: Path, *args: str) -> str:
        assert _run(root, *args)[0] == 0
        text = (root / "etc/meshd/meshd.toml").read_text()
        exit_section = text.split("[exit]\n", 1)[1]
        return exit_section.split("\n", 1)[0]

    assert check_target(tmp_path / "a") == 'check_target = "1.1.1.1:443"'
    assert check_target(tmp_path / "b", "--check-target", "192.0.2.80:443") == (
        'check_target = "192.0.2.80:443"'
    )
    given = ("--uplink", "eth1", "--health-target", "192.0.2.7:80")  # the uplink's target
    assert check_target(tmp_path / "c", *given) == 'check_target = "192.0.2.7:80"'


def test_share_without_an_uplink_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as excinfo:
        _run(tmp_path / "root", "--share")
    assert excinfo.value.code == 2


# ---- local privilege: the state directory is the meshd user's (docs/threat-model.md) -----


def _provisioned_for_meshd(root: Path) -> Path:
    """A root provisioned once, its state directory given to a ``meshd`` user (another
    user when run as root): that user may plant anything there. Returns the directory."""
    uid = 4242 if os.geteuid() == 0 else os.getuid()
    gid = 4343 if os.geteuid() == 0 else os.getgid()
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\nmeshd:x:{uid}:{gid}::/:/x\n")
    (root / "etc/group").write_text(f"root:x:0:\nmeshd:x:{gid}:\n")
    assert _run(root)[0] == 0
    return root / "var/lib/meshd"


@pytest.mark.parametrize("name", ["identity.key", "wireguard.key", "invite.token"])
def test_a_link_planted_in_the_state_directory_is_refused_not_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    state = _provisioned_for_meshd(tmp_path / "root")
    (state / name).unlink()
    victim = plant(state, name)
    capsys.readouterr()
    code, _ = _run(tmp_path / "root")
    assert code == 1
    assert f"{name}: is a symbolic link: not following it" in capsys.readouterr().err
    untouched(victim)
    assert (state / name).is_symlink()


def test_a_link_planted_as_the_old_temporary_name_is_not_written_through(
    tmp_path: Path,
) -> None:
    state = _provisioned_for_meshd(tmp_path / "root")
    (state / "invite.token").unlink()  # written again on the next run
    victim = plant(state, ".invite.token.provision")  # the fixed name provision used
    code, out = _run(tmp_path / "root")
    assert code == 0 and "+ write /var/lib/meshd/invite.token" in out
    untouched(victim)
    assert (state / "invite.token").read_text() == TOKEN + "\n"
    assert (state / "invite.token").stat().st_uid == (state.stat().st_uid)


# ---- the token kept out of argv (/proc/PID/cmdline, the shell's history) ------------------


def test_the_token_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "invite"
    token_file.write_text(f"\n{TOKEN}\n█▀▀▀▀▀█ (the QR code meshd invite prints after it)\n")
    out = io.StringIO()
    code = provision(["--invite-file", str(token_file), "--root", str(tmp_path / "root")], out=out)
    assert code == 0, out.getvalue()
    assert (tmp_path / "root/var/lib/meshd/invite.token").read_text() == TOKEN + "\n"


def test_the_token_from_standard_input_through_the_entry_script(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--invite", "-", "--root", str(root)],
        input=TOKEN + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (root / "var/lib/meshd/invite.token").read_text() == TOKEN + "\n"
    assert TOKEN not in done.stdout + done.stderr  # nor printed back


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("\n  \n"), "no invite in"),
        (lambda p: None, "No such file or directory"),
        (lambda p: p.write_bytes(b"\xff\xfe"), "not text"),
    ],
    ids=["empty", "missing", "binary"],
)
def test_an_invite_file_without_a_token_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    token_file = tmp_path / "invite"
    make(token_file)
    code = provision(["--invite-file", str(token_file), "--root", str(tmp_path / "root")])
    assert code == 1 and message in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def test_one_way_to_give_the_token(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as excinfo:
        _run(tmp_path / "root", "--invite-file", str(tmp_path / "invite"))
    assert excinfo.value.code == 2
    with pytest.raises(SystemExit) as excinfo:
        provision(["--root", str(tmp_path / "root")])
    assert excinfo.value.code == 2


def _backup_of(root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The node provisioned under ``root``, backed up as ``meshd backup`` does; the backup
    file and its passphrase file."""
    from meshd.adapters import identity, node_backup

    state = root / "var/lib/meshd"
    node = identity.load(state).node_id
    made = node_backup.collect(root / "etc/meshd/meshd.toml", state, node, "haus")
    backup, secret = tmp_path / "haus.backup", tmp_path / "passphrase"
    backup.write_bytes(node_backup.seal(made, b"a household secret", secrets.token_bytes(16)))
    secret.write_text("a household secret\n")
    return backup, secret


def test_a_node_restored_from_its_backup_onto_a_new_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old-card"
    assert _run(old, *HOUSEHOLD)[0] == 0
    backup, secret = _backup_of(old, tmp_path)
    new = tmp_path / "new-card"

    def restore(root: Path, *extra: str) -> tuple[int, str]:
        out = io.StringIO()
        argv = ["--restore", str(backup), "--root", str(root), *extra]
        return provision([*argv, "--passphrase-file", str(secret)], out=out), out.getvalue()

    code, out = restore(new)
    assert code == 0, capsys.readouterr().err
    assert "+ write /var/lib/meshd/identity.key" in out and "generate keys" not in out
    kept = ("etc/meshd/meshd.toml", "var/lib/meshd")
    for path, (data, mode, *_) in _snapshot(old).items():
        if path.startswith(kept) and (old / path).is_file():
            assert _snapshot(new)[path][:2] == (data, mode), path
    assert (new / "etc/systemd/system/meshd.service").is_file()
    before = _snapshot(new)
    code, out = restore(new)
    assert code == 0 and "this node is provisioned already" in out
    assert "restored before; its files are newer" in out and _snapshot(new) == before

    other = tmp_path / "other"
    assert _run(other)[0] == 0
    before = _snapshot(other)
    assert restore(other)[0] == 1
    assert "holds another node's keys" in capsys.readouterr().err and _snapshot(other) == before
    secret.write_text("not the passphrase\n")
    assert restore(tmp_path / "third")[0] == 1
    assert "wrong passphrase" in capsys.readouterr().err
    assert not (tmp_path / "third").exists()


def test_restore_takes_no_household_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        provision(["--restore", "x", "--uplink", "eth1", "--root", str(tmp_path)])
    assert "--restore takes the node's config from its backup" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        provision(["--invite", TOKEN, "--passphrase-file", "x", "--root", str(tmp_path)])
    assert "--passphrase-file goes with --restore" in capsys.readouterr().err
