"""Which DNS resolver this machine uses: a gateway sends its exit users' queries there."""

from __future__ import annotations

import ipaddress
from pathlib import Path

# systemd-resolved's list of upstream servers first: /etc/resolv.conf then names its stub.
RESOLV_CONF = (Path("/run/systemd/resolve/resolv.conf"), Path("/etc/resolv.conf"))


def system_resolver(files: tuple[Path, ...] = RESOLV_CONF) -> str:
    """The first IPv4 nameserver that is not a loopback address, or "" when there is none
    (a stub on 127.0.0.53 cannot be reached from the mesh)."""
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                try:
                    address = ipaddress.ip_address(words[1])
                except ValueError:
                    continue
                if address.version == 4 and not address.is_loopback:
                    return str(address)
    return ""
