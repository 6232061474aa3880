"""meshd doctor [--config FILE] [--socket PATH] [--json]

What a new operator gets wrong, one line each with what to do (meshd.core.doctor): the
config, WireGuard (kernel module or wireguard-go), nftables, the daemon, the clock, the
neighbours' ports, the uplink's health target, the certificate's expiry and the disk
under the state directory. Exits 1 when a check fails. ``--json``: one object instead,
``{"ok": ..., "findings": [{"check", "verdict", "says"}, ...]}``, for scripts and
monitoring."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from meshd.cli.commands import add_config_argument, add_socket_argument

if TYPE_CHECKING:
    from meshd.config import Config
    from meshd.core.doctor import Finding

MIB = 1 << 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    add_socket_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead")


def main(args: argparse.Namespace) -> int:
    findings = examine(args.config, args.socket)
    failed = [f for f in findings if f.verdict == "fail"]
    if args.json:
        found = [dataclasses.asdict(f) for f in findings]
        print(json.dumps({"ok": not failed, "findings": found}))
        return 1 if failed else 0
    for finding in findings:
        print(finding.line())
    if failed:
        print(f"meshd doctor: {len(failed)} check(s) failed", file=sys.stderr)
    return 1 if failed else 0


def examine(config_flag: str | None, socket_flag: str | None) -> list[Finding]:
    from meshd import config
    from meshd.adapters.wg.select import kernel_module_available
    from meshd.api.client import ControlClient, ControlError, locate_socket
    from meshd.core import doctor
    from meshd.core.endpoints import format_endpoint

    path = config.config_path(config_flag)
    cfg: Config | None = None
    try:
        cfg = config.load(path)
        findings = [doctor.ok("config", f"{path} reads")]
    except (config.ConfigError, OSError) as exc:
        findings = [doctor.fail("config", f"{exc}: meshd check-config {path} explains")]
    backend = cfg.wireguard.backend if cfg else "auto"
    findings.append(
        doctor.wireguard(
            backend,
            kernel_module_available() if backend != "userspace" else False,
            shutil.which("wireguard-go") is not None,
        )
    )
    findings.append(doctor.nftables(*_nft()))
    if cfg is not None:
        findings.append(_disk(cfg.node.state_dir))
    try:
        status = ControlClient(locate_socket(socket_flag, cfg), timeout=10).status()
    except ControlError as exc:
        findings.append(doctor.daemon(exc.message))
        return findings
    findings.append(doctor.daemon(None))
    quic_port = (cfg.control if cfg else config.ControlSettings()).quic_port
    target = cfg.uplink.health_target if cfg else None
    health = format_endpoint(target) if target else "unset"
    findings += [doctor.clock(status), *doctor.neighbours(status, quic_port)]
    findings += [doctor.uplink(status, health), doctor.certificate(status, time.time())]
    return findings


def _nft() -> tuple[str | None, str | None]:
    """nft's version, and why it cannot list the ruleset (None: it can)."""
    if shutil.which("nft") is None:
        return None, None
    version = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    error = None if listed.returncode == 0 else (listed.stderr.strip() or "failed")
    return version.strip(), error


def _disk(state_dir: Path) -> Finding:
    from meshd.core import doctor

    where = state_dir if state_dir.exists() else state_dir.parent
    found = os.statvfs(where)
    ledger = sum(p.stat().st_size for p in state_dir.glob("ledger.sqlite*") if p.is_file())
    return doctor.disk(
        found.f_bavail * found.f_frsize / MIB,
        found.f_blocks * found.f_frsize / MIB,
        ledger / MIB,
        str(state_dir),
    )
