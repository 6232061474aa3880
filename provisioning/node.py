"""The node stage of provisioning: the invite, the node's files, the service.

Everything that can refuse (the invite, the name, the config, an invite already waiting,
half a key pair) is checked before the first file is written. The invite token goes to
the state directory for meshd to redeem when it starts; it is written once and then left
alone (meshd keeps it after redeeming it), so a second run with the same invite changes
nothing and one with another invite is refused.

With ``--restore FILE`` the node is one that existed before (a new SD card): its backup
(``meshd backup``, meshd.adapters.node_backup) is opened with its passphrase and its config
parsed before anything is written, and its state files and config take the place of the
invite, the new keys and the rendered config.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import TextIO

from meshd import config
from meshd.adapters import identity, node_backup, trust
from meshd.core.invites import TOKEN_FILE, InviteError, InviteToken, parse_token, verify_invite
from provisioning import files, host
from provisioning.layout import (
    CONFIG_DIR,
    CONFIG_FILE,
    MODULES_FILE,
    SERVICE,
    STATE_DIR,
    SYSCTL_FILE,
    TMPFILES_FILE,
    UNIT_FILE,
    UPDATE_SERVICE_FILE,
    UPDATE_TIMER,
    UPDATE_TIMER_FILE,
    USER,
    VENV,
)
from provisioning.steps import Refused, Runner

TOKEN_PATH = f"{STATE_DIR}/{TOKEN_FILE}"
KEYS = (identity.IDENTITY_KEY, identity.WIREGUARD_KEY)
PUBLIC = (identity.IDENTITY_PUB, identity.WIREGUARD_PUB)


def invite_text(args: argparse.Namespace, stdin: TextIO | None = None) -> str:
    """The token as given: ``--invite TOKEN``, ``--invite -`` (standard input) or
    ``--invite-file PATH``; from a file or the input, its first line that is not blank (what
    ``meshd invite`` prints first). Read here, in the node stage, and not before: the
    system stage may hand over to the virtualenv's Python, which inherits the input unread."""
    if args.invite_file is not None:
        try:
            text = Path(args.invite_file).read_text()
        except OSError as exc:
            raise Refused(f"--invite-file {args.invite_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise Refused(f"--invite-file {args.invite_file}: not text") from None
    elif args.invite == "-":
        text = (stdin or sys.stdin).read()
    else:
        return str(args.invite)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    where = args.invite_file or "standard input"
    raise Refused(f"no invite in {where}: give the token of meshd invite")


def _token(args: argparse.Namespace) -> InviteToken:
    try:
        token = parse_token(invite_text(args))
        verify_invite(token.invite, time.time(), admins=token.invite.admins)
    except InviteError as exc:
        raise Refused(f"the invite is refused ({exc.reason}): {exc.message}") from None
    if args.name is not None and args.name != token.node_name:
        raise Refused(f"the invite is for a node named {token.node_name!r}, not {args.name!r}")
    return token


def _household(args: argparse.Namespace) -> files.Household:
    return files.Household(
        uplink=args.uplink,
        share=args.share,
        rate_cap=args.rate_cap,
        health_target=args.health_target or files.DEFAULT_HEALTH_TARGET,
        check_target=args.check_target or args.health_target or files.DEFAULT_HEALTH_TARGET,
        lan=tuple(args.lan),
        underlay=tuple(args.underlay),
    )


def _preflight(runner: Runner, token: InviteToken, config_text: str) -> None:
    try:
        config.parse(config_text, CONFIG_FILE)
    except config.ConfigError as exc:
        raise Refused(f"the config would be invalid: {exc}") from None
    waiting = runner.read(TOKEN_PATH)
    if waiting is not None and waiting.decode(errors="replace").strip() != token.text():
        raise Refused(
            f"{TOKEN_PATH} holds another invite (this node's, waiting or redeemed): "
            "remove it to provision this node again from a new one"
        )
    present = [name for name in KEYS if os.path.lexists(runner.path(f"{STATE_DIR}/{name}"))]
    if len(present) == 1:
        raise Refused(f"{STATE_DIR} has {present[0]} without its pair: not overwriting it")


def _user(runner: Runner, real: bool) -> None:
    owner = host.lookup_owner(runner.root, USER)
    if owner is None and real:
        runner.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                STATE_DIR,
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ],
            f"create the user and group {USER}",
        )
        owner = host.lookup_owner(runner.root, USER)  # None in a dry run
    elif owner is None:
        print(
            f"= no user {USER} under {runner.root}: its files keep this run's owner "
            f"(create {USER}, then run this again to give them to it)",
            file=runner.out,
        )
    else:
        runner.unchanged(f"user {USER} ({owner.uid}:{owner.gid})")
    runner.owner = owner


def _keys(runner: Runner) -> None:
    """Made as ``meshd keygen`` makes them (meshd.adapters.identity.generate), kept when present."""
    state = runner.path(STATE_DIR)
    if os.path.lexists(state / identity.IDENTITY_KEY):  # own() refuses a link there
        for name in KEYS:
            runner.own(f"{STATE_DIR}/{name}", 0o600)
        try:
            node_id = identity.load(state).node_id
        except identity.KeyFileError as exc:
            raise Refused(str(exc)) from None
        runner.unchanged(f"keys in {STATE_DIR} (node id {node_id})")
        return
    runner.changed(f"generate keys in {STATE_DIR}: {', '.join(KEYS)} (0600), {', '.join(PUBLIC)}")
    if runner.dry_run:
        return
    try:
        node_id = identity.generate(state).node_id
    except identity.KeyFileError as exc:
        raise Refused(str(exc)) from None
    for name in KEYS:
        runner.own(f"{STATE_DIR}/{name}", 0o600)
    for name in PUBLIC:
        runner.own(f"{STATE_DIR}/{name}", 0o644)
    print(f"  node id {node_id}", file=runner.out)


def _uplink(runner: Runner) -> str | None:
    """The uplink interface the node's config (written, or restored) names, if any."""
    data = runner.read(CONFIG_FILE)
    try:
        uplink = tomllib.loads(data.decode()).get("uplink", {}) if data else {}
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # meshd's own parser says what is wrong with it
    interface = uplink.get("interface") if isinstance(uplink, dict) else None
    return interface if isinstance(interface, str) and interface else None


def node_stage(args: argparse.Namespace, runner: Runner, real: bool, wireguard: str) -> None:
    before = runner.changes
    if args.restore:
        _restored_node(args, runner, real)
    else:
        _invited_node(args, runner, real)
    changed = {
        "node": runner.changes > before,  # its user, keys, state files, config
        "sysctl": runner.file(SYSCTL_FILE, files.sysctl(_uplink(runner)).encode(), 0o644),
        "tmpfiles": runner.file(TMPFILES_FILE, files.TMPFILES.encode(), 0o644),
        "unit": runner.file(UNIT_FILE, files.UNIT.encode(), 0o644),
        "updates": runner.file(UPDATE_SERVICE_FILE, files.UPDATE_SERVICE.encode(), 0o644)
        | runner.file(UPDATE_TIMER_FILE, files.UPDATE_TIMER.encode(), 0o644),
        "modules": runner.file(MODULES_FILE, files.modules(wireguard).encode(), 0o644),
    }
    if real:
        _service(runner, changed, wireguard)


def _invited_node(args: argparse.Namespace, runner: Runner, real: bool) -> None:
    token = _token(args)
    invite = token.invite
    config_text = files.render_config(invite, _household(args), token.node_name)
    _preflight(runner, token, config_text)
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(invite.expires_at))
    print(
        f"= invite {invite.invite_id.hex()}: {token.node_name!r} ({invite.mesh_ipv4}) in mesh "
        f"{invite.mesh_id.hex()}, from {invite.issuer}, until {until}",
        file=runner.out,
    )
    _user(runner, real)
    runner.directory(CONFIG_DIR, 0o755)
    runner.directory(STATE_DIR, 0o700, owned=True)
    _keys(runner)
    runner.file(CONFIG_FILE, config_text.encode(), 0o644)
    runner.file(TOKEN_PATH, f"{token.text()}\n".encode(), 0o600, owned=True)


def _backup(args: argparse.Namespace, out: TextIO) -> node_backup.Backup:
    """The backup of ``--restore``, opened and checked before anything is written."""
    from meshd.cli.commands.restore import open_backup

    try:
        backup, cfg = open_backup(args.restore, args.passphrase_file, Path(CONFIG_FILE), out, "= ")
    except (OSError, ValueError) as exc:  # SealError and ConfigError are ValueErrors
        raise Refused(f"--restore {args.restore}: {exc}") from None
    if cfg.node.state_dir != Path(STATE_DIR):
        raise Refused(
            f"the backup's config keeps its state in {cfg.node.state_dir}, not {STATE_DIR} "
            "(where the unit lets meshd write): restore it with meshd restore instead"
        )
    return backup


def _restored_node(args: argparse.Namespace, runner: Runner, real: bool) -> None:
    """The node of a backup: its state files and config, into a state directory that holds
    no identity key yet; one holding this node's key is left as it is (its ledger is newer
    than the backup's), another node's is refused."""
    backup = _backup(args, runner.out)
    try:
        there = node_backup.present(runner.path(STATE_DIR))
    except identity.KeyFileError as exc:
        raise Refused(str(exc)) from None
    if there is not None and there != backup.node:
        raise Refused(f"{STATE_DIR} holds another node's keys ({there}): not replacing them")
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(backup.created))
    print(f"= node {backup.node} ({backup.name!r}), backed up {made}", file=runner.out)
    _user(runner, real)
    runner.directory(CONFIG_DIR, 0o755)
    runner.directory(STATE_DIR, 0o700, owned=True)
    if there == backup.node:
        runner.unchanged(f"node {there} in {STATE_DIR} (restored before; its files are newer)")
        if runner.read(CONFIG_FILE) is None:
            runner.file(CONFIG_FILE, backup.config, 0o644)
        return
    for name, (mode, data) in backup.files.items():
        runner.file(f"{STATE_DIR}/{name}", data, mode, owned=True)
    runner.file(CONFIG_FILE, backup.config, 0o644)


def _service(runner: Runner, changed: dict[str, bool], wireguard: str) -> None:
    if not Path("/proc/sys/net/netfilter/nf_conntrack_acct").exists():
        runner.run(["modprobe", "nf_conntrack"], "load the nf_conntrack module")
    if wireguard == "module":
        runner.run(["modprobe", "wireguard"], "load the wireguard module")
    if changed["sysctl"]:
        runner.run(["sysctl", "--quiet", "--load", SYSCTL_FILE], f"apply {SYSCTL_FILE}")
    if changed["tmpfiles"]:
        runner.run(["systemd-tmpfiles", "--create", TMPFILES_FILE], "create /run/wireguard")
    if changed["unit"] or changed["updates"]:
        runner.run(["systemctl", "daemon-reload"], "reload systemd's units")
    if not host.succeeds(["systemctl", "is-enabled", "--quiet", UPDATE_TIMER]):
        runner.run(["systemctl", "enable", "--now", UPDATE_TIMER], f"enable {UPDATE_TIMER}")
    if not host.succeeds(["systemctl", "is-enabled", "--quiet", SERVICE]):
        runner.run(["systemctl", "enable", SERVICE], f"enable {SERVICE} at boot")
    if not host.succeeds(["systemctl", "is-active", "--quiet", SERVICE]):
        runner.run(["systemctl", "start", SERVICE], f"start {SERVICE}")
    elif any(v for k, v in changed.items() if k != "updates"):
        runner.run(["systemctl", "restart", SERVICE], f"restart {SERVICE}")
    else:
        runner.unchanged(f"{SERVICE} running")
    if not runner.dry_run:
        _status(runner)


def _status(runner: Runner) -> None:
    """The node's status once meshd answers, or why it does not (joined, or why not)."""
    deadline = time.monotonic() + 20
    while True:
        done = subprocess.run(
            [f"{VENV}/bin/meshd", "status"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            print(f"provision: meshd runs, a member of the mesh:\n{done.stdout}", file=runner.out)
            return
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    why = "meshd does not answer"
    if not Path(STATE_DIR, trust.MEMBERSHIP_FILE).exists():
        why += f": not joined yet ({trust.MEMBERSHIP_FILE} missing; meshd redeems the invite)"
    log = subprocess.run(
        ["journalctl", "--unit", SERVICE, "--lines", "5", "--no-pager", "--output", "cat"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    print(f"provision: {why}. Its last log lines:\n{log}", file=runner.out)
