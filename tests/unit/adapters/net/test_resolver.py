from __future__ import annotations

from pathlib import Path

from meshd.adapters.net.resolver import system_resolver


def test_the_first_ipv4_resolver_that_the_mesh_can_reach(tmp_path: Path) -> None:
    stub, upstream = tmp_path / "stub", tmp_path / "upstream"
    stub.write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream.write_text(
        "# from DHCP\nnameserver fe80::1\nnameserver bogus\nnameserver 192.0.2.53\n"
    )
    assert system_resolver((tmp_path / "absent", stub)) == ""
    assert system_resolver((stub, upstream)) == "192.0.2.53"
