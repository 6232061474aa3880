"""Typed TOML configuration: reading it (this module), its settings (``settings``) and the
checks of their values together (``checks``).

Every option has a type, a default and a one-line help (``meshd check-config --explain``
prints them). An invalid file is refused with the file, the key and what was expected.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from meshd import __version__
from meshd.config.checks import check
from meshd.config.settings import (
    CONFIG_VERSION,
    DEFAULT_CONFIG,
    DEFAULT_SOCKET,
    EXIT_GATEWAY_RULE_PREF,
    EXIT_USER_RULE_PREF,
    RESERVED_TABLES,
    SECTIONS,
    Bootstrap,
    Config,
    ConfigError,
    ControlSettings,
    DevicesSettings,
    DiscoverySettings,
    ExitSettings,
    IsolationSettings,
    LanSettings,
    LivenessSettings,
    MembershipSettings,
    MeshSettings,
    MetricsSettings,
    NodeSettings,
    PortRange,
    Rate,
    ReceiptsSettings,
    RoutingSettings,
    UplinkSettings,
    WireGuardSettings,
    parse_port_range,
    parse_rate_kbit,
)
from meshd.core.endpoints import parse_endpoint

# version -> what turns a document of that version into the next, in memory (the file
# stays as it was written, so the meshd before still reads it): none yet (CONFIG_VERSION).
CONFIG_STEPS: dict[int, Callable[[dict[str, Any]], None]] = {}


def _converter(annotation: str) -> tuple[Callable[[Any], Any], str]:
    """Map a field's annotation (a string under `from __future__ import annotations`)."""
    table: dict[str, tuple[Callable[[Any], Any], str]] = {
        "str": (_expect(str), "a string"),
        "bool": (_bool, "true or false"),
        "int": (_int, "an integer"),
        "tuple[str, ...]": (_strings, "a list of strings"),
        "float": (_float, "a number"),
        "Path": (lambda v: Path(_expect(str)(v)), "a path string"),
        "ipaddress.IPv4Address | None": (
            lambda v: ipaddress.IPv4Address(_expect(str)(v)),
            "an IPv4 address such as 10.77.0.1",
        ),
        "ipaddress.IPv4Network": (
            lambda v: ipaddress.IPv4Network(_expect(str)(v)),
            "an IPv4 prefix such as 10.77.0.0/16",
        ),
        "Rate": (lambda v: Rate.parse(_expect(str)(v)), "a rate such as 20mbit or 512kbit"),
        "Rate | None": (_optional(Rate.parse), "a rate such as 20mbit or 512kbit"),
        "Address": (lambda v: parse_endpoint(_expect(str)(v)), "HOST:PORT"),
        "Address | None": (_optional(parse_endpoint), "HOST:PORT"),
        "tuple[PortRange, ...]": (_each(parse_port_range), "a list of ports or ranges"),
        "ipaddress.IPv6Network": (
            lambda v: ipaddress.IPv6Network(_expect(str)(v)),
            "an IPv6 prefix such as fd6d:6573:6864::/48",
        ),
    }
    return table[annotation]


class _ItemError(ValueError):
    """One item of a list option is wrong: its index goes into the key."""

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(problem)
        self.index = index


def _each(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A list of strings, each ``parse``d."""

    def convert(value: Any) -> tuple[Any, ...]:
        out = []
        for i, text in enumerate(_strings(value)):
            try:
                out.append(parse(text))
            except ValueError as exc:
                raise _ItemError(i, str(exc)) from None
        return tuple(out)

    return convert


def _optional(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A string option that may be left empty (None then), else ``parse``d."""

    def convert(value: Any) -> Any:
        text = _expect(str)(value)
        return parse(text) if text else None

    return convert


def _expect(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"got {type(value).__name__}")
        return value

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    return int(_expect(int)(value))


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"got {type(value).__name__}")
    return tuple(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"got {type(value).__name__}")
    return float(value)


def _build(cls: type, table: Any, path: Path, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(path, where, f"expected a table, got {type(table).__name__}")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in known:
            raise ConfigError(path, f"{where}.{key}", f"unknown key (known: {', '.join(known)})")
        f = known[key]
        convert, expected = _converter(str(f.type))
        try:
            values[key] = convert(raw)
        except _ItemError as exc:
            raise ConfigError(path, f"{where}.{key}[{exc.index}]", str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(path, f"{where}.{key}", f"expected {expected} ({exc})") from None
        choices = f.metadata.get("choices")
        if choices and values[key] not in choices:
            raise ConfigError(path, f"{where}.{key}", f"expected one of {', '.join(choices)}")
    for f in known.values():
        if f.metadata.get("required") and f.name not in values:
            raise ConfigError(path, f"{where}.{f.name}", "missing; expected " + f.metadata["help"])
    return cls(**values)


def parse(text: str, path: Path | str = "<config>") -> Config:
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    version = _version(doc.pop("version", 1), path)
    for older in range(version, CONFIG_VERSION):
        CONFIG_STEPS[older](doc)
    values: dict[str, Any] = {"version": version}
    for key, raw in doc.items():
        if key in SECTIONS:
            values[key] = _build(SECTIONS[key], raw, path, key)
        elif key == "bootstrap":
            if not isinstance(raw, list):
                raise ConfigError(path, key, "expected an array of tables ([[bootstrap]])")
            values[key] = tuple(
                _build(Bootstrap, item, path, f"bootstrap[{i}]") for i, item in enumerate(raw)
            )
        else:
            known = ", ".join(["version", *SECTIONS, "bootstrap"])
            raise ConfigError(path, key, f"unknown section (known: {known})")
    cfg = Config(path=path, **values)
    check(cfg)
    return cfg


def _version(value: Any, path: Path) -> int:
    """The file's ``version``: ConfigError for one this meshd cannot read."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(path, "version", f"expected an integer from 1 to {CONFIG_VERSION}")
    if value > CONFIG_VERSION:
        raise ConfigError(
            path,
            "version",
            f"{value}: written for a newer meshd; this meshd ({__version__}) reads config "
            f"versions up to {CONFIG_VERSION}: upgrade meshd, or write the file for this one",
        )
    return value


def load(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    return parse(text, path)


def config_path(flag: str | None = None) -> Path:
    """The config file of commands that read the node's files: the flag, else
    $MESHD_CONFIG (the testbed sets it per node), else the default."""
    return Path(flag or os.environ.get("MESHD_CONFIG") or DEFAULT_CONFIG)


def socket_path(cfg: Config | None = None) -> Path:
    """The control socket: MESHD_SOCKET wins (the testbed sets it per node)."""
    env = os.environ.get("MESHD_SOCKET")
    if env:
        return Path(env)
    return cfg.control.socket if cfg else Path(DEFAULT_SOCKET)


def _toml_value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'"{value}"'


def explain() -> str:
    """Every option with its default and help, as TOML comments."""
    lines = [
        f"# version = {CONFIG_VERSION}  -- the config format this file is written for (top of "
        "the file; absent: 1, the first release's)",
        "",
    ]
    for section, cls in [*SECTIONS.items(), ("[bootstrap]", Bootstrap)]:
        lines.append(f"[{section}]")
        for f in fields(cls):
            default = "(required)" if f.metadata.get("required") else _toml_value(f.default)
            lines.append(f"# {f.name} = {default}  -- {f.metadata['help']}")
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "Bootstrap",
    "CONFIG_STEPS",
    "CONFIG_VERSION",
    "Config",
    "ConfigError",
    "ControlSettings",
    "DEFAULT_CONFIG",
    "DEFAULT_SOCKET",
    "DiscoverySettings",
    "EXIT_GATEWAY_RULE_PREF",
    "EXIT_USER_RULE_PREF",
    "ExitSettings",
    "IsolationSettings",
    "DevicesSettings",
    "LanSettings",
    "LivenessSettings",
    "MembershipSettings",
    "MeshSettings",
    "MetricsSettings",
    "NodeSettings",
    "PortRange",
    "RESERVED_TABLES",
    "Rate",
    "ReceiptsSettings",
    "RoutingSettings",
    "UplinkSettings",
    "WireGuardSettings",
    "parse_port_range",
    "parse_rate_kbit",
    "config_path",
    "explain",
    "load",
    "parse",
    "socket_path",
]
