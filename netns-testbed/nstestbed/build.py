"""Namespaces, veths, bridges, addresses, routes, nftables and tc: the plan made real.

Only ``ip``, ``nft`` and ``tc`` are run, always scoped to a testbed namespace (``ip -n``,
``ip netns exec``): veths are created directly in their namespaces, so no interface, address
or route is ever made in the host's namespace.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from nstestbed.plan import (
    INTERNET_ADDRESS,
    INTERNET_BRIDGE,
    INTERNET_NET,
    NAT_INSIDE_IF,
    SERVER_ADDRESS,
    NatPlan,
    Plan,
    home_port,
)
from nstestbed.rules import (
    Impairments,
    carrier_ruleset,
    internet_ruleset,
    nat_ruleset,
    node_ruleset,
    redirect_args,
    shaped_interfaces,
    tbf_args,
    upload_redirects,
)

# For tests: make ``up`` fail at the named step, to check that it cleans up after itself.
FAIL_AT_ENV = "MESHD_TESTBED_FAIL_AT"


class BuildError(Exception):
    """A command failed: which one and what it said."""


def run(
    argv: Sequence[str], input: str | None = None, check: bool = True, timeout: float = 30
) -> str:
    try:
        proc = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{' '.join(argv)}: {exc}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().replace("\n", " | ")
        raise BuildError(f"{' '.join(argv)}: {detail or f'exit {proc.returncode}'}")
    return proc.stdout


def ipn(namespace: str, *args: str) -> str:
    return run(["ip", "-n", namespace, *args])


def nft(namespace: str, ruleset: str) -> None:
    run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=ruleset)


def sysctl(namespace: str, settings: dict[str, str]) -> None:
    run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            "sysctl",
            "-qw",
            *(f"{k}={v}" for k, v in settings.items()),
        ]
    )


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str, mac_a: str | None = None) -> None:
    """A veth pair created directly in its two namespaces (never in the host's)."""
    address = ["address", mac_a] if mac_a else []
    run(
        [
            "ip",
            "link",
            "add",
            "name",
            name_a,
            *address,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            name_b,
            "netns",
            ns_b,
        ]
    )


def existing_namespaces() -> set[str]:
    out = run(["ip", "netns", "list"])
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def tun_interfaces(namespace: str) -> set[str]:
    """Names of the TUN interfaces in a namespace: the ones wireguard-go serves."""
    out = run(["ip", "-n", namespace, "-d", "-o", "link", "show"], check=False)
    names = set()
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and " tun type tun " in parts[2]:
            names.add(parts[1].strip().split("@")[0])
    return names


def _checkpoint(step: str) -> None:
    if os.environ.get(FAIL_AT_ENV) == step:
        raise BuildError(f"failing at step {step!r} as {FAIL_AT_ENV} asks")


NODE_SYSCTLS = {
    # Forwarding is left at the new namespace's default (off): meshd must turn it on itself,
    # as it must on a Pi. No duplicate address detection: link-local addresses usable at once.
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.accept_dad": "0",
}


INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_MARGIN = 64  # exit tunnels, meshd itself, whatever else starts meanwhile


def inotify_instances_in_use() -> int:
    count = 0
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            count += sum(os.readlink(fd) == "anon_inode:inotify" for fd in fd_dir.iterdir())
        except OSError:  # a process that ended, or a descriptor that closed, meanwhile
            continue
    return count


def ensure_inotify_instances(plan: Plan) -> int | None:
    """Make room for one inotify instance per WireGuard link: each wireguard-go watches its
    UAPI socket with one, and past the kernel's limit per user (128 by default, all of
    root's processes together, whatever their namespace) a new one fails to answer on its
    socket, so meshd cannot set its link up (a 50-node mesh has about 230). Only ever
    raised, never lowered: other testbeds may rely on it. Returns the old limit when
    raised."""
    needed = sum(len(node.adjacencies) for node in plan.nodes) + INOTIFY_MARGIN
    limit = int(INOTIFY_LIMIT.read_text())
    wanted = inotify_instances_in_use() + needed
    if wanted <= limit:
        return None
    try:
        INOTIFY_LIMIT.write_text(f"{wanted}\n")
    except OSError as exc:
        raise BuildError(f"{INOTIFY_LIMIT}: cannot raise it to {wanted}: {exc}") from None
    return limit


def add_stranger(plan: Plan, segment: int) -> tuple[str, ipaddress.IPv4Interface]:
    """Plug a stranger into segment ``segment``: a namespace with an address on the
    segment's subnet and nothing else (no keys, no meshd, no routes beyond the segment);
    what it tries is up to the test. Removed by ``down`` (its name matches the testbed's)."""
    assert plan.switch_namespace is not None
    namespace, address = plan.stranger(segment)
    run(["ip", "netns", "add", namespace])
    ipn(namespace, "link", "set", "lo", "up")
    port = f"s{segment}-stranger"
    veth(namespace, "s0", plan.switch_namespace, port)
    ipn(plan.switch_namespace, "link", "set", port, "master", plan.segments[segment].bridge, "up")
    ipn(namespace, "addr", "add", str(address), "dev", "s0")
    ipn(namespace, "link", "set", "s0", "up")
    return namespace, address


def build(plan: Plan, imp: Impairments) -> None:
    """Create every namespace, link, bridge, address and route of the plan, then apply the
    impairments. Raises BuildError at the first failure (the caller tears down)."""
    for ns in plan.namespaces():
        run(["ip", "netns", "add", ns])
        ipn(ns, "link", "set", "lo", "up")
    for node in plan.nodes:
        sysctl(node.namespace, NODE_SYSCTLS)
    _checkpoint("namespaces")

    inet = plan.internet_namespace
    ipn(inet, "link", "add", INTERNET_BRIDGE, "type", "bridge")
    ipn(inet, "addr", "add", f"{INTERNET_ADDRESS}/{INTERNET_NET.prefixlen}", "dev", INTERNET_BRIDGE)
    ipn(inet, "link", "set", INTERNET_BRIDGE, "up")
    ipn(inet, "addr", "add", f"{SERVER_ADDRESS}/32", "dev", "lo")

    for link in plan.links:
        ns_a, ns_b = plan.node(link.a.node).namespace, plan.node(link.b.node).namespace
        veth(ns_a, link.a.ifname, ns_b, link.b.ifname)
        for ns, end in ((ns_a, link.a), (ns_b, link.b)):
            if link.mtu:
                ipn(ns, "link", "set", end.ifname, "mtu", str(link.mtu))
            ipn(ns, "addr", "add", str(end.address), "dev", end.ifname)
            ipn(ns, "link", "set", end.ifname, "up")
    _checkpoint("links")

    if plan.switch_namespace:
        sw = plan.switch_namespace
        for seg in plan.segments:
            # No multicast snooping: LAN beacons to multicast groups reach every member.
            ipn(sw, "link", "add", seg.bridge, "type", "bridge", "mcast_snooping", "0")
            ipn(sw, "link", "set", seg.bridge, "up")
            for port in seg.ports:
                ns = plan.node(port.endpoint.node).namespace
                veth(ns, port.endpoint.ifname, sw, port.switch_port, port.endpoint.mac)
                ipn(sw, "link", "set", port.switch_port, "master", seg.bridge, "up")
                ipn(ns, "addr", "add", str(port.endpoint.address), "dev", port.endpoint.ifname)
                ipn(ns, "link", "set", port.endpoint.ifname, "up")
    _checkpoint("segments")

    for node in plan.nodes:
        if node.uplink:
            up = node.uplink
            if up.nat is None:
                veth(node.namespace, up.ifname, inet, up.internet_port)
                ipn(inet, "link", "set", up.internet_port, "master", INTERNET_BRIDGE, "up")
            else:
                if not up.behind:
                    _home_router(up.nat, up.address, inet, up.internet_port)
                port = home_port(node.name)
                veth(node.namespace, up.ifname, up.nat.namespace, port)
                ipn(up.nat.namespace, "link", "set", port, "master", up.nat.inside_ifname, "up")
            ipn(node.namespace, "addr", "add", str(up.node_address), "dev", up.ifname)
            ipn(node.namespace, "link", "set", up.ifname, "up")
            ipn(node.namespace, "route", "add", "default", "via", str(up.gateway))
        if node.lan:
            lan = node.lan
            veth(node.namespace, lan.node_ifname, lan.namespace, lan.host_ifname)
            ipn(node.namespace, "addr", "add", str(lan.node_address), "dev", lan.node_ifname)
            ipn(node.namespace, "link", "set", lan.node_ifname, "up")
            ipn(lan.namespace, "addr", "add", str(lan.host_address), "dev", lan.host_ifname)
            ipn(lan.namespace, "link", "set", lan.host_ifname, "up")
            ipn(lan.namespace, "route", "add", "default", "via", str(lan.node_address.ip))
    for bridge_port, ifb in upload_redirects(plan):
        # What the node sends goes through an ifb in the internet namespace (apply_shaping
        # puts the tbf on it): meshd owns the root qdisc of the node's own ``upl``.
        ipn(inet, "link", "add", ifb, "type", "ifb")
        ipn(inet, "link", "set", ifb, "up")
        run(["tc", "-n", inet, "qdisc", "add", "dev", bridge_port, "handle", "ffff:", "ingress"])
        run(["tc", "-n", inet, "filter", "add", "dev", bridge_port, *redirect_args(ifb)])
    _checkpoint("uplinks")

    apply_rules(plan, imp)
    apply_shaping(plan, imp)
    _checkpoint("rules")


def _home_router(
    nat: NatPlan, public: ipaddress.IPv4Interface, inet: str, bridge_port: str
) -> None:
    """The household's router: its home network (a bridge: each node behind it has a port)
    inside, the internet outside, and what the inside sends masqueraded to the public
    address (plain ``masquerade``: a mapping keeps the inner port where it is free). From
    the outside only replies come in. With a carrier's NAT (``cgnat``) the router's outside
    is the carrier's inside, and the carrier masquerades once more to the public address."""
    ns = nat.namespace
    ipn(ns, "link", "add", nat.inside_ifname, "type", "bridge")
    ipn(ns, "addr", "add", str(nat.inside_address), "dev", nat.inside_ifname)
    ipn(ns, "link", "set", nat.inside_ifname, "up")
    # Frames between two nodes on the home network are bridged, not routed: they stay out
    # of the router's filter (the kernel's br_netfilter would hand them to it).
    sysctl(ns, {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "0"})
    outside, gateway = public, INTERNET_ADDRESS
    carrier = nat.carrier
    if carrier is not None:
        cgn = carrier.namespace
        veth(ns, nat.wan_ifname, cgn, NAT_INSIDE_IF)
        ipn(cgn, "addr", "add", str(carrier.inside_address), "dev", NAT_INSIDE_IF)
        ipn(cgn, "link", "set", NAT_INSIDE_IF, "up")
        veth(cgn, carrier.wan_ifname, inet, bridge_port)
        ipn(cgn, "addr", "add", str(public), "dev", carrier.wan_ifname)
        ipn(cgn, "link", "set", carrier.wan_ifname, "up")
        ipn(cgn, "route", "add", "default", "via", str(INTERNET_ADDRESS))
        sysctl(cgn, {"net.ipv4.ip_forward": "1"})
        nft(cgn, carrier_ruleset(carrier))
        outside, gateway = carrier.router_address, carrier.inside_address.ip
    else:
        veth(ns, nat.wan_ifname, inet, bridge_port)
    ipn(inet, "link", "set", bridge_port, "master", INTERNET_BRIDGE, "up")
    ipn(ns, "addr", "add", str(outside), "dev", nat.wan_ifname)
    ipn(ns, "link", "set", nat.wan_ifname, "up")
    ipn(ns, "route", "add", "default", "via", str(gateway))
    nft(ns, nat_ruleset(nat))


def apply_rules(plan: Plan, imp: Impairments, nodes: Iterable[str] | None = None) -> None:
    """Replace the ``testbed`` tables of the given nodes (all by default) and the internet's."""
    wanted = set(nodes) if nodes is not None else None
    for node in plan.nodes:
        if wanted is None or node.name in wanted:
            nft(node.namespace, node_ruleset(node, imp))
    nft(plan.internet_namespace, internet_ruleset(plan, imp))


def apply_shaping(
    plan: Plan, imp: Impairments, only: Iterable[tuple[str, str]] | None = None
) -> None:
    """Set (or remove) tbf on the given interfaces (all shapeable ones by default)."""
    wanted = set(only) if only is not None else None
    for (ns, ifname), rate in shaped_interfaces(plan, imp).items():
        if wanted is not None and (ns, ifname) not in wanted:
            continue
        if rate is None:
            run(["tc", "-n", ns, "qdisc", "del", "dev", ifname, "root"], check=False)
        else:
            run(["tc", "-n", ns, "qdisc", "replace", "dev", ifname, "root", *tbf_args(rate)])


def delete_namespace(namespace: str) -> None:
    run(["ip", "netns", "del", namespace], check=False)


WIREGUARD_SOCKET_DIR = Path("/var/run/wireguard")


def wireguard_sockets(names: Iterable[str], prefixes: Iterable[str] = ()) -> list[Path]:
    """wireguard-go's UAPI sockets of these TUN interfaces, and of any whose name starts
    with one of ``prefixes`` (a node's own interfaces, found even when the interface is
    already gone), that exist. The directory is shared by every namespace."""
    base = WIREGUARD_SOCKET_DIR
    candidates = {base / f"{name}.sock" for name in names}
    prefixes = tuple(p for p in prefixes if p)
    if prefixes and base.is_dir():
        candidates |= {p for p in base.glob("*.sock") if p.stem.startswith(prefixes)}
    return sorted(p for p in candidates if os.path.lexists(p))


def remove_wireguard_sockets(names: Iterable[str], prefixes: Iterable[str] = ()) -> list[Path]:
    """Remove the sockets ``wireguard_sockets`` finds (those their daemons, killed, left);
    returns those removed."""
    removed = []
    for path in wireguard_sockets(names, prefixes):
        try:
            path.unlink()
        except FileNotFoundError:  # its daemon, exiting, removed it meanwhile
            continue
        except OSError as exc:  # reported by the caller, which looks again
            print(f"testbed: cannot remove {path}: {exc.strerror}", file=sys.stderr)
            continue
        removed.append(path)
    return removed
