"""meshd's routes and rules through the real rtnetlink (pyroute2) in a scratch namespace:
the interface index a route remembers is looked up again once its interface was recreated,
a route whose interface is gone is gone with it, routes go into the table named and only
that one, and the rules that send the mesh prefixes to meshd's table are made once, adopted
without duplicates and removed, and the underlay the beacons read (interfaces, addresses,
default routes) is what ``ip`` shows."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

SCRIPT = textwrap.dedent(
    """
    import ipaddress, subprocess
    from meshd.adapters.net.netlink import Netlink, NetlinkError, Route

    def sh(cmd):
        subprocess.run(cmd, shell=True, check=True)

    def routes():
        return subprocess.run(["ip", "route", "show", "table", "1044", "proto", "44"],
                              capture_output=True, text=True, check=True).stdout.split()

    sh("ip link add v0 type veth peer name w0 && ip link set v0 up && ip link set w0 up")
    nl = Netlink()
    route = Route(ipaddress.ip_network("10.9.0.1/32"), "v0", None, 1024)
    nl.replace_route(route, 44, table=1044)
    first = nl.index("v0")
    sh("ip link del v0 && ip link add v0 type veth peer name w0 && ip link set v0 up")
    assert nl.index("v0") != first
    nl.replace_route(route, 44, table=1044)  # the remembered index is stale: looked up again
    assert "10.9.0.1" in routes() and "v0" in routes(), routes()
    main = subprocess.run(["ip", "route", "show", "proto", "44"], capture_output=True,
                          text=True, check=True).stdout
    assert main == "", main  # the table named, not the main one
    assert nl.routes(44, table=1044) == [route] and nl.routes(44, table=254) == []
    v6 = Route(ipaddress.ip_network("fd00::1/128"), "v0", None, 1024)
    nl.replace_route(v6, 44, table=1044)
    assert sorted(map(str, (r.dst for r in nl.routes(44, table=1044)))) == [
        "10.9.0.1/32", "fd00::1/128"]
    nl.delete_route(v6, 44, table=1044)
    nl.delete_route(route, 44, table=1044)
    assert routes() == []
    nl.replace_route(route, 44, table=1044)
    sh("ip link del v0")
    nl.delete_route(route, 44, table=1044)  # went with its interface: nothing to do, no error
    try:
        nl.replace_route(route, 44, table=1044)
    except NetlinkError as exc:
        assert "no interface v0" in str(exc), exc
    else:
        raise AssertionError("a route through a missing interface was accepted")
    print("ok")
    """
)


RULES = textwrap.dedent(
    """
    import ipaddress, subprocess
    from meshd.adapters.net.netlink import Netlink, Rule

    def sh(cmd):
        return subprocess.run(cmd, shell=True, check=True, capture_output=True,
                              text=True).stdout

    def lines(family, table):
        return [l for l in sh(f"ip {family} rule show").splitlines() if f"lookup {table}" in l]

    v4, v6 = ipaddress.ip_network("10.77.0.0/16"), ipaddress.ip_network("fd6d:6573:6864::/48")
    wanted = [Rule(v4, 1044, 1050), Rule(v6, 1044, 1050)]
    nl = Netlink()
    assert nl.ensure_rules(wanted) == (wanted, [])
    assert lines("-4", 1044) == ["1050:\tfrom all to 10.77.0.0/16 lookup 1044"], lines("-4", 1044)
    assert lines("-6", 1044) == ["1050:\tfrom all to fd6d:6573:6864::/48 lookup 1044"]
    assert nl.ensure_rules(wanted) == ([], [])  # idempotent
    assert nl.rules(1044) == wanted
    # What an older config or a careless hand may leave (an exact duplicate the kernel
    # refuses: EEXIST): another preference, a narrower rule at the same place ahead of
    # ours, another prefix.
    sh("ip rule del pref 1050 to 10.77.0.0/16 lookup 1044")
    sh("ip rule add pref 1050 to 10.77.0.0/16 iif lo lookup 1044")
    sh("ip rule add pref 1050 to 10.77.0.0/16 lookup 1044")
    sh("ip rule add pref 1060 to 10.77.0.0/16 lookup 1044")
    sh("ip -6 rule add pref 1050 to fd00::/8 lookup 1044")
    sh("ip rule add pref 1050 to 10.77.0.0/16 lookup 1045")  # not ours: another table
    assert len(lines("-4", 1044)) == 3 and len(lines("-6", 1044)) == 2
    added, removed = nl.ensure_rules(wanted)
    assert added == [] and len(removed) == 3, (added, removed)
    assert nl.rules(1044) == wanted
    assert lines("-4", 1044) == ["1050:\tfrom all to 10.77.0.0/16 lookup 1044"], lines("-4", 1044)
    assert len(lines("-4", 1045)) == 1
    # A table beyond 8 bits is named by FRA_TABLE.
    big = [Rule(v4, 100000, 1050)]
    assert nl.ensure_rules(big) == (big, []) and nl.rules(100000) == big
    assert nl.remove_rules(100000) == big and nl.rules(100000) == []
    assert nl.remove_rules(1044) == wanted
    assert lines("-4", 1044) == [] and lines("-6", 1044) == []
    assert nl.remove_rules(1044) == []  # nothing left: no error
    assert len(lines("-4", 1045)) == 1
    print("ok")
    """
)

INTERFACES = textwrap.dedent(
    """
    import json, subprocess
    from meshd.adapters.beacon_socket import candidate_interfaces
    from meshd.adapters.net.netlink import Netlink

    def sh(cmd):
        subprocess.run(cmd, shell=True, check=True)

    def ip(*args):
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    sh("ip link set lo up")
    sh("ip link add v0 type veth peer name w0 && ip link set v0 up && ip link set w0 up")
    sh("ip addr add 10.1.0.1/24 dev v0")  # no brd given: the subnet's is used
    sh("ip addr add 10.2.0.1/24 brd 10.2.0.127 dev w0")
    sh("ip link add v1 type veth peer name w1 && ip link set v1 up")  # no carrier
    sh("ip addr add 10.3.0.1/24 dev v1")
    sh("ip link add mwx type veth peer name mwy && ip link set mwx up && ip link set mwy up")
    sh("ip addr add 10.4.0.1/24 dev mwx")  # ours: never a segment
    sh("ip route add default via 10.2.0.2 dev w0")
    nl = Netlink()
    interfaces, defaults = nl.underlay()
    for exclude in ((), ("v0",)):
        mine = candidate_interfaces(interfaces, wireguard_prefix="mw", exclude=exclude)
        theirs = candidate_interfaces(ip("address", "show"), wireguard_prefix="mw",
                                      exclude=exclude)
        assert mine == theirs, (mine, theirs)
    assert [(u.ifname, u.broadcast) for u in mine] == [("w0", "10.2.0.127")], mine
    assert defaults == {r["dev"] for r in ip("route", "show", "default")} == {"w0"}
    print("ok")
    """
)


def _in_scratch_namespace(script: str) -> None:
    ns = "nl" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_routes_follow_a_recreated_interface() -> None:
    _in_scratch_namespace(SCRIPT)


def test_mesh_rules_are_made_once_adopted_and_removed() -> None:
    _in_scratch_namespace(RULES)


def test_the_underlay_read_by_netlink_is_what_ip_shows() -> None:
    _in_scratch_namespace(INTERFACES)
