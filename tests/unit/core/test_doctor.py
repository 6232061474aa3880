"""meshd doctor's judgements (meshd.core.doctor): each check says ok, warn or fail, and
what to do. tests/netns/test_operations.py runs the command on a live node."""

from __future__ import annotations

from typing import Any

from meshd.core import doctor

NOW = 1_800_000_000.0


def status(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "clock": {"correction_s": 0.0, "median_offset_s": 0.4, "peers": 2, "tolerance_s": 60},
        "neighbours": [
            {"node_id": "A" * 43, "name": "a", "state": "up", "control": {"session": "up"}}
        ],
        "gateway": {"uplink": None},
        "membership": {"expires_at": NOW + 30 * 86400, "renewal": "valid"},
    }
    doc.update(changes)
    return doc


def test_wireguard_kernel_first_then_wireguard_go_else_what_to_install() -> None:
    assert doctor.wireguard("auto", True, False).verdict == "ok"
    assert "wireguard-go" in doctor.wireguard("auto", False, True).says
    assert doctor.wireguard("kernel", False, True).verdict == "fail"
    missing = doctor.wireguard("auto", False, False)
    assert missing.verdict == "fail" and "apt install wireguard-go" in missing.says
    assert doctor.wireguard("userspace", True, True).says.startswith("wireguard-go")


def test_nftables_missing_or_not_root() -> None:
    assert "apt install nftables" in doctor.nftables(None, None).says
    assert "as root" in doctor.nftables("nftables v1.0.6", "Operation not permitted").says
    assert doctor.nftables("nftables v1.0.6", None).verdict == "ok"


def test_a_clock_off_the_neighbours_median_fails_with_how_to_set_it() -> None:
    off = status(
        clock={"correction_s": 3600.0, "median_offset_s": 3600.0, "peers": 3, "tolerance_s": 60}
    )
    found = doctor.clock(off)
    assert found.verdict == "fail" and "-3600.0 s" in found.says and "NTP" in found.says
    assert doctor.clock(status()).verdict == "ok"
    lonely = status(clock={"correction_s": 0, "median_offset_s": 0, "peers": 0, "tolerance_s": 60})
    assert doctor.clock(lonely).verdict == "warn"


def test_each_neighbour_not_up_is_named_with_the_port_to_look_at() -> None:
    no_session = {
        "node_id": "B" * 43,
        "name": "b",
        "state": "down",
        "control": {"session": "down", "address": "192.0.2.2:6697", "refusal": None},
    }
    dead_link = {
        "node_id": "C" * 43,
        "name": "c",
        "state": "down",
        "endpoint": "192.0.2.3:51820",
        "listen_port": 51821,
        "control": {"session": "up"},
    }
    up = status()["neighbours"]
    found = doctor.neighbours(status(neighbours=[*up, no_session, dead_link]), 6697)
    assert [f.verdict for f in found] == ["fail", "fail"]
    assert "no session with b at 192.0.2.2:6697" in found[0].says and "UDP 6697" in found[0].says
    assert "192.0.2.3:51820" in found[1].says and "51821" in found[1].says
    assert doctor.neighbours(status(neighbours=[]), 6697)[0].verdict == "fail"
    assert [f.verdict for f in doctor.neighbours(status(), 6697)] == ["ok"]


def test_an_uplink_down_says_what_to_check() -> None:
    down = {"interface": "eth1", "state": "down", "reason": "no answer", "since_s": 9}
    found = doctor.uplink(status(gateway={"uplink": down}), "192.0.2.80:443")
    assert found.verdict == "fail" and "192.0.2.80:443" in found.says
    assert doctor.uplink(status(), "unset").verdict == "ok"


def test_a_certificate_near_its_end_warns_and_an_expired_one_fails() -> None:
    assert doctor.certificate(status(), NOW).verdict == "ok"
    soon = status(membership={"expires_at": NOW + 86400, "renewal": "asking"})
    assert doctor.certificate(soon, NOW).verdict == "warn"
    gone = status(membership={"expires_at": NOW - 86400, "renewal": "refused"})
    assert doctor.certificate(gone, NOW).verdict == "fail"


def test_disk_under_the_state_directory() -> None:
    assert doctor.disk(10, 1000, 5, "/var/lib/meshd").verdict == "fail"
    assert doctor.disk(100, 1000, 5, "/var/lib/meshd").verdict == "warn"
    assert doctor.disk(1000, 100_000, 5, "/var/lib/meshd").verdict == "warn"  # under 5 %
    assert doctor.disk(10_000, 100_000, 5, "/var/lib/meshd").verdict == "ok"
