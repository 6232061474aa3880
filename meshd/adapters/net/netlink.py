"""Netlink adapter (pyroute2): addresses, links, meshd's routes and its policy rules.

The only module that imports pyroute2's IPRoute. Routes meshd installs carry its own
rtnetlink protocol number so that they can be found again after a crash (adoption) and
removed on exit without touching anyone else's. They live in a routing table of meshd's
own, which rules send the mesh prefixes to (and nothing else): every route call names its
table, and a rule is meshd's when it looks up that table.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

IFA_F_NODAD = 0x02  # link addresses are unique by construction: skip duplicate detection
MAIN_TABLE = 254  # RT_TABLE_MAIN
FR_ACT_TO_TBL = 1  # a rule whose action is "lookup TABLE"
# What a rule that matches on its destination alone carries (FRA_SUPPRESS_PREFIXLEN unset
# is -1); any other attribute narrows it (a source, an interface, a mark, ...).
_PLAIN_RULE_ATTRS = {
    "FRA_TABLE",
    "FRA_PRIORITY",
    "FRA_DST",
    "FRA_PROTOCOL",
    "FRA_SUPPRESS_PREFIXLEN",
}
_UNSET_SUPPRESS = (None, -1, 0xFFFFFFFF)


# Interface flags by name, as ``ip`` prints them (linux/if.h).
_IFF = ((0x1, "UP"), (0x8, "LOOPBACK"), (0x2, "BROADCAST"), (0x10000, "LOWER_UP"))


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


@dataclass(frozen=True)
class Rule:
    """A policy rule: traffic to ``dst`` looks up routing ``table``; lower ``pref`` first."""

    dst: IPNetwork
    table: int
    pref: int


@dataclass(frozen=True)
class _FoundRule:
    rule: Rule
    plain: bool  # it matches on its destination only, as the rules meshd makes
    selectors: dict[str, Any]  # what names it to the kernel, to delete it


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

    def underlay(self) -> tuple[list[dict[str, Any]], set[str]]:
        """Every interface with its IPv4 addresses, as ``ip -j address show`` spells them
        (``ifname``, ``ifindex``, ``flags`` by name, ``addr_info`` with ``family``,
        ``local``, ``prefixlen`` and ``broadcast``: what the beacons' candidates read), and
        the interfaces that IPv4 default routes of the main table leave by. One dump each
        of links, addresses and routes."""
        links: dict[int, dict[str, Any]] = {}
        for link in self._call("list links", self.ipr.get_links):
            flags = int(link.get("flags", 0))
            links[int(link["index"])] = {
                "ifindex": int(link["index"]),
                "ifname": link.get_attr("IFLA_IFNAME"),
                "flags": [name for bit, name in _IFF if flags & bit],
                "addr_info": [],
            }
        for addr in self._call("list addresses", self.ipr.get_addr, family=socket.AF_INET):
            link = links.get(int(addr["index"]))
            if link is not None:
                info = {"family": "inet", "prefixlen": int(addr["prefixlen"])}
                info["local"] = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
                if (broadcast := addr.get_attr("IFA_BROADCAST")) is not None:
                    info["broadcast"] = broadcast
                link["addr_info"].append(info)
        routes = self._call(
            "list default routes", self.ipr.get_routes, family=socket.AF_INET, table=MAIN_TABLE
        )
        defaults = {
            links[oif]["ifname"]
            for r in routes
            if int(r["dst_len"]) == 0 and (oif := r.get_attr("RTA_OIF")) in links
        }
        return list(links.values()), defaults

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

    def replace_route(self, route: Route, proto: int, *, table: int) -> None:
        kwargs: dict[str, Any] = {
            "dst": f"{route.dst.network_address}/{route.dst.prefixlen}",
            "proto": proto,
            "priority": route.metric,
            "family": _family(route.dst),
            "table": table,
        }
        if route.src is not None:
            kwargs["prefsrc"] = str(route.src)
        what = f"route {route.dst} dev {route.ifname} table {table}"
        self._on_oif(
            route.ifname, lambda oif: self._call(what, self.ipr.route, "replace", oif=oif, **kwargs)
        )

    def delete_route(self, route: Route, proto: int, *, table: int) -> None:
        try:
            self._on_oif(
                route.ifname,
                lambda oif: self._call(
                    f"delete route {route.dst} table {table}",
                    self.ipr.route,
                    "del",
                    dst=f"{route.dst.network_address}/{route.dst.prefixlen}",
                    oif=oif,
                    proto=proto,
                    priority=route.metric,
                    family=_family(route.dst),
                    table=table,
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

    def routes(self, proto: int, *, table: int) -> list[Route]:
        """Every route (IPv4 and IPv6) of routing ``table`` carrying ``proto``. Their
        interfaces are named from the indexes our own routes went out by, else asked one
        by one: a dump of every link costs more than the routes (``meshd status``)."""
        names: dict[int | None, str] = {i: name for name, i in self._route_oifs.items()}
        found: list[Route] = []
        for r in self.ipr.route("dump", proto=proto, table=table):
            # The header holds 8 bits of the table (252 beyond 255): RTA_TABLE holds it all.
            if r.get("proto") != proto or (r.get("RTA_TABLE") or r.get("table")) != table:
                continue
            if r.get("RTA_DST") is None:
                continue
            dst = ipaddress.ip_network(f"{r.get('RTA_DST')}/{r['dst_len']}")
            src = r.get("RTA_PREFSRC")
            found.append(
                Route(
                    dst=dst,
                    ifname=self._name_of(r.get("RTA_OIF"), names),
                    src=ipaddress.ip_address(src) if src else None,
                    metric=int(r.get("RTA_PRIORITY") or 0),
                )
            )
        return found

    def _name_of(self, index: int | None, names: dict[int | None, str]) -> str:
        """The name of interface ``index`` ("" when it is gone), remembered in ``names``."""
        from pyroute2.netlink.exceptions import NetlinkError as PyrouteError

        if index not in names:
            try:
                links = self.ipr.get_links(index) if index else []
            except PyrouteError:
                links = []
            names[index] = str(links[0].get("IFLA_IFNAME") or "") if links else ""
        return names[index]

    # ---- policy rules ----------------------------------------------------------------

    def rules(self, table: int) -> list[Rule]:
        """Every rule (IPv4 and IPv6) that looks up ``table``, in the kernel's order."""
        return [found.rule for found in self._rules(table)]

    def ensure_rules(self, wanted: list[Rule]) -> tuple[list[Rule], list[Rule]]:
        """Make the rules that look up the tables of ``wanted`` exactly ``wanted``, once
        each: what is there already stays (a crashed meshd's rules are adopted, with no
        moment without them), what is missing is added, every other rule to those tables
        (a duplicate, another preference or prefix of an older config) is deleted.
        Returns (added, deleted)."""
        added: list[Rule] = []
        deleted: list[Rule] = []
        tables = sorted({r.table for r in wanted})
        # A delete names a rule by its selectors, and the kernel deletes the first rule
        # they match: one of ours may go with a broader stranger; the next pass mends it.
        for _ in range(3):
            kept: set[Rule] = set()
            extra: list[_FoundRule] = []
            for found in (found for table in tables for found in self._rules(table)):
                if found.plain and found.rule in wanted and found.rule not in kept:
                    kept.add(found.rule)
                else:
                    extra.append(found)
            missing = [rule for rule in dict.fromkeys(wanted) if rule not in kept]
            if not missing and not extra:
                break
            for rule in missing:  # first: traffic to the mesh always finds a rule
                self._add_rule(rule)
            for found in extra:
                self._delete_rule(found)
            added += missing
            deleted += [found.rule for found in extra]
        return added, deleted

    def remove_rules(self, table: int) -> list[Rule]:
        """Delete every rule that looks up ``table``; the rules deleted."""
        found = self._rules(table)
        for each in found:
            self._delete_rule(each)
        return [each.rule for each in found]

    def _rules(self, table: int) -> list[_FoundRule]:
        found: list[_FoundRule] = []
        for family in (2, 10):
            for r in self._call("list rules", self._dump_rules, family):
                # The header holds 8 bits of the table (252 beyond 255): FRA_TABLE holds it all.
                if (r.get("FRA_TABLE") or r.get("table")) != table:
                    continue
                found.append(_found_rule(r, family, table))
        return found

    def _dump_rules(self, family: int) -> list[Any]:
        return list(self.ipr.rule("dump", family=family))

    def _add_rule(self, rule: Rule) -> None:
        try:
            self._call(
                f"add rule to {rule.dst} lookup {rule.table}",
                self.ipr.rule,
                "add",
                family=_family(rule.dst),
                priority=rule.pref,
                dst=str(rule.dst.network_address),
                dst_len=rule.dst.prefixlen,
                table=rule.table,
            )
        except NetlinkError as exc:
            if exc.errno != errno.EEXIST:  # added meanwhile: what we wanted
                raise

    def _delete_rule(self, found: _FoundRule) -> None:
        try:
            self._call(
                f"delete rule to {found.rule.dst} lookup {found.rule.table}",
                self.ipr.rule,
                "del",
                **found.selectors,
            )
        except NetlinkError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH):  # gone already
                raise


def _found_rule(r: Any, family: int, table: int) -> _FoundRule:
    """A dumped rule: what meshd compares (a destination of 0 bits is everywhere) and the
    selectors that name it for a delete (the kernel deletes the first rule that matches
    every selector given, so a narrower one is named with what narrows it)."""
    any_address = "0.0.0.0" if family == 2 else "::"
    dst_len = int(r.get("dst_len") or 0)
    dst = ipaddress.ip_network(f"{r.get('FRA_DST') or any_address}/{dst_len}")
    pref = int(r.get("FRA_PRIORITY") or 0)
    names = {attr[0] for attr in r["attrs"]}
    plain = (
        names <= _PLAIN_RULE_ATTRS
        and r.get("FRA_SUPPRESS_PREFIXLEN") in _UNSET_SUPPRESS
        and r.get("action") == FR_ACT_TO_TBL
        and not r.get("flags")
        and not r.get("src_len")
        and not r.get("tos")
    )
    selectors: dict[str, Any] = {"family": family, "priority": pref, "table": table}
    if dst_len:
        selectors.update(dst=str(dst.network_address), dst_len=dst_len)
    if r.get("src_len"):
        selectors.update(src=r.get("FRA_SRC"), src_len=int(r["src_len"]))
    for attr, key in (
        ("FRA_IIFNAME", "iifname"),
        ("FRA_OIFNAME", "oifname"),
        ("FRA_FWMARK", "fwmark"),
    ):
        if r.get(attr) is not None:
            selectors[key] = r.get(attr)
    return _FoundRule(Rule(dst, table, pref), plain, selectors)
