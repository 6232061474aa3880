"""Members that lie (issue 28), on a star around b (a, c and r its neighbours, none with an
uplink) whose certificates and mesh were issued three days ago. a's meshd is stopped and
a's keys speak for it (tests/netns/hostile_peer.py).

The clock. An admin revokes r. Then a's keys (a's meshd stopped) dial b, showing a certificate of
a's that was valid two days ago to one day ago (signed by the mesh's admin: one a once
held) and CLOCK at 36 hours ago, when that certificate and b's own were valid and r was
not yet revoked. Before this issue b took that offset alone (c's certificate verifies at
b's time, so c gave none): b's clock went back 36 hours, a's old certificate was valid
again, and so was r, whose revocation was not in force yet at that time. Now every
verified neighbour's offset counts and b's own clock votes while its own certificate
holds: b's clock stays, a's lie is refused as expired, and r's keys are refused as
revoked, also by the clock's floor (the newest revocation in force), whatever the
neighbours say.

The stale-clock case (a Pi booting 180 days behind still converges) is
tests/netns/test_lifecycle.py's; each rule on its own is tests/unit/core/membership/
test_membership_renewal.py's.

Gateway adverts. a floods b adverts for a gateway at c's address (b routes to it, so
before this issue b chose it and dialled c for a gateway that is not there, every 2 s):
one signed by a key no admin certified, one by a's own key. b takes neither (the first
is held until a certificate for its key arrives, which none will; the second is counted
in a's refusals) and chooses no gateway.

The map. a's keys send b map records that lie (another mesh's, from the future, c's
changed) and then a hundred of its own at once: each lie is counted, and c, which hears a's
records through b alone, sees only the first and, 30 s on, the newest.

Message rates. a's keys flood b with each costly kind in turn, far beyond its budget; b's
meshd stays under a quarter of a core, its link to c never goes down, each kind is
counted; a forged admin signature closes a's session."""

from __future__ import annotations

import ipaddress
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import meshbed
from tests.netns.test_hostile_input import Bed, assert_b_still_routes_for_c, membership_message

pytestmark = [*meshbed.NEEDS_ROOT_AND_WIREGUARD, pytest.mark.timed]
DAY = 86400
LIE_S = 36 * 3600  # how far back the liar says the time is
TOPOLOGY = f"""
[nodes.a]
cert_age_s = {3 * DAY}
[nodes.b]
cert_age_s = {3 * DAY}
[nodes.c]
cert_age_s = {3 * DAY}
[nodes.r]
cert_age_s = {3 * DAY}
[[links]]
between = ["a", "b"]
[[links]]
between = ["b", "c"]
[[links]]
between = ["b", "r"]
"""


def session_as(
    peer: Any, state_dir: Path, messages: list[bytes], linger: float = 3.0, **more: Any
) -> Any:
    """One session with b as the node of ``state_dir``, sending ``messages`` once it is up
    (``more``: the rest of hostile_peer.py's command). Retried while b takes no session:
    for 5 s after that node's last session came up, b may take a new one for the other
    half of a simultaneous dial and keep the old one."""
    deadline = time.monotonic() + 20
    while True:
        result = peer.attempt(
            state_dir=str(state_dir), messages=[m.hex() for m in messages], linger=linger, **more
        )
        if result["up"] or time.monotonic() > deadline:
            return result
        time.sleep(1)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    topology = tmp_path_factory.mktemp("clock") / "topology.toml"
    topology.write_text(TOPOLOGY)
    with meshbed.testbed(topology, "hm", Bed) as b:
        yield b


def test_a_member_lying_about_the_time_moves_no_clock_and_a_revoked_node_stays_out(
    bed: Bed, tmp_path: Path
) -> None:
    from meshd.adapters import identity
    from meshd.core.membership import (
        MembershipCertificate,
        MeshDefinition,
        RevocationTarget,
        issue_membership,
        revoke,
    )
    from meshd.core.proto import session

    admin = identity.load(bed.dir / "admin")
    mesh = MeshDefinition.decode((bed.state("b") / "mesh.cert").read_bytes())
    a_cert = MembershipCertificate.decode((bed.state("a") / "membership.cert").read_bytes())
    now = int(time.time())
    old = issue_membership(
        admin.signing_key,
        mesh=mesh,
        node_id=a_cert.node_id,
        name=a_cert.name,
        wireguard_public=a_cert.wireguard_public,
        mesh_ipv4=a_cert.mesh_ipv4,
        not_before=now - 2 * DAY,
        expires_at=now - DAY,
        serial=a_cert.serial + 100,
    )
    revocation = tmp_path / "r.revocation"
    r_id = bed.status("r")["node_id"]
    target = RevocationTarget.node(r_id)
    record = revoke(admin.signing_key, mesh=mesh, target=target, revoked_at=now)
    revocation.write_bytes(record.encode())
    assert "1 new" in bed.sh("b", "meshd", "revocations", "add", str(revocation))
    bed.wait("b drops r", lambda: "r" not in bed.link_states("b", "r"), within=15)
    bed.run("kill", "r")
    b_id = bed.status("b")["node_id"]
    lie = session.encode(session.Clock((now - LIE_S) * 1000))
    bed.run("kill", "a")
    with bed.hostile_peer("a", bed.underlay_address("b", towards="a"), b_id) as liar:
        for attempt in range(3):
            result = session_as(liar, bed.state("a"), [lie, membership_message(old.encode())])
            assert result["up"], result  # a's key: a session, then its certificate
            closed = result["closed"]
            assert closed is not None and closed["by_peer"], (attempt, result)
            assert closed["reason"] == "expired", result
    clock = bed.status("b")["clock"]
    print(f"b's clock after 3 lies: {clock}")
    assert clock["correction_s"] == 0 and abs(clock["now"] - time.time()) < 10, clock
    assert clock["floor"] >= now  # r's revocation, in force: never below it again
    r_cert = (bed.state("r") / "membership.cert").read_bytes()
    with bed.hostile_peer("r", bed.underlay_address("b", towards="r"), b_id) as revoked:
        result = revoked.attempt(
            state_dir=str(bed.state("r")), messages=[membership_message(r_cert).hex()], linger=2.0
        )
    assert not result["up"] and result["closed"]["reason"] == "revoked", result
    states = bed.link_states("b", "a", "r", "c")
    assert "r" not in states and states["a"] != "up" and states["c"] == "up", states


def test_a_fake_gateway_gets_no_user(bed: Bed, tmp_path: Path) -> None:
    from meshd.adapters import identity
    from meshd.core.membership import MeshDefinition
    from meshd.core.proto import session
    from meshd.core.proto.gateway import make_advert

    mesh = MeshDefinition.decode((bed.state("b") / "mesh.cert").read_bytes())
    status = bed.status("b")
    c_ipv4 = bed.status("c")["mesh_ipv4"]
    fake = identity.generate(tmp_path / "fake")
    a = identity.load(bed.state("a"))
    adverts = [
        make_advert(
            key,
            mesh_id=mesh.mesh_id,
            mesh_ipv4=ipaddress.IPv4Address(c_ipv4),
            exit_port=52820,
            seqno=1,
            issued_at=int(time.time()),
            lifetime_s=600,
        )
        for key in (fake.signing_key, a.signing_key)
    ]
    a_cert = (bed.state("a") / "membership.cert").read_bytes()
    messages = [membership_message(a_cert)] + [
        session.encode(session.Gateway(advert.encode())) for advert in adverts
    ]
    bed.run("kill", "a", check=False)  # stopped already when the clock's test ran first
    with bed.hostile_peer("a", bed.underlay_address("b", towards="a"), status["node_id"]) as liar:
        result = session_as(liar, bed.state("a"), messages)
    assert result["up"] and result["sent"] == len(messages), result
    after = bed.status("b")
    (a_seen,) = [n for n in after["neighbours"] if n["name"] == "a"]
    refusals = a_seen["refusals"]
    assert refusals.get("gateway_not_its_address") == 1, a_seen
    assert "gateway_not_a_member" not in refusals  # held until a certificate comes: none will
    gateway = after["gateway"]
    assert gateway["selected"] is None and gateway["candidates"] == [], gateway


def map_record(key: Any, mesh_id: bytes, seqno: int, **fields: Any) -> Any:
    """``key``'s map record, issued now."""
    from tests.golden.map.make_vectors import signed

    return signed(key, mesh_id, seqno, int(time.time()), **fields)


def test_a_member_lying_on_the_map_is_refused_and_passed_on_once_per_interval(
    bed: Bed, tmp_path: Path
) -> None:
    """a's keys send b a map record for another mesh, one from the future, c's record
    changed on the way, then 100 records of its own as fast as it can (names "flood 0" ..
    "flood 99"). b counts each lie in a's refusals and takes a's records at most once per
    30 s: c, which hears a's records only through b, never sees one between the first and
    the newest."""
    from dataclasses import replace

    from meshd.adapters import identity
    from meshd.core.membership import MeshDefinition
    from meshd.core.proto import session
    from tests.golden.map.make_vectors import signed

    bed.run("kill", "a", check=False)
    mesh_id = MeshDefinition.decode((bed.state("b") / "mesh.cert").read_bytes()).mesh_id
    a, c = identity.load(bed.state("a")), identity.load(bed.state("c"))
    base = int(time.time() * 1000) + 10_000  # newer than any record a's meshd made
    lies = [
        map_record(a.signing_key, bytes(16), base),  # another mesh's
        signed(a.signing_key, mesh_id, base, int(time.time()) + 3600),  # online for ever
        replace(map_record(c.signing_key, mesh_id, base), name="not c's"),  # not what c signed
    ]
    flood = [map_record(a.signing_key, mesh_id, base + k, name=f"flood {k}") for k in range(100)]
    a_cert = (bed.state("a") / "membership.cert").read_bytes()
    start = [session.encode(session.Capabilities(session.FEATURES)), membership_message(a_cert)]
    messages = start + [session.encode(session.MapMessage(r.encode())) for r in lies + flood]
    deferred = bed.status("b")["map"]["deferred"]

    def a_on_cs_map() -> str:
        bed.sh("c", "meshd", "map", "export", str(tmp_path))
        nodes = json.loads((tmp_path / "meshviewer.json").read_text())["nodes"]
        return str(next(n["hostname"] for n in nodes if n["node_id"] == a.node_id))

    b_id = bed.status("b")["node_id"]
    with bed.hostile_peer("a", bed.underlay_address("b", towards="a"), b_id) as liar:
        result = session_as(liar, bed.state("a"), messages, protocols=["meshd/2"])
    assert result["up"] and result["sent"] == len(messages), result
    a_seen = next(n for n in bed.status("b")["neighbours"] if n["name"] == "a")
    for reason in ("map_wrong_mesh", "map_from_the_future", "map_bad_signature"):
        assert a_seen["refusals"].get(reason) == 1, a_seen["refusals"]
    assert bed.status("b")["map"]["deferred"] - deferred >= 99
    seen: list[str] = []
    start_s = time.monotonic()
    while time.monotonic() - start_s < 45 and seen[-1:] != ["flood 99"]:
        seen.append(a_on_cs_map())
        time.sleep(1)
    print(f"a's names on c's map, once a second: {seen}")
    assert seen[-1] == "flood 99", seen
    assert {name for name in seen if name.startswith("flood")} <= {"flood 0", "flood 99"}, seen
    assert "not c's" not in {
        n["hostname"] for n in json.loads((tmp_path / "meshviewer.json").read_text())["nodes"]
    }


def test_a_member_offering_a_release_no_admin_signed_gets_nothing_stored_or_served(
    bed: Bed, tmp_path: Path
) -> None:
    """a's keys offer b a new meshd signed by a's own key, and one the admin signed for
    another mesh; send it a part of an artifact it never asked for, and ask it for a release
    it does not hold. b counts each in a's refusals, fetches nothing, stores nothing and
    serves nothing (the honest path: tests/netns/test_releases.py)."""
    from meshd.adapters import identity
    from meshd.core.membership import MeshDefinition
    from meshd.core.proto import session
    from tests.golden.release.make_vectors import ARTIFACT, signed

    bed.run("kill", "a", check=False)
    mesh_id = MeshDefinition.decode((bed.state("b") / "mesh.cert").read_bytes()).mesh_id
    a, admin = identity.load(bed.state("a")), identity.load(bed.dir / "admin")
    a_cert = (bed.state("a") / "membership.cert").read_bytes()
    lies = [
        session.Release(signed(a.signing_key, mesh_id, 9, ARTIFACT).encode()),
        session.Release(signed(admin.signing_key, bytes(16), 9, ARTIFACT).encode()),
        session.ReleasePart(9, 0, ARTIFACT),
        session.ReleaseFetch(9, 0, 1024),
    ]
    start = [session.encode(session.Capabilities(session.FEATURES)), membership_message(a_cert)]
    messages = start + [session.encode(m) for m in lies]
    b_id = bed.status("b")["node_id"]
    with bed.hostile_peer("a", bed.underlay_address("b", towards="a"), b_id) as liar:
        result = session_as(liar, bed.state("a"), messages, protocols=["meshd/2"])
    assert result["up"] and result["sent"] == len(messages), result
    assert result["closed"] is None or not result["closed"]["by_peer"], result
    assert session.RELEASE_PART not in result["received_kinds"], result  # nothing served
    a_seen = next(n for n in bed.status("b")["neighbours"] if n["name"] == "a")
    for reason in ("release_not_admin", "release_other_mesh", "release_unasked"):
        assert a_seen["refusals"].get(reason) == 1, a_seen["refusals"]
    assert a_seen["refusals"].get("release_not_held") == 1, a_seen["refusals"]
    releases = bed.status("b")["releases"]
    assert releases["held"] is None and releases["fetching"] is None, releases
    assert list((bed.state("b") / "releases").iterdir()) == []


# -- message rates (item 5) ---------------------------------------------------------------

FLOOD_S = 8.0  # each kind's flood: long enough that a full bucket is not most of it
MAX_CPU = 0.25  # of one core, b's meshd, during any flood


def refill_s(kind: str) -> float:
    """How long to wait before flooding ``kind`` so that it can overdraw its own budget.
    What b receives from a at all is one bucket of octets (SessionSettings: receive_burst,
    receive_rate; meshd.adapters.quic), kept across a's sessions and drained by the floods
    before: a kind whose burst is octets (the directory, map records) gets through beyond
    it only once that bucket refilled enough (from empty: the wait)."""
    from meshd.core.proto.session.budget import BUDGETS
    from meshd.core.transport.session import SessionSettings

    budget, receive = BUDGETS[kind], SessionSettings()
    if budget.unit != "octet":
        return 0.0
    beyond = budget.burst + (budget.per_s - receive.receive_rate) * FLOOD_S
    return max(0.0, beyond / receive.receive_rate) + 2.0


def floods(bed: Bed, tmp_path: Path) -> dict[str, tuple[list[bytes], float]]:
    """Each costly kind's flood from a: its messages (sent in turn) and how many a second."""
    from meshd.adapters import identity
    from meshd.core.membership import (
        MembershipCertificate,
        MeshDefinition,
        Revocation,
        RevocationTarget,
    )
    from meshd.core.membership.issue import _signed
    from meshd.core.proto import session
    from meshd.core.proto.babel import AE_IPV4, RouterId, Update, encode_packet
    from meshd.core.proto.gateway import make_advert

    mesh_bytes = (bed.state("b") / "mesh.cert").read_bytes()
    mesh = MeshDefinition.decode(mesh_bytes)
    a = identity.load(bed.state("a"))
    a_cert = (bed.state("a") / "membership.cert").read_bytes()
    a_ipv4 = MembershipCertificate.decode(a_cert).mesh_ipv4
    now = int(time.time())
    near = ipaddress.IPv4Address(bed.underlay_address("b", towards="a"))
    strangers = [identity.generate(tmp_path / f"s{k}").node_id for k in range(8)]
    revocations = tuple(
        _signed(
            Revocation,
            a.signing_key,  # a member's, not an admin's: refused, never verified
            mesh_id=mesh.mesh_id,
            target=RevocationTarget.node(strangers[k % 8]),
            revoked_at=now - k,
        ).encode()
        for k in range(300)  # a frame holds 64 KiB
    )
    endpoints = tuple(
        session.Endpoint(strangers[k % 8], str(near + 1 + k % 200), 6697) for k in range(256)
    )
    updates = [RouterId(router_id=bytes(8))] + [
        Update(ae=AE_IPV4, prefix=ipaddress.ip_network(f"10.{k // 250}.{k % 250}.9/32"),
               interval=400, seqno=k, metric=96)
        for k in range(1000)
    ]  # fmt: skip
    adverts = [
        make_advert(a.signing_key, mesh_id=mesh.mesh_id, mesh_ipv4=a_ipv4, exit_port=52820,
                    seqno=k + 1, issued_at=now, lifetime_s=600)
        for k in range(64)
    ]  # fmt: skip
    from meshd.core.proto.map_record import MAX_LINKS, sorted_links

    linked = [identity.generate(tmp_path / f"l{k}").node_id for k in range(MAX_LINKS)]
    records = [  # the largest a record may be: 64 links (about 2.4 KiB)
        map_record(a.signing_key, mesh.mesh_id, now * 1000 + 10_000 + k,
                   links=sorted_links(dict.fromkeys(linked, 255)))
        for k in range(64)
    ]  # fmt: skip
    entry = struct.pack("!H", len(a_cert)) + a_cert + struct.pack("!H", 0)  # no delegation
    entries = session.DirectoryEntries((entry,) * 80)
    return {
        "link": ([session.encode(session.Link(52000 + k)) for k in range(16)], 200),
        "endpoints": ([session.encode(session.Endpoints(endpoints))], 100),
        "revocations": ([session.encode(session.Revocations(revocations))], 30),
        "gateway": ([session.encode(session.Gateway(ad.encode())) for ad in adverts], 300),
        "name": ([session.encode(session.Name(bytes(16), "mallory"))], 300),
        "definition": ([session.encode(session.MeshDefinitionMessage(mesh_bytes))], 300),
        "membership": ([membership_message(a_cert)], 300),
        "babel": ([session.encode(session.BabelPacket(encode_packet(updates)))], 100),
        "directory": ([session.encode(entries)], 30),
        "map": ([session.encode(session.MapMessage(r.encode())) for r in records], 300),
    }


def test_a_member_flooding_costly_messages_costs_little_and_disturbs_no_one(
    bed: Bed, tmp_path: Path
) -> None:
    """a's keys flood b with each costly kind in turn, far beyond its budget
    (meshd.core.proto.session.budget). b's meshd stays under a quarter of a core, its link
    and route to c never go down, and each kind beyond its budget is counted in a's
    refusals as ``rate_<kind>``. Then one forged admin signature closes a's session."""
    from meshd.adapters import identity
    from meshd.core.membership import MeshDefinition, RevocationTarget, revoke
    from meshd.core.proto import session
    from tui.neighbours import describe

    bed.run("kill", "a", check=False)
    b_id, pid = bed.status("b")["node_id"], bed.pid("b")
    assert pid is not None
    a_cert = (bed.state("a") / "membership.cert").read_bytes()
    start = [session.encode(session.Capabilities(session.FEATURES)), membership_message(a_cert)]
    offset = bed.log_size("b")
    used: dict[str, float] = {}
    with bed.hostile_peer("a", bed.underlay_address("b", towards="a"), b_id) as flooder:
        for kind, (messages, rate) in floods(bed, tmp_path).items():
            time.sleep(refill_s(kind))
            result = session_as(
                flooder,
                bed.state("a"),
                start,
                linger=0.5,
                protocols=["meshd/2"],
                flood=[m.hex() for m in messages],
                per_second=rate,
                seconds=FLOOD_S,
                cpu_of=pid,
            )
            used[kind] = result["cpu_of"]
            assert result["up"] and result["closed"] is None, (kind, result)
            print(f"{kind}: {result['flooded']} messages in {FLOOD_S} s, b used {used[kind]:.2f}")
            assert result["flooded"] >= rate * FLOOD_S * 0.8, (kind, result)
            time.sleep(1)  # b closes a's session when it lingers; the next is a new one
        admin = identity.load(bed.dir / "admin")
        mesh = MeshDefinition.decode((bed.state("b") / "mesh.cert").read_bytes())
        target = RevocationTarget.node(identity.generate(tmp_path / "nobody").node_id)
        forged = bytearray(
            revoke(admin.signing_key, mesh=mesh, target=target, revoked_at=0).encode()
        )
        forged[-1] ^= 1
        result = session_as(
            flooder,
            bed.state("a"),
            [membership_message(a_cert), session.encode(session.Revocations((bytes(forged),)))],
        )
        assert result["closed"] is not None, result
        assert result["closed"]["reason"] == "forged_revocation", result
    a_seen = next(n for n in bed.status("b")["neighbours"] if n["name"] == "a")
    refusals = a_seen["refusals"]
    print(f"a's refusals at b: {refusals}")
    # The operator sees it: `meshd status` counts them on a's row, the dashboard's detail of
    # a says which and how to block it (tui.neighbours.describe of b's status).
    row = next(line for line in bed.sh("b", "meshd", "status").splitlines() if line[:2] == "a ")
    assert f"{sum(refusals.values())} (" in row, row
    assert f"hostile? meshd block {a_seen['node_id']}" in describe(a_seen).plain
    for kind in used:
        assert refusals.get(f"rate_{kind}", 0) > 0, (kind, refusals)
    assert refusals.get("forged_revocation") == 1, refusals
    assert max(used.values()) < MAX_CPU, used
    assert_b_still_routes_for_c(bed, pid, bed.log_since("b", offset))
