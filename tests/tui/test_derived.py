"""The dashboard's pure parts: numbers as shown, the reasons in words, and what successive
status documents tell together (rates, withdrawn routes, a restarted daemon)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshd.api.schema import Neighbour, Status
from tests.tui.fakes import status
from tui import explain, fmt
from tui.explain import Level
from tui.model import Live
from tui.neighbours import describe

TERMS: Any = {"tolerance_percent": 2.0, "tolerance_bytes": 1000, "credit_bytes": 10_000}


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (5 << 40, "5.0 TiB"),
    ],
)
def test_sizes(n: int, shown: str) -> None:
    assert fmt.size(n) == shown


@pytest.mark.parametrize(
    ("s", "shown"),
    [(None, "-"), (4.25, "4.2s"), (59, "59s"), (75, "1m15s"), (7300, "2h01m"), (90000, "1d01h")],
)
def test_durations(s: float | None, shown: str) -> None:
    assert fmt.duration(s) == shown


def test_rates_fit_nine_characters() -> None:
    assert [fmt.rate(v) for v in (None, 12, 107110.4, 1023.9 * 1024**2)] == [
        "-",
        "12B/s",
        "104.6K/s",
        "1023.9M/s",
    ]


def test_sparklines_scale_to_their_largest_and_leave_idle_blank() -> None:
    assert fmt.sparkline([], 4) == "    "
    assert fmt.sparkline([0, 0], 4) == "    "
    assert fmt.sparkline([0, 1, 4, 8], 4) == " ▁▄█"
    assert fmt.sparkline([8, 1, 2, 3, 4, 5], 3) == "▅▇█"  # the last three only


def neighbour(**changes: Any) -> Neighbour:
    n = copy.deepcopy(status("demo-a-3")["neighbours"][0])
    control = changes.pop("control", {})
    n.update(changes)  # type: ignore[typeddict-item]
    n["control"].update(control)
    return n


@pytest.mark.parametrize(
    ("n", "level", "why"),
    [
        (neighbour(), Level.OK, "up (found by bootstrap)"),
        (neighbour(control={"reached": "punched"}), Level.OK, "up (punched through NAT)"),
        (neighbour(loss=0.12), Level.WARN, "up, but 12% of its probes are lost"),
        (
            neighbour(refusals={"unknown_origin": 2, "route_limit": 5, "malformed": 1}),
            Level.WARN,
            "up, but 7 of its routes refused (mostly more routes than a neighbour may send)",
        ),
        (
            neighbour(refusals={"wrong_origin": 2, "prefix_not_host": 5, "unknown_origin": 1}),
            Level.BAD,
            "up, but it sends what no honest meshd does (routes for a default or wider "
            "prefix): meshd block it?",
        ),
        (
            neighbour(refusals={"rate_link": 300, "unsigned": 1}),
            Level.BAD,
            "up, but it sends what no honest meshd does (link messages beyond their "
            "budget): meshd block it?",
        ),
        (
            neighbour(black_holes=["10.77.0.5/32"], refusals={"unsigned": 1}),
            Level.BAD,
            "up, but traffic to 1 destination(s) got no answer through it: "
            "kept out of those routes",
        ),
        (
            neighbour(state="down", liveness="down", silent_s=12.0),
            Level.BAD,
            "its WireGuard tunnel carries nothing (silent 12s)",
        ),
        (
            neighbour(state="connecting", control={"verified": False, "routing": False}),
            Level.WARN,
            "connected, checking its membership certificate",
        ),
        (
            neighbour(state="connecting", liveness="connecting", control={"routing": False}),
            Level.WARN,
            "connected, waiting for the WireGuard tunnel to carry packets",
        ),
        (
            neighbour(state="down", control={"session": "down", "refusal": "unknown_issuer"}),
            Level.BAD,
            "refused: its certificate is not signed by this mesh's admin",
        ),
        (
            neighbour(state="connecting", control={"session": "down", "refusal": "idle_timeout"}),
            Level.WARN,
            "reconnecting after: it stopped answering (idle timeout)",
        ),
        (
            neighbour(state="connecting", control={"session": "down", "refusal": "odd_code"}),
            Level.WARN,
            "reconnecting after: odd code",
        ),
        (
            neighbour(
                state="connecting",
                control={"session": "down", "refusal": None, "address": None, "found_by": []},
            ),
            Level.WARN,
            "no address known for it yet",
        ),
        (
            neighbour(
                state="connecting",
                control={"session": "down", "refusal": None, "found_by": ["beacon"]},
            ),
            Level.WARN,
            "dialling it (addresses from: beacon)",
        ),
    ],
)
def test_why_a_neighbour_is_in_its_state(n: Neighbour, level: Level, why: str) -> None:
    assert explain.neighbour(n) == explain.Why(level, why)


def test_a_neighbours_detail_lists_its_refusals_and_says_when_to_block_it() -> None:
    honest = describe(neighbour(refusals={"unknown_origin": 2})).plain
    assert "refused  2 unknown_origin" in honest and "meshd block" not in honest
    counts = {"rate_babel": 20, "unknown_origin": 1, "wrong_origin": 7, "rate_link": 3,
              "malformed": 2}  # fmt: skip
    n = neighbour(refusals=counts)
    shown = describe(n).plain.splitlines()
    assert shown[-2:] == [
        "refused  20 rate_babel · 7 wrong_origin · 3 rate_link · 2 malformed · 1 more",
        f"hostile? meshd block {n['node_id']}",
    ]


def test_why_traffic_leaves_as_it_does() -> None:
    e: Any = status("demo-e-1")["gateway"]
    names = {"u4GJyql7MgnnwjhwDPRiLOrxyNEbU6iin--YWnwHDZo": "a"}
    assert explain.way_out(e, names).text.startswith("leaving by a's uplink: selected: kept")
    granted_not: Any = {**e, "using": "none"}
    assert explain.way_out(granted_not, names).level is Level.WARN
    stranded: Any = {**e, "using": "none", "selected": None}
    assert explain.way_out(stranded, names) == explain.Why(
        Level.BAD, "no way out: no working uplink and no usable gateway"
    )
    a: Any = status("demo-a-3")["gateway"]
    down: Any = {**a, "uplink": {**a["uplink"], "state": "down", "reason": "3 checks failed"}}
    assert explain.uplink(down) == explain.Why(
        Level.BAD, "uplink upl down for 16m51s: 3 checks failed"
    )


def provider(**changes: Any) -> Any:
    p = {
        "epoch": 1,
        "seq": 3,
        "claimed_for_bytes": 50_000,
        "claimed_to_bytes": 0,
        "receipted_for_bytes": 50_000,
        "receipted_to_bytes": 0,
        "unreceipted_bytes": 0,
        "credit_bytes": 10_000,
        "state": "ok",
        "reason": None,
        "disputes": 0,
    }
    return {**p, **changes}


@pytest.mark.parametrize(
    ("p", "level", "why"),
    [
        (provider(), Level.OK, "e signs our claims"),
        (
            provider(state="throttled", reason="no_receipts", unreceipted_bytes=12_000),
            Level.BAD,
            "throttling e: claims left unsigned beyond the credit allowance "
            "(11.7 KiB unsigned, credit 9.8 KiB)",
        ),
        (provider(disputes=2), Level.WARN, "2 disputes: e signed less than we claimed"),
        (
            provider(receipted_for_bytes=40_000),  # tolerance: 800 + 1000
            Level.WARN,
            "our last claim is beyond e's signed figure: 9.8 KiB more, tolerance 1.8 KiB",
        ),
        (provider(receipted_for_bytes=48_500), Level.OK, "e signs our claims"),
        (
            provider(unreceipted_bytes=9_000),
            Level.WARN,
            "e has used most of its credit; throttled at the limit",
        ),
    ],
)
def test_why_as_provider(p: Any, level: Level, why: str) -> None:
    assert explain.provider(p, "e", TERMS) == explain.Why(level, why)


def test_why_as_consumer() -> None:
    c: Any = {
        "epoch": 1,
        "seq": 2,
        "signed_for_bytes": 1,
        "signed_to_bytes": 2,
        "throttled": False,
        "reason": None,
        "disputes": 0,
    }
    assert explain.consumer(c, "a").level is Level.OK
    throttled: Any = {**c, "throttled": True, "reason": "no_receipts"}
    assert explain.consumer(throttled, "a") == (
        explain.Why(Level.BAD, "a throttles us: claims left unsigned beyond the credit allowance")
    )
    disputed: Any = {**c, "disputes": 1}
    assert explain.consumer(disputed, "a") == (
        explain.Why(Level.WARN, "1 dispute: we signed less than a claimed")
    )


def test_rates_come_from_the_daemons_uptime() -> None:
    live = Live()
    for name in ("demo-a-1", "demo-a-2", "demo-a-3"):
        live.update(status(name))
    b = live.rates["tlQyES5ZiAxDFXLkgvFDxUIRPzrNqogGIOZoCpxYxKA"]
    assert [round(v) for v in b.rx] == [105355, 113387]  # bytes over 1.5 s, twice
    live.update(status("demo-a-3"))  # the same document again: no new rate
    assert len(b.rx) == 2


def test_plots_take_the_mean_of_each_column_the_oldest_may_be_short() -> None:
    assert fmt.buckets([1, 2, 3, 4, 5, 6, 7], 3, 2) == [2.5, 4.5, 6.5]  # the last six
    assert fmt.buckets([1, 2, 3, 4, 5, 6, 7], 4, 2) == [1.0, 2.5, 4.5, 6.5]
    assert fmt.buckets([1, 2, 3, 4, 5, 6, 7], 2, 2) == [4.5, 6.5]  # the last four only
    assert fmt.buckets([], 4, 5) == []


def test_the_uplink_has_rates_of_its_own_once_its_counters_come() -> None:
    live = Live()
    for i, uptime in enumerate((10.0, 12.0)):
        doc: Status = copy.deepcopy(status("demo-a-1"))
        doc["uptime_s"] = uptime
        gateway = doc["gateway"]
        assert gateway["uplink"] is not None
        gateway["uplink"].update(rx_bytes=1000 + 4000 * i, tx_bytes=500 + 1000 * i)
        live.update(doc)
    assert (list(live.uplink.rx), list(live.uplink.tx)) == ([2000.0], [500.0])


def test_a_counter_that_went_back_gives_no_rate() -> None:
    live = Live()
    first, second = status("demo-a-1"), copy.deepcopy(status("demo-a-2"))
    second["neighbours"][0]["rx_bytes"] = 10  # the interface was made again
    live.update(first)
    live.update(second)
    assert not live.rates[first["neighbours"][0]["node_id"]].rx


def test_a_restarted_daemon_starts_the_derived_figures_again() -> None:
    live = Live()
    live.update(status("lose-e-a-before-1"))
    live.update(status("lose-e-a-1"))
    assert sorted(live.withdrawn) == [
        "10.77.0.5/32",
        "fd6d:6573:6864:1351:3735:d6d4:90f6:72e2/128",
    ]
    restarted: Status = copy.deepcopy(status("demo-a-1"))
    restarted["uptime_s"] = 3.0
    live.update(restarted)
    assert not live.withdrawn
    assert all(len(r.rx) == 0 for r in live.rates.values())


def test_a_withdrawn_route_says_its_link_went_down_and_is_forgotten_later() -> None:
    live = Live()
    before = status("demo-a-3")
    after = copy.deepcopy(before)
    b = after["neighbours"][0]
    b.update({"state": "down", "liveness": "down", "silent_s": 5.0})
    after["routes"] = [r for r in after["routes"] if r["via"] != b["node_id"]]
    after["uptime_s"] = before["uptime_s"] + 2
    live.update(before)
    live.update(after)
    why = {w.why for w in live.withdrawn.values()}
    assert why == {"the link to b is down: its WireGuard tunnel carries nothing (silent 5.0s)"}
    later = copy.deepcopy(after)
    later["uptime_s"] = after["uptime_s"] + 121
    live.update(later)
    assert not live.withdrawn


def test_the_households_devices_show_on_one_line_and_a_bad_book_needs_attention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tui import overview

    monkeypatch.setattr(overview.time, "time", lambda: 1_000_100.0)
    phone = {"name": "phone", "last_handshake": 1_000_088.0, "rx_bytes": 1024, "tx_bytes": 512}
    laptop = {"name": "laptop", "last_handshake": None, "rx_bytes": 0, "tx_bytes": 0}
    s: Any = {**status("demo-a-3"), "devices": {"unreadable": None, "items": [phone, laptop]}}
    assert (
        overview.devices(s) == f"phone ({fmt.duration(12)} ago, 1.5 KiB), laptop (never seen, 0 B)"
    )
    assert overview.devices(status("demo-a-3")) == ""  # an older daemon: no devices
    live = Live()
    live.update({**s, "devices": {"unreadable": "devices.json: bad", "items": []}})
    assert explain.Why(Level.BAD, "devices: devices.json: bad") in overview.attention(live)


def test_who_governs_the_mesh_shows_and_an_emergency_revocation_needs_attention() -> None:
    from tui import overview

    a = status("demo-a-3")
    b = a["neighbours"][0]
    mesh = {"serial": 4, "admins": ["A", "B", "C"], "threshold": 2, "emergency_threshold": 1}
    s: Any = {**a, "mesh": {**mesh, "emergency_revoked": [b["node_id"]]}}
    assert overview.governance(s) == (
        "\nadmins   3 · 2 sign a change · 1 revoke in an emergency · definition 4"
    )
    assert overview.governance(status("demo-a-3")) == ""  # an older daemon: no line
    live = Live()
    live.update(s)
    assert explain.Why(
        Level.WARN,
        f"{b['name']}: revoked in an emergency by 1 of 3 admins, fewer than the 2 a"
        " revocation takes",
    ) in overview.attention(live)
    live.update({**s, "mesh": {**mesh, "emergency_revoked": []}})
    assert not [w for w in overview.attention(live) if "emergency" in w.text]
    pending = {"id": "a3eb9439cf9f", "what": "revocation of node x", "signed_by": ["A"]}
    withdrawn = {**pending, "id": "000000000000", "withdrawn": True}
    live.update({**s, "proposals": [{**pending, "needed": 2, "withdrawn": False}, withdrawn]})
    assert [w.text for w in overview.attention(live) if "proposal" in w.text] == [
        "proposal a3eb9439cf9f: revocation of node x, signed by 1 of the 2 admins it needs"
        " (`meshd proposals`)"
    ]


def test_an_update_on_trial_or_rolled_back_needs_attention() -> None:
    from tui import overview

    a = status("demo-a-3")
    live = Live()
    live.update(a)
    assert not [w for w in overview.attention(live) if w.text.startswith("update:")]
    concerns = ["release 4 rolled back here: no routes (5 before the update)"]
    releases = {**(a.get("releases") or {}), "installs": {"concerns": concerns}}
    live.update({**a, "releases": releases})
    assert explain.Why(Level.WARN, f"update: {concerns[0]}") in overview.attention(live)
