from __future__ import annotations

from pathlib import Path

import pytest

from meshd.adapters.net import sysctl


def test_a_key_that_does_not_exist_names_the_module_that_makes_it(tmp_path: Path) -> None:
    """Seen in the VM tier's first guest: nf_conntrack_acct exists only once nf_conntrack
    is loaded, and meshd (ProtectKernelModules) may not load it itself."""
    (tmp_path / "net/ipv4").mkdir(parents=True)
    (tmp_path / "net/ipv4/ip_forward").write_text("0\n")
    with pytest.raises(sysctl.SysctlMissing, match=r"nf_conntrack_acct .*modprobe nf_conntrack"):
        sysctl.apply({"net/netfilter/nf_conntrack_acct": "1"}, tmp_path)
    assert sysctl.apply({"net/ipv4/ip_forward": "1"}, tmp_path) == {"net/ipv4/ip_forward": "0"}
    assert (tmp_path / "net/ipv4/ip_forward").read_text() == "1\n"
