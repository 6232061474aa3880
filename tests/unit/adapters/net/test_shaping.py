from __future__ import annotations

from meshd.adapters.net.shaping import (
    MESH_CLASS,
    MESH_OTHER,
    exit_commands,
    render_fair,
    short_queue,
    uplink_commands,
    user_class,
    user_commands,
)


def _classes(cmds: list[list[str]]) -> dict[str, list[str]]:
    return {c[c.index("classid") + 1]: c for c in cmds if "classid" in c}


def test_the_owner_gets_what_the_cap_leaves_and_may_borrow_the_whole_line() -> None:
    cmds = uplink_commands("upl", 50_000, 20_000)
    assert cmds[0][:6] == ["tc", "qdisc", "replace", "dev", "upl", "root"]
    assert cmds[0][-2:] == ["default", "10"]  # unclassified traffic is the household's
    classes = _classes(cmds)
    line = str(round(50_000 * 0.96)) + "kbit"
    assert classes["1:1"][-4:] == ["rate", line, "ceil", line]
    owner, mesh = classes["1:10"], classes["1:20"]
    assert owner[-6:] == ["rate", "28000kbit", "ceil", line, "prio", "0"]
    assert mesh[-6:] == ["rate", "20000kbit", "ceil", "20000kbit", "prio", "1"]
    # The mesh's packets of no admitted user have a class of their own in the mesh's.
    other = classes[MESH_OTHER]
    assert other[other.index("parent") + 1] == MESH_CLASS
    assert other[other.index("ceil") + 1] == "20000kbit"


def test_without_a_line_rate_only_the_cap_applies() -> None:
    classes = _classes(uplink_commands("upl", None, 20_000))
    assert classes["1:20"][-6:-2] == ["rate", "20000kbit", "ceil", "20000kbit"]
    assert classes["1:10"][-6:-2] == ["rate", "10000000kbit", "ceil", "10000000kbit"]


def test_downloads_for_the_mesh_are_held_to_the_cap_on_the_exit_interface() -> None:
    cmds = exit_commands("mwabcdefxg", 20_000)
    assert cmds[0][:7] == ["tc", "qdisc", "replace", "dev", "mwabcdefxg", "root", "handle"]
    assert cmds[0][-2:] == ["default", MESH_OTHER.split(":")[1]]
    mesh = _classes(cmds)[MESH_CLASS]
    assert mesh[-4:] == ["rate", "20000kbit", "ceil", "20000kbit"]


def test_every_user_class_has_the_same_rate_and_quantum_and_may_borrow_the_cap() -> None:
    a, b = (_classes(user_commands("upl", slot, 20_000, ["pfifo"])) for slot in (0x100, 0x101))
    (ca,), (cb,) = a.values(), b.values()
    assert user_class(0x100) in a and user_class(0x101) in b and user_class(0x100) != "1:256"
    assert ca[ca.index("parent") + 1] == MESH_CLASS
    for field in ("rate", "ceil", "quantum", "prio"):
        assert ca[ca.index(field) + 1] == cb[cb.index(field) + 1]
    assert ca[ca.index("ceil") + 1] == "20000kbit"
    assert ca[ca.index("rate") + 1] == "1250kbit"  # assured: the cap over 16


def test_a_user_queue_is_short() -> None:
    assert short_queue(20_000, fq_codel=True) == ["fq_codel"]
    # 20 ms at 20 Mbit/s is 50 kB: 34 full frames.
    assert short_queue(20_000, fq_codel=False) == ["pfifo", "limit", "34"]
    assert short_queue(500, fq_codel=False) == ["pfifo", "limit", "8"]  # never a trickle


def test_users_are_classified_by_their_address_on_each_shaped_interface() -> None:
    both = render_fair("mwxg", {"upl": 19_200, "mwxg": 20_000})
    assert 'iifname "mwxg" oifname "upl" meta priority set ip saddr map @up' in both
    assert 'oifname "mwxg" meta priority set ip daddr map @down' in both
    assert "map up { type ipv4_addr : classid; }" in both
    upload_only = render_fair("mwxg", {"upl": 19_200})
    assert "@down" not in upload_only.split("chain")[1]
