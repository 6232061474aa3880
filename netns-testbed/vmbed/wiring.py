"""A guest takes a testbed node's place on the wires.

A testbed node is a namespace whose interfaces (point-to-point veths, segment ports, the
uplink) carry its addresses. ``take_over`` turns that namespace into wires for a guest:
for each interface it records the name, MAC and IPv4 addresses, then gives the veth a new
MAC, removes its addresses, and bridges it with a tap of its own (``vt<i>``, bridge
``vb<i>``); IPv6 is switched off in the namespace so that it says nothing of its own. The
guest gets one NIC per tap with the interface's old MAC, and ``guest_setup`` (run in the
guest) gives each NIC the old name and addresses, and adds the namespace's routes. Every
peer, bridge and cut rule (they match MACs) sees the guest where the node was.

Nothing is made outside the testbed's namespace; deleting it (``testbed down``) removes
the taps and bridges with it.
"""

from __future__ import annotations

import json
import secrets
import shlex
from dataclasses import dataclass

from nstestbed.build import ipn, sysctl

from vmbed.guest import Nic


@dataclass(frozen=True)
class Port:
    name: str  # the interface's name in the node (and in the guest)
    mac: str
    addresses: tuple[str, ...]  # IPv4 with prefix length
    tap: str


@dataclass(frozen=True)
class Wiring:
    ports: tuple[Port, ...]
    routes: tuple[dict[str, str], ...]  # dst, gateway, dev: what the node had by hand

    @property
    def nics(self) -> list[Nic]:
        return [Nic(p.tap, p.mac) for p in self.ports]


def take_over(namespace: str) -> Wiring:
    links = json.loads(ipn(namespace, "-j", "addr", "show"))
    routes = [
        {k: r[k] for k in ("dst", "gateway", "dev") if k in r}
        for r in json.loads(ipn(namespace, "-j", "-4", "route", "show"))
        if r.get("protocol") != "kernel"
    ]
    sysctl(namespace, {"net.ipv6.conf.all.disable_ipv6": "1"})
    ports: list[Port] = []
    for link in links:
        name = link["ifname"]
        if name == "lo" or link.get("link_type") != "ether":
            continue
        i = len(ports)
        port = Port(
            name=name,
            mac=link["address"],
            addresses=tuple(
                f"{a['local']}/{a['prefixlen']}"
                for a in link.get("addr_info", [])
                if a.get("family") == "inet"
            ),
            tap=f"vt{i}",
        )
        bridge = f"vb{i}"
        ipn(namespace, "addr", "flush", "dev", name)
        ipn(namespace, "link", "set", name, "address", _local_mac())
        ipn(namespace, "link", "add", bridge, "type", "bridge")
        ipn(namespace, "tuntap", "add", "dev", port.tap, "mode", "tap")
        for member in (name, port.tap):
            ipn(namespace, "link", "set", member, "master", bridge, "up")
        ipn(namespace, "link", "set", bridge, "up")
        ports.append(port)
    return Wiring(tuple(ports), tuple(routes))


NET_SCRIPT = "/etc/vm-net.sh"
NET_UNIT = """\
[Unit]
Description=vmbed: this guest's NICs named and addressed as the testbed node's
After=systemd-udevd.service
Before=network.target network-online.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh /etc/vm-net.sh

[Install]
WantedBy=multi-user.target network-online.target
"""


def guest_setup(wiring: Wiring) -> str:
    """A shell script for the guest that installs ``net_script`` as a unit that runs at
    every boot (the testbed's wiring, as a Pi's network configuration would be), and runs
    it now."""
    q = shlex.quote
    return (
        f"set -e\ncat > {NET_SCRIPT} <<'VMNET'\n{net_script(wiring)}VMNET\n"
        f"cat > /etc/systemd/system/vm-net.service <<'VMNET'\n{NET_UNIT}VMNET\n"
        "systemctl daemon-reload\nsystemctl enable --quiet vm-net.service\n"
        f"sh {q(NET_SCRIPT)}\n"
    )


def net_script(wiring: Wiring) -> str:
    """Each NIC (found by its MAC) named, addressed and up, then the routes."""
    q = shlex.quote
    lines = ["set -e"]
    for port in wiring.ports:
        lines += [
            "for _ in $(seq 50); do",
            f"  dev=$(grep -lx {q(port.mac)} /sys/class/net/*/address | cut -d/ -f5) && break",
            "  sleep 0.2",
            "done",
            f'[ "$dev" = {q(port.name)} ] || {{ ip link set "$dev" down; '
            f'ip link set "$dev" name {q(port.name)}; }}',
            *(f"ip addr replace {q(a)} dev {q(port.name)}" for a in port.addresses),
            f"ip link set {q(port.name)} up",
        ]
    for route in wiring.routes:
        via = f" via {route['gateway']}" if "gateway" in route else ""
        dev = f" dev {route['dev']}" if "dev" in route else ""
        lines.append(f"ip route replace {route['dst']}{via}{dev}")
    return "\n".join(lines) + "\n"


def _local_mac() -> str:
    octets = [0x02, *secrets.token_bytes(5)]
    return ":".join(f"{o:02x}" for o in octets)
