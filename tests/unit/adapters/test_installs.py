"""meshd.adapters.installs on real virtual environments: a release's wheel goes into one of
its own beside the running one, with the running one's dependencies and no index; the link
the unit runs switches at once; a wheel needing what the node lacks is refused and leaves
nothing. The wheels are made here, small, as a build backend makes them."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from meshd.adapters.installs import PROVISIONED, InstallError, Installs


def wheel(out: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{name}-{version}.dist-info/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = f"{name}-{version}.dist-info/RECORD"
    lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        lines.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[record] = "\n".join([*lines, f"{record},,"]) + "\n"
    path = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name_in, text in files.items():
            z.writestr(name_in, text)
    return path


def version_in(venv: Path) -> str:
    argv = [str(venv / "bin" / "python"), "-I", "-c", "import meshd, dep; print(meshd.__version__)"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def installs(tmp_path: Path) -> Installs:
    """A node as provisioning leaves it: meshd 1.0 and its dependency in ``venv``."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel(wheels, "dep", "1.0")
    first = wheel(wheels, "meshd", "1.0", ("dep",))
    root = tmp_path / "opt"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = str(root / "venv" / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index"]
    subprocess.run([*pip, "--find-links", str(wheels), str(first)], check=True)
    # pip itself, copied from the running environment as ensurepip would have put it there.
    site = next((root / "venv").glob("lib/python3*/site-packages"))
    here = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    for entry in here.glob("pip*"):
        shutil.copytree(entry, site / entry.name)
    return Installs(root)


def test_a_release_goes_beside_the_running_one_and_the_link_switches(
    installs: Installs, tmp_path: Path
) -> None:
    new = wheel(tmp_path, "meshd", "2.0", ("dep",))
    installs.adopt()
    provisioned = installs.versions / PROVISIONED
    assert installs.link.is_symlink() and installs.running() == provisioned
    assert version_in(installs.link) == "1.0"  # its scripts' path works through the link
    target = installs.install(new, "2.0-7")
    assert version_in(target) == "2.0" and version_in(installs.link) == "1.0"
    installs.switch(target)
    assert installs.running() == target and version_in(installs.link) == "2.0"
    installs.switch(provisioned)
    assert version_in(installs.link) == "1.0"
    assert installs.prune({provisioned}) == [target]


def test_a_release_needing_what_the_node_lacks_is_refused_and_leaves_nothing(
    installs: Installs, tmp_path: Path
) -> None:
    installs.adopt()
    needy = wheel(tmp_path, "meshd", "3.0", ("dep", "absent"))
    with pytest.raises(InstallError, match="absent"):
        installs.install(needy, "3.0-8")
    assert not (installs.versions / "3.0-8").exists()
    with pytest.raises(InstallError, match="not a wheel"):
        installs.install(tmp_path / "bundle.tar", "3.0-9")
    assert version_in(installs.link) == "1.0"
