"""The node's meshd installations, one virtual environment per version (issue 20).

Provisioning installs meshd into ``/opt/meshd/venv``, which the unit runs. Updates keep
every version in a directory of its own and make ``venv`` a link to the one in use::

    /opt/meshd/venv -> versions/0.2.0-7     the one meshd.service runs (a symbolic link)
    /opt/meshd/versions/<version>-<serial>  one virtual environment per release taken
    /opt/meshd/versions/provisioned         the one provisioning made (moved on the
                                            first update; its scripts name /opt/meshd/venv)
    /opt/meshd/update.json                  what updates did (meshd.core.updates.Record)

A release's wheel goes into a new virtual environment holding the running one's
dependencies (hard links where the file system allows, copies otherwise), installed with
``--no-index --no-deps``: no network is needed, and ``pip check`` refuses a release that
needs a dependency the node lacks. The link is switched by renaming a new link over it,
so meshd.service starts either the old version or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from meshd.adapters import safe_files
from meshd.core.updates import Record

ROOT = Path("/opt/meshd")
PROVISIONED = "provisioned"


class InstallError(Exception):
    """A release that could not be installed, saying why."""


def _own_entries(site: Path) -> set[str]:
    """The top-level names in ``site`` that belong to meshd's own distribution (its code,
    its dist-info, an editable install's hooks): what a new release brings anew."""
    own: set[str] = set()
    for info in site.glob("meshd-*.dist-info"):
        own.add(info.name)
        record = info / "RECORD"
        if record.exists():
            for line in record.read_text().splitlines():
                top = line.split(",", 1)[0].split("/", 1)[0]
                if top and not top.startswith(".."):
                    own.add(top)
    return own


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise InstallError(f"{venv}: not one site-packages directory ({len(found)} found)")
    return found[0]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class Installs:
    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.link = root / "venv"
        self.versions = root / "versions"
        self.record_path = root / "update.json"

    # ---- the record -------------------------------------------------------------------

    def load(self) -> Record:
        try:
            data = safe_files.read_bytes(self.record_path)
        except FileNotFoundError:
            return Record()
        try:
            return Record.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise InstallError(f"{self.record_path}: not an update record ({exc})") from None

    def save(self, record: Record) -> None:
        data = json.dumps(record.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        safe_files.write_atomically(self.record_path, data, 0o644)

    # ---- the virtual environments -----------------------------------------------------

    def running(self) -> Path:
        """The virtual environment meshd.service runs now."""
        if not self.link.is_dir():
            raise InstallError(f"{self.link}: no meshd installed there")
        return self.link.resolve()

    def adopt(self) -> None:
        """Make ``venv`` a link (the first update): the provisioned environment moves to
        ``versions/provisioned``, its scripts keep working through the link."""
        self.versions.mkdir(mode=0o755, exist_ok=True)
        if self.link.is_symlink() or not self.link.is_dir():
            return
        moved = self.versions / PROVISIONED
        tmp = self.root / ".venv-link"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(moved.relative_to(self.root))
        self.link.rename(moved)
        tmp.rename(self.link)

    def install(self, wheel: Path, name: str) -> Path:
        """A new virtual environment ``versions/name`` with the running one's dependencies
        and ``wheel``'s meshd; InstallError (and nothing left of it) when it fails."""
        if not wheel.name.endswith(".whl"):
            raise InstallError(f"{wheel.name}: not a wheel (only a wheel release installs)")
        base = self.running()
        target = self.versions / name
        shutil.rmtree(target, ignore_errors=True)  # what an interrupted install left
        try:
            self._run([_base_python(base), "-m", "venv", "--without-pip", str(target)])
            site, new_site = _site_packages(base), _site_packages(target)
            own = _own_entries(site)
            for entry in site.iterdir():
                if entry.name in own or entry.name == "__pycache__":
                    continue
                if entry.is_symlink():
                    (new_site / entry.name).symlink_to(os.readlink(entry))
                elif entry.is_dir():
                    shutil.copytree(entry, new_site / entry.name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(str(entry), str(new_site / entry.name))
            python = str(target / "bin" / "python")
            pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
            self._run([*pip, "install", "-q", "--no-index", "--no-deps", str(wheel)])
            self._run([*pip, "check"])
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return target

    def switch(self, target: Path) -> None:
        """Point ``venv`` at ``target``, at once."""
        tmp = self.root / ".venv-link"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.relative_to(self.root))
        tmp.rename(self.link)

    def prune(self, keep: set[Path]) -> list[Path]:
        """Remove every version but ``keep`` (the one running, the one before it)."""
        kept = {k.resolve() for k in keep}
        removed = []
        for entry in sorted(self.versions.iterdir()):
            if entry.resolve() not in kept:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    @staticmethod
    def _run(argv: list[str]) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise InstallError(f"{' '.join(argv[:4])} ...: " + " / ".join(said))


def _base_python(venv: Path) -> str:
    """The interpreter ``venv`` was made from (its pyvenv.cfg's ``home``)."""
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                version = f"{sys.version_info.major}.{sys.version_info.minor}"
                for name in (f"python{version}", "python3"):
                    candidate = Path(value.strip()) / name
                    if candidate.exists():
                        return str(candidate)
    except OSError:
        pass
    raise InstallError(f"{venv}: no pyvenv.cfg naming its Python")
