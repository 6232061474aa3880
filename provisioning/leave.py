"""meshd leave: undo provisioning/provision, and remove what meshd made in the kernel.

In order, each step only when there is something to do (a second run changes nothing):

1. stop this node's meshd: ``systemctl stop`` on a real system, then SIGTERM to whatever
   still answers on its control socket as this node (the testbed, a hand-started meshd);
   on SIGTERM meshd removes its interfaces, routes, addresses and nftables tables itself;
2. save the receipts (the household's money) as an export, before anything is removed
   (``--purge``: not); a failed export stops ``leave`` with nothing removed;
3. what a crashed meshd left in the kernel, with the daemon's own teardown (its links,
   routes, mesh addresses, nftables tables, exit rules, wireguard-go daemons, the uplink's
   qdisc), where this node ran (its own interfaces or addresses are there) and no other
   node's meshd answers;
4. provisioning's files: the unit (disabled first), sysctl, tmpfiles and modules files, the
   config, the state directory (keys, certificates, ledger), the virtualenv; then the
   ``meshd`` user and group.

``--root DIR`` takes the files under DIR and leaves the user and the service alone, as
provision does; the daemon and the kernel are always those of the machine (network
namespace) it runs on. The admin key is never removed by accident: a node holding it
refuses to leave until it is backed up and moved (or with ``--purge``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TextIO

from provisioning import host
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
    UPDATES,
    USER,
    VENV,
)
from provisioning.steps import Refused, Runner, StepError

if TYPE_CHECKING:
    from meshd.adapters.identity import Identity
    from meshd.config import Config
    from meshd.daemon.node import Node

STOP_WAIT_S = 20.0  # meshd's teardown: every interface, route and table


@dataclass
class Found:
    """What leave finds of this node before it asks: the config, keys, the daemon."""

    config: Config | None
    state_dir: str  # the target system's path (under the root)
    identity: Identity | None
    daemon: str | None  # None, "ours" or another node's id
    present: list[str]  # provisioning's files that are there


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    root = Path(args.root).resolve() if args.root else Path("/")
    runner = Runner(root, dry_run=args.dry_run, owner=None, out=out)
    try:
        if root == Path("/") and not args.dry_run and not host.is_root():
            raise Refused("run it as root (or with --dry-run, or on --root DIR)")
        found = _find(runner, args.config)
        if found.config is None and not found.present:
            print("leave: nothing of meshd here (not provisioned, or left already)", file=out)
            return 0
        _refuse_admin_key(runner, found, args.purge)
        if not args.yes and not args.dry_run:
            _confirm(runner, found, args)
        _stop(runner, found)
        if not args.purge:
            _export(runner, found, args.export)
        if found.daemon in (None, "ours") and found.config and found.identity:
            sweep_kernel(runner, found.config, found.identity)
        elif found.daemon is not None:
            runner.unchanged(f"the kernel: a meshd of another node ({found.daemon}) runs here")
        _remove_files(runner, found, real=root == Path("/"))
    except Refused as exc:
        print(f"leave: {exc}", file=sys.stderr)
        return 1
    except (StepError, OSError) as exc:  # OSError: the kernel's tools (meshd.adapters.net.command)
        print(f"leave: failed: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"leave: dry run: {runner.changes} changes, nothing done", file=out)
    elif runner.changes:
        print(f"leave: done ({runner.changes} changes): this machine is no meshd node", file=out)
    else:
        print("leave: nothing to remove", file=out)
    return 0


def _files(state_dir: str) -> list[str]:
    """Provisioning's files and directories, the state directory in place of STATE_DIR."""
    venv_parent = str(PurePosixPath(VENV).parent)
    return [
        UNIT_FILE,
        UPDATE_SERVICE_FILE,
        UPDATE_TIMER_FILE,
        SYSCTL_FILE,
        TMPFILES_FILE,
        MODULES_FILE,
        CONFIG_DIR,
        state_dir,
        VENV,
        *UPDATES,
        venv_parent,
    ]


def _find(runner: Runner, config_flag: str | None) -> Found:
    from meshd import config
    from meshd.adapters import identity

    path = Path(config_flag) if config_flag else runner.path(CONFIG_FILE)
    cfg = None
    if path.exists():
        try:
            cfg = config.load(path)
        except config.ConfigError as exc:
            raise Refused(f"{exc}: fix it, or give --config") from None
    state_dir = str(cfg.node.state_dir) if cfg else STATE_DIR
    ident = None
    if (runner.path(state_dir) / identity.IDENTITY_KEY).exists():
        try:
            ident = identity.load(runner.path(state_dir))
        except identity.KeyFileError as exc:
            raise Refused(str(exc)) from None
    present = [f for f in _files(state_dir) if runner.path(f).exists()]
    return Found(cfg, state_dir, ident, _daemon(cfg, ident), present)


def _daemon(cfg: Config | None, ident: Identity | None) -> str | None:
    """Whose meshd answers on this node's control socket: None, "ours" or its node id."""
    from meshd.api.client import ControlClient, ControlError, locate_socket

    try:
        node_id = ControlClient(locate_socket(None, cfg), timeout=2.0).status()["node_id"]
    except ControlError:
        return None
    return "ours" if ident is not None and node_id == ident.node_id else node_id


def _refuse_admin_key(runner: Runner, found: Found, purge: bool) -> None:
    from meshd.cli.commands import ADMIN_KEY

    key = f"{found.state_dir}/{ADMIN_KEY}"
    if runner.path(key).exists() and not purge:
        raise Refused(
            f"this node holds the mesh's admin key ({key}): back it up first (meshd "
            "admin-key backup --out FILE) and restore it on another node, or give --purge "
            "to destroy it with the rest"
        )


def _confirm(runner: Runner, found: Found, args: argparse.Namespace) -> None:
    name = found.config.node.name if found.config else "this node"
    print(f"meshd leave: {name} leaves the mesh for good. Removed:", file=runner.out)
    for target in found.present:
        print(f"  {runner.path(target)}", file=runner.out)
    print("  its links, routes, addresses and nftables tables; the meshd user", file=runner.out)
    if not args.purge:
        export = _export_path(found, args.export)
        print(f"  (its receipts are saved first, to {export})", file=runner.out)
    if not sys.stdin.isatty():
        raise Refused("no terminal to confirm on: give --yes")
    if input("Type 'leave' to go on: ").strip() != "leave":
        raise Refused("not confirmed: nothing done")


def _stop(runner: Runner, found: Found) -> None:
    from meshd.api.client import ControlClient, ControlError, locate_socket

    real = runner.root == Path("/")
    if real and host.succeeds(["systemctl", "is-active", "--quiet", SERVICE]):
        runner.run(["systemctl", "stop", SERVICE], f"stop {SERVICE}")
        found.daemon = _daemon(found.config, found.identity) if not runner.dry_run else None
    if found.daemon != "ours":
        return
    client = ControlClient(locate_socket(None, found.config))
    try:
        pid = client.daemon_pid()
    except ControlError as exc:
        raise StepError(f"cannot find this node's meshd: {exc}") from None
    runner.changed(f"stop meshd (pid {pid}): it removes its links, routes and tables")
    if runner.dry_run:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise StepError(f"meshd (pid {pid}) still runs {STOP_WAIT_S:g} s after SIGTERM")
        time.sleep(0.1)
    found.daemon = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours (a test's child) has exited all the same
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _export_path(found: Found, flag: str | None) -> Path:
    if flag:
        return Path(flag).resolve()
    name = found.config.node.name if found.config else "node"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return Path.cwd() / f"meshd-receipts-{safe}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"


def _export(runner: Runner, found: Found, flag: str | None) -> None:
    """Every receipt, as `meshd receipts export` writes it, to a new file outside what
    leave removes; any failure refuses before anything is removed."""
    from meshd.adapters import ledger, ledger_export

    state = runner.path(found.state_dir)
    if found.config is None or not (state / ledger.LEDGER_FILE).exists():
        runner.unchanged("receipts: no ledger to export")
        return
    target = _export_path(found, flag)
    doomed = [runner.path(f) for f in found.present]
    if any(target.is_relative_to(d) for d in doomed):
        raise Refused(f"{target} would be removed with the node: give --export elsewhere")
    runner.changed(f"save the receipts to {target}")
    if runner.dry_run:
        return
    try:
        lines = list(ledger_export.jsonl(state, found.config.mesh.admin_keys, 0.0))
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(line + "\n" for line in lines)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, ValueError, ledger_export.ExportError) as exc:
        raise Refused(f"cannot save the receipts ({exc}): nothing removed") from None
    print(f"  {len(lines)} lines; check them with: meshd receipts verify {target}", file=runner.out)


def sweep_kernel(runner: Runner, cfg: Config, ident: Identity) -> None:
    """What meshd made in this network namespace and left (a crash, ``kill -9``),
    removed by the daemon's own teardown. Only where this node ran: its own WireGuard
    interfaces or mesh addresses are here; elsewhere (a scratch root, another machine's
    SD card) meshd's shared tables and routes may be another node's and stay."""
    from meshd.adapters.net.netlink import NetlinkError
    from meshd.adapters.wg.model import WireGuardError

    try:
        _sweep(runner, cfg, ident)
    except (NetlinkError, WireGuardError) as exc:
        raise StepError(f"the kernel: {exc}") from None


def _sweep(runner: Runner, cfg: Config, ident: Identity) -> None:
    from meshd.adapters.net import shaping
    from meshd.adapters.net.exit_tunnel import exit_interface_names
    from meshd.adapters.net.netlink import Netlink
    from meshd.adapters.wg.select import select_backend
    from meshd.daemon.node import Node

    node = Node(cfg, ident, select_backend(cfg.wireguard.backend), Netlink())
    try:
        found = node_objects(node)
        if not found:
            runner.unchanged("the kernel: nothing of this node's here")
            return
        found += shared_objects(node)
        for thing in found:
            runner.changed(f"remove {thing}")
        if runner.dry_run:
            return
        links = node.backend.list_interfaces(node.prefix)
        exits = exit_interface_names(node.prefix)  # the exit tunnels' teardown has them
        node.links.adoptable.update({ifname: 0 for ifname in links if ifname not in exits})
        node.teardown()
        if cfg.uplink.interface:
            shaping.remove(cfg.uplink.interface)
        left = node_objects(node) + shared_objects(node)
    finally:
        node.netlink.close()
    if left:
        raise StepError(f"still there after the teardown: {', '.join(left)}")


def node_objects(node: Node) -> list[str]:
    """This node's own things in the kernel, in words: its WireGuard interfaces (named
    after its node id) and its mesh addresses on lo."""
    things = [f"interface {name}" for name in node.backend.list_interfaces(node.prefix)]
    on_lo = node.netlink.addresses("lo")
    mesh = ((node.mesh_ipv4, 32), (node.mesh_ipv6, 128))
    return things + [f"address {a}/{p} on lo" for a, p in mesh if (a, p) in on_lo]


def shared_objects(node: Node) -> list[str]:
    """meshd's things that carry no node id: routes of its protocol in its table, the rules
    to that table, its nftables tables, the exits' rules, the qdisc at the root of the
    uplink."""
    from meshd.adapters.net import command, exit_meter, firewall, link_meter, throttle
    from meshd.adapters.net.exit_tunnel import GATEWAY_RULE_PREF, USER_RULE_PREF

    cfg = node.cfg
    table = cfg.routing.table
    routes = node.netlink.routes(cfg.routing.route_protocol, table=table)
    things = [f"route {r.dst} dev {r.ifname} table {table}" for r in routes]
    things += [f"rule pref {r.pref} to {r.dst} lookup {table}" for r in node.netlink.rules(table)]
    tables = command.run("nft", "list", "tables").split()
    ours = (firewall.TABLE, link_meter.TABLE, exit_meter.TABLE, throttle.TABLE)
    things += [f"nftables table inet {t}" for t in ours if t in tables]
    prefs = {str(p) for p in (GATEWAY_RULE_PREF, USER_RULE_PREF, USER_RULE_PREF + 1)}
    for version in ("-4", "-6"):
        rules = command.run("ip", version, "rule", "show").splitlines()
        things += [f"rule {r.strip()}" for r in rules if r.split(":")[0] in prefs]
    uplink = cfg.uplink.interface
    if uplink and " htb 1: root" in command.run("tc", "qdisc", "show", "dev", uplink, "root"):
        things.append(f"the htb qdisc of {uplink}")
    return things


def _remove_files(runner: Runner, found: Found, real: bool) -> None:
    enabled = real and host.succeeds(["systemctl", "is-enabled", "--quiet", SERVICE])
    if enabled and runner.path(UNIT_FILE).exists():
        runner.run(["systemctl", "disable", SERVICE], f"disable {SERVICE}")
    timer = real and host.succeeds(["systemctl", "is-enabled", "--quiet", UPDATE_TIMER])
    if timer and runner.path(UPDATE_TIMER_FILE).exists():
        runner.run(["systemctl", "disable", "--now", UPDATE_TIMER], f"disable {UPDATE_TIMER}")
    unit_removed = False
    for target in _files(found.state_dir):
        if target == str(PurePosixPath(VENV).parent):
            path = runner.path(target)
            if path.is_dir() and not any(p != runner.path(VENV) for p in path.iterdir()):
                runner.remove(target)  # ours alone: provision made it for the virtualenv
            continue
        removed = runner.remove(target)
        unit_removed = unit_removed or (removed and target.startswith("/etc/systemd/"))
    if real and unit_removed:
        runner.run(["systemctl", "daemon-reload"], "reload systemd's units")
    if real and host.lookup_owner(runner.root, USER) is not None:
        runner.run(["userdel", USER], f"remove the user {USER}")
    if real and host.succeeds(["getent", "group", USER]):
        runner.run(["groupdel", USER], f"remove the group {USER}")
