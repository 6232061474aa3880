"""nft itself accepts every shape of meshd's table (applied for real in a scratch
namespace), and applying it again replaces it instead of failing or duplicating rules."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import shutil
import subprocess

import pytest

from meshd.adapters.net.firewall import FirewallSpec, render

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) not installed"),
]

PLAIN = FirewallSpec(
    ipaddress.IPv4Address("10.77.1.1"),
    tunnel_prefix="mwab12",
    mesh_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
    open_udp=((6697, 6697), (6696, 6696), (6699, 6699), (52820, 52820)),
)
SHAPES = {
    "plain": PLAIN,
    "open ports": dataclasses.replace(PLAIN, open_tcp=((22, 22), (5201, 5210))),
    "metrics": dataclasses.replace(
        PLAIN,
        metrics_port=9478,
        metrics_allow=(ipaddress.ip_address("10.77.0.9"), ipaddress.ip_address("fd6d::9")),
    ),
    "metrics for nobody": dataclasses.replace(PLAIN, metrics_port=9478),
    "gateway": dataclasses.replace(
        PLAIN,
        uplink="upl",
        gateway_interface="mwab12xg",
        resolver="198.51.100.1",
        mesh_class=True,
    ),
    "exit user with a LAN": dataclasses.replace(
        PLAIN, user_interface="mwab12xu", exit_dns="10.77.2.1", lan=("lan0",)
    ),
    "roaming devices": dataclasses.replace(
        PLAIN,
        uplink="upl",
        user_interface="mwab12xu",
        exit_dns="10.77.2.1",
        device_interface="dv-ab12",
        device_pool=ipaddress.IPv4Network("10.254.0.0/24"),
    ),
}


def nft(ns: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], input=stdin, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_nft_applies_the_table_and_replaces_it_whole(shape: str) -> None:
    ns = "fw" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        text = render(SHAPES[shape])
        nft(ns, "-f", "-", stdin=text)
        first = nft(ns, "list", "table", "inet", "meshd")
        nft(ns, "-f", "-", stdin=text)  # as a restarted meshd does
        assert nft(ns, "list", "table", "inet", "meshd") == first
        for chain in ("input", "forward", "prerouting", "output", "postrouting"):
            assert f"chain {chain} {{" in first
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
