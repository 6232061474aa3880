"""provisioning/provision: turn a fresh Debian / Raspberry Pi OS box into a meshd node.

Two stages. The system stage uses the standard library only, since a fresh box has
nothing else: the OS, the kernel's WireGuard, the Debian packages, a virtualenv with meshd;
then the script carries on in that virtualenv's Python. The node stage checks the invite
in full and renders and checks the config before it writes any file of the node; then the
user, directories, keys, config, the invite token for meshd to redeem, sysctls, the
systemd unit, and the service. ``--root DIR`` places every file under DIR and skips
packages, the user and the service; ``--dry-run`` says every action and does none.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from meshd import __version__
from provisioning import bundle, host
from provisioning.layout import VENV
from provisioning.steps import Refused, Runner, StepError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "provisioning" / "provision"
STAGE_ENV = "MESHD_PROVISION_STAGE"
PACKAGES = ["wireguard-tools", "nftables", "iproute2", "python3", "python3-venv"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="provision",
        description="Make this Debian / Raspberry Pi OS machine a meshd node, from an invite "
        "(or from its backup).",
    )
    invite = p.add_mutually_exclusive_group(required=True)
    invite.add_argument(
        "--invite",
        metavar="TOKEN",
        help="the token of meshd invite, or - to read it from standard input (a token given "
        "here is visible to every local user in /proc and stays in the shell's history)",
    )
    invite.add_argument(
        "--invite-file", metavar="PATH", help="read the token from PATH (its first line)"
    )
    invite.add_argument(
        "--restore",
        metavar="FILE",
        help="instead of an invite: this node again, from its backup (meshd backup --out "
        "FILE on the old card): its keys, certificates, config and ledger",
    )
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="with --restore: the backup's passphrase, the first line of FILE (default: ask)",
    )
    p.add_argument("--name", help="the node's name; must be the invite's (default: the invite's)")
    p.add_argument("--uplink", metavar="IFACE", help="this household's internet interface")
    p.add_argument("--share", action="store_true", help="offer the uplink to the mesh")
    p.add_argument("--rate-cap", metavar="R", help="the most the mesh gets of it (20mbit)")
    p.add_argument(
        "--health-target",
        metavar="HOST:PORT",
        help="what a TCP connection through the uplink must reach while it works "
        "(default 1.1.1.1:443)",
    )
    p.add_argument(
        "--check-target",
        metavar="HOST:PORT",
        help="what a TCP connection through the exit tunnel must reach while the household "
        "leaves by a gateway (default: the health target, else 1.1.1.1:443)",
    )
    p.add_argument("--lan", action="append", default=[], metavar="IFACE", help="the household LAN")
    p.add_argument(
        "--underlay",
        action="extend",
        nargs="+",
        default=[],
        metavar="IFACE",
        help="interfaces the neighbours are on (default: every other up interface)",
    )
    p.add_argument(
        "--bundle",
        metavar="DIR",
        help="install packages and meshd from DIR (made by `provision bundle DIR` on a "
        "connected machine), with no network",
    )
    p.add_argument("--dry-run", action="store_true", help="say every action, do none")
    p.add_argument(
        "--root",
        metavar="DIR",
        help="write every file under DIR; no packages, user or service (tests, images)",
    )
    args = p.parse_args(argv)
    if not args.uplink and (args.share or args.rate_cap or args.health_target):
        p.error("--share, --rate-cap and --health-target need --uplink")
    household = ("name", "uplink", "check_target", "lan", "underlay")
    if args.restore and any(getattr(args, name) for name in household):
        p.error("--restore takes the node's config from its backup: no --name, --uplink, "
                "--check-target, --lan or --underlay")  # fmt: skip
    if args.passphrase_file and not args.restore:
        p.error("--passphrase-file goes with --restore")
    return args


def parse_bundle_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="provision bundle",
        description="Write what provision --bundle installs offline (packages, wheels, this "
        "checkout) for this machine's Debian architecture and Python.",
    )
    p.add_argument("out", metavar="OUT", help="a new or empty directory (a USB stick's)")
    p.add_argument(
        "--arch",
        default="",
        help="the target's Debian architecture, amd64 or arm64 (default: this machine's)",
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="the Python whose version the wheels are for (default: this one; the target's "
        "Debian release must have the same major.minor)",
    )
    return p.parse_args(argv)


def bundle_main(argv: list[str], out: TextIO) -> int:
    args = parse_bundle_args(argv)
    try:
        made = bundle.make(
            Path(args.out), REPO, PACKAGES + ["wireguard-go"], args.python, args.arch
        )
    except bundle.BundleError as exc:
        print(f"provision bundle: {exc}", file=sys.stderr)
        return 1
    print(
        f"provision bundle: {args.out}: meshd {made.meshd} for {made.arch}, Python "
        f"{made.python}; on the target: sudo {args.out}/source/provisioning/provision "
        f"--bundle {args.out} --invite-file TOKEN",
        file=out,
    )
    return 0


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    if argv[:1] == ["bundle"]:
        return bundle_main(argv[1:], out)
    args = parse_args(argv)
    root = Path(args.root).resolve() if args.root else Path("/")
    real = root == Path("/")
    runner = Runner(root, dry_run=args.dry_run, owner=None, out=out)
    try:
        if real and not args.dry_run and not host.is_root():
            raise Refused("run it as root (or with --dry-run, or into --root DIR)")
        wireguard = _system_stage(runner, real, Path(args.bundle) if args.bundle else None)
        if importlib.util.find_spec("nacl") is None:
            return _continue_in_venv(runner, argv, real)
        from provisioning import node  # needs meshd's dependencies

        node.node_stage(args, runner, real, wireguard)
    except Refused as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 1
    except (StepError, bundle.BundleError) as exc:
        print(f"provision: failed: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"provision: dry run: {runner.changes} changes, nothing done", file=out)
    elif runner.changes:
        print(f"provision: done ({runner.changes} changes)", file=out)
    else:
        print("provision: nothing to change: this node is provisioned already", file=out)
    return 0


def _system_stage(runner: Runner, real: bool, offline: Path | None) -> str:
    """The OS and the kernel's WireGuard; on a real run, the packages and the virtualenv
    (from the bundle ``offline`` when given). Returns how the kernel does WireGuard
    (host.kernel_wireguard)."""
    info = host.read_os_release(runner.root)
    print(f"= os: {info.describe() if info else 'unknown (no os-release)'}", file=runner.out)
    if real and (info is None or not info.supported):
        raise Refused("only Debian and its derivatives (Raspberry Pi OS, Ubuntu) are supported")
    if offline is not None:
        _check_bundle(runner, offline)
    wireguard = host.kernel_wireguard(probe_link=real and not runner.dry_run)
    where = "" if real else " (this machine's kernel)"
    print(f"= kernel WireGuard: {wireguard}{where}", file=runner.out)
    if real:
        _packages(runner, wireguard, offline)
        _virtualenv(runner, offline)
    return wireguard


def _check_bundle(runner: Runner, offline: Path) -> None:
    """The bundle is one, and for this machine: refused before anything is installed."""
    manifest = bundle.read_manifest(offline)
    arch = bundle.debian_arch()
    python = "{}.{}".format(*sys.version_info[:2])
    try:
        bundle.check_fits(manifest, arch, python)
    except bundle.BundleError as exc:
        raise Refused(f"{offline}: {exc}") from None
    print(f"= bundle: meshd {manifest.meshd} for {arch}, Python {python}", file=runner.out)


def _packages(runner: Runner, wireguard: str, offline: Path | None) -> None:
    wanted = PACKAGES + (["wireguard-go"] if wireguard == "none" else [])
    missing = host.missing_packages(wanted)
    if not missing:
        runner.unchanged(f"packages: {' '.join(wanted)}")
        return
    apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    if offline is None:
        runner.run([*apt, "update", "-qq"], "apt-get update")
        runner.run(
            [*apt, "install", "-y", "-qq", "--no-install-recommends", *missing],
            f"install {' '.join(missing)}",
        )
        return
    # The bundle's repository only, with package lists of its own (the system's are kept).
    scratch = Path(tempfile.mkdtemp(prefix="provision-bundle-"))
    try:
        apt += bundle.apt_options(offline, scratch)
        runner.run([*apt, "update", "-qq"], f"apt-get update from {offline}")
        runner.run(
            [*apt, "install", "-y", "-qq", "--no-install-recommends", *missing],
            f"install {' '.join(missing)} from {offline}",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _virtualenv(runner: Runner, offline: Path | None) -> None:
    python = f"{VENV}/bin/python"
    if not Path(python).exists():
        runner.run(["python3", "-m", "venv", VENV], f"create the virtualenv {VENV}")
    try:
        installed = subprocess.run(
            [f"{VENV}/bin/meshd", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        installed = ""
    if installed == f"meshd {__version__}":
        runner.unchanged(f"{installed} in {VENV}")
        return
    if offline is not None:
        wheels = offline / "wheels"
        runner.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--find-links",
                str(wheels),
                "meshd",
            ],
            f"install meshd {__version__} from {wheels} into {VENV}",
        )
        return
    runner.run(
        [python, "-m", "pip", "install", "-q", str(REPO)],
        f"install meshd {__version__} from {REPO} into {VENV}",
    )


def _continue_in_venv(runner: Runner, argv: list[str], real: bool) -> int:
    """This Python lacks meshd's dependencies: carry on in the virtualenv's."""
    python = f"{VENV}/bin/python"
    if real and runner.dry_run:
        print(f"would continue in {python}: check the invite, set up the node", file=runner.out)
        return 0
    if not real or os.environ.get(STAGE_ENV) == "2":
        raise Refused(
            f"this Python ({sys.executable}) lacks meshd's dependencies: run it with one "
            f"that has them (such as {REPO}/.venv/bin/python {SCRIPT})"
        )
    runner.out.flush()
    os.execve(python, [python, str(SCRIPT), *argv], {**os.environ, STAGE_ENV: "2"})
