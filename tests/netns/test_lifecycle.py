"""Certificate lifecycle on real namespaces (issue 7): certificates renew themselves before
they expire, and a node whose clock is months off still joins and routes.

Renewal: a - b - c, every certificate valid for 60 s (the testbed's ``cert_validity_s``)
and checked with 5 s of tolerance, so that without renewal every link drops a minute in.
a is an admin: it renews itself, b asks its neighbour a, c asks b, which cannot issue c's
address and forwards the request over the mesh to a (the join relay's path). The test
waits until well past the original expiry and checks that every link and route is still
there, on certificates that are new everywhere (neighbours re-check them every 10 s).

Admin rotation, on the same mesh: a adds b as an admin (``meshd admin-key rotate --add``),
then b drops the testbed's admin key, which signed the original certificates (all renewed
by a by then): every node adopts both definitions, links stay, and c, restarted with a
config that pins only the testbed's key, follows the stored chain and comes back.

Stale clock: c boots 180 days in the past (``test_clock_offset_s``: meshd's one clock
function, shifted), so by its own clock every certificate, its own included, is not yet
valid. It learns the mesh's time from b's CLOCK, logs how far off it is, and routes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from meshd.core.membership import MembershipCertificate
from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
Bed = meshbed.Bed
VALIDITY_S = 60
TOLERANCE_S = 5
STALE_S = -180 * 86400

RENEWAL = f"""
[nodes.a]
admin = true
cert_validity_s = {VALIDITY_S}
membership = {{ clock_tolerance_s = {TOLERANCE_S}, renew_retry_s = 2 }}
[nodes.b]
cert_validity_s = {VALIDITY_S}
membership = {{ clock_tolerance_s = {TOLERANCE_S}, renew_retry_s = 2 }}
[nodes.c]
cert_validity_s = {VALIDITY_S}
membership = {{ clock_tolerance_s = {TOLERANCE_S}, renew_retry_s = 2 }}
[[links]]
between = ["a", "b"]
[[links]]
between = ["b", "c"]
"""

STALE_CLOCK = f"""
[nodes.a]
[nodes.b]
[nodes.c]
membership = {{ test_clock_offset_s = {STALE_S} }}
[[links]]
between = ["a", "b"]
[[links]]
between = ["b", "c"]
"""


@contextmanager
def line3(text: str, tmp_path: Path) -> Iterator[Bed]:
    """A testbed of ``text`` up (testbed id ``hone``), then down whatever happens."""
    topology = tmp_path / "topology.toml"
    topology.write_text(text)
    bed = Bed("hone")
    bed.run("down", check=False)
    try:
        bed.run("up", str(topology), "--wait")
        yield bed
    finally:
        bed.run("down", check=False)


def everything_up(bed: Bed) -> bool:
    """Every node routes to the other two, and lists every neighbour up."""
    nodes = {n: bed.status(n) for n in "abc"}
    for name, s in nodes.items():
        others = {o["mesh_ipv4"] for n, o in nodes.items() if n != name}
        routed = {r["prefix"].removesuffix("/32") for r in s["routes"]}
        if not others <= routed or any(n["state"] != "up" for n in s["neighbours"]):
            return False
    return True


@pytest.fixture(scope="module")
def renewing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with line3(RENEWAL, tmp_path_factory.mktemp("renewal")) as bed:
        bed.wait("converged", lambda: everything_up(bed), within=30)
        yield bed


def test_certificates_renew_before_they_expire_and_links_stay(renewing: Bed) -> None:
    bed = renewing
    first = {n: bed.status(n)["membership"] for n in "abc"}
    original_expiry = max(m["expires_at"] for m in first.values())
    assert all(m["expires_at"] - m["not_before"] == VALIDITY_S + 60 for m in first.values())

    def renewed() -> bool:
        now = {n: bed.status(n)["membership"] for n in "abc"}
        return all(
            m["renewal"] == "renewed" and m["expires_at"] > first[n]["expires_at"]
            for n, m in now.items()
        )

    took = bed.wait("every certificate renewed", renewed, within=VALIDITY_S)
    print(f"renewed everywhere {took:.1f} s after convergence")
    # Past the original expiry, its tolerance and a neighbours' re-check (10 s).
    time.sleep(max(0.0, original_expiry + TOLERANCE_S + 12 - time.time()))
    assert everything_up(bed), {n: bed.status(n)["neighbours"] for n in "abc"}
    after = {n: bed.status(n)["membership"] for n in "abc"}
    admin = after["a"]["issuer"]
    assert after["a"]["issuer"] == bed.status("a")["node_id"]  # a renewed itself
    assert after["b"]["issuer"] == admin and after["c"]["issuer"] == admin
    assert all(m["expires_at"] > time.time() for m in after.values()), after
    logs = {n: (bed.dir / "nodes" / n / "meshd.log").read_text() for n in "abc"}
    assert "renewal.forwarding" in logs["b"]  # c's request went on to a
    assert "peer.renewed" in logs["a"] and "peer.renewed" in logs["c"]
    assert "peer.dropped" not in "".join(logs.values())
    # The stored certificate is a renewed one, under the old file's name and mode.
    state = bed.dir / "nodes" / "c" / "state"
    stored = MembershipCertificate.decode((state / "membership.cert").read_bytes())
    assert stored.issuer == admin and stored.expires_at >= after["c"]["expires_at"]
    mode = (state / "membership.cert").stat().st_mode & 0o777
    assert mode == (state / "delegation.cert").stat().st_mode & 0o777  # one the testbed wrote
    assert not list(state.glob("*.tmp"))


def test_the_admin_key_rotates_and_a_restarted_node_follows(renewing: Bed) -> None:
    bed = renewing
    a, b = bed.status("a"), bed.status("b")
    testbed_admin = next(k for k in a["mesh"]["admins"] if k not in (a["node_id"], b["node_id"]))
    bed.wait(
        "every certificate renewed by a",
        lambda: all(bed.status(n)["membership"]["issuer"] == a["node_id"] for n in "abc"),
        within=VALIDITY_S,
    )

    def serial_everywhere(serial: int) -> bool:
        return all(bed.status(n)["mesh"]["serial"] == serial for n in "abc")

    out = bed.sh("a", "meshd", "admin-key", "rotate", "--add", b["node_id"])
    assert "serial 2 adopted" in out, out
    bed.wait("serial 2 everywhere", lambda: serial_everywhere(2), within=10)
    # The testbed's key signs nothing any more: b, an admin now, drops it.
    command = f"meshd admin-key rotate --remove {testbed_admin} 2>&1; echo rc=$?"
    refused = bed.sh("c", "sh", "-c", command, check=False)  # a delegate holds no admin key
    assert "holds no admin key" in refused and "rc=1" in refused, refused
    out = bed.sh("b", "meshd", "admin-key", "rotate", "--remove", testbed_admin)
    assert "serial 3 adopted" in out, out
    took = bed.wait("serial 3 everywhere", lambda: serial_everywhere(3), within=10)
    print(f"serial 3 adopted everywhere in {took:.1f} s")
    assert set(bed.status("c")["mesh"]["admins"]) == {a["node_id"], b["node_id"]}
    time.sleep(12)  # a neighbours' re-check under the new definition
    assert everything_up(bed)
    bed.run("kill", "c")
    bed.run("start", "c", "--wait")
    bed.wait("c back after its restart", lambda: everything_up(bed), within=30)
    assert bed.status("c")["mesh"]["serial"] == 3


def test_a_node_with_a_stale_clock_joins_and_routes(tmp_path: Path) -> None:
    with line3(STALE_CLOCK, tmp_path) as bed:
        took = bed.wait("converged", lambda: everything_up(bed), within=40)
        print(f"the stale node converged in {took:.1f} s")
        clock = bed.status("c")["clock"]
        assert abs(clock["correction_s"] + STALE_S) < 10, clock
        assert abs(clock["now"] - time.time()) < 10, clock
        assert bed.status("b")["clock"]["correction_s"] == 0  # b keeps its own clock
        log = (bed.dir / "nodes" / "c" / "meshd.log").read_text()
        said = re.search(r"WARNING clock\.off .*clock is off by (-?\d+) s", log)
        assert said and abs(int(said.group(1)) - STALE_S) < 10, log[-3000:]
        assert "membership.not_valid_now" in log  # its own certificate, by its own clock
        a = bed.status("a")
        out = bed.sh("c", "ping", "-c", "3", "-i", "0.2", "-W", "2", a["mesh_ipv4"])
        assert " 0% packet loss" in out, out
        # Its operator is told, and how to mend it.
        out = bed.sh("c", "sh", "-c", "meshd doctor 2>&1; echo rc=$?", check=False)
        assert "FAIL  clock       -180.0 days from the median" in out and "NTP" in out, out
        assert out.rstrip().endswith("rc=1"), out
