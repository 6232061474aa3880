from __future__ import annotations

import ipaddress

from meshd.net.firewall import FirewallSpec, render

MESH = ipaddress.IPv4Address("10.77.0.5")


def test_a_plain_node_only_clamps_mss_into_its_tunnels() -> None:
    text = render(FirewallSpec(MESH, tunnel_prefix="mwabcdef"))
    assert text.startswith("table inet meshd {}\ndelete table inet meshd\n")  # atomic replace
    assert 'oifname "mwabcdef*" tcp flags syn tcp option maxseg size set rt mtu' in text
    assert "snat" not in text and "masquerade" not in text


def test_a_user_of_an_exit_leaves_from_its_mesh_address() -> None:
    text = render(FirewallSpec(MESH, tunnel_prefix="mwabcdef", user_interface="mwabcdefxu"))
    assert 'oifname "mwabcdefxu" ip saddr != 10.77.0.5 snat ip to 10.77.0.5' in text


def test_a_gateway_nats_its_users_to_the_uplink_only_and_refuses_smtp() -> None:
    spec = FirewallSpec(
        MESH, tunnel_prefix="mwabcdef", uplink="upl", gateway_interface="mwabcdefxg"
    )
    text = render(spec)
    assert 'iifname "mwabcdefxg" oifname "upl" masquerade' in text
    assert 'iifname "mwabcdefxg" oifname != "upl" drop' in text
    assert 'iifname "mwabcdefxg" tcp dport 25 reject with tcp reset' in text
    no_policy = render(
        FirewallSpec(
            MESH,
            tunnel_prefix="mwabcdef",
            uplink="upl",
            gateway_interface="mwabcdefxg",
            block_smtp=False,
        )
    )
    assert "dport 25" not in no_policy


def test_nothing_from_the_mesh_reaches_the_household_lan_but_replies() -> None:
    text = render(FirewallSpec(MESH, tunnel_prefix="mwabcdef", lan=("lan0", "wlan1")))
    assert (
        'iifname "mwabcdef*" oifname { "lan0", "wlan1" } ct state != { established, related } '
        "drop" in text
    )
