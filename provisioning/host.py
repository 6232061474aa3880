"""What provisioning needs to know about the machine (standard library only: this runs
before meshd's own dependencies are installed).

The OS comes from ``ROOT/etc/os-release``, the users from ``ROOT/etc/passwd`` and
``ROOT/etc/group`` (so that a scratch root or a mounted SD card answers for itself), and
WireGuard from the running kernel.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEBIAN_FAMILY = ("debian", "raspbian", "ubuntu")


@dataclass(frozen=True)
class OsInfo:
    id: str
    version: str
    like: tuple[str, ...]

    @property
    def supported(self) -> bool:
        """Debian and its derivatives: apt, dpkg and systemd are what the steps use."""
        return self.id in DEBIAN_FAMILY or any(like in DEBIAN_FAMILY for like in self.like)

    def describe(self) -> str:
        return f"{self.id} {self.version}".strip()


def read_os_release(root: Path) -> OsInfo | None:
    """``ROOT/etc/os-release`` (or ``ROOT/usr/lib/os-release``), None when neither exists."""
    for name in ("etc/os-release", "usr/lib/os-release"):
        path = root / name
        if path.is_file():
            break
    else:
        return None
    fields: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            try:
                words = shlex.split(value) or [""]
            except ValueError:  # unbalanced quotes: take the text as it is
                words = [value.strip("\"'")]
            fields[key.strip()] = words[0]
    return OsInfo(
        id=fields.get("ID", "unknown"),
        version=fields.get("VERSION_CODENAME") or fields.get("VERSION_ID", ""),
        like=tuple(fields.get("ID_LIKE", "").split()),
    )


def succeeds(argv: list[str]) -> bool:
    """True when ``argv`` runs and exits 0; False when it fails or is not there."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def kernel_wireguard(probe_link: bool) -> str:
    """How this kernel does WireGuard: ``loaded``, ``module`` (modprobe can load it),
    ``built-in`` (a test link could be made) or ``none``. The link test creates and
    deletes an interface, so it runs only when ``probe_link`` (a real run as root)."""
    if Path("/sys/module/wireguard").exists():
        return "loaded"
    if succeeds(["modprobe", "--dry-run", "--quiet", "wireguard"]):
        return "module"
    name = "meshdprobe0"
    if probe_link and succeeds(["ip", "link", "add", name, "type", "wireguard"]):
        succeeds(["ip", "link", "del", name])
        return "built-in"
    return "none"


def missing_packages(packages: list[str]) -> list[str]:
    """The Debian packages of ``packages`` that dpkg does not list as installed."""
    missing = []
    for package in packages:
        try:
            status = subprocess.run(
                ["dpkg-query", "-W", "-f=${Status}", package],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        except OSError:
            status = ""
        if "install ok installed" not in status:
            missing.append(package)
    return missing


@dataclass(frozen=True)
class Owner:
    user: str
    uid: int
    gid: int


def _field(path: Path, name: str, index: int) -> int | None:
    """Field ``index`` of the line for ``name`` in a passwd-style file, as an int."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) > index and parts[0] == name and parts[index].isdigit():
            return int(parts[index])
    return None


def lookup_owner(root: Path, user: str) -> Owner | None:
    """``user`` and its group as ``ROOT/etc/passwd`` and ``ROOT/etc/group`` give them."""
    uid = _field(root / "etc/passwd", user, 2)
    gid = _field(root / "etc/group", user, 2)
    if uid is None or gid is None:
        return None
    return Owner(user, uid, gid)


def is_root() -> bool:
    return os.geteuid() == 0
