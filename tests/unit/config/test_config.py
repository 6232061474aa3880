from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from meshd import config
from meshd.adapters import identity

NODE_B = identity.node_id_from_public(bytes(range(32)))
ADMIN = identity.node_id_from_public(bytes(range(2, 34)))

GOOD = f"""
[node]
name = "a"
state_dir = "/tmp/a"
mesh_ipv4 = "10.77.0.1"

[mesh]
admin_keys = ["{ADMIN}"]

[wireguard]
backend = "userspace"

[discovery]
beacons = true

[[bootstrap]]
name = "b"
node_id = "{NODE_B}"
address = "100.64.0.2:6697"
"""


def test_good_config_parses_with_defaults() -> None:
    cfg = config.parse(GOOD, "a.toml")
    assert cfg.node.name == "a"
    assert cfg.node.mesh_ipv4 == ipaddress.IPv4Address("10.77.0.1")
    assert cfg.wireguard.backend == "userspace"
    assert cfg.wireguard.keepalive_s == 25
    assert (cfg.wireguard.listen_port_min, cfg.wireguard.listen_port_max) == (51820, 52819)
    assert cfg.wireguard.issuer_link_limit == 250  # a quarter of the range, for one delegate
    live = cfg.liveness
    assert (live.answer_within_s, live.probe_after_s, live.dead_after_s) == (0.2, 26.0, 27.0)
    assert (live.poll_interval_s, live.busy_poll_interval_s) == (0.25, 0.1)
    assert cfg.discovery.beacons and cfg.discovery.beacon_port == 6698
    assert cfg.bootstrap[0].node_id == NODE_B
    assert cfg.bootstrap[0].address == ("100.64.0.2", 6697)  # parsed once, at load


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ('backend = "userspace"', 'backend = "magic"', "wireguard.backend", "one of"),
        ('backend = "userspace"', "backend = 3", "wireguard.backend", "a string"),
        ('mesh_ipv4 = "10.77.0.1"', 'mesh_ipv4 = "10.78.0.1"', "node.mesh_ipv4", "10.77.0.0/16"),
        ('mesh_ipv4 = "10.77.0.1"', 'mesh_ipv4 = "banana"', "node.mesh_ipv4", "IPv4 address"),
        ('name = "a"', 'nmae = "a"', "node.nmae", "unknown key"),
        ("beacons = true", 'beacons = "yes"', "discovery.beacons", "true or false"),
        ("beacons = true", "beacon_port = 6697", "discovery.beacon_port", "not the QUIC port"),
        (f'node_id = "{NODE_B}"', 'node_id = "short"', "bootstrap[0].node_id", "node id"),
        (f'node_id = "{NODE_B}"\n', "", "bootstrap[0].node_id", "missing"),
        (
            'address = "100.64.0.2:6697"',
            'address = "100.64.0.2"',
            "bootstrap[0].address",
            "HOST:PORT",
        ),
        (f'admin_keys = ["{ADMIN}"]', "admin_keys = []", "mesh.admin_keys", "missing"),
        (
            'backend = "userspace"',
            "listen_port_min = 60000\nlisten_port_max = 50000",
            "wireguard.listen_port_max",
            "listen_port_min <= listen_port_max",
        ),
        (
            'backend = "userspace"',
            "issuer_link_share = 1.5",
            "wireguard.issuer_link_share",
            "at most 1",
        ),
        ("[wireguard]", "[wirguard]", "wirguard", "unknown section"),
    ],
)
def test_errors_name_the_key_and_the_expectation(
    old: str, new: str, key: str, expected: str
) -> None:
    assert old in GOOD
    with pytest.raises(config.ConfigError) as info:
        config.parse(GOOD.replace(old, new, 1), "a.toml")
    assert info.value.key == key
    assert expected in info.value.problem
    assert str(info.value).startswith(f"a.toml: {key}: ")


def test_answer_within_needs_two_polls_for_its_probe() -> None:
    with pytest.raises(config.ConfigError) as info:
        config.parse(GOOD + "\n[liveness]\nanswer_within_s = 0.15\n", "a.toml")
    assert info.value.key == "liveness.answer_within_s"
    assert "two busy_poll_interval_s" in info.value.problem


def test_protocols_default_to_every_version_newest_first() -> None:
    assert config.parse(GOOD, "a.toml").control.protocols == ("meshd/2", "meshd/1")


@pytest.mark.parametrize("given", ['["meshd/1"]', '["meshd/2"]', '["meshd/1", "meshd/2"]'])
def test_fewer_protocols_play_an_older_node(given: str) -> None:
    cfg = config.parse(GOOD + f"\n[control]\nprotocols = {given}\n", "a.toml")
    assert list(cfg.control.protocols) == [v.strip(' "') for v in given[1:-1].split(",")]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("[]", "some of meshd/2, meshd/1"),
        ('["meshd/3"]', "some of meshd/2, meshd/1"),
        ('["meshd/1", "meshd/1"]', "each once"),
        ('"meshd/1"', "a list of strings"),
    ],
)
def test_unknown_protocols_are_refused_at_load(given: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.parse(GOOD + f"\n[control]\nprotocols = {given}\n", "a.toml")
    assert info.value.key == "control.protocols"
    assert expected in info.value.problem


def test_duplicate_bootstrap_peer_is_refused() -> None:
    second = GOOD[GOOD.index("[[bootstrap]]") :]
    with pytest.raises(config.ConfigError, match=r"bootstrap\[1\].node_id"):
        config.parse(GOOD + second)


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(config.ConfigError, match="^x.toml: not valid TOML"):
        config.parse("[node\n", "x.toml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_socket_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config.parse(GOOD)
    monkeypatch.delenv("MESHD_SOCKET", raising=False)
    assert config.socket_path(cfg) == Path(config.DEFAULT_SOCKET)
    monkeypatch.setenv("MESHD_SOCKET", "/tmp/x.sock")
    assert config.socket_path(cfg) == Path("/tmp/x.sock")


def test_explain_lists_every_option() -> None:
    text = config.explain()
    for name in (
        "mesh_ipv4",
        "interface_prefix",
        "dead_after_s",
        "route_protocol",
        "table",
        "rule_preference",
        "address",
    ):
        assert f"# {name} = " in text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshd", *args], capture_output=True, text=True)


def test_check_config_cli_gives_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD.replace("/tmp/a", str(tmp_path / "state")))
    ok = _cli("check-config", str(good))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('node_id = "', 'node_id = "!!'))
    res = _cli("check-config", str(bad))
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "bootstrap[0].node_id" in res.stderr


def test_check_config_reports_open_key_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    identity.generate(state)
    (state / identity.IDENTITY_KEY).chmod(0o644)
    cfg = tmp_path / "a.toml"
    cfg.write_text(GOOD.replace("/tmp/a", str(state)))
    res = _cli("check-config", str(cfg))
    assert res.returncode == 1
    assert "identity.key" in res.stderr and "0600" in res.stderr


@pytest.mark.parametrize("broken", ["config", "key", "bootstrap_address"])
def test_run_refuses_bad_input_in_one_line(tmp_path: Path, broken: str) -> None:
    state = tmp_path / "state"
    identity.generate(state)
    text = GOOD.replace("/tmp/a", str(state))
    if broken == "config":
        text = text.replace("[node]", "[node\n")
    elif broken == "key":
        (state / identity.WIREGUARD_KEY).unlink()
    else:
        text = text.replace("100.64.0.2:6697", "100.64.0.2:0")
    cfg = tmp_path / "a.toml"
    cfg.write_text(text)
    res = _cli("run", "--config", str(cfg))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("meshd: ") and res.stderr.count("\n") == 1, res.stderr
    expected = {
        "config": "not valid TOML",
        "key": "wireguard.key: key file is missing",
        "bootstrap_address": "bootstrap[0].address",
    }[broken]
    assert expected in res.stderr


def test_run_refuses_a_missing_membership_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    identity.generate(state)
    cfg = tmp_path / "a.toml"
    cfg.write_text(GOOD.replace("/tmp/a", str(state)))
    res = _cli("run", "--config", str(cfg))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert "mesh.cert: missing" in res.stderr


UPLINK = """
[uplink]
interface = "eth0"
health_target = "203.0.113.1:80"
rate = "50mbit"
share = true
rate_cap = "20mbit"
"""


def test_an_uplink_shared_with_a_cap_parses() -> None:
    cfg = config.parse(GOOD + UPLINK, "a.toml")
    assert cfg.uplink.interface == "eth0" and cfg.uplink.share
    assert cfg.uplink.rate_cap is not None and cfg.uplink.rate_cap.kbit == 20000
    assert str(cfg.uplink.rate_cap) == "20mbit"  # as written
    assert cfg.exit.quic_port == 6699 and cfg.lan.interfaces == ()


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ('health_target = "203.0.113.1:80"\n', "", "uplink.health_target", "missing"),
        ('interface = "eth0"\n', "", "uplink.share", "uplink.interface"),
        ('rate_cap = "20mbit"', 'rate_cap = "fast"', "uplink.rate_cap", "such as 20mbit"),
        ('rate_cap = "20mbit"', 'rate_cap = "60mbit"', "uplink.rate_cap", "less than"),
        ("share = true", "exit_port = 51900", "uplink.exit_port", "link port range"),
        ("share = true", 'blocked = ["x"]', "uplink.blocked[0]", "node id"),
        ("share = true", 'resolver = "dns.example"', "uplink.resolver", "IPv4 address"),
        ("share = true", "monthly_quota_mb = -1", "uplink.monthly_quota_mb", "0 (no quota)"),
    ],
)
def test_uplink_errors_name_the_key(old: str, new: str, key: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.parse(GOOD + UPLINK.replace(old, new, 1), "a.toml")
    assert info.value.key == key and expected in info.value.problem


def test_ports_opened_to_the_mesh_are_ports_or_ranges() -> None:
    cfg = config.parse(GOOD + '[isolation]\nopen_tcp_ports = ["22", "5201-5210"]\n', "a.toml")
    assert cfg.isolation.open_tcp_ports == ((22, 22), (5201, 5210))
    for bad in ('"ssh"', '"10-5"', '"0"', '"70000"'):
        with pytest.raises(config.ConfigError) as info:
            config.parse(GOOD + f"[isolation]\nopen_udp_ports = [{bad}]\n", "a.toml")
        assert info.value.key == "isolation.open_udp_ports[0]"


def test_the_mesh_table_and_its_rules_have_defaults() -> None:
    cfg = config.parse(GOOD, "a.toml")
    assert (cfg.routing.table, cfg.routing.rule_preference) == (176, 1050)
    assert cfg.routing.table not in (cfg.exit.table, cfg.exit.table + 1)
    custom = config.parse(GOOD + "[routing]\ntable = 1000\nrule_preference = 1001\n", "a.toml")
    assert (custom.routing.table, custom.routing.rule_preference) == (1000, 1001)


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("[routing]\ntable = 177\n", "routing.table", "exit.table: 177 and 178"),
        ("[routing]\ntable = 178\n", "routing.table", "exit.table: 177 and 178"),
        ("[exit]\ntable = 175\n", "routing.table", "exit.table: 175 and 176"),
        ("[routing]\ntable = 254\n", "routing.table", "not 253..255"),
        ("[routing]\ntable = 0\n", "routing.table", "1..4294967295"),
        ("[routing]\ntable = 4294967296\n", "routing.table", "1..4294967295"),
        ('[routing]\ntable = "mesh"\n', "routing.table", "an integer"),
        ("[routing]\nrule_preference = 1000\n", "routing.rule_preference", "1001..1099"),
        ("[routing]\nrule_preference = 1100\n", "routing.rule_preference", "exit user's"),
        ("[routing]\nrule_preference = 32000\n", "routing.rule_preference", "1001..1099"),
    ],
)
def test_the_mesh_table_is_checked_at_load(section: str, key: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.parse(GOOD + section, "a.toml")
    assert info.value.key == key and expected in info.value.problem
    assert str(info.value).startswith(f"a.toml: {key}: ")


def test_the_rule_preferences_checked_are_the_exit_tunnels() -> None:
    from meshd.adapters.net import exit_tunnel

    assert config.EXIT_GATEWAY_RULE_PREF == exit_tunnel.GATEWAY_RULE_PREF
    assert config.EXIT_USER_RULE_PREF == exit_tunnel.USER_RULE_PREF


def test_metrics_are_off_by_default_and_listen_where_named() -> None:
    assert config.parse(GOOD, "a.toml").metrics.listen is None
    text = GOOD + f'\n[metrics]\nlisten = "10.77.0.1:9478"\nallow = ["{NODE_B}", "fd00::9"]\n'
    metrics = config.parse(text, "a.toml").metrics
    assert metrics.listen == ("10.77.0.1", 9478)
    assert metrics.allow == (NODE_B, "fd00::9")


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ('listen = "0.0.0.0:9478"', "metrics.listen", "on_uplink = true"),
        ('listen = "[::]:9478"', "metrics.listen", "on_uplink = true"),
        ('allow = ["prometheus"]', "metrics.allow[0]", "expected a node id or an address"),
        ('listen = "localhost:9478"', "metrics.listen", "HOST:PORT"),
    ],
)
def test_metrics_refuse_every_address_and_what_is_no_node(
    section: str, key: str, expected: str
) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.parse(GOOD + f"\n[metrics]\n{section}\n", "a.toml")
    assert info.value.key == key
    assert expected in info.value.problem


def test_metrics_on_every_address_when_the_operator_says_so() -> None:
    text = GOOD + '\n[metrics]\nlisten = "0.0.0.0:9478"\non_uplink = true\n'
    assert config.parse(text, "a.toml").metrics.listen == ("0.0.0.0", 9478)


def test_the_map_shows_the_id_and_links_unless_the_operator_sets_more() -> None:
    default = config.parse(GOOD, "a.toml").map
    assert default.publish and (default.name, default.contact, default.location) == ("", "", "")
    text = GOOD + '\n[map]\nname = "Bäckerei"\nlocation = "53.0793,8.8017"\nexport_dir = "/srv"\n'
    shown = config.parse(text, "a.toml").map
    assert (shown.name, shown.location, shown.export_dir) == ("Bäckerei", "53.0793,8.8017", "/srv")


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ('name = "' + "x" * 65 + '"', "map.name", "0 to 64 UTF-8 bytes"),
        ('contact = "a\\u0007b"', "map.contact", "control"),
        ('location = "north"', "map.location", "LATITUDE,LONGITUDE"),
        ('location = "95,8"', "map.location", "-90..90"),
        ("refresh_s = 5", "map.refresh_s", "seconds"),
        ("export_interval_s = 0", "map.export_interval_s", "at least 1 second"),
    ],
)
def test_the_map_refuses_what_no_record_could_hold(section: str, key: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.parse(GOOD + f"\n[map]\n{section}\n", "a.toml")
    assert info.value.key == key
    assert expected in info.value.problem


@pytest.mark.parametrize(
    ("devices", "key", "expected"),
    [
        ('pool = "10.77.200.0/24"', "devices.pool", "outside the mesh's 10.77.0.0/16"),
        ('pool = "10.254.0.0/31"', "devices.pool", "/16 to /30"),
        ("listen_port = 51900", "devices.listen_port", "outside the link port range"),
        ("listen_port = 52820", "devices.listen_port", "not uplink.exit_port's"),
        ("listen_port = 70000", "devices.listen_port", "1..65535"),
        ('endpoint = "home.example.org"', "devices.endpoint", "HOST:PORT"),
        ('dns = ["resolver"]', "devices.dns[0]", "an IP address"),
    ],
)
def test_device_settings_are_checked(devices: str, key: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.parse(f"{GOOD}\n[devices]\n{devices}\n", "a.toml")
    assert info.value.key == key
    assert expected in info.value.problem


def test_device_settings_have_defaults_and_take_a_name_as_endpoint() -> None:
    cfg = config.parse(f'{GOOD}\n[devices]\nendpoint = "home.example.org:52821"\n', "a.toml")
    assert str(cfg.devices.pool) == "10.254.0.0/24" and cfg.devices.listen_port == 52821
    assert cfg.devices.endpoint == "home.example.org:52821"
