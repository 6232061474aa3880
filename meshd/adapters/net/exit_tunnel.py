"""The exit tunnels' kernel side (kernel thread only): WireGuard interfaces, the routing
tables and rules of exit traffic, and meshd's nftables table.

A household leaves the mesh by an end-to-end WireGuard tunnel to its chosen gateway,
carried over the mesh's own links (as Althea does): hop-by-hop forwarding alone would let
every relay pick its own exit.

- User side: interface ``<prefix><tag>xu`` with the gateway as its one peer (allowed
  0.0.0.0/0, endpoint the gateway's mesh address). Its default route lives in table
  ``table + 1``, used through two rules as wg-quick does: ``lookup main
  suppress_prefixlength 0`` (every route but a default) and ``not fwmark M lookup
  table+1``; the tunnel's own packets carry M, so they keep going over the mesh. The
  rules exist only while the exit is in use, so a household with a working uplink uses
  its own default route. Traffic to the mesh prefixes never gets here: the mesh table's
  rules (``routing.rule_preference``, between the gateway's and the user's) take it first,
  the tunnel's own packets to its gateway's mesh address with it. Except DNS: the
  node's and its LAN's queries go to the gateway's mesh address (the firewall's DNAT),
  and two rules before every other (``DNS_RULE_PREF``: TCP and UDP to that address, port
  53, without the tunnel's mark) send them into the tunnel, where no relay reads them
  and only the gateway answers.
- Gateway side: interface ``<prefix><tag>xg`` on the exit port, a peer per admitted user
  (allowed its mesh /32). Replies coming back from the uplink are routed into it by
  ``iif <uplink> lookup table``, where each user has its /32.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket

from meshd.adapters.net import command, firewall, shaping, sysctl
from meshd.adapters.net.exit_meter import ExitMeter
from meshd.adapters.net.netlink import Netlink, NetlinkError
from meshd.adapters.wg.backend import WireGuardBackend
from meshd.adapters.wg.model import DeviceUpdate, PeerUpdate, WireGuardError
from meshd.core.exits import ExitTarget
from meshd.log import event

DNS_RULE_PREF = 999  # before the gateway's: no other rule applies to an exit user's DNS
GATEWAY_RULE_PREF = 1000
USER_RULE_PREF = 1100  # and the next one
USER_KEEPALIVE_S = 25  # keeps the tunnel's session warm (issue 18: <= 10 B/s per link idle)


def exit_interface_names(own_prefix: str) -> tuple[str, str]:
    """(gateway side, user side) for a node whose interfaces start with ``own_prefix``."""
    return f"{own_prefix}xg", f"{own_prefix}xu"


class ExitTunnels:
    def __init__(
        self,
        backend: WireGuardBackend,
        netlink: Netlink,
        wireguard_private: bytes,
        spec: firewall.FirewallSpec,
        *,
        table: int,
        fwmark: int,
        mtu: int,
        exit_port: int,
    ) -> None:
        self.backend, self.netlink = backend, netlink
        self.private = wireguard_private
        self.gateway_if, self.user_if = exit_interface_names(spec.tunnel_prefix)
        self.spec = spec
        self.table, self.fwmark, self.mtu, self.exit_port = table, fwmark, mtu, exit_port
        self.users: dict[bytes, ipaddress.IPv4Address] = {}  # admitted: key -> mesh address
        self.meter = ExitMeter()
        self.fair = shaping.FairShare()
        self.target: ExitTarget | None = None
        self._applied = ""
        self._shaped = ""  # the uplink we put a qdisc on

    # ---- both ----------------------------------------------------------------------

    def setup(self) -> None:
        """Start clean: what a crashed meshd left of the exits goes."""
        for ifname in self._delete_interfaces():
            event("exit.stale_removed", interface=ifname)
        self._remove_rules()
        self.meter.close()
        self.fair.close()
        self.apply_firewall()

    def teardown(self) -> None:
        self._delete_interfaces()
        self._remove_rules()
        firewall.remove()
        self.meter.close()
        self.fair.close()
        if self._shaped:
            shaping.remove(self._shaped)

    def _delete_interfaces(self) -> list[str]:
        """Delete both exit interfaces where they exist; the names deleted."""
        deleted = []
        for ifname in (self.gateway_if, self.user_if):
            try:
                if self.backend.exists(ifname):
                    self.backend.delete(ifname)
                    deleted.append(ifname)
            except WireGuardError as exc:
                event("exit.delete_failed", logging.WARNING, interface=ifname, error=str(exc))
        return deleted

    def apply_firewall(self) -> None:
        ruleset = firewall.render(self.spec)
        if ruleset != self._applied:
            firewall.apply(ruleset)
            self._applied = ruleset

    def allow_metrics(self, addresses: tuple[firewall.IPAddress, ...]) -> None:
        """Who may scrape the metrics over the mesh now (meshd.daemon.metrics)."""
        self.spec = dataclasses.replace(self.spec, metrics_allow=addresses)
        self.apply_firewall()

    def _remove_rules(self) -> None:
        _delete_rules(DNS_RULE_PREF, GATEWAY_RULE_PREF, USER_RULE_PREF, USER_RULE_PREF + 1)
        for table in (self.table, self.table + 1):
            _ip_ok("route", "flush", "table", str(table))

    def _interface(self, ifname: str, update: DeviceUpdate) -> None:
        if not self.backend.exists(ifname):
            self.backend.create(ifname)
            event("exit.interface_created", interface=ifname)
        self.backend.configure(ifname, update)
        self.netlink.set_up(ifname, mtu=self.mtu)
        sysctl.apply(sysctl.interface_rp_filter(ifname))

    # ---- gateway -------------------------------------------------------------------

    def open_gateway(self, uplink: str, rate_kbit: int | None, cap_kbit: int | None) -> None:
        """Open the exit; with a line rate or a cap, shape the uplink owner-first."""
        self._interface(
            self.gateway_if, DeviceUpdate(private_key=self.private, listen_port=self.exit_port)
        )
        _delete_rules(GATEWAY_RULE_PREF)
        _ip("rule", "add", "pref", str(GATEWAY_RULE_PREF), "iif", uplink, "lookup", str(self.table))
        shaped = bool(rate_kbit or cap_kbit)
        fair: dict[str, int] = {}  # interface -> the mesh's rate there: a class per user
        if shaped:
            shaping.apply(shaping.uplink_commands(uplink, rate_kbit, cap_kbit))
            self._shaped = uplink
            fair[uplink] = shaping.mesh_cap_kbit(rate_kbit, cap_kbit)
            event("exit.shaping", uplink=uplink, rate_kbit=rate_kbit, cap_kbit=cap_kbit)
        if cap_kbit:
            shaping.apply(shaping.exit_commands(self.gateway_if, cap_kbit))
            fair[self.gateway_if] = cap_kbit
        self.fair.open(self.gateway_if, fair)
        for address in self.users.values():
            self.fair.add(address)
        self.spec = dataclasses.replace(
            self.spec,
            gateway_interface=self.gateway_if,
            mesh_class=shaped,
            uplink_subnets=self._subnets(uplink),
        )
        self.apply_firewall()
        self.meter.open(self.gateway_if)

    def watch_uplink(self) -> None:
        """Keep exit users out of the uplink's subnets as its addresses change (DHCP)."""
        if not self.spec.gateway_interface:
            return
        subnets = self._subnets(self.spec.uplink)
        if subnets != self.spec.uplink_subnets:
            event("exit.uplink_subnets", subnets=[str(n) for n in subnets])
            self.spec = dataclasses.replace(self.spec, uplink_subnets=subnets)
            self.apply_firewall()

    def _subnets(self, uplink: str) -> tuple[firewall.Network, ...]:
        try:
            found = self.netlink.addresses(uplink)
        except NetlinkError as exc:  # gone for now: keep what we knew
            event("exit.uplink_unreadable", logging.WARNING, error=str(exc))
            return self.spec.uplink_subnets
        return tuple(
            sorted(
                {ipaddress.ip_interface(f"{a}/{plen}").network for a, plen in found},
                key=lambda n: (n.version, n),
            )
        )

    def admit(self, wireguard_public: bytes, address: ipaddress.IPv4Address) -> None:
        peer = PeerUpdate(wireguard_public, allowed_ips=(f"{address}/32",))
        self.backend.configure(self.gateway_if, DeviceUpdate(peers=(peer,)))
        _ip("route", "replace", f"{address}/32", "dev", self.gateway_if, "table", str(self.table))
        self.users[wireguard_public] = address
        self.meter.add(address)
        self.fair.add(address)

    def release(self, wireguard_public: bytes) -> None:
        address = self.users.pop(wireguard_public, None)
        peer = PeerUpdate(wireguard_public, remove=True)
        self.backend.configure(self.gateway_if, DeviceUpdate(peers=(peer,)))
        if address is not None and address not in self.users.values():
            _ip_ok("route", "del", f"{address}/32", "table", str(self.table))
            self.meter.remove(address)
            self.fair.remove(address)

    def usage(self) -> dict[ipaddress.IPv4Address, int]:
        """Exit bytes (both ways) per user address since the last call."""
        return self.meter.deltas()

    # ---- user ----------------------------------------------------------------------

    def use(self, target: ExitTarget | None, src: ipaddress.IPv4Address) -> None:
        """Leave by ``target`` (None: by our own uplink, or not at all)."""
        if target == self.target:
            return
        if target is None:
            _delete_rules(DNS_RULE_PREF, USER_RULE_PREF, USER_RULE_PREF + 1)
            _ip_ok("route", "flush", "table", str(self.table + 1))
            if self.backend.exists(self.user_if):
                self.backend.delete(self.user_if)
            self.spec = dataclasses.replace(self.spec, user_interface="", exit_dns="")
            self.apply_firewall()
            self.target = None
            return
        peer = PeerUpdate(
            target.wireguard_public,
            endpoint=target.endpoint,
            allowed_ips=("0.0.0.0/0",),
            persistent_keepalive_s=USER_KEEPALIVE_S,
        )
        self._interface(
            self.user_if,
            DeviceUpdate(
                private_key=self.private, fwmark=self.fwmark, peers=(peer,), replace_peers=True
            ),
        )
        self.spec = dataclasses.replace(
            self.spec, user_interface=self.user_if, exit_dns=target.endpoint[0]
        )
        self.apply_firewall()
        user_table = str(self.table + 1)
        _ip(
            "route", "replace", "default", "dev", self.user_if, "src", str(src), "table", user_table
        )
        if self.target is None:
            _delete_rules(USER_RULE_PREF, USER_RULE_PREF + 1)
            _ip(
                "rule", "add", "pref", str(USER_RULE_PREF),
                "lookup", "main", "suppress_prefixlength", "0",
            )  # fmt: skip
            _ip(
                "rule", "add", "pref", str(USER_RULE_PREF + 1),
                "not", "fwmark", str(self.fwmark), "lookup", user_table,
            )  # fmt: skip
        _delete_rules(DNS_RULE_PREF)
        # By number: ip resolves names through /etc/protocols, which a minimal Debian
        # (netbase not installed) lacks: "udp" was refused in the VM tier's first guest.
        for proto in (str(socket.IPPROTO_UDP), str(socket.IPPROTO_TCP)):
            _ip(
                "rule", "add", "pref", str(DNS_RULE_PREF), "to", f"{target.endpoint[0]}/32",
                "ipproto", proto, "dport", "53", "fwmark", f"0/{self.fwmark:#x}",
                "lookup", user_table,
            )  # fmt: skip
        self.target = target


def _delete_rules(*prefs: int) -> None:
    """Every rule at these preferences (a crash may have left more than one)."""
    for pref in prefs:
        while _ip_ok("rule", "del", "pref", str(pref)):
            pass


def _ip(*args: str) -> None:
    command.run("ip", *args)


def _ip_ok(*args: str) -> bool:
    return command.run_ok("ip", *args)
