"""The node's files: where they go on the target system and what they hold (pure).

The config is rendered from the invite and the household's options, and checked with
meshd's own config parser before anything is written. Paths are the target system's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from meshd.adapters.net.sysctl import ROUTER_SYSCTLS
from meshd.config.settings import CONFIG_VERSION
from meshd.core.invites import Invite
from provisioning.layout import CONFIG_FILE, SERVICE, STATE_DIR, USER, VENV

DEFAULT_HEALTH_TARGET = "1.1.1.1:443"


@dataclass(frozen=True)
class Household:
    """What the household chose on the command line."""

    uplink: str | None = None
    share: bool = False
    rate_cap: str | None = None
    health_target: str = DEFAULT_HEALTH_TARGET
    check_target: str = DEFAULT_HEALTH_TARGET  # through the exit tunnel
    lan: tuple[str, ...] = ()
    underlay: tuple[str, ...] = ()


def _s(value: object) -> str:
    return json.dumps(str(value))  # JSON string escapes are TOML basic-string escapes


def _list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_s(v) for v in values) + "]"


def render_config(invite: Invite, household: Household, name: str) -> str:
    """``name``: the household's (the invite's, or the private one its token carries)."""
    lines = [
        f"# meshd config, written by provisioning/provision from invite {invite.invite_id.hex()}",
        f"# issued by {invite.issuer}.",
        f"# After editing it: meshd check-config {CONFIG_FILE}",
        f"version = {CONFIG_VERSION}",
        "",
        "[node]",
        f"name = {_s(name)}",
        f"state_dir = {_s(STATE_DIR)}",
        f"mesh_ipv4 = {_s(invite.mesh_ipv4)}",
        "",
        "[mesh]",
        f"ipv4_prefix = {_s(invite.ipv4_prefix)}",
        f"ipv6_prefix = {_s(invite.ipv6_prefix)}",
        f"admin_keys = {_list(invite.admins)}",
    ]
    if household.uplink:
        lines += [
            "",
            "[uplink]",
            f"interface = {_s(household.uplink)}",
            f"health_target = {_s(household.health_target)}",
            f"share = {'true' if household.share else 'false'}",
        ]
        if household.rate_cap:
            lines.append(f"rate_cap = {_s(household.rate_cap)}")
    # Every household may leave by a gateway (one with an uplink, while it is down): it
    # checks the internet through the exit tunnel (docs/threat-model.md, Gateway adverts).
    lines += ["", "[exit]", f"check_target = {_s(household.check_target)}"]
    if household.lan:
        lines += ["", "[lan]", f"interfaces = {_list(household.lan)}"]
    if household.underlay:
        lines += ["", "[discovery]", f"beacon_interfaces = {_list(household.underlay)}"]
    seen: set[str] = set()
    for endpoint in invite.bootstrap:  # the config takes one address per peer
        if endpoint.node_id in seen:
            continue
        seen.add(endpoint.node_id)
        lines += [
            "",
            "[[bootstrap]]",
            f"node_id = {_s(endpoint.node_id)}",
            f"address = {_s(endpoint.address)}",
        ]
    return "\n".join(lines) + "\n"


# CAP_NET_ADMIN: WireGuard links, addresses, routes, rules, nftables, tc, net sysctls.
# CAP_NET_RAW: device-bound sockets (beacons per segment, the uplink health check).
# meshd's ports are all above 1023: no CAP_NET_BIND_SERVICE.
UNIT = f"""\
# meshd, installed by provisioning/provision.
[Unit]
Description=meshd community mesh router
Wants=network-online.target
After=network-online.target nftables.service

[Service]
Type=simple
User={USER}
Group={USER}
ExecStart={VENV}/bin/meshd run --config {CONFIG_FILE}
Restart=on-failure
RestartSec=2
# 78: the invite was refused (reused, expired, altered, revoked): starting again won't help.
RestartPreventExitStatus=78
# wireguard-go outlives meshd on purpose: a restarted meshd adopts its links.
KillMode=process
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={STATE_DIR} -/run/wireguard
RuntimeDirectory=meshd
ProtectHome=yes
PrivateTmp=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
# /dev/net/tun for wireguard-go (and its exit tunnels) where the kernel has no WireGuard.
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
LockPersonality=yes
RestrictRealtime=yes
RestrictNamespaces=yes
RestrictSUIDSGID=yes
RemoveIPC=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
# A call outside the set fails with EPERM (and says so in the log) rather than killing meshd.
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Not set, on purpose: ProtectKernelTunables (meshd sets net sysctls per link at run time),
# PrivateDevices (/dev/net/tun), MemoryDenyWriteExecute (libffi's closures), PrivateUsers
# (the capabilities must hold in the host's namespace).

[Install]
WantedBy=multi-user.target
"""

# wireguard-go (where the kernel has no WireGuard) puts its sockets here, as meshd's user.
TMPFILES = f"d /run/wireguard 0750 {USER} {USER} -\n"


# The same values meshd sets at start (meshd.adapters.net.sysctl), kept across reboots:
# from boot on, before meshd runs, so that the uplink takes the router advertisements of
# its first minutes too (with forwarding on, the kernel ignores them where accept_ra is 1).
def sysctl(uplink: str | None) -> str:
    lines = [
        "# meshd: a mesh router forwards (meshd/adapters/net/sysctl.py says why rp_filter is 0)\n"
    ]
    lines += [f"{key.replace('/', '.')} = {value}\n" for key, value in ROUTER_SYSCTLS.items()]
    if uplink:  # slashes: an interface name may hold a dot (eth0.7), which sysctl.d keeps
        lines.append(f"net/ipv6/conf/{uplink}/accept_ra = 2\n")
    return "".join(lines)


# Loaded at boot, as root, before systemd-sysctl: meshd itself may not load modules
# (ProtectKernelModules). nf_conntrack before the sysctl file's nf_conntrack_acct, which
# exists only once it is loaded (found by the first provisioning in a VM guest); wireguard
# where the kernel has it as a module.
def modules(wireguard: str) -> str:
    return "nf_conntrack\n" + ("wireguard\n" if wireguard in ("loaded", "module") else "")


# Root's, not meshd's: it writes /opt/meshd (a virtual environment per release) and
# restarts meshd.service into a release, or back out of it (meshd.core.updates).
UPDATE_SERVICE = f"""\
# meshd's updates over the mesh, installed by provisioning/provision.
[Unit]
Description=meshd: take the release this node's stage takes, or finish a trial
After={SERVICE}

[Service]
Type=oneshot
ExecStart={VENV}/bin/meshd update auto --config {CONFIG_FILE}
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
"""

# Soon after a boot (a trial a reboot cut short is judged then), and every hour: a
# release's stages are a day apart by default.
UPDATE_TIMER = """\
# meshd's updates over the mesh, installed by provisioning/provision.
[Unit]
Description=meshd: look for a release this node's stage takes

[Timer]
OnBootSec=5min
OnUnitActiveSec=1h
RandomizedDelaySec=10min

[Install]
WantedBy=timers.target
"""
