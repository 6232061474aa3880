"""Guest images: a Debian bookworm root per architecture, built with mmdebstrap and cached.

An image is three files in ``<cache>/<arch>-<key>/``: the kernel (``vmlinuz``), its
initramfs (``initrd.img``) and an ext4 root (``root.img``, made with ``mke2fs -d``: no loop
device). The key is a hash of everything the build takes (suite, mirrors, packages, the
agent, the files written into the root), so a change to any of them builds a new image and
an unchanged build is reused. CI starts on a fresh machine and pays one build (about 35 s).

The root is Debian's minimal base with systemd, its kernel (which has WireGuard as a
module), iproute2 and python3: what Raspberry Pi OS Lite has, and nothing meshd adds.
wireguard-tools and nftables are left out on purpose: provisioning must bring them
(offline, from a bundle), as on a fresh Pi.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nstestbed.build import run

SUITE = "bookworm"
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
KERNELS = {"amd64": "linux-image-cloud-amd64", "arm64": "linux-image-arm64"}
PACKAGES = (
    "systemd-sysv",
    "udev",
    "initramfs-tools",
    "kmod",
    "iproute2",
    "iputils-ping",
    "procps",
    "python3",
    "python3-venv",
)
AGENT = Path(__file__).with_name("agent.py")
AGENT_PORT_NAME = "org.meshd.agent"
CACHE_ENV = "MESHD_VM_CACHE"
DEFAULT_CACHE = Path("/var/cache/meshd-vm")
ROOT_SIZE = "1500M"
PAYLOAD_MOUNT = "/payload"

# Files written into the root (path -> content): the agent's unit, the mounts, the name.
AGENT_UNIT = """\
[Unit]
Description=vmbed agent: the host's commands over virtio-serial
After=dev-virtio\\x2dports-org.meshd.agent.device
Wants=dev-virtio\\x2dports-org.meshd.agent.device

[Service]
ExecStart=/usr/bin/python3 /usr/local/sbin/vm-agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""
ROOT_FILES = {
    "etc/systemd/system/vm-agent.service": AGENT_UNIT,
    "etc/fstab": (
        "/dev/vda / ext4 defaults 0 1\n"
        f"LABEL=payload {PAYLOAD_MOUNT} ext4 ro,nofail,x-systemd.device-timeout=5s 0 0\n"
    ),
    "etc/hostname": "guest\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 guest\n",
    # No console login: the agent is the way in.
    "etc/systemd/system/serial-getty@ttyS0.service": "",
}


class ImageError(Exception):
    """A build step failed: which one and what it said."""


@dataclass(frozen=True)
class Image:
    arch: str
    directory: Path

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def root(self) -> Path:
        return self.directory / "root.img"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def host_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def key(arch: str) -> str:
    inputs = {
        "suite": SUITE,
        "mirrors": MIRRORS,
        "packages": (*PACKAGES, KERNELS[arch]),
        "agent": AGENT.read_text(),
        "files": ROOT_FILES,
        "size": ROOT_SIZE,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def location(arch: str) -> Image:
    """Where the image of ``arch`` with today's inputs is (or will be) in the cache."""
    return Image(arch, cache_dir() / f"{arch}-{key(arch)}")


def cached(arch: str) -> Image | None:
    image = location(arch)
    return image if image.root.exists() else None


def build(arch: str, log: Path | None = None) -> Image:
    """The image for ``arch``, from the cache or built now (as root)."""
    if arch not in KERNELS:
        raise ImageError(f"no image for {arch!r}: one of {', '.join(KERNELS)}")
    found = cached(arch)
    if found:
        return found
    final = location(arch).directory
    work = final.with_name(final.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    work.mkdir(parents=True)
    try:
        _mmdebstrap(arch, root, log or work / "build.log")
        run(
            [
                "mke2fs",
                "-q",
                "-t",
                "ext4",
                "-L",
                "root",
                "-d",
                str(root),
                str(work / "root.img"),
                ROOT_SIZE,
            ],
            timeout=600,
        )
        boot = root / "boot"
        kernels = sorted(boot.glob("vmlinuz-*"))
        if not kernels:
            raise ImageError(f"no kernel in {boot}")
        version = kernels[-1].name.removeprefix("vmlinuz-")
        shutil.copy(kernels[-1], work / "vmlinuz")
        shutil.copy(boot / f"initrd.img-{version}", work / "initrd.img")
        shutil.rmtree(root)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for older in final.parent.glob(f"{arch}-*"):  # images of inputs that changed since
        if older != final and not older.name.endswith(".building"):
            shutil.rmtree(older, ignore_errors=True)
    return Image(arch, final)


QEMU_USER = {"arm64": "aarch64", "amd64": "x86_64"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def _foreign_ready(arch: str) -> None:
    """Another architecture's root is built through qemu-user: binfmt_misc mounted and
    qemu's interpreter registered (a container may have neither until asked)."""
    interpreter = BINFMT / f"qemu-{QEMU_USER[arch]}"
    if interpreter.exists():
        return
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    if shutil.which("update-binfmts") is None:
        raise ImageError(
            f"an {arch} image needs qemu-user-static and binfmt-support: "
            "apt-get install qemu-user-static binfmt-support"
        )
    run(["update-binfmts", "--enable", f"qemu-{QEMU_USER[arch]}"])
    if not interpreter.exists():
        raise ImageError(f"{interpreter}: not registered after update-binfmts")


def _mmdebstrap(arch: str, root: Path, log: Path) -> None:
    if arch != host_arch():
        _foreign_ready(arch)
    hooks: list[str] = [
        f"--customize-hook=copy-in {AGENT} /usr/local/sbin",
        '--customize-hook=mv "$1/usr/local/sbin/agent.py" "$1/usr/local/sbin/vm-agent"',
    ]
    for path, content in ROOT_FILES.items():
        if content:
            hooks.append(f'--customize-hook=printf %s {_shell_quote(content)} > "$1/{path}"')
        else:  # masked
            hooks.append(f'--customize-hook=ln -sf /dev/null "$1/{path}"')
    hooks.append(
        "--customize-hook=ln -sf /etc/systemd/system/vm-agent.service "
        '"$1/etc/systemd/system/multi-user.target.wants/vm-agent.service"'
    )
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        f"--arch={arch}",
        f"--include={','.join((*PACKAGES, KERNELS[arch]))}",
        *hooks,
        SUITE,
        str(root),
        *MIRRORS,
    ]
    with log.open("w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise ImageError(f"mmdebstrap failed (exit {proc.returncode}):\n{tail}")


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
