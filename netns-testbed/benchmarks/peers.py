"""peers: meshd beside babeld on the same ring, in the same run (issue 18, item 6).

babeld (Debian's, 1.12) runs on ring5's five nodes over WireGuard tunnels made by hand with
`wg` on the same backend as meshd's links (wireguard-go), one per ring link, beside meshd's
own, as the data plane benchmark makes its baseline (no persistent keepalive: babeld's
hellos keep them busy); each node announces an address of its own, 10.253.0.<i>/32 on
``lo``. Both are measured the same way in the same run:

- failover: a pings c (two hops either way round the ring) every 50 ms while a's link on
  the path is cut silently (`testbed cut`: the underlay drops every packet between the
  two, interfaces up), the longest run of unanswered probes (failover.ping_through);
  ``peers.failover.<who>.median_s`` over the repetitions, and meshd's median as a ratio to
  each babeld's (``peers.failover.meshd_to_<who>``: below 1, meshd is faster).
- idle underlay bytes per link per second, both directions, of a quiet mesh: what arrives
  on the ring's underlay interfaces from each one's UDP ports (nftables counters), over
  IDLE_S; ``peers.idle.<who>.bytes_per_s_per_link`` and the ratio likewise.

<who> is ``meshd``, ``babeld`` (its default timers: a hello every 4 s) and
``babeld_tuned`` (a hello every TUNED_HELLO_S on each tunnel: twenty a second. babeld
counts the interval in centiseconds and may take shorter ones; this one already costs
hundreds of times meshd's idle bytes). babeld listens on BABELD_PORT, since meshd's probes
hold Babel's own port in each node. There are no targets here: the figures are what they
are, and the README quotes them; a path not restored within its window, or a counter that
saw nothing, fails the benchmark."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from benchmarks.dataplane import BASE_NET, BASE_PORT, _ns, hand_configured_wg, path_hops
from benchmarks.failover import Outage, cut_outages, ping_through
from benchmarks.results import Result
from benchmarks.testbed import HERE, Testbed

RING = ["a", "b", "c", "d", "e"]
OWN_NET = "10.253.0"  # node i announces OWN_NET.<i + 1>
TUNED_HELLO_S = 0.05
IDLE_S = 30.0
SETTLE_S = 60.0  # after convergence, before meshd's idle bytes are counted
MESHD_PORTS = "6697, 51820-52819"  # its sessions and its links' range (the defaults)
HAND_PORTS = f"{BASE_PORT}-{BASE_PORT + 2 * len(RING) - 1}"  # the tunnels babeld runs over
TABLE = "peersbench"
BABELD_PORT = 16696  # meshd's probes hold Babel's own 6696 in each node


def _tunnels(ns: str) -> list[str]:
    """The hand-made tunnels in ``ns`` (hand_configured_wg's ``bw`` interfaces)."""
    links = json.loads(_ns(ns, "ip", "-j", "link", "show"))
    return sorted(link["ifname"] for link in links if link["ifname"].startswith("bw"))


@contextmanager
def babeld(namespaces: list[str], state: Path, hello_s: float | None) -> Iterator[None]:
    """babeld in each namespace on its tunnels (``hello_s``: None, its default), announcing
    the node's own address; stopped afterwards."""
    pids: list[int] = []
    try:
        for i, ns in enumerate(namespaces):
            hello = f" hello-interval {hello_s}" if hello_s is not None else ""
            conf = state / f"babeld-{i}.conf"
            conf.write_text(
                "".join(f"interface {t} type tunnel{hello}\n" for t in _tunnels(ns))
                + f"redistribute local ip {OWN_NET}.0/24 ge 32 allow\n"
                # The tunnels' own addresses too: a ping leaves from the one its route takes.
                + f"redistribute local ip {BASE_NET}.0.0/16 ge 32 allow\n"
                + "redistribute local deny\nredistribute deny\n"
            )
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "babeld", "-c", str(conf), "-p", str(BABELD_PORT),
                 "-I", str(state / f"babeld-{i}.pid"), "-S", str(state / f"babeld-{i}.state")],
                stdout=subprocess.DEVNULL,
                stderr=(state / f"babeld-{i}.log").open("w"),
            )  # fmt: skip
            pids.append(proc.pid)
        yield
    finally:
        for pid in pids:
            subprocess.run(["kill", str(pid)], capture_output=True)
        time.sleep(0.5)  # babeld retracts its routes on SIGTERM


def _routes_to(ns: str, address: str) -> str | None:
    """The interface ``ns`` routes ``address`` by, or None without a route."""
    out = json.loads(_ns(ns, "ip", "-j", "route", "show", f"{address}/32"))
    return str(out[0]["dev"]) if out and "dev" in out[0] else None


def _wait(what: str, done: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"peers: {what} not within {within:g} s")
        time.sleep(0.2)


def _settled(ns_a: str, by_dev: dict[str, str]) -> bool:
    """a routes to every node, to b and e by its own tunnels."""
    direct = {by_dev[dev]: dev for dev in by_dev}
    routes = {i: _routes_to(ns_a, f"{OWN_NET}.{i}") for i in range(2, 6)}
    return all(routes.values()) and (routes[2], routes[5]) == (direct["b"], direct["e"])


def _counters(namespaces: list[str]) -> dict[str, int]:
    """Bytes that arrived on the ring's underlay interfaces, by whose ports they came from."""
    total = {"meshd": 0, "babeld": 0}
    for ns in namespaces:
        doc = json.loads(_ns(ns, "nft", "-j", "list", "table", "inet", TABLE))
        for item in doc["nftables"]:
            counter = item.get("counter")
            if counter and counter["name"] in total:
                total[counter["name"]] += int(counter["bytes"])
    return total


def _count(namespaces: list[str]) -> None:
    """Counters of what arrives on the ring's underlay, by whose ports sent it (the hand
    tunnels' ports lie inside meshd's range: they are counted first, and apart)."""
    for ns in namespaces:
        _ns(
            ns,
            "nft",
            "-f",
            "-",
            input=f"""table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
	counter meshd {{}}
	counter babeld {{}}
	chain count {{
		type filter hook prerouting priority raw - 5; policy accept;
		iifname "u-*" udp sport {HAND_PORTS} counter name babeld accept
		iifname "u-*" udp sport {{ {MESHD_PORTS} }} counter name meshd
	}}
}}
""",
        )


def _idle(namespaces: list[str], seconds: float) -> dict[str, float]:
    """Underlay bytes per link per second of each, over ``seconds`` of a quiet mesh."""
    before = _counters(namespaces)
    time.sleep(seconds)
    after = _counters(namespaces)
    links = len(RING)
    return {who: (after[who] - before[who]) / links / seconds for who in before}


def _babeld_outages(tb: Testbed, ns: str, by_dev: dict[str, str], reps: int) -> list[Outage]:
    target = f"{OWN_NET}.3"  # c
    outages = []
    for _ in range(reps):
        dev = _routes_to(ns, target)
        assert dev is not None
        via = by_dev[dev]
        try:
            outages.append(ping_through(ns, target, partial(tb.cli, "cut", "a", via)))
        finally:
            tb.cli("heal", "a", via)
        _wait("babeld back on its first path", lambda dev=dev: _routes_to(ns, target) == dev, 90)
    return outages


def peers(quick: bool) -> list[Result]:
    reps = 3 if quick else 5
    idle_s = 10.0 if quick else IDLE_S
    tb = Testbed("mbp")
    results: list[Result] = []
    medians: dict[str, float] = {}
    idle: dict[str, float] = {}
    with tb.up(HERE / "topologies" / "ring5.toml"):
        namespaces = [tb.namespace(n) for n in RING]
        ns_a = namespaces[0]
        state = Path(tb.env["MESHD_TESTBED_DIR"])
        for i, ns in enumerate(namespaces):
            _ns(ns, "ip", "addr", "add", f"{OWN_NET}.{i + 1}/32", "dev", "lo")
            _ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _count(namespaces)
        ring = [*namespaces, namespaces[0]]
        with hand_configured_wg(ring, path_hops(tb, [*RING, "a"]), keepalive=0, route=False):
            # meshd's idle first, before any cut, and once its start is over (its first
            # minute carries the directory, the map and Babel's first updates: 132.8 B/s
            # counted 5 s after convergence on 2026-12-08, 33.6-67.6 later in that day's runs).
            time.sleep(SETTLE_S)
            idle["meshd"] = _idle(namespaces, idle_s)["meshd"]
            # a's tunnel to b is hop 0's near end, its tunnel to e hop 4's far end.
            a_tunnels = _tunnels(ns_a)
            by_dev = {next(t for t in a_tunnels if t.endswith("0a")): "b",
                      next(t for t in a_tunnels if t.endswith("4b")): "e"}  # fmt: skip
            for who, hello in (("babeld", None), ("babeld_tuned", TUNED_HELLO_S)):
                with babeld(namespaces, state, hello):
                    _wait(
                        f"{who}'s routes from a to every node", partial(_settled, ns_a, by_dev), 90
                    )
                    time.sleep(5)  # settled
                    idle[who] = _idle(namespaces, idle_s)["babeld"]
                    outages = _babeld_outages(tb, ns_a, by_dev, reps)
                medians[who] = statistics.median(o.seconds for o in outages)
                figure = round(medians[who], 2)
                results.append(Result(f"peers.failover.{who}.median_s", figure, "s"))
                if not all(o.restored for o in outages):
                    raise RuntimeError(f"peers: a path of {who} was not restored in its window")
            outages = cut_outages(tb, reps)
            medians["meshd"] = statistics.median(o.seconds for o in outages)
            if not all(o.restored for o in outages):
                raise RuntimeError("peers: a path of meshd was not restored in its window")
    results.append(Result("peers.failover.meshd.median_s", round(medians["meshd"], 2), "s"))
    if not all(idle.values()):  # a counter that saw nothing measured nothing
        raise RuntimeError(f"peers: no idle bytes counted for some: {idle}")
    for who in ("meshd", "babeld", "babeld_tuned"):
        results.append(Result(f"peers.idle.{who}.bytes_per_s_per_link", round(idle[who], 1), "B/s"))
    for who in ("babeld", "babeld_tuned"):
        results.append(
            Result(
                f"peers.failover.meshd_to_{who}", round(medians["meshd"] / medians[who], 3), "ratio"
            )
        )
        results.append(
            Result(f"peers.idle.meshd_to_{who}", round(idle["meshd"] / idle[who], 3), "ratio")
        )
    return results
