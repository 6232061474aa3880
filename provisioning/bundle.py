"""An offline bundle: everything provision installs, made on a connected machine (stdlib only).

A household that joins because it has no working uplink cannot reach Debian's mirrors or
PyPI. ``provision bundle OUT`` writes, on a connected machine of the same Debian release
and architecture as the target::

    OUT/bundle.json   what it is for: meshd's version, the Debian architecture, the Python
                      (major.minor) the wheels are for, the packages
    OUT/debs/         the packages provision may install (wireguard-tools, nftables, ...,
                      wireguard-go) with every dependency, and a Packages index: a flat
                      apt repository that provision --bundle reads with a sources list of
                      its own (the system's sources are not touched)
    OUT/wheels/       meshd's wheel and every dependency's, for that Python
    OUT/source/       this checkout's tracked files (provisioning/provision runs from it)

On the target, from the stick: ``sudo OUT/source/provisioning/provision --bundle OUT
--invite-file TOKEN``. A bundle for another architecture or Python is refused, with both
named, before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "bundle.json"
FORMAT = 1


class BundleError(Exception):
    """The bundle could not be made, or does not fit this machine."""


@dataclass(frozen=True)
class Manifest:
    meshd: str
    arch: str
    python: str  # major.minor
    packages: tuple[str, ...]

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "meshd": self.meshd,
            "arch": self.arch,
            "python": self.python,
            "packages": list(self.packages),
        }
        return json.dumps(doc, indent=2) + "\n"


def read_manifest(bundle: Path) -> Manifest:
    path = bundle / MANIFEST
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        if doc.get("format") != FORMAT:
            raise BundleError(
                f"{path}: format {doc.get('format')!r}, this provision reads {FORMAT}"
            )
        return Manifest(doc["meshd"], doc["arch"], doc["python"], tuple(doc["packages"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: not a provision bundle ({exc})") from None


def debian_arch() -> str:
    """This machine's Debian architecture (amd64, arm64, ...)."""
    return _output(["dpkg", "--print-architecture"]).strip()


def check_fits(manifest: Manifest, arch: str, python: str) -> None:
    if manifest.arch != arch:
        raise BundleError(f"the bundle is for {manifest.arch}, this machine is {arch}")
    if manifest.python != python:
        raise BundleError(f"the bundle's wheels are for Python {manifest.python}, this is {python}")


def make(
    out: Path, repo: Path, packages: list[str], python: str = sys.executable, arch: str = ""
) -> Manifest:
    """Write a bundle into ``out`` for ``arch`` (default: this machine's Debian architecture)
    and ``python``'s version. Another architecture's packages come from this machine's apt
    sources with lists of their own (the system's apt state is not touched); its wheels are
    the binary ones PyPI has for it (``pip download --platform``)."""
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out}: exists and is not empty")
    native = debian_arch()
    arch = arch or native
    if arch not in PLATFORMS:
        raise BundleError(f"no bundle for {arch!r}: one of {', '.join(PLATFORMS)}")
    out.mkdir(parents=True, exist_ok=True)
    version = _output([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()
    if arch == native:
        _debs(out / "debs", packages, [])
        _wheels(out / "wheels", repo, python)
    else:
        with tempfile.TemporaryDirectory(prefix="provision-bundle-") as scratch:
            _debs(out / "debs", packages, _foreign_apt(arch, Path(scratch)))
        _foreign_wheels(out / "wheels", repo, python, arch, version)
    _source(out / "source", repo)
    meshd = _output([python, "-c", "import meshd; print(meshd.__version__)"], cwd=repo).strip()
    manifest = Manifest(meshd, arch, version, tuple(packages))
    (out / MANIFEST).write_text(manifest.to_json())
    return manifest


# Debian architecture -> the wheels' platform tags (Debian bookworm has glibc 2.36).
PLATFORMS = {
    "amd64": [f"manylinux_2_{v}_x86_64" for v in (17, 28, 34)] + ["manylinux2014_x86_64"],
    "arm64": [f"manylinux_2_{v}_aarch64" for v in (17, 28, 34)] + ["manylinux2014_aarch64"],
}


def _foreign_apt(arch: str, scratch: Path) -> list[str]:
    """apt options for ``arch`` alone, with this machine's sources and a state of its own
    in ``scratch`` (lists fetched now; nothing counted as installed)."""
    (scratch / "lists" / "partial").mkdir(parents=True)
    (scratch / "cache" / "archives" / "partial").mkdir(parents=True)
    (scratch / "status").write_text("")
    options = [
        "-o",
        f"APT::Architecture={arch}",
        "-o",
        f"APT::Architectures={arch}",
        "-o",
        f"Dir::State::Lists={scratch / 'lists'}",
        "-o",
        f"Dir::State::status={scratch / 'status'}",
        "-o",
        f"Dir::Cache={scratch / 'cache'}",
    ]
    _output(["apt-get", "-q", *options, "update"])
    return options


def _foreign_wheels(directory: Path, repo: Path, python: str, arch: str, version: str) -> None:
    directory.mkdir()
    _output([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(directory), str(repo)])
    (own,) = directory.glob("meshd-*.whl")
    major, minor = version.split(".")
    platforms = [arg for tag in PLATFORMS[arch] for arg in ("--platform", tag)]
    _output(
        [
            python, "-m", "pip", "download", "-q", "--only-binary=:all:", *platforms,
            "--python-version", version, "--implementation", "cp",
            "--abi", f"cp{major}{minor}", "--abi", "abi3", "--abi", "none",
            "-d", str(directory), str(own),
        ]
    )  # fmt: skip


def closure(packages: list[str], apt: list[str] | None = None) -> list[str]:
    """The packages and everything they depend on (no recommends), as apt resolves them."""
    text = _output(
        [
            "apt-cache",
            *(apt or []),
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            *packages,
        ]
    )
    # Lines without indentation name a package; <virtual> ones are provided by a real one
    # that is listed too.
    names = {line.strip() for line in text.splitlines() if line and not line[0].isspace()}
    return sorted(n for n in names if not n.startswith("<"))


def _debs(directory: Path, packages: list[str], apt: list[str]) -> None:
    directory.mkdir()
    _output(
        [
            "apt-get",
            "-q",
            *apt,
            "-o",
            "APT::Sandbox::User=root",
            "download",
            *closure(packages, apt),
        ],
        cwd=directory,
    )
    (directory / "Packages").write_text(packages_index(directory))


def packages_index(directory: Path) -> str:
    """A flat repository's Packages file for the .deb files in ``directory``."""
    stanzas = []
    for deb in sorted(directory.glob("*.deb")):
        control = _output(["dpkg-deb", "-f", str(deb)]).rstrip("\n")
        data = deb.read_bytes()
        stanzas.append(
            f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    return "\n".join(stanzas)


def _wheels(directory: Path, repo: Path, python: str) -> None:
    directory.mkdir()
    _output([python, "-m", "pip", "wheel", "-q", "-w", str(directory), str(repo)])


def _source(directory: Path, repo: Path) -> None:
    files = _output(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    ).split("\0")
    for name in filter(None, files):
        src = repo / name
        if src.is_file():
            dst = directory / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def apt_options(bundle: Path, scratch: Path) -> list[str]:
    """apt-get options that read the bundle's repository only, with lists in ``scratch``."""
    (scratch / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    sources = scratch / "bundle.list"
    sources.write_text(f"deb [trusted=yes] file:{(bundle / 'debs').resolve()} ./\n")
    return [
        "-o",
        f"Dir::Etc::SourceList={sources}",
        "-o",
        "Dir::Etc::SourceParts=/nonexistent",
        "-o",
        f"Dir::State::Lists={scratch / 'lists'}",
    ]


def _output(argv: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    except OSError as exc:
        raise BundleError(f"{argv[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BundleError(f"{' '.join(argv[:4])}...: exit {proc.returncode}: {' | '.join(detail)}")
    return proc.stdout
