"""Choosing the WireGuard backend: the kernel module where there is one, else wireguard-go."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable

from meshd.adapters.wg.backend import WireGuardBackend
from meshd.adapters.wg.model import WireGuardError

PREFERENCES = ("auto", "kernel", "userspace")
_SYS_MODULE = "/sys/module/wireguard"


def kernel_module_available(
    sys_module: str = _SYS_MODULE, modprobe: Callable[[], bool] | None = None
) -> bool:
    """True when the wireguard module is loaded, or loads now (``modprobe -q wireguard``)."""
    if os.path.exists(sys_module):
        return True
    return (modprobe or _modprobe_wireguard)()


def _modprobe_wireguard() -> bool:
    try:
        # modprobe also answers 0 for a module built into the kernel, which /sys/module may
        # not list when it has no parameters.
        done = subprocess.run(
            ["modprobe", "-q", "wireguard"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):  # no modprobe (containers), not allowed, hung
        return False
    return done.returncode == 0


def select_backend(
    preference: str,
    *,
    kernel_available: Callable[[], bool] = kernel_module_available,
    userspace_binary: str = "wireguard-go",
) -> WireGuardBackend:
    """The backend for ``preference``: "auto" | "kernel" | "userspace".

    WireGuardError when the one asked for cannot work here, so that meshd refuses to start
    with the reason instead of failing on the first link.
    """
    if preference not in PREFERENCES:
        choices = ", ".join(PREFERENCES)
        raise ValueError(f"WireGuard backend must be one of {choices}: {preference!r}")
    if preference in ("auto", "kernel") and kernel_available():
        from meshd.adapters.wg.kernel import KernelBackend

        return KernelBackend()
    if preference == "kernel":
        raise WireGuardError(
            "WireGuard backend 'kernel' asked for, but this kernel has no wireguard module "
            "(modprobe wireguard failed); use 'userspace' or 'auto' to run wireguard-go",
            errno.ENOENT,
        )
    if shutil.which(userspace_binary) is None:
        raise WireGuardError(
            f"WireGuard backend '{preference}' needs {userspace_binary}, which is not on PATH"
            + ("" if preference == "userspace" else ", and the kernel has no wireguard module"),
            errno.ENOENT,
        )
    from meshd.adapters.wg.userspace import UserspaceBackend

    return UserspaceBackend(binary=userspace_binary)
