"""Underlay endpoints, one spelling (pure): an ``Address`` is (host, port); as text it is
``HOST:PORT`` or ``[V6]:PORT``, as the config, invites, logs and WireGuard's UAPI write it."""

from __future__ import annotations

import ipaddress

Address = tuple[str, int]


def parse_endpoint(text: str) -> Address:
    """``HOST:PORT`` or ``[V6]:PORT`` (an IPv6 host without brackets is split at its last
    colon), the host normalised; ValueError saying why when it is not one."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{text!r} has no port")
    address = ipaddress.ip_address(host)
    if not port_text.isdigit():  # int() would take signs, spaces and underscores
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return str(address), port


def format_endpoint(address: Address) -> str:
    """``10.0.0.1:51820`` or ``[fd00::1]:51820``, the host normalised."""
    host, port = address
    ip = ipaddress.ip_address(host)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
