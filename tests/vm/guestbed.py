"""The VM tier's fixtures: a netns testbed with a QEMU guest in an invited node's place.

``guest_in(bed, node, payload)`` builds (or takes from the cache) the host architecture's
image, wires a guest into ``node``'s namespace (netns-testbed/vmbed/wiring.py), boots it
with ``payload`` as its read-only second disk, names and addresses its NICs as the node's,
and pulls its plug afterwards; ``testbed down`` removes whatever is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.netns import meshbed

sys.path.insert(0, str(meshbed.REPO / "netns-testbed"))

from vmbed import guest as vmguest  # noqa: E402
from vmbed import image as vmimage  # noqa: E402
from vmbed import wiring  # noqa: E402

PROVISION = meshbed.REPO / "provisioning" / "provision"
# The guests' architecture: this machine's, or arm64 (a Pi's) for `vm tier --arch arm64`.
ARCH = os.environ.get("MESHD_VM_ARCH") or vmimage.host_arch()
# Under TCG Python runs about 5x (amd64) to 7x (arm64) slower than here: waits scale.
NATIVE = vmimage.host_arch()
SLOWER = 1.0 if ARCH == NATIVE else 2.0
PAYLOAD = vmimage.PAYLOAD_MOUNT
Guest = vmguest.Guest
GuestError = vmguest.GuestError

NEEDS_ROOT_AND_QEMU = [
    *meshbed.NEEDS_ROOT_AND_WIREGUARD,
    pytest.mark.skipif(shutil.which(vmguest.QEMU[ARCH]) is None, reason="needs qemu"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="needs mmdebstrap"),
]


def bundle(out: Path) -> Path:
    """`provision bundle OUT`, as a household's helper runs it on a connected machine."""
    subprocess.run(
        [sys.executable, str(PROVISION), "bundle", "--arch", ARCH, str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out


@contextmanager
def guest_in(bed: meshbed.Bed, node: str, payload_dir: Path) -> Iterator[vmguest.Guest]:
    image = vmimage.build(ARCH)
    directory = bed.dir / "vms" / node
    directory.mkdir(parents=True, exist_ok=True)
    payload = directory / "payload.img"
    vmguest.make_payload(payload_dir, payload, vmguest.payload_size(payload_dir))
    namespace = f"{bed.env['MESHD_TESTBED_ID']}-{node}"
    wires = wiring.take_over(namespace)
    setup = wiring.guest_setup(wires)
    guest = vmguest.Guest(node, image, directory, namespace, wires.nics, payload, setup=setup)
    guest.start(timeout=vmguest.BOOT_TIMEOUT_S * SLOWER)
    try:
        yield guest
    finally:
        guest.kill()  # its card (the overlay) is thrown away: nothing to shut down for


def pings(bed: meshbed.Bed, node: str, address: str) -> bool:
    argv = [str(meshbed.TESTBED), "exec", node, "--", "ping", "-c1", "-W2", address]
    return subprocess.run(argv, env=bed.env, capture_output=True, timeout=30).returncode == 0
