"""What the config's values must be together (meshd.config runs it after reading the file):
each problem refused with the key and what was expected."""

from __future__ import annotations

import ipaddress

from meshd.adapters.identity import public_from_node_id
from meshd.config.settings import (
    EXIT_GATEWAY_RULE_PREF,
    EXIT_USER_RULE_PREF,
    RESERVED_TABLES,
    Config,
    ConfigError,
)
from meshd.core import devices
from meshd.core.control.community_map import LIFETIMES
from meshd.core.membership.canonical import check_text
from meshd.core.proto.map_record import (
    CONTACT_MAX_BYTES,
    MAX_LIFETIME_S,
    MIN_LIFETIME_S,
    NAME_MAX_BYTES,
    Location,
)
from meshd.core.proto.release import STAGES
from meshd.core.proto.session import PROTOCOLS


def check(cfg: Config) -> None:
    p = cfg.path
    if not cfg.node.name:
        raise ConfigError(p, "node.name", "missing; expected a non-empty name")
    if cfg.node.mesh_ipv4 is None:
        raise ConfigError(p, "node.mesh_ipv4", "missing; expected an IPv4 address")
    if cfg.node.mesh_ipv4 not in cfg.mesh.ipv4_prefix:
        raise ConfigError(p, "node.mesh_ipv4", f"expected an address in {cfg.mesh.ipv4_prefix}")
    if cfg.mesh.ipv6_prefix.prefixlen > 64:
        raise ConfigError(p, "mesh.ipv6_prefix", "expected a prefix of length 64 or shorter")
    wg = cfg.wireguard
    if not (1 <= len(wg.interface_prefix) <= 3 and wg.interface_prefix.isalnum()):
        raise ConfigError(p, "wireguard.interface_prefix", "expected 1 to 3 letters or digits")
    if not 1 <= wg.keepalive_s <= 65535:
        raise ConfigError(p, "wireguard.keepalive_s", "expected 1..65535 seconds")
    if not 1280 <= wg.mtu <= 9000:
        raise ConfigError(p, "wireguard.mtu", "expected 1280..9000")
    if cfg.liveness.poll_interval_s <= 0:
        raise ConfigError(p, "liveness.poll_interval_s", "expected a positive number")
    if not 0 < cfg.liveness.busy_poll_interval_s <= cfg.liveness.poll_interval_s:
        raise ConfigError(
            p,
            "liveness.busy_poll_interval_s",
            "expected a positive number, at most poll_interval_s",
        )
    if cfg.liveness.answer_within_s < 2 * cfg.liveness.busy_poll_interval_s:
        raise ConfigError(
            p,
            "liveness.answer_within_s",
            "expected at least two busy_poll_interval_s (a probe's)",
        )
    if not 0 < cfg.liveness.probe_after_s < cfg.liveness.dead_after_s:
        raise ConfigError(
            p, "liveness.probe_after_s", "expected a positive number below dead_after_s"
        )
    if cfg.liveness.dead_after_s <= wg.keepalive_s:
        raise ConfigError(
            p,
            "liveness.dead_after_s",
            f"expected more than wireguard.keepalive_s ({wg.keepalive_s})",
        )
    for i, key in enumerate(cfg.mesh.admin_keys):
        try:
            public_from_node_id(key)
        except ValueError as exc:
            raise ConfigError(p, f"mesh.admin_keys[{i}]", f"expected a node id: {exc}") from None
    if not 1 <= cfg.control.quic_port <= 65535:
        raise ConfigError(p, "control.quic_port", "expected 1..65535")
    protocols = cfg.control.protocols
    if not protocols or len(set(protocols)) != len(protocols) or set(protocols) - set(PROTOCOLS):
        raise ConfigError(
            p, "control.protocols", f"expected some of {', '.join(PROTOCOLS)}, each once"
        )
    if not 4 <= cfg.routing.update_interval_s <= 600:
        raise ConfigError(p, "routing.update_interval_s", "expected 4..600 seconds")
    if not 1 <= cfg.routing.route_protocol <= 254:
        raise ConfigError(p, "routing.route_protocol", "expected 1..254")
    if not 1 <= cfg.routing.max_routes_per_neighbour <= cfg.routing.max_routes:
        raise ConfigError(
            p, "routing.max_routes", "expected 1 <= max_routes_per_neighbour <= max_routes"
        )
    if cfg.routing.unsigned_routes not in ("refuse", "accept"):
        raise ConfigError(p, "routing.unsigned_routes", "expected 'refuse' or 'accept'")
    if not 0 <= cfg.routing.test_forge_seqnos <= 0x7FFF:
        raise ConfigError(p, "routing.test_forge_seqnos", "expected 0..32767")
    for prefix in cfg.routing.test_announce:
        try:
            ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise ConfigError(
                p, "routing.test_announce", f"expected prefixes, got {prefix!r}"
            ) from None
    if not 1 <= wg.listen_port_min <= wg.listen_port_max <= 65535:
        raise ConfigError(
            p, "wireguard.listen_port_max", "expected 1 <= listen_port_min <= listen_port_max"
        )
    if not 0 < wg.issuer_link_share <= 1:
        raise ConfigError(p, "wireguard.issuer_link_share", "expected a share above 0, at most 1")
    if not cfg.mesh.admin_keys:
        raise ConfigError(p, "mesh.admin_keys", "missing; expected the mesh's admin node ids")
    ms = cfg.membership
    for key in ("renew_margin_s", "renew_grace_s", "clock_tolerance_s"):
        if getattr(ms, key) < 0:
            raise ConfigError(p, f"membership.{key}", "expected 0 or more seconds")
    if ms.renew_retry_s < 1:
        raise ConfigError(p, "membership.renew_retry_s", "expected at least 1 second")
    d = cfg.discovery
    if not 1 <= d.beacon_port <= 65535 or d.beacon_port == cfg.control.quic_port:
        raise ConfigError(p, "discovery.beacon_port", "expected 1..65535, not the QUIC port")
    if d.beacon_interval_s < 1:
        raise ConfigError(p, "discovery.beacon_interval_s", "expected at least 1 second")
    if d.forget_after_s < 60:
        raise ConfigError(p, "discovery.forget_after_s", "expected at least 60 seconds")
    _check_uplink(cfg)
    _check_devices(cfg)
    _check_routing_table(cfg)
    _check_receipts(cfg)
    _check_metrics(cfg)
    _check_map(cfg)
    if cfg.update.stage not in STAGES:
        raise ConfigError(cfg.path, "update.stage", f"expected one of {', '.join(STAGES)}")
    seen_ids: set[str] = set()
    for i, b in enumerate(cfg.bootstrap):
        where = f"bootstrap[{i}]"
        try:
            public_from_node_id(b.node_id)
        except ValueError as exc:
            raise ConfigError(p, f"{where}.node_id", f"expected a node id: {exc}") from None
        if b.node_id in seen_ids:
            raise ConfigError(p, f"{where}.node_id", "expected each peer once")
        seen_ids.add(b.node_id)


def _check_uplink(cfg: Config) -> None:
    p, up, ex = cfg.path, cfg.uplink, cfg.exit
    if up.interface:
        if up.health_target is None:
            raise ConfigError(p, "uplink.health_target", "missing; expected HOST:PORT")
    elif up.share:
        raise ConfigError(p, "uplink.share", "expected uplink.interface too (what to share)")
    if not 0 < up.health_interval_s < up.health_dead_after_s:
        raise ConfigError(
            p, "uplink.health_interval_s", "expected a positive number below health_dead_after_s"
        )
    if up.rate and up.rate_cap and up.rate_cap.kbit >= up.rate.kbit:
        raise ConfigError(p, "uplink.rate_cap", "expected less than uplink.rate")
    if not 1 <= up.exit_port <= 65535:
        raise ConfigError(p, "uplink.exit_port", "expected 1..65535")
    w = cfg.wireguard
    if w.listen_port_min <= up.exit_port <= w.listen_port_max:
        raise ConfigError(p, "uplink.exit_port", "expected a port outside the link port range")
    for i, key in enumerate(up.blocked):
        try:
            public_from_node_id(key)
        except ValueError as exc:
            raise ConfigError(p, f"uplink.blocked[{i}]", f"expected a node id: {exc}") from None
    if up.monthly_quota_mb < 0:
        raise ConfigError(p, "uplink.monthly_quota_mb", "expected 0 (no quota) or more")
    if up.resolver:
        try:
            ipaddress.IPv4Address(up.resolver)
        except ValueError:
            raise ConfigError(p, "uplink.resolver", "expected an IPv4 address") from None
    if not 1 <= ex.quic_port <= 65535 or ex.quic_port == cfg.control.quic_port:
        raise ConfigError(p, "exit.quic_port", "expected 1..65535, not the control port")
    if not 1 <= ex.table <= 250:
        raise ConfigError(p, "exit.table", "expected 1..250 (two tables: this and the next)")
    if not 1 <= ex.fwmark <= 0xFFFFFFFF:
        raise ConfigError(p, "exit.fwmark", "expected a non-zero 32-bit mark")
    if not 1280 <= ex.mtu <= w.mtu - 80:
        raise ConfigError(p, "exit.mtu", f"expected 1280..{w.mtu - 80} (inside a mesh link)")


def _check_devices(cfg: Config) -> None:
    p, dv, w = cfg.path, cfg.devices, cfg.wireguard
    try:
        devices.check_pool(dv.pool)
    except devices.DeviceError as exc:
        raise ConfigError(p, "devices.pool", str(exc)) from None
    if dv.pool.overlaps(cfg.mesh.ipv4_prefix):
        raise ConfigError(
            p, "devices.pool", f"expected a pool outside the mesh's {cfg.mesh.ipv4_prefix}"
        )
    taken = {cfg.uplink.exit_port: "uplink.exit_port", cfg.control.quic_port: "control.quic_port"}
    if not 1 <= dv.listen_port <= 65535:
        raise ConfigError(p, "devices.listen_port", "expected 1..65535")
    if dv.listen_port in taken:
        raise ConfigError(
            p, "devices.listen_port", f"expected a port of its own, not {taken[dv.listen_port]}'s"
        )
    if w.listen_port_min <= dv.listen_port <= w.listen_port_max:
        raise ConfigError(p, "devices.listen_port", "expected a port outside the link port range")
    if dv.endpoint:
        try:
            devices.check_endpoint(dv.endpoint)
        except devices.DeviceError as exc:
            raise ConfigError(p, "devices.endpoint", str(exc)) from None
    for i, server in enumerate(dv.dns):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ConfigError(p, f"devices.dns[{i}]", "expected an IP address") from None


def _check_routing_table(cfg: Config) -> None:
    p, rt, ex = cfg.path, cfg.routing, cfg.exit
    if not 1 <= rt.table <= 0xFFFFFFFF or rt.table in RESERVED_TABLES:
        raise ConfigError(
            p, "routing.table", "expected 1..4294967295 but not 253..255 (the kernel's tables)"
        )
    if rt.table in (ex.table, ex.table + 1):
        raise ConfigError(
            p,
            "routing.table",
            f"expected a table other than the exits' (exit.table: {ex.table} and {ex.table + 1})",
        )
    if not EXIT_GATEWAY_RULE_PREF < rt.rule_preference < EXIT_USER_RULE_PREF:
        raise ConfigError(
            p,
            "routing.rule_preference",
            f"expected {EXIT_GATEWAY_RULE_PREF + 1}..{EXIT_USER_RULE_PREF - 1}: after the exit "
            f"gateway's rule ({EXIT_GATEWAY_RULE_PREF}), before the exit user's "
            f"({EXIT_USER_RULE_PREF})",
        )


def _check_receipts(cfg: Config) -> None:
    p, r = cfg.path, cfg.receipts
    if not 0 <= r.tolerance_percent <= 100:
        raise ConfigError(p, "receipts.tolerance_percent", "expected 0..100")
    for key in ("tolerance_kb", "claim_mb", "credit_mb"):
        if getattr(r, key) < 0:
            raise ConfigError(p, f"receipts.{key}", "expected 0 or more")
    if r.claim_interval_s <= 0:
        raise ConfigError(p, "receipts.claim_interval_s", "expected a positive number")
    if r.epoch_interval_s < 0:
        raise ConfigError(p, "receipts.epoch_interval_s", "expected 0 or more")


def _check_map(cfg: Config) -> None:
    p, m = cfg.path, cfg.map
    for key, most in (("name", NAME_MAX_BYTES), ("contact", CONTACT_MAX_BYTES)):
        try:
            check_text(getattr(m, key), 0, most)
        except ValueError as exc:
            raise ConfigError(p, f"map.{key}", str(exc)) from None
    if m.location:
        try:
            Location.parse(m.location)
        except ValueError as exc:
            raise ConfigError(p, "map.location", str(exc)) from None
    if not MIN_LIFETIME_S / LIFETIMES <= m.refresh_s <= MAX_LIFETIME_S / LIFETIMES:
        raise ConfigError(
            p,
            "map.refresh_s",
            f"expected {MIN_LIFETIME_S / LIFETIMES:.0f}..{MAX_LIFETIME_S / LIFETIMES:.0f} seconds",
        )
    if m.export_interval_s < 1:
        raise ConfigError(p, "map.export_interval_s", "expected at least 1 second")


def _check_metrics(cfg: Config) -> None:
    p, m = cfg.path, cfg.metrics
    for i, entry in enumerate(m.allow):
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            try:
                public_from_node_id(entry)
            except ValueError:
                raise ConfigError(
                    p, f"metrics.allow[{i}]", f"expected a node id or an address, got {entry!r}"
                ) from None
    everywhere = m.listen is not None and ipaddress.ip_address(m.listen[0]).is_unspecified
    if everywhere and not m.on_uplink:
        raise ConfigError(
            p,
            "metrics.listen",
            "every address includes the uplink's: name one (127.0.0.1, the mesh address) "
            "or set metrics.on_uplink = true",
        )
