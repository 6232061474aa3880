"""Fair gateways (issue 18, item 5) on netns-testbed/topologies/share3.toml: gateway a
shares a 50 Mbit/s line with a 20 Mbit/s mesh cap; b (with a LAN) and c have no uplink and
leave by exit tunnels to a.

Under the mesh's class, on a's uplink and on its exit interface, each exit user has a class
of its own (meshd.adapters.net.shaping.FairShare), with a short queue, and nftables puts
its packets there by its mesh address; a released user's class goes. The shares and the
waits they give are measured in netns-testbed/benchmarks/fair.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.netns import meshbed
from tests.netns.test_mesh_exits import SERVER
from tests.netns.test_mesh_exits import Bed as ExitsBed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
USERS = ("b", "c")
BIG_FILE_BYTES = 4 * 1024 * 1024  # the testbed internet's big.bin (nstestbed.lifecycle)


class Bed(ExitsBed):
    def name_of(self, node_id: str | None) -> str | None:
        names = {self.status(n)["node_id"]: n for n in "abc"}
        return names.get(node_id) if node_id else None

    def exit_interface(self) -> str:
        links = json.loads(self.sh("a", "ip", "-j", "link", "show"))
        return next(link["ifname"] for link in links if link["ifname"].endswith("xg"))

    def classes(self, ifname: str) -> dict[str, dict[str, str]]:
        """a's HTB classes on ``ifname``: handle -> their fields (parent, rate, ceil,
        quantum, and the bytes sent as "sent"), from ``tc -s -d class show`` (no JSON)."""
        shown = self.sh("a", "tc", "-s", "-d", "class", "show", "dev", ifname)
        classes = {}
        for block in shown.split("class htb ")[1:]:
            words = block.split()
            fields = {words[i]: words[i + 1] for i in range(1, len(words) - 1)}
            fields["sent"] = words[words.index("Sent") + 1]
            classes[words[0]] = fields
        return classes

    def queues(self, ifname: str) -> dict[str, str]:
        """a's qdiscs on ``ifname``: parent class -> kind."""
        shown = json.loads(self.sh("a", "tc", "-j", "qdisc", "show", "dev", ifname))
        return {q.get("parent", "root"): q["kind"] for q in shown}

    def users(self, direction: str) -> dict[str, str]:
        """The exit users' classes by mesh address, from table meshd_fair's map."""
        listing = json.loads(
            self.sh("a", "nft", "-j", "list", "map", "inet", "meshd_fair", direction)
        )
        (m,) = [o["map"] for o in listing["nftables"] if "map" in o]
        return {str(k): str(v) for k, v in m.get("elem", [])}

    def sent(self, ifname: str, classid: str) -> int:
        return int(self.classes(ifname)[classid]["sent"])


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("share3.toml", "fg", Bed) as b:
        for node in USERS:
            b.wait(f"{node} leaves by a", lambda n=node: b.exit_of(n) == "a", 30)
        yield b


def test_each_exit_user_has_a_class_of_its_own_in_each_direction(bed: Bed) -> None:
    xg = bed.exit_interface()
    address = {n: bed.status(n)["mesh_ipv4"] for n in USERS}
    for direction, ifname in (("up", "upl"), ("down", xg)):
        users = bed.users(direction)
        assert set(users) == set(address.values()), users
        assert users[address["b"]] != users[address["c"]]
        classes, queues = bed.classes(ifname), bed.queues(ifname)
        for classid in users.values():
            assert classes[classid]["parent"] == "1:20", classes[classid]
            assert queues[classid] in ("pfifo", "fq_codel"), queues
        # The same rate and quantum for both: what is left is split alike.
        b, c = (classes[users[address[n]]] for n in USERS)
        assert b["rate"] == c["rate"] and b["ceil"] == c["ceil"] and b["quantum"] == c["quantum"]


def test_a_users_packets_go_in_its_class(bed: Bed) -> None:
    xg = bed.exit_interface()
    address = {n: bed.status(n)["mesh_ipv4"] for n in USERS}
    down = {n: bed.users("down")[address[n]] for n in USERS}
    up = {n: bed.users("up")[address[n]] for n in USERS}
    before_down = {n: bed.sent(xg, down[n]) for n in USERS}
    before_up = {n: bed.sent("upl", up[n]) for n in USERS}
    bed.sh("c", "curl", "-sS", "-m", "20", "-o", "/dev/null", f"http://{SERVER}/big.bin")
    bed.sh("c", "ping", "-n", "-q", "-c", "20", "-i", "0.05", "-s", "1000", SERVER)
    grown_down = {n: bed.sent(xg, down[n]) - before_down[n] for n in USERS}
    grown_up = {n: bed.sent("upl", up[n]) - before_up[n] for n in USERS}
    assert grown_down["c"] > BIG_FILE_BYTES and grown_down["b"] < BIG_FILE_BYTES // 10, grown_down
    assert grown_up["c"] > 20 * 1000 and grown_up["b"] < 20 * 1000, grown_up


def test_a_released_user_loses_its_class(bed: Bed) -> None:
    c = bed.status("c")
    address = c["mesh_ipv4"]
    classid = bed.users("down")[address]
    bed.sh("a", "meshd", "block", c["node_id"])
    try:
        bed.wait("c's class goes", lambda: address not in bed.users("down"), 10)
        assert address not in bed.users("up")
        assert classid not in bed.classes(bed.exit_interface())
    finally:
        bed.sh("a", "meshd", "block", "--undo", c["node_id"])
    bed.wait("c is a user again", lambda: address in bed.users("down"), 30)
