"""An in-memory stand-in for meshd.net.netlink.Netlink, for unit tests of the node logic."""

from __future__ import annotations

import errno
from pathlib import Path

from meshd.net.netlink import IPAddress, NetlinkError, Route


class FakeNetlink:
    def __init__(self, sysctl_root: Path | None = None) -> None:
        self.sysctl_root = sysctl_root
        self.links: dict[str, dict[str, object]] = {"lo": {"up": False, "mtu": 65536}}
        self.addrs: dict[str, set[tuple[IPAddress, int]]] = {"lo": set()}
        self.table: dict[tuple[object, str, int], tuple[Route, int]] = {}

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

    def remove_address(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        self.addrs.get(ifname, set()).discard((address, prefixlen))

    def replace_route(self, route: Route, proto: int) -> None:
        if route.ifname not in self.links:
            raise NetlinkError(f"no interface {route.ifname}", errno.ENODEV)
        # The kernel keys a route by destination and metric: replace overwrites in place.
        self.table[(route.dst, "main", route.metric)] = (route, proto)

    def delete_route(self, route: Route, proto: int) -> None:
        self.table.pop((route.dst, "main", route.metric), None)

    def routes(self, proto: int) -> list[Route]:
        return [r for r, p in self.table.values() if p == proto]
