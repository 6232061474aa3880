"""Netlink adapter (pyroute2): addresses, links and meshd's routes.

The only module that imports pyroute2's IPRoute. Routes meshd installs carry its own
rtnetlink protocol number so that they can be found again after a crash (adoption) and
removed on exit without touching anyone else's.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

IFA_F_NODAD = 0x02  # link addresses are unique by construction: skip duplicate detection


class NetlinkError(Exception):
    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    ifname: str
    src: IPAddress | None
    metric: int


def _family(addr: IPAddress | IPNetwork) -> int:
    return 10 if addr.version == 6 else 2


class Netlink:
    """Blocking calls. pyroute2's synchronous IPRoute runs an event loop of its own, so it
    must not be used from a thread whose asyncio loop is running: the daemon makes every
    kernel call from one worker thread, where the socket is opened on first use."""

    def __init__(self, ipr: Any = None) -> None:
        self._ipr = ipr
        # Interface indexes for routes: a lookup costs a dump of every link, and a burst of
        # route changes names the same few interfaces. The kernel does not reuse an index
        # soon, so a stale one fails (ENODEV) and is looked up again.
        self._route_oifs: dict[str, int] = {}

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from pyroute2.netlink.exceptions import NetlinkError as PyrouteError

        try:
            return fn(*args, **kwargs)
        except PyrouteError as exc:
            raise NetlinkError(f"{what}: {exc}", exc.code) from None

    def index(self, ifname: str) -> int | None:
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def _index(self, ifname: str) -> int:
        idx = self.index(ifname)
        if idx is None:
            raise NetlinkError(f"no interface {ifname}", errno.ENODEV)
        return idx

    def set_up(self, ifname: str, mtu: int | None = None) -> None:
        kwargs: dict[str, Any] = {"state": "up"}
        if mtu is not None:
            kwargs["mtu"] = mtu
        self._call(f"set {ifname} up", self.ipr.link, "set", index=self._index(ifname), **kwargs)

    def addresses(self, ifname: str) -> set[tuple[IPAddress, int]]:
        idx = self._index(ifname)
        return {
            (ipaddress.ip_address(a.get("IFA_ADDRESS")), int(a["prefixlen"]))
            for a in self.ipr.addr("dump", index=idx)
        }

    def ensure_address(self, ifname: str, address: IPAddress, prefixlen: int) -> bool:
        """Add the address unless it is there; True when it was added."""
        if (address, prefixlen) in self.addresses(ifname):
            return False
        kwargs: dict[str, Any] = {}
        if address.version == 6:
            kwargs["flags"] = IFA_F_NODAD
        try:
            self.ipr.addr(
                "add",
                index=self._index(ifname),
                address=str(address),
                prefixlen=prefixlen,
                **kwargs,
            )
        except Exception as exc:  # pyroute2's NetlinkError; EEXIST is a race we accept
            if getattr(exc, "code", None) == errno.EEXIST:
                return False
            raise NetlinkError(
                f"add {address}/{prefixlen} to {ifname}: {exc}", getattr(exc, "code", None)
            ) from None
        return True

    def remove_address(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        idx = self.index(ifname)
        if idx is None or (address, prefixlen) not in self.addresses(ifname):
            return
        self._call(
            f"remove {address} from {ifname}",
            self.ipr.addr,
            "del",
            index=idx,
            address=str(address),
            prefixlen=prefixlen,
        )

    def replace_route(self, route: Route, proto: int) -> None:
        kwargs: dict[str, Any] = {
            "dst": f"{route.dst.network_address}/{route.dst.prefixlen}",
            "proto": proto,
            "priority": route.metric,
            "family": _family(route.dst),
        }
        if route.src is not None:
            kwargs["prefsrc"] = str(route.src)
        what = f"route {route.dst} dev {route.ifname}"
        self._on_oif(
            route.ifname, lambda oif: self._call(what, self.ipr.route, "replace", oif=oif, **kwargs)
        )

    def delete_route(self, route: Route, proto: int) -> None:
        try:
            self._on_oif(
                route.ifname,
                lambda oif: self._call(
                    f"delete route {route.dst}",
                    self.ipr.route,
                    "del",
                    dst=f"{route.dst.network_address}/{route.dst.prefixlen}",
                    oif=oif,
                    proto=proto,
                    priority=route.metric,
                    family=_family(route.dst),
                ),
            )
        except NetlinkError as exc:
            # ENODEV: the interface is gone, and the route went with it.
            if exc.errno not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                raise

    def _on_oif(self, ifname: str, call: Callable[[int], object]) -> None:
        """``call`` with the remembered index of ``ifname``; once more with an index looked
        up afresh when the kernel no longer knows the remembered one (ENODEV)."""
        try:
            call(self._oif(ifname))
        except NetlinkError as exc:
            if exc.errno != errno.ENODEV:
                raise
            call(self._oif(ifname, fresh=True))

    def _oif(self, ifname: str, fresh: bool = False) -> int:
        """The index of ``ifname`` for a route: remembered, or looked up when ``fresh``."""
        if fresh or ifname not in self._route_oifs:
            self._route_oifs.pop(ifname, None)
            self._route_oifs[ifname] = self._index(ifname)
        return self._route_oifs[ifname]

    def routes(self, proto: int) -> list[Route]:
        """Every route (IPv4 and IPv6, main table) carrying ``proto``."""
        names = {link["index"]: link.get("IFLA_IFNAME") for link in self.ipr.get_links()}
        found: list[Route] = []
        for r in self.ipr.route("dump", proto=proto):
            if r.get("proto") != proto or r.get("RTA_DST") is None:
                continue
            dst = ipaddress.ip_network(f"{r.get('RTA_DST')}/{r['dst_len']}")
            src = r.get("RTA_PREFSRC")
            found.append(
                Route(
                    dst=dst,
                    ifname=str(names.get(r.get("RTA_OIF"), "")),
                    src=ipaddress.ip_address(src) if src else None,
                    metric=int(r.get("RTA_PRIORITY") or 0),
                )
            )
        return found
