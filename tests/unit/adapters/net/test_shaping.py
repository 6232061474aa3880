from __future__ import annotations

from meshd.adapters.net.shaping import exit_commands, uplink_commands


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


def test_without_a_line_rate_only_the_cap_applies() -> None:
    classes = _classes(uplink_commands("upl", None, 20_000))
    assert classes["1:20"][-6:-2] == ["rate", "20000kbit", "ceil", "20000kbit"]
    assert classes["1:10"][-6:-2] == ["rate", "10000000kbit", "ceil", "10000000kbit"]


def test_downloads_for_the_mesh_are_held_to_the_cap_on_the_exit_interface() -> None:
    (cmd,) = exit_commands("mwabcdefxg", 20_000)
    assert cmd[:7] == ["tc", "qdisc", "replace", "dev", "mwabcdefxg", "root", "tbf"]
    assert cmd[cmd.index("rate") + 1] == "20000kbit"
