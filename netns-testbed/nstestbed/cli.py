"""``testbed`` command line: one function per subcommand (DESIGN.md, netns-testbed).

Exit status: 0 done; 1 it could not be done (no testbed, a command failed, a timeout);
2 the request itself is wrong (usage, topology file, unknown node).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from nstestbed import build, converge, env, procs, state, topology
from nstestbed.control import mesh_ipv4_of, mesh_ipv6_of, poll_statuses
from nstestbed.env import DIR_ENV, ID_ENV, REPO_ROOT, child_env, daemon_argv, state_dir
from nstestbed.lifecycle import (
    meshd_running,
    node_keys,
    provision_invited,
    start_internet,
    start_meshd,
    teardown,
    wait_listening,
    write_configs,
)
from nstestbed.plan import (
    DEFAULT_ID,
    DEFAULT_STATE_DIR,
    DNS_PORT,
    HTTP_PORT,
    IPERF_PORTS,
    SERVER_ADDRESS,
    SMTP_PORT,
    NodePlan,
    Plan,
    PlanError,
    make_plan,
    namespace_pattern,
    pair_key,
)
from nstestbed.rules import Impairments
from nstestbed.state import State, StateError


class Failure(Exception):
    """Ends the command with a message and an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def usage_error(message: str) -> NoReturn:
    raise Failure(message, 2)


# -- environment -------------------------------------------------------------------------


def testbed_id() -> str:
    try:
        return env.testbed_id()
    except PlanError as exc:
        usage_error(str(exc))


def need_root() -> None:
    if os.geteuid() != 0:
        raise Failure("testbed: needs root (it creates network namespaces)")


def need_state() -> tuple[State, Plan]:
    directory = state_dir()
    try:
        st = state.read(directory)
    except StateError as exc:
        raise Failure(f"testbed: {exc}") from None
    if st is None:
        raise Failure(f"testbed: no testbed is up in {directory} (set {DIR_ENV} to choose one)")
    try:
        return st, st.plan()
    except (topology.TopologyError, PlanError) as exc:
        raise Failure(f"testbed: state in {directory} is broken ({exc}); run `down`") from None


def need_node(plan: Plan, name: str) -> NodePlan:
    try:
        return plan.node(name)
    except KeyError:
        usage_error(f"testbed: no node {name!r} (nodes: {', '.join(n.name for n in plan.nodes)})")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so a half-built testbed is still cleaned up."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- up ----------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    try:
        topo = topology.load(args.file)
        plan = make_plan(topo, testbed_id(), state_dir())
    except (topology.TopologyError, PlanError) as exc:
        usage_error(f"testbed: {exc}")
    need_root()
    started = time.monotonic()
    directory = plan.state_dir
    with state.locked(directory):
        try:
            existing = state.read(directory)
        except StateError as exc:
            raise Failure(f"testbed: {exc}") from None
        if existing is not None:
            raise Failure(
                f"testbed: a testbed (id {existing.testbed_id}, {existing.topology_source}) is "
                f"already up in {directory}; run `testbed down` first"
            )
        pattern = namespace_pattern(plan.testbed_id)
        taken = sorted(
            ns
            for ns in build.existing_namespaces()
            if ns in plan.namespaces() or pattern.fullmatch(ns)
        )
        if taken:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only when we just made it, empty
            raise Failure(
                f"testbed: namespaces of testbed id {plan.testbed_id} exist without a state in "
                f"{directory} ({', '.join(taken)}): run `{ID_ENV}={plan.testbed_id} testbed down`"
                f" or choose another {ID_ENV}"
            )
        state.remove(directory, keep_dir=True)  # leftovers of a testbed that is gone
        shutil.copyfile(args.file, directory / state.TOPOLOGY_FILE)
        st = State(
            testbed_id=plan.testbed_id,
            state_dir=directory,
            topology_source=str(Path(args.file).absolute()),
            phase="building",
            namespaces=plan.namespaces(),
            daemon=daemon_argv(),
            meshd_pids={n.name: None for n in plan.nodes},
            impairments=Impairments.initial(plan),
        )
        state.write(st)  # before anything is made: `down` finds what to remove
        try:
            with terminate_as_interrupt():
                raised_from = build.ensure_inotify_instances(plan)
                if raised_from is not None:
                    print(
                        f"testbed: raised {build.INOTIFY_LIMIT} from {raised_from} to "
                        f"{build.INOTIFY_LIMIT.read_text().strip()} (one per wireguard-go)",
                        file=sys.stderr,
                    )
                build.build(plan, st.impairments)
                st.keys = write_configs(plan)
                state.write(st)
                st.internet_pids = start_internet(plan)
                state.write(st)
                wait_listening(
                    plan.internet_namespace, [HTTP_PORT, *IPERF_PORTS, SMTP_PORT, DNS_PORT], 10.0
                )
                if not args.no_meshd:
                    # Once, here, rather than in every daemon: an installed meshd is
                    # compiled at install time, and 50 daemons compiling the checkout
                    # each would cost the cold start seconds of CPU.
                    compileall.compile_dir(REPO_ROOT / "meshd", quiet=1)
                    for node in members(plan):
                        st.meshd_pids[node.name] = start_meshd(st, node)
                        state.write(st)
                st.phase = "up"
                state.write(st)
        except (build.BuildError, OSError, KeyboardInterrupt, ImportError) as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            print(f"testbed: up failed: {reason}; cleaning up", file=sys.stderr)
            summary = teardown(directory, plan.testbed_id, st)
            print(f"testbed: {summary}", file=sys.stderr)
            return 130 if isinstance(exc, KeyboardInterrupt) else 1
    started_on = members(plan)
    meshd = "not started (--no-meshd)" if args.no_meshd else f"meshd started on {len(started_on)}"
    invited = [n.name for n in plan.nodes if n.invited]
    if invited:
        meshd += f" ({', '.join(invited)}: invited, waiting for `testbed join`)"
    print(
        f"testbed {plan.testbed_id} up in {time.monotonic() - started:.1f} s: "
        f"{len(plan.nodes)} nodes, {len(plan.links)} links, {len(plan.segments)} segments; "
        f"{meshd}; state in {directory}"
    )
    if args.wait and not args.no_meshd:
        return wait_answering(st, plan, [n.name for n in started_on], args.timeout)
    return 0


def members(plan: Plan) -> list[NodePlan]:
    """The nodes `up` makes members of the mesh (not the invited ones)."""
    return [n for n in plan.nodes if not n.invited]


# -- control sockets -----------------------------------------------------------------------


def wait_answering(st: State, plan: Plan, names: list[str], timeout: float) -> int:
    """Wait until each named node's meshd answers ``status``; fail early when one exits."""
    started = time.monotonic()
    pending = list(names)
    while True:
        answers = poll_statuses(plan, pending)
        pending = [n for n, a in answers.items() if isinstance(a, str)]
        if not pending:
            print(f"meshd answers on {len(names)} node(s) after {time.monotonic() - started:.1f} s")
            return 0
        for name in pending:
            node = plan.node(name)
            # Not by its command line (meshd_running): while `ip netns exec` is exec'ing
            # into meshd, /proc/PID/cmdline can read empty, and a node that had just been
            # started was reported as exited. The pid is ours and seconds old: not reused.
            if not procs.is_alive(st.meshd_pids.get(name)):
                time.sleep(0.2)  # let what it wrote last reach the log
                tail = procs.log_tail(node.log)
                raise Failure(
                    f"testbed: meshd of {name} exited; end of {node.log}:\n{tail}\n"
                    "(the testbed stays up: `testbed down` removes it)"
                )
        if time.monotonic() - started > timeout:
            lines = [f"  {n}: {answers[n]}" for n in pending]
            raise Failure(
                f"testbed: no answer within {timeout:g} s from:\n"
                + "\n".join(lines)
                + "\n(the testbed stays up: `testbed down` removes it)"
            )
        time.sleep(0.1)


# -- down --------------------------------------------------------------------------------


def cmd_down(args: argparse.Namespace) -> int:
    need_root()
    directory = state_dir()
    with state.locked(directory, create=False):
        try:
            st = state.read(directory) if directory.exists() else None
        except StateError:
            st = None  # unreadable: still sweep by the id's namespace names
        tb_id = st.testbed_id if st else testbed_id()
        summary = teardown(directory, tb_id, st)
    if summary.left:
        print(f"testbed: down incomplete: {summary}", file=sys.stderr)
        return 1
    if summary.namespaces == 0 and st is None:
        print(f"testbed {tb_id}: nothing to remove in {directory}")
    else:
        print(f"testbed {tb_id} down: {summary}")
    return 0


# -- status --------------------------------------------------------------------------------


def status_json(st: State, plan: Plan) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for node in plan.nodes:
        entry: dict[str, Any] = {"namespace": node.namespace, "pid": meshd_running(st, node)}
        if node.lan:
            entry["lan_namespace"] = node.lan.namespace
            entry["lan_address"] = str(node.lan.host_address.ip)
        nodes[node.name] = entry
    return {
        "nodes": nodes,
        "internet": {"namespace": plan.internet_namespace, "address": str(SERVER_ADDRESS)},
    }


def cmd_status(args: argparse.Namespace) -> int:
    st, plan = need_state()
    if args.json:
        print(json.dumps(status_json(st, plan), indent=2))
        return 0
    imp = st.impairments
    print(f"testbed {st.testbed_id} ({st.phase}): {st.topology_source}; state in {plan.state_dir}")
    rows = [("NODE", "NAMESPACE", "MESHD", "MESH IPV4", "UNDERLAY", "UPLINK", "LAN HOST")]
    for node in plan.nodes:
        pid = meshd_running(st, node)
        media: dict[str, list[str]] = {}
        for a in node.adjacencies:
            media.setdefault(f"{a.local.ifname} {a.local.address.ip}", []).append(a.peer)
        underlay = ", ".join(f"{where}->{','.join(peers)}" for where, peers in media.items())
        uplink = "-"
        if node.uplink:
            uplink = str(node.uplink.address.ip)
            if node.uplink.nat:
                uplink = f"{node.uplink.node_address.ip} {node.uplink.nat.kind} {uplink}"
            uplink += f" {node.uplink.rate.text}" if node.uplink.rate else ""
            uplink += " shared" if node.share else ""
            uplink += " DOWN" if node.name in imp.uplink_down else ""
        lan = f"{node.lan.host_address.ip} ({node.lan.namespace})" if node.lan else "-"
        address = str(node.mesh_ipv4)
        if node.invited:
            address = "invited" if node.name not in st.keys else "joined"
        rows.append(
            (
                node.name,
                node.namespace,
                f"pid {pid}" if pid else "stopped",
                address,
                underlay or "-",
                uplink,
                lan,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"internet: {plan.internet_namespace} {SERVER_ADDRESS} "
        f"(http :{HTTP_PORT}, iperf3 :{IPERF_PORTS[0]}-{IPERF_PORTS[-1]}, dns :{DNS_PORT})"
    )
    print("impairments: " + ("; ".join(imp.describe()) or "none"))
    return 0


# -- exec, impairments, processes ---------------------------------------------------------


def cmd_exec(args: argparse.Namespace) -> int:
    st, plan = need_state()
    need_root()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        usage_error("testbed exec: expected NODE -- COMMAND...")
    socket = config = None
    if args.node == "inet":
        namespace = plan.internet_namespace
    elif args.node.endswith("-lan"):
        node = need_node(plan, args.node.removesuffix("-lan"))
        if not node.lan:
            usage_error(f"testbed: node {node.name} has no LAN (lan = true)")
        namespace = node.lan.namespace
    elif args.node not in {n.name for n in plan.nodes} and args.node[:1] == "x":
        namespace = _stranger_namespace(plan, args.node)
    else:
        node = need_node(plan, args.node)
        namespace, socket, config = node.namespace, node.socket, node.config_path
    os.execvpe("ip", ["ip", "netns", "exec", namespace, *command], child_env(socket, config))


def _stranger_namespace(plan: Plan, name: str) -> str:
    """The namespace of stranger ``name`` (``xS``: the one ``testbed stranger S`` made)."""
    try:
        namespace, _ = plan.stranger(int(name[1:]))
    except (ValueError, KeyError):
        namespace = ""
    if namespace not in build.existing_namespaces():
        usage_error(f"testbed: no stranger {name} (testbed stranger SEGMENT)")
    return namespace


def cmd_stranger(args: argparse.Namespace) -> int:
    """Plug a stranger (a namespace that is no member) into a segment; print where it is
    and who else is there. ``testbed exec xS -- ...`` runs commands in it."""
    st, plan = need_state()
    need_root()
    try:
        namespace, address = plan.stranger(args.segment)
    except KeyError:
        usage_error(f"testbed stranger: no segment {args.segment} (0..{len(plan.segments) - 1})")
    if namespace not in build.existing_namespaces():
        build.add_stranger(plan, args.segment)
    members = {
        p.endpoint.node: str(p.endpoint.address.ip) for p in plan.segments[args.segment].ports
    }
    print(json.dumps({"namespace": namespace, "address": str(address.ip), "members": members}))
    return 0


def _pair(plan: Plan, a: str, b: str) -> tuple[str, str]:
    node = need_node(plan, a)
    need_node(plan, b)
    adj = node.adjacency(b)
    if adj is None:
        usage_error(f"testbed: {a} and {b} share no link or segment")
    return pair_key(a, b), f"{adj.medium}: {a} {adj.local.address.ip} - {b} {adj.remote.address.ip}"


def cmd_cut(args: argparse.Namespace, cut: bool) -> int:
    need_root()
    with state.locked(state_dir()):
        st, plan = need_state()
        key, where = _pair(plan, args.a, args.b)
        st.impairments = st.impairments.with_cut(key, cut)
        build.apply_rules(plan, st.impairments, [args.a, args.b])
        state.write(st)
    print(f"{'cut' if cut else 'healed'} {key} ({where})")
    return 0


def cmd_impair(args: argparse.Namespace) -> int:
    if args.rate is None and args.loss is None:
        usage_error("testbed impair: nothing to change; give --rate R|none and/or --loss PCT")
    rate = None
    if args.rate is not None and args.rate.lower() not in ("none", "0"):
        try:
            rate = topology.parse_rate(args.rate)
        except ValueError as exc:
            usage_error(f"testbed impair: --rate: {exc}")
    if args.loss is not None and not 0 <= args.loss <= 100:
        usage_error("testbed impair: --loss: expected a percentage from 0 to 100")
    need_root()
    with state.locked(state_dir()):
        st, plan = need_state()
        key, where = _pair(plan, args.a, args.b)
        imp = st.impairments
        if args.rate is not None:
            link = plan.link_between(args.a, args.b)
            if link is None:
                usage_error(
                    f"testbed impair: --rate is supported on p2p links only; {args.a} and "
                    f"{args.b} share {where.split(':')[0]}, a bridge where a rate would shape "
                    "every member at once"
                )
            imp = imp.with_rate(key, rate)
            ends = [(plan.node(e.node).namespace, e.ifname) for e in (link.a, link.b)]
            build.apply_shaping(plan, imp, ends)
        if args.loss is not None:
            imp = imp.with_loss(key, args.loss)
            build.apply_rules(plan, imp, [args.a, args.b])
        st.impairments = imp
        state.write(st)
    rate_text = imp.rate.get(key, "no rate limit")
    print(f"impaired {key} ({where}): {rate_text}, loss {imp.loss.get(key, 0):g}% per direction")
    return 0


def cmd_uplink(args: argparse.Namespace) -> int:
    need_root()
    with state.locked(state_dir()):
        st, plan = need_state()
        node = need_node(plan, args.node)
        if not node.uplink:
            usage_error(f"testbed: node {node.name} has no uplink (uplink = true)")
        st.impairments = st.impairments.with_uplink(node.name, args.state == "up")
        build.apply_rules(plan, st.impairments, [node.name])
        state.write(st)
    print(f"uplink of {node.name} {args.state}")
    return 0


def _nodes_arg(plan: Plan, args: argparse.Namespace) -> list[NodePlan]:
    if args.all:
        return list(plan.nodes)
    if not args.nodes:
        usage_error("testbed: expected NODE... or --all")
    return [need_node(plan, n) for n in args.nodes]


def cmd_kill(args: argparse.Namespace) -> int:
    need_root()
    with state.locked(state_dir()):
        st, plan = need_state()
        nodes = _nodes_arg(plan, args)
        for node in nodes:
            pid = meshd_running(st, node)
            if pid is None:
                print(f"meshd of {node.name} is not running")
                continue
            procs.signal_all([pid], signal.SIGKILL)
            if procs.wait_gone([pid], 2.0):
                raise Failure(f"testbed: meshd of {node.name} (pid {pid}) survived SIGKILL")
            st.meshd_pids[node.name] = None
            state.write(st)
            print(f"killed meshd of {node.name} (pid {pid})")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    need_root()
    with state.locked(state_dir()):
        st, plan = need_state()
        nodes = _nodes_arg(plan, args)
        if st.daemon is None:
            st.daemon = daemon_argv()
        started = []
        for node in nodes:
            pid = meshd_running(st, node)
            if pid is not None:
                print(f"meshd of {node.name} is already running (pid {pid})")
                continue
            if node.invited and not node.config_path.exists():
                if args.all:
                    continue
                usage_error(
                    f"testbed: {node.name} is invited: `testbed join {node.name} "
                    "--invite TOKEN` provisions and starts it"
                )
            pid = start_meshd(st, node)
            st.meshd_pids[node.name] = pid
            state.write(st)
            started.append(node.name)
            print(f"started meshd of {node.name} (pid {pid}), log {node.log}")
    if args.wait and started:
        return wait_answering(st, plan, started, args.timeout)
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    """Provision an invited node from an invite, as provisioning/provision does on a Pi
    (into the node's scratch root), and start its meshd, which redeems the invite first."""
    need_root()
    with state.locked(state_dir()):
        st, plan = need_state()
        node = need_node(plan, args.node)
        if not node.invited:
            usage_error(f"testbed: {node.name} is a member already (not invited = true)")
        if meshd_running(st, node):
            raise Failure(f"testbed: meshd of {node.name} is already running")
        if st.daemon is None:
            st.daemon = daemon_argv()
        print(provision_invited(node, args.invite), end="")
        st.keys[node.name] = node_keys(node)
        st.meshd_pids[node.name] = start_meshd(st, node)
        state.write(st)
        print(f"started meshd of {node.name} (pid {st.meshd_pids[node.name]}), log {node.log}")
    if args.wait:
        # It answers once it has joined (or exits, with the reason in its log).
        return wait_answering(st, plan, [node.name], args.timeout)
    return 0


def cmd_wait_converged(args: argparse.Namespace) -> int:
    """Polls only the nodes that still lacked something, keeping the others' last answers,
    and declares convergence on a round that asked every node; rounds are at least as far
    apart as they take. A status costs a daemon a few milliseconds: asking all 50 nodes of
    a large mesh four times a second would keep both cores of a small machine busy and
    slow down the very convergence being waited for."""
    started = time.monotonic()
    statuses: dict[str, dict[str, Any] | str] = {}
    ask: set[str] | None = None  # None: every running node
    lacking: dict[str, list[str]] = {}
    while True:
        st, plan = need_state()
        running = [n.name for n in plan.nodes if meshd_running(st, n)]
        if not running:
            raise Failure("testbed: no meshd is running")
        asked = [n for n in running if ask is None or n in ask or n not in statuses]
        polled = time.monotonic()
        statuses = {
            **{n: s for n, s in statuses.items() if n in running},
            **poll_statuses(plan, asked),
        }
        polled = time.monotonic() - polled
        node_ids = {name: k["node_id"] for name, k in st.keys.items()}
        problems = converge.missing(
            plan,
            st.impairments,
            statuses,
            node_ids,
            mesh_ipv6_of(plan, st, statuses),
            routes=args.routes,
            mesh_ipv4=mesh_ipv4_of(plan, statuses),
        )
        if not problems and len(asked) == len(running):
            print(f"converged: {len(running)} node(s) after {time.monotonic() - started:.1f} s")
            return 0
        if problems:
            lacking = problems
        if time.monotonic() - started > args.timeout:
            # The last problems seen: a round that found none but asked only the nodes that
            # had some is not the whole mesh.
            print(f"testbed: not converged after {args.timeout:g} s:", file=sys.stderr)
            for name, items in lacking.items():
                print(f"  {name}: " + "; ".join(items), file=sys.stderr)
            return 1
        ask = set(problems) or None  # none left: the confirming round asks every node
        time.sleep(max(0.25, polled))


# -- argument parsing ----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="testbed",
        description="Meshes of network namespaces for meshd. State in $MESHD_TESTBED_DIR "
        f"(default {DEFAULT_STATE_DIR}); namespaces named $MESHD_TESTBED_ID-* (default "
        f"{DEFAULT_ID}).",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="build the topology and start meshd on every node")
    up.add_argument("file", metavar="FILE.toml")
    up.add_argument("--wait", action="store_true", help="return once every meshd answers")
    up.add_argument("--timeout", type=float, default=30.0, help="for --wait, seconds (30)")
    up.add_argument("--no-meshd", action="store_true", help="build only; `start` runs meshd")
    up.set_defaults(func=cmd_up)

    sub.add_parser("down", help="remove everything the testbed made").set_defaults(func=cmd_down)

    st = sub.add_parser("status", help="namespaces, pids, addresses, impairments")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ex = sub.add_parser("exec", help="run a command in a node (NODE, NODE-lan, inet or xS)")
    ex.add_argument("node", metavar="NODE")
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    ex.set_defaults(func=cmd_exec)

    sg = sub.add_parser("stranger", help="plug a stranger (no member) into segment S (0, 1...)")
    sg.add_argument("segment", type=int, metavar="S")
    sg.set_defaults(func=cmd_stranger)

    for name, cut, text in (
        ("cut", True, "silently drop all A-B traffic"),
        ("heal", False, "undo cut"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument("a", metavar="A")
        c.add_argument("b", metavar="B")
        c.set_defaults(func=lambda a, cut=cut: cmd_cut(a, cut))

    im = sub.add_parser("impair", help="rate limit (p2p links) and/or random loss on A-B")
    im.add_argument("a", metavar="A")
    im.add_argument("b", metavar="B")
    im.add_argument("--rate", metavar="R", help='tc rate such as "10mbit", or "none"')
    im.add_argument("--loss", type=float, metavar="PCT", help="percent dropped per direction")
    im.set_defaults(func=cmd_impair)

    for name, func, text in (
        ("kill", cmd_kill, "SIGKILL meshd"),
        ("start", cmd_start, "start meshd"),
    ):
        k = sub.add_parser(name, help=f"{text} of NODE(s)")
        k.add_argument("nodes", nargs="*", metavar="NODE")
        k.add_argument("--all", action="store_true", help="every node")
        if name == "start":
            k.add_argument("--wait", action="store_true", help="return once it answers")
            k.add_argument("--timeout", type=float, default=30.0, help="for --wait, seconds")
        k.set_defaults(func=func)

    jn = sub.add_parser("join", help="provision an invited NODE from an invite, start meshd")
    jn.add_argument("node", metavar="NODE")
    jn.add_argument("--invite", required=True, metavar="TOKEN", help="from `meshd invite`")
    jn.add_argument("--wait", action="store_true", help="return once it joined and answers")
    jn.add_argument("--timeout", type=float, default=60.0, help="for --wait, seconds (60)")
    jn.set_defaults(func=cmd_join)

    ul = sub.add_parser("uplink", help="silently drop (down) or restore (up) a node's uplink")
    ul.add_argument("node", metavar="NODE")
    ul.add_argument("state", choices=("up", "down"))
    ul.set_defaults(func=cmd_uplink)

    wc = sub.add_parser("wait-converged", help="wait for every link up and every route")
    wc.add_argument("--timeout", type=float, default=60.0, help="seconds (60)")
    wc.add_argument(
        "--routes",
        choices=("auto", "all", "neighbours", "none"),
        default="auto",
        help="routes required: to every reachable node (auto or all, the default), to direct "
        "neighbours only, or none",
    )
    wc.set_defaults(func=cmd_wait_converged)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Failure as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except build.BuildError as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1
