"""meshd update status|apply|auto|rollback: the meshd running, this node's stage, the
release it holds and serves to its neighbours and the one it fetches (meshd.daemon.releases),
with when its stage takes each; and, as root, taking the held release into a virtual
environment of its own, restarting into it and giving it back unless it comes up healthy
(meshd.core.updates, meshd.adapters.installs)."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshd.cli.commands import add_config_argument, add_socket_argument

if TYPE_CHECKING:
    from meshd.adapters.installs import Installs
    from meshd.config import Config
    from meshd.core.membership import OwnMembership
    from meshd.core.proto.release import ReleaseManifest
    from meshd.core.updates import Health, Record

SERVICE = "meshd.service"
LOCK = "update.lock"  # in the installs' root: one apply, auto or rollback at a time
POLL_S = 2.0


class RestartError(Exception):
    """``systemctl restart`` failed, saying why in one line."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from meshd.adapters.installs import ROOT

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = sub.add_parser("status", help="the releases this node holds, fetches and took")
    status.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    add_socket_argument(status)
    apply = sub.add_parser(
        "apply",
        help="take the release this node holds now, whatever its stage (as root)",
        description="Install the release this node holds into a virtual environment of "
        "its own, restart meshd into it and watch it for the manifest's health window: "
        "confirmed once it is as healthy as the old meshd was, else rolled back.",
    )
    auto = sub.add_parser(
        "auto",
        help="what the update timer runs: finish a trial, take a release its stage takes",
    )
    rollback = sub.add_parser(
        "rollback", help="go back to the meshd that ran before the last update (as root)"
    )
    for action in (apply, auto, rollback):
        add_config_argument(action)
        add_socket_argument(action)
        action.add_argument("--root", default=str(ROOT), help=f"meshd's installs ({ROOT})")
        action.add_argument("--service", default=SERVICE, help=f"the unit ({SERVICE})")


def _when(start: int | None) -> str:
    if start is None:
        return "takes it only by hand (stage manual)"
    if start <= time.time():
        return "its stage takes it now"
    return time.strftime("its stage takes it from %Y-%m-%d %H:%M UTC", time.gmtime(start))


def _release(what: str, release: dict[str, Any]) -> str:
    return (
        f"{what}: release {release['serial']} (meshd {release['meshd_version']}, "
        f"{release['artifact']}, {release['size']} bytes); {_when(release['takes_from'])}"
    )


def describe(releases: dict[str, Any]) -> list[str]:
    lines = [f"running: meshd {releases['running']}, stage {releases['stage']}"]
    held, fetching = releases.get("held"), releases.get("fetching")
    lines.append(_release("holds and serves", held) if held else "holds no release")
    if fetching:
        holders = len(fetching["holders"])
        hold = "neighbour holds" if holders == 1 else "neighbours hold"
        done = f"{fetching['received']} of {fetching['size']} bytes; {holders} {hold} it"
        lines.append(f"{_release('fetching', fetching)}; {done}")
    if releases.get("refused"):
        refused = ", ".join(f"{k} {v}" for k, v in sorted(releases["refused"].items()))
        lines.append(f"refused from neighbours: {refused}")
    return lines


def describe_installs(installs: dict[str, Any]) -> list[str]:
    """What `meshd update` did here, as the daemon read it (``releases.installs``)."""
    if "unreadable" in installs:
        return [f"updates: {installs['unreadable']}"]
    lines = []
    if installs["taken"]:
        lines.append(f"took: release {installs['taken']} ({installs['current']})")
    lines += installs["concerns"]  # a trial, the newest release rolled back since
    refused = {int(k): v for k, v in installs["refused"].items()}
    newest = max(refused, default=0)
    for serial, why in sorted(refused.items()):
        if serial != newest or newest <= installs["taken"]:
            lines.append(f"rolled back before: release {serial}: {why}")
    return lines


def _status(args: argparse.Namespace) -> int:
    from meshd.api.client import ControlClient, ControlError, locate_socket

    try:
        releases = ControlClient(locate_socket(args.socket)).releases()
    except ControlError as exc:
        print(f"meshd update status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(releases, indent=2, sort_keys=True))
        return 0
    if releases is None:
        print("meshd update status: the daemon holds no release service yet", file=sys.stderr)
        return 1
    installs = releases.get("installs")
    print("\n".join(describe(releases) + (describe_installs(installs) if installs else [])))
    return 0


class Updater:
    """One run of apply, auto or rollback: the node's files, its daemon and its unit."""

    def __init__(self, args: argparse.Namespace, installs: Installs) -> None:
        from meshd.api.client import ControlClient, locate_socket
        from meshd.cli.commands import load_node

        self.args, self.installs = args, installs
        self.cfg: Config
        self.own: OwnMembership
        self.cfg, _, self.own = load_node(args.config, time.time())
        self.client = ControlClient(locate_socket(args.socket, self.cfg), timeout=5.0)

    def say(self, line: str) -> None:
        print(f"meshd update {self.args.action}: {line}", flush=True)

    def health(self) -> Health:
        from meshd.api.client import ControlError
        from meshd.core.updates import Health

        try:
            return Health.of(self.client.call("status"))
        except (ControlError, OSError):
            return Health(answered=False)

    def restart(self) -> None:
        """RestartError when systemctl does not restart the unit."""
        import subprocess

        argv = ["systemctl", "restart", self.args.service]
        cmd = " ".join(argv)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        except subprocess.TimeoutExpired:
            raise RestartError(f"{cmd}: no answer within 120 s") from None
        except OSError as exc:  # no systemctl
            raise RestartError(f"{cmd}: {exc}") from None
        if done.returncode != 0:
            said = " / ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RestartError(f"{cmd} exited {done.returncode}" + (f": {said}" if said else ""))

    def watch(self, record: Record) -> int:
        """Confirm the trial once healthy, roll it back at its deadline."""
        from meshd.core.updates import judge

        trial = record.trial
        assert trial is not None
        while True:
            health = self.health()
            why = judge(trial.before, health, trial.version)
            if why is None:
                self.installs.save(record.confirmed())
                self.installs.prune({Path(trial.directory), Path(trial.previous)})
                self.say(f"release {trial.serial} confirmed: {health.describe()}")
                return 0
            if time.time() >= trial.deadline:
                return self.roll_back(record, why)
            time.sleep(POLL_S)

    def roll_back(self, record: Record, why: str) -> int:
        """Give the trial up for ``why``: the link back, the release refused here, the old
        meshd restarted (RestartError, for ``main`` to say, when it does not restart)."""
        trial = record.trial
        assert trial is not None
        self.installs.switch(Path(trial.previous))
        self.installs.save(record.rolled_back(why))
        self.say(f"release {trial.serial} rolled back: {why}")
        self.restart()
        return 1

    def held(self, work: Path, record: Record) -> tuple[ReleaseManifest, Path] | None:
        """The release this node holds (the daemon's files), its artifact copied to
        ``work`` and checked there: (manifest, artifact), or None."""
        from meshd.adapters import safe_files
        from meshd.core.proto.release import check_for_mesh, decode_signed
        from meshd.daemon.releases import RELEASES_DIR, artifact_matches, serial_of

        own = self.own
        directory = Path(self.cfg.node.state_dir) / RELEASES_DIR
        manifests = sorted(directory.glob("*.manifest"), key=serial_of, reverse=True)
        for path in manifests:
            try:
                signed = decode_signed(safe_files.read_bytes(path))
                trust = own.trust
                manifest = check_for_mesh(signed, trust.mesh_id, trust.admins,
                                          trust.definition.threshold, record.taken)  # fmt: skip
            except (OSError, ValueError) as exc:
                self.say(f"{path.name}: {exc}")
                continue
            artifact = work / manifest.artifact_name
            try:
                shutil.copyfile(path.with_suffix(".artifact"), artifact)
            except OSError:
                continue  # still being fetched
            if artifact_matches(artifact, manifest):
                return manifest, artifact
            self.say(f"release {manifest.serial}: its artifact is not the manifest's")
        return None

    def apply(self, by_hand: bool) -> int:
        from meshd import __version__
        from meshd.adapters.installs import InstallError
        from meshd.core.updates import Trial, not_due

        record = self.installs.load()
        if record.trial is not None:
            self.say(f"release {record.trial.serial} is on trial: watching it")
            return self.watch(record)
        with tempfile.TemporaryDirectory(prefix="meshd-update-") as work:
            found = self.held(Path(work), record)
            if found is None:
                self.say("this node holds no release it may take")
                return 0 if not by_hand else 1
            manifest, artifact = found
            running = self.health().version or __version__
            stage = self.cfg.update.stage
            why = not_due(manifest, record, stage, running, time.time(), by_hand)
            if why:
                self.say(why)
                return 0 if not by_hand else 1
            self.installs.adopt()
            previous = self.installs.running()
            name = f"{manifest.meshd_version}-{manifest.serial}"
            self.say(f"installing release {manifest.serial} (meshd {manifest.meshd_version})")
            try:
                target = self.installs.install(artifact, name)
            except InstallError as exc:
                self.installs.save(record.refuse(manifest.serial, f"does not install: {exc}"))
                self.say(f"release {manifest.serial} does not install: {exc}")
                return 1
        before = self.health()
        trial = Trial(
            serial=manifest.serial,
            version=manifest.meshd_version,
            directory=str(target),
            previous=str(previous),
            deadline=time.time() + manifest.health_window_s,
            before=before,
        )
        record = record.start(trial)
        self.installs.save(record)
        self.installs.switch(target)
        self.say(
            f"restarting into meshd {trial.version}; rolled back unless healthy within "
            f"{manifest.health_window_s} s (before: {before.describe()})"
        )
        try:
            self.restart()
        except RestartError as exc:
            return self.roll_back(record, str(exc))
        return self.watch(record)

    def rollback(self) -> int:
        record = self.installs.load()
        if record.trial is not None:
            trial = record.trial
            self.installs.switch(Path(trial.previous))
            self.installs.save(record.rolled_back("rolled back by hand"))
            self.say(f"release {trial.serial} rolled back (it was on trial)")
        elif record.previous is not None:
            self.installs.switch(Path(record.previous))
            self.installs.save(record.given_back("rolled back by hand"))
            self.say(f"release {record.taken} rolled back: {record.previous} runs again")
        else:
            self.say("no update to roll back")
            return 1
        self.restart()
        return 0


def main(args: argparse.Namespace) -> int:
    if args.action == "status":
        return _status(args)
    from meshd.adapters.installs import InstallError, Installs
    from meshd.cli.commands import admin_errors

    errors: tuple[type[Exception], ...] = (InstallError, RestartError, *admin_errors())
    root = Path(args.root)
    if not os.access(root, os.W_OK):
        print(f"meshd update {args.action}: {root} is not writable: run it as root",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        with open(root / LOCK, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"meshd update {args.action}: another update runs", file=sys.stderr)
                return 1
            updater = Updater(args, Installs(root))
            if args.action == "rollback":
                return updater.rollback()
            return updater.apply(by_hand=args.action == "apply")
    except errors as exc:
        print(f"meshd update {args.action}: {exc}", file=sys.stderr)
        return 1
