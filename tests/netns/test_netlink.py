"""meshd's routes through the real rtnetlink (pyroute2) in a scratch namespace: the interface
index a route remembers is looked up again once its interface was recreated, and a route
whose interface is gone is gone with it."""

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
    from meshd.net.netlink import Netlink, NetlinkError, Route

    def sh(cmd):
        subprocess.run(cmd, shell=True, check=True)

    def routes():
        return subprocess.run(["ip", "route", "show", "proto", "44"], capture_output=True,
                              text=True, check=True).stdout.split()

    sh("ip link add v0 type veth peer name w0 && ip link set v0 up && ip link set w0 up")
    nl = Netlink()
    route = Route(ipaddress.ip_network("10.9.0.1/32"), "v0", None, 1024)
    nl.replace_route(route, 44)
    first = nl.index("v0")
    sh("ip link del v0 && ip link add v0 type veth peer name w0 && ip link set v0 up")
    assert nl.index("v0") != first
    nl.replace_route(route, 44)  # the remembered index is stale: looked up again
    assert "10.9.0.1" in routes() and "v0" in routes(), routes()
    nl.delete_route(route, 44)
    assert routes() == []
    nl.replace_route(route, 44)
    sh("ip link del v0")
    nl.delete_route(route, 44)  # went with its interface: nothing to do, no error
    try:
        nl.replace_route(route, 44)
    except NetlinkError as exc:
        assert "no interface v0" in str(exc), exc
    else:
        raise AssertionError("a route through a missing interface was accepted")
    print("ok")
    """
)


def test_routes_follow_a_recreated_interface() -> None:
    ns = "nl" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
