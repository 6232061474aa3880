"""An in-memory stand-in for meshd.adapters.net.netlink.Netlink, for unit tests of the node
logic."""

from __future__ import annotations

import errno
from pathlib import Path

from meshd.adapters.net.netlink import IPAddress, NetlinkError, Route, Rule


class FakeNetlink:
    def __init__(self, sysctl_root: Path | None = None) -> None:
        self.sysctl_root = sysctl_root
        self.links: dict[str, dict[str, object]] = {"lo": {"up": False, "mtu": 65536}}
        self.addrs: dict[str, set[tuple[IPAddress, int]]] = {"lo": set()}
        self.table: dict[tuple[object, int, int], tuple[Route, int]] = {}
        self.rule_list: list[Rule] = []  # in the kernel's order, duplicates and all

    def add_link(self, ifname: str) -> None:  # what a WireGuard backend's create does
        self.links.setdefault(ifname, {"up": False, "mtu": 1420})
        self.addrs.setdefault(ifname, set())
        if self.sysctl_root is not None:  # the kernel makes an interface's conf entries
            conf = self.sysctl_root / "net/ipv4/conf" / ifname
            conf.mkdir(parents=True, exist_ok=True)
            (conf / "rp_filter").write_text("2\n")  # as systemd's default.rp_filter sets

    def close(self) -> None:
        pass

    def set_up(self, ifname: str, mtu: int | None = None) -> None:
        if ifname not in self.links:
            self.add_link(ifname)  # the fake WireGuard backend has no netlink side
        self.links[ifname]["up"] = True
        if mtu is not None:
            self.links[ifname]["mtu"] = mtu

    def ensure_address(self, ifname: str, address: IPAddress, prefixlen: int) -> bool:
        if ifname not in self.addrs:
            raise NetlinkError(f"no interface {ifname}", errno.ENODEV)
        if (address, prefixlen) in self.addrs[ifname]:
            return False
        self.addrs[ifname].add((address, prefixlen))
        return True

    def addresses(self, ifname: str) -> set[tuple[IPAddress, int]]:
        if ifname not in self.addrs:
            raise NetlinkError(f"no interface {ifname}", errno.ENODEV)
        return set(self.addrs[ifname])

    def remove_address(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        self.addrs.get(ifname, set()).discard((address, prefixlen))

    def replace_route(self, route: Route, proto: int, *, table: int) -> None:
        if route.ifname not in self.links:
            raise NetlinkError(f"no interface {route.ifname}", errno.ENODEV)
        # The kernel keys a route by table, destination and metric: replace overwrites.
        self.table[(route.dst, table, route.metric)] = (route, proto)

    def delete_route(self, route: Route, proto: int, *, table: int) -> None:
        self.table.pop((route.dst, table, route.metric), None)

    def routes(self, proto: int, *, table: int) -> list[Route]:
        return [r for (_, t, _), (r, p) in self.table.items() if p == proto and t == table]

    def rules(self, table: int) -> list[Rule]:
        return [r for r in self.rule_list if r.table == table]

    def ensure_rules(self, wanted: list[Rule]) -> tuple[list[Rule], list[Rule]]:
        tables = {r.table for r in wanted}
        kept: list[Rule] = []
        deleted: list[Rule] = []
        for rule in self.rule_list:
            if rule.table not in tables or (rule in wanted and rule not in kept):
                kept.append(rule)
            else:
                deleted.append(rule)
        added = [r for r in dict.fromkeys(wanted) if r not in kept]
        self.rule_list = sorted(kept + added, key=lambda r: r.pref)
        return added, deleted

    def remove_rules(self, table: int) -> list[Rule]:
        deleted = self.rules(table)
        self.rule_list = [r for r in self.rule_list if r.table != table]
        return deleted
