"""The rendered nftables table (pure). tests/netns/test_firewall_nft.py has nft itself
accept these tables, and the netns exit tests show what they do to packets."""

from __future__ import annotations

import dataclasses
import ipaddress

from meshd.adapters.net.firewall import DNS_MARK, FLOW_MARK, FirewallSpec, render

MESH = ipaddress.IPv4Address("10.77.0.5")
PLAIN = FirewallSpec(
    MESH, tunnel_prefix="mwabcdef", mesh_prefix=ipaddress.IPv4Network("10.77.0.0/16")
)
GATEWAY = dataclasses.replace(PLAIN, uplink="upl", gateway_interface="mwabcdefxg")


def chain(text: str, name: str) -> list[str]:
    lines = text.split(f"\tchain {name} {{\n", 1)[1].split("\n\t}", 1)[0].splitlines()
    return [line.strip() for line in lines[1:]]  # without the hook line


def test_a_plain_node_clamps_mss_into_its_tunnels_and_nats_nothing_out() -> None:
    text = render(PLAIN)
    assert text.startswith("table inet meshd {}\ndelete table inet meshd\n")  # atomic replace
    assert 'oifname "mwabcdef*" tcp flags syn tcp option maxseg size set rt mtu' in text
    assert "masquerade" not in text and "dnat" not in text


def test_the_node_answers_the_mesh_only_on_open_ports_icmp_and_replies() -> None:
    spec = dataclasses.replace(PLAIN, open_udp=((6697, 6697), (6696, 6696)), open_tcp=((22, 22),))
    rules = chain(render(spec), "input")
    assert rules[1].startswith('iifname != "mwabcdef*" accept')  # the underlay and LAN
    assert rules[2] == "ct state { established, related } accept"
    assert "udp dport { 6696, 6697 } accept" in rules
    assert "tcp dport { 22 } accept" in rules
    assert any(r.startswith("icmp type { echo-request,") for r in rules)
    assert rules[-2].startswith("meta l4proto tcp reject with tcp reset")
    assert rules[-1] == "reject with icmpx admin-prohibited"  # everything else, refused
    assert "tcp dport" not in " ".join(chain(render(PLAIN), "input"))


def test_strangers_on_the_underlay_reach_no_mesh_address_here_and_nothing_through() -> None:
    spec = dataclasses.replace(
        GATEWAY, lan=("lan0", "lan1"), mesh_prefix6=ipaddress.IPv6Network("fd00::/48")
    )
    text = render(spec)
    stranger = 'iifname != "mwabcdef*" iifname != { "lo", "lan0", "lan1" }'
    assert chain(text, "input")[:2] == [
        f"{stranger} ip daddr 10.77.0.0/16 ct state != {{ established, related }} drop "
        'comment "the mesh\'s addresses: not from the underlay"',
        f"{stranger} ip6 daddr fd00::/48 ct state != {{ established, related }} drop",
    ]
    # Into the tunnels (the mesh, and the exit a household leaves by): only the tunnels
    # themselves, this node and its LAN send anything but replies, before any other rule.
    # The uplink is no exception: nothing from its side enters the mesh but replies.
    assert chain(text, "forward")[0] == (
        f'{stranger} oifname "mwabcdef*" ct state != {{ established, related }} drop '
        'comment "into the mesh only from this node and its household, but replies"'
    )
    assert not [r for r in chain(text, "forward") if r.startswith('iifname "upl"')]
    # Without a LAN, only the tunnels and the node itself.
    assert chain(render(PLAIN), "forward")[0].startswith(
        'iifname != "mwabcdef*" iifname != { "lo" } oifname "mwabcdef*" ct state != '
    )


def test_what_this_node_and_its_household_send_into_the_mesh_leaves_from_the_mesh_address() -> None:
    rules = [r for r in chain(render(PLAIN), "postrouting") if "ct mark" not in r]
    assert rules[0].startswith(
        'iifname != "mwabcdef*" oifname "mwabcdef*" ip saddr != 10.77.0.5 snat ip to 10.77.0.5'
    )


def test_our_flows_to_mesh_addresses_are_marked_at_their_first_packet() -> None:
    rules = chain(render(PLAIN), "postrouting")  # a NAT chain: first packets only
    assert rules[0].startswith(
        'iifname != "mwabcdef*" oifname "mwabcdef*" ip daddr 10.77.0.0/16 '
        f"ct mark set ct mark or {FLOW_MARK:#x}"
    )


def test_from_the_mesh_only_the_mesh_the_rest_gets_replies() -> None:
    """No DNAT is an exception: another's on the host (a container's published port)
    would open the LAN or the uplink to the mesh, and meshd's own is on the exit
    interface, whose users the gateway's rules pass before this one."""
    for spec in (PLAIN, dataclasses.replace(GATEWAY, resolver="198.51.100.1")):
        rules = chain(render(spec), "forward")
        assert rules[-1].startswith(
            'iifname "mwabcdef*" oifname != "mwabcdef*" ct state != { established, related } '
            'drop comment "from the mesh, only the mesh'
        )
        assert not [r for r in rules if "ct status" in r]


def test_a_gateway_nats_its_users_to_the_uplink_only_and_refuses_smtp() -> None:
    text = render(GATEWAY)
    forward = chain(text, "forward")
    assert 'iifname "mwabcdefxg" oifname != "upl" drop comment "uplink only"' in forward
    smtp = [i for i, r in enumerate(forward) if "tcp dport 25 reject with tcp reset" in r]
    accept = forward.index('iifname "mwabcdefxg" accept')
    assert smtp and smtp[0] < accept  # the policy comes before the users' accept
    assert 'iifname "mwabcdef*" oifname "upl" masquerade' in text
    assert "dport 25" not in render(dataclasses.replace(GATEWAY, block_smtp=False))


def test_exit_users_get_the_public_internet_only_but_their_dns_reaches_the_resolver() -> None:
    spec = dataclasses.replace(
        GATEWAY,
        resolver="192.168.1.1",
        uplink_subnets=(
            ipaddress.IPv4Network("192.168.1.0/24"),
            ipaddress.IPv4Network("198.51.100.0/24"),
            ipaddress.IPv6Network("2001:db8:1::/64"),
        ),
    )
    forward = chain(render(spec), "forward")
    xg = 'iifname "mwabcdefxg"'
    dns = forward.index(
        f"{xg} ip daddr 192.168.1.1 meta l4proto {{ tcp, udp }} th dport 53 "
        f"ct mark & {DNS_MARK:#x} != 0 accept "
        'comment "exit users\' DNS, to the resolver this gateway passed it to"'
    )
    (home,) = [i for i, r in enumerate(forward) if r.startswith(f"{xg} ip daddr {{")]
    v4 = forward[home]
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                "100.64.0.0/10", "224.0.0.0/4", "198.51.100.0/24"):  # fmt: skip
        assert f" {net}," in v4 or f" {net} }}" in v4, net
    assert "reject with icmpx admin-prohibited" in v4
    v6 = forward[home + 1]
    assert v6.startswith(
        f"{xg} ip6 daddr {{ ::1/128, fc00::/7, fe80::/10, ff00::/8, 2001:db8:1::/64"
    )
    # The resolver's exception first, then the refusal, then SMTP and the users' accept.
    smtp = next(i for i, r in enumerate(forward) if "tcp dport 25" in r)
    assert dns < home < smtp < forward.index(f"{xg} accept")
    # Without a resolver of its own (none configured nor found), no exception at all.
    assert not [r for r in chain(render(GATEWAY), "forward") if "th dport 53" in r]


def test_a_gateway_passes_on_only_its_exit_users_dns_marking_each_query() -> None:
    """Only on the exit interface, where only admitted users have a WireGuard peer: not
    from the mesh's links (a member that is no exit user, or a blocked one)."""
    assert "dnat" not in " ".join(chain(render(GATEWAY), "prerouting"))
    rules = chain(render(dataclasses.replace(GATEWAY, resolver="198.51.100.1")), "prerouting")
    assert rules == [
        'iifname "mwabcdefxg" ip daddr 10.77.0.5 meta l4proto { tcp, udp } th dport 53 '
        f"ct mark set ct mark or {DNS_MARK:#x} dnat ip to 198.51.100.1 "
        'comment "exit users\' DNS, inside their tunnel"'
    ]


def test_a_node_leaving_by_an_exit_asks_that_gateway_for_names() -> None:
    spec = dataclasses.replace(
        PLAIN, user_interface="mwabcdefxu", exit_dns="10.77.9.9", lan=("lan0", "wlan1")
    )
    text = render(spec)
    dns = (
        "ip daddr != { 127.0.0.0/8, 10.77.0.0/16 } meta l4proto { tcp, udp } th dport 53 "
        'dnat ip to 10.77.9.9 comment "DNS by our exit"'
    )
    assert chain(text, "output") == [dns]
    assert chain(text, "prerouting") == [f'iifname {{ "lan0", "wlan1" }} {dns}']
    assert chain(render(dataclasses.replace(spec, exit_dns="", user_interface="")), "output") == []


def test_the_metrics_port_answers_the_mesh_only_for_those_allowed() -> None:
    allow = (ipaddress.ip_address("10.77.0.9"), ipaddress.ip_address("fd00::9"))
    spec = dataclasses.replace(
        PLAIN, open_tcp=((9000, 9999),), metrics_port=9478, metrics_allow=allow
    )
    rules = chain(render(spec), "input")
    ours = [i for i, r in enumerate(rules) if r.startswith("tcp dport 9478")]
    assert [rules[i].split(" comment")[0] for i in ours] == [
        "tcp dport 9478 ip saddr { 10.77.0.9 } accept",
        "tcp dport 9478 ip6 saddr { fd00::9 } accept",
        "tcp dport 9478 reject with tcp reset",
    ]
    # before the operator's open ports, which would let the rest of the mesh in
    assert ours[-1] < rules.index("tcp dport { 9000-9999 } accept")
    nobody = chain(render(dataclasses.replace(spec, metrics_allow=())), "input")
    assert [r.split(" comment")[0] for r in nobody if "9478" in r] == [
        "tcp dport 9478 reject with tcp reset"
    ]


def test_roaming_devices_are_household_and_leave_the_uplink_masqueraded() -> None:
    spec = dataclasses.replace(
        GATEWAY,
        lan=("lan0",),
        device_interface="dv-abcdef",
        device_pool=ipaddress.IPv4Network("10.254.0.0/24"),
        user_interface="mwabcdefxu",
        exit_dns="10.77.9.9",
    )
    text = render(spec)
    stranger = 'iifname != "mwabcdef*" iifname != { "lo", "lan0", "dv-abcdef" }'
    assert chain(text, "forward")[0].startswith(f'{stranger} oifname "mwabcdef*"')
    assert chain(text, "prerouting")[-1].startswith('iifname { "lan0", "dv-abcdef" } ip daddr')
    masquerade = (
        'iifname "dv-abcdef" oifname "upl" ip saddr 10.254.0.0/24 masquerade '
        'comment "roaming devices, out of the uplink"'
    )
    assert masquerade in chain(text, "postrouting")
    # The mesh reaches them as it reaches the LAN: with replies only.
    assert (
        'iifname "mwabcdef*" oifname != "mwabcdef*" ct state != { established, related } drop'
        in text
    )
    # Without an uplink there is nothing to masquerade out of.
    assert "masquerade" not in render(dataclasses.replace(spec, uplink="", gateway_interface=""))
