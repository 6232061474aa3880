"""vmbed's pure parts: the guest's network script and the image's cache key. Booting a
guest, wiring it into a testbed and provisioning it is the VM tier's (tests/vm)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TESTBED_DIR = REPO / "netns-testbed"
sys.path[:0] = [p for p in (str(REPO), str(TESTBED_DIR)) if p not in sys.path]

from vmbed import image, wiring  # noqa: E402

WIRES = wiring.Wiring(
    ports=(
        wiring.Port("u-a", "02:00:00:00:00:01", ("100.64.1.2/24",), "vt0"),
        wiring.Port("upl", "02:00:00:00:00:02", ("198.51.100.12/24",), "vt1"),
    ),
    routes=({"dst": "default", "gateway": "198.51.100.1", "dev": "upl"},),
)


def test_each_nic_is_found_by_its_mac_and_takes_the_nodes_name_and_addresses() -> None:
    script = wiring.net_script(WIRES)
    assert "grep -lx 02:00:00:00:00:01 /sys/class/net/*/address" in script
    assert 'ip link set "$dev" name u-a' in script
    assert "ip addr replace 100.64.1.2/24 dev u-a" in script
    assert "ip addr replace 198.51.100.12/24 dev upl" in script
    assert script.rstrip().endswith("ip route replace default via 198.51.100.1 dev upl")
    assert [n.tap for n in WIRES.nics] == ["vt0", "vt1"]
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)  # it parses


def test_the_setup_installs_the_script_as_a_unit_that_runs_at_every_boot() -> None:
    setup = wiring.guest_setup(WIRES)
    assert wiring.net_script(WIRES) in setup
    assert "systemctl enable --quiet vm-net.service" in setup
    assert "WantedBy=multi-user.target" in setup
    subprocess.run(["sh", "-n"], input=setup, text=True, check=True)


def test_the_image_key_changes_with_what_the_build_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image.key("amd64")
    assert image.key("amd64") == before and image.key("arm64") != before
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "curl"))
    assert image.key("amd64") != before
