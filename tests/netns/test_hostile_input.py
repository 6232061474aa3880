"""Hostile input against real meshd daemons on a line a - b - c of namespaces: garbage at
b's QUIC port, malformed session messages from a peer that authenticated as a, a
stranger's key, and a stream of INITIALs that never complete a handshake. Each time b must
keep running and keep routing for everyone else; a bad session is closed with a reason
code, never silently, and never takes another down.

The hostile side (``hostile_peer.py``, run in a node's namespace through ``testbed exec``)
uses meshd's own QUIC transport, so it completes real TLS handshakes; its datagrams are
built with plain sockets (scapy is not installed in this venv).
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.netns import meshbed

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD

HOSTILE_PEER = Path(__file__).with_name("hostile_peer.py")
QUIC_PORT = 6697  # meshd's default [control] quic_port
# Closes that say nothing about the input: a session that timed out was not refused.
NOT_A_REFUSAL = {"handshake_timeout", "idle_timeout", "duplicate", "done"}


class HostilePeer:
    """``hostile_peer.py peer`` in a node's namespace: one session per ``attempt``."""

    def __init__(
        self,
        bed: Bed,
        node: str,
        host: str,
        node_id: str,
        stderr: IO[bytes],
        port: int = QUIC_PORT,
    ) -> None:
        self._stderr = stderr
        self._proc = subprocess.Popen(
            [str(meshbed.TESTBED), "exec", node, "--", sys.executable, str(HOSTILE_PEER)]
            # "--": a node id begins with "-" once in 64, and argparse takes it for an option
            + ["peer", "--", host, str(port), node_id],
            env=bed.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def attempt(self, **command: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        within = command.get("handshake_timeout", 10.0) + command.get("linger", 5.0) + 15
        within += command.get("seconds", 0.0)  # a flood's
        ready, _, _ = select.select([self._proc.stdout], [], [], within)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            self._stderr.seek(0)
            raise AssertionError(f"hostile peer gave no answer: {self._stderr.read().decode()}")
        return dict(json.loads(line))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class Bed(meshbed.Bed):
    def underlay_address(self, node: str, towards: str) -> str:
        """``node``'s address on its point-to-point link to ``towards`` (``u-<peer>``)."""
        out = json.loads(self.sh(node, "ip", "-j", "-4", "addr", "show", "dev", f"u-{towards}"))
        return str(out[0]["addr_info"][0]["local"])

    def state(self, node: str) -> Path:
        return self.dir / "nodes" / node / "state"

    def log_size(self, node: str) -> int:
        return (self.dir / "nodes" / node / "meshd.log").stat().st_size

    def log_since(self, node: str, offset: int) -> str:
        with (self.dir / "nodes" / node / "meshd.log").open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def link_states(self, node: str, *names: str) -> dict[str, str]:
        """The states of these neighbours' links (b may also list nodes it only heard of)."""
        return {
            n["name"]: n["state"] for n in self.status(node)["neighbours"] if n["name"] in names
        }

    @contextmanager
    def hostile_peer(
        self, node: str, host: str, node_id: str, port: int = QUIC_PORT
    ) -> Iterator[HostilePeer]:
        """``hostile_peer.py peer`` in ``node``'s namespace, dialling ``host``:``port``
        (the neighbour port; the exit port on a mesh address for a gateway)."""
        with tempfile.TemporaryFile() as stderr:
            peer = HostilePeer(self, node, host, node_id, stderr, port)
            try:
                yield peer
            finally:
                peer.close()


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("line3.toml", "h", Bed) as b:
        yield b


def membership_message(certificate: bytes, delegation: bytes = b"") -> bytes:
    from meshd.core.proto import session

    return session.encode(session.Membership(certificate, delegation))


def assert_refused(result: dict[str, Any], what: str) -> str:
    """The session was closed by b with a reason code; return the code."""
    closed = result["closed"]
    assert closed is not None, f"{what}: b kept the session open: {result}"
    assert closed["by_peer"], f"{what}: b did not close it, we did ({closed['reason']})"
    assert closed["reason"] not in NOT_A_REFUSAL, f"{what}: no refusal, {closed['reason']}"
    return str(closed["reason"])


def assert_answered(result: dict[str, Any], what: str) -> None:
    """b answered a new handshake: it took the session, or refused it with a reason."""
    if not result["up"]:
        assert_refused(result, what)


def disturbances(log: str, *peers: str) -> list[str]:
    """Log lines saying a session or link with one of ``peers`` went down, was refused or
    replaced (``session.*``, ``*down*``...: a line is ``date time LEVEL event k=v...``)."""
    about = re.compile(rf"\bpeer=({'|'.join(peers)})(\s|$)")
    bad = ("session.", "down", "lost", "refused", "timeout", "duplicate")
    found = []
    for line in log.splitlines():
        event = (line.split()[3:4] or [""])[0]
        if about.search(line) and any(word in event for word in bad):
            found.append(line)
    return found


def assert_b_still_routes_for_c(bed: Bed, b_pid: int | None, log: str) -> None:
    assert bed.pid("b") == b_pid, "b's meshd died or was restarted"
    c = bed.status("c")
    b_status = bed.status("b")
    link_c = next(n for n in b_status["neighbours"] if n["name"] == "c")
    assert link_c["state"] == "up", link_c
    route = next(r for r in b_status["routes"] if r["prefix"] == f"{c['mesh_ipv4']}/32")
    assert route["via"] == c["node_id"], route
    # Up now, and never down meanwhile.
    assert not disturbances(log, "c"), log
    assert "Traceback" not in log and "Exception in callback" not in log, log


# -- 1. garbage datagrams at the QUIC port --------------------------------------------------


def test_garbage_datagrams_at_the_quic_port_change_nothing(bed: Bed) -> None:
    """~360 datagrams from a to b's QUIC port: random bytes, short headers to unknown
    connection ids, INITIALs cut anywhere, whole INITIALs that do not decrypt, unknown
    versions and datagrams up to 64 KiB. b keeps its daemon, its links and its routes."""
    status = {n: bed.status(n) for n in "abc"}
    b_pid = bed.pid("b")
    host = bed.underlay_address("b", towards="a")
    assert bed.sh("b", "ss", "-Hlun", f"sport = :{QUIC_PORT}").strip(), "b has no QUIC socket"
    offset = bed.log_size("b")

    out = json.loads(
        bed.sh("a", sys.executable, str(HOSTILE_PEER), "garbage", host, str(QUIC_PORT))
    )
    assert out["total"] >= 350 and not out["errors"], out

    assert bed.link_states("b", "a", "c") == {"a": "up", "c": "up"}
    bed.sh("a", "ping", "-c", "3", "-i", "0.2", "-W", "2", status["c"]["mesh_ipv4"])
    # b still answers a new handshake (a stranger, who then replays a's certificate).
    replay = membership_message((bed.state("a") / "membership.cert").read_bytes())
    with bed.hostile_peer("a", host, status["b"]["node_id"]) as peer:
        stranger = peer.attempt(messages=[replay.hex()], linger=1.0)
    assert_answered(stranger, "a stranger after the garbage")
    log = bed.log_since("b", offset)
    assert not disturbances(log, "a", "c"), log
    assert_b_still_routes_for_c(bed, b_pid, log)


# -- 2. malformed session messages from a peer that authenticated as a ----------------------


class Case:
    """What the hostile a sends on a session b accepted, and the codes b may close with.

    Not a dataclass: Hypothesis prints a dataclass field by field, message and all (up to
    100 kB here), and this ``__repr__`` otherwise."""

    def __init__(
        self, name: str, message: bytes, reasons: frozenset[str], after_membership: bool = True
    ) -> None:
        self.name = name
        self.message = message
        self.reasons = reasons
        self.after_membership = after_membership  # send a's valid MEMBERSHIP first

    def accepts(self, reason: str) -> bool:
        # the control plane prefixes Babel decode errors ("babel_bad_magic"); take either spelling.
        return reason in self.reasons or reason.removeprefix("babel_") in self.reasons

    def __repr__(self) -> str:
        head = self.message[:32].hex() + ("..." if len(self.message) > 32 else "")
        return f"Case({self.name}, {len(self.message)} bytes: {head})"


def certificate_codes() -> frozenset[str]:
    """What a certificate that is not a's own valid one may be refused with."""
    from meshd.core.membership import Reason

    return frozenset(r.value for r in Reason) | {"wrong_node_id", "wrong_wireguard_key"}


def cases(membership: bytes, wrong: dict[str, bytes]) -> st.SearchStrategy[Case]:
    from meshd.core.proto import session

    codes = certificate_codes()
    babel = session.BABEL
    kinds = [0, *range(0x40, 0x100)]  # 1-63 left for the session protocol to grow into
    certificate = membership[3 : 3 + int.from_bytes(membership[1:3], "big")]

    def flipped(pos_bit: tuple[int, int]) -> bytes:
        pos, bit = pos_bit
        cert = bytearray(certificate)
        cert[pos % len(cert)] ^= 1 << bit
        return membership_message(bytes(cert))

    return st.one_of(
        st.builds(
            lambda k, body: Case("unknown_kind", bytes([k]) + body, frozenset({"unknown_kind"})),
            st.sampled_from(kinds),
            st.binary(max_size=256),
        ),
        st.integers(1, len(membership) - 1).map(
            lambda n: Case("truncated_membership", membership[:n], frozenset({"truncated"}))
        ),
        st.binary(min_size=1, max_size=64).map(
            lambda tail: Case("trailing_bytes", membership + tail, frozenset({"trailing_bytes"}))
        ),
        st.tuples(st.binary(min_size=1, max_size=400), st.binary(max_size=64)).map(
            lambda cd: Case("garbage_certificate", membership_message(*cd), codes)
        ),
        st.tuples(st.integers(0, 10_000), st.integers(0, 7)).map(
            lambda pb: Case("flipped_certificate", flipped(pb), codes)
        ),
        st.sampled_from(sorted(wrong)).map(
            lambda name: Case(f"wrong_certificate:{name}", wrong[name], codes)
        ),
        st.binary(max_size=3).map(
            lambda b: Case("babel_short_header", bytes([babel]) + b, frozenset({"truncated"}))
        ),
        st.tuples(
            st.integers(0, 255).filter(lambda m: m != 42), st.binary(min_size=3, max_size=64)
        ).map(
            lambda mb: Case(
                "babel_bad_magic", bytes([babel, mb[0]]) + mb[1], frozenset({"bad_magic"})
            )
        ),
        st.tuples(
            st.integers(0, 255).filter(lambda v: v != 2), st.binary(min_size=2, max_size=64)
        ).map(
            lambda vb: Case(
                "babel_bad_version", bytes([babel, 42, vb[0]]) + vb[1], frozenset({"bad_version"})
            )
        ),
        st.binary(max_size=200)
        .flatmap(lambda body: st.tuples(st.just(body), st.integers(len(body) + 1, 0xFFFF)))
        .map(
            lambda bl: Case(
                "babel_body_overrun",
                bytes([babel, 42, 2]) + bl[1].to_bytes(2, "big") + bl[0],
                frozenset({"truncated"}),
            )
        ),
        st.integers(65_536, 100_000).map(
            lambda n: Case("oversized", bytes([babel]) + bytes(n), frozenset({"frame_too_large"}))
        ),
    )


def explicit_cases(membership: bytes, wrong: dict[str, bytes]) -> list[Case]:
    """One of each, whatever Hypothesis draws, and the one sent before any MEMBERSHIP."""
    empty_babel = bytes([2, 42, 2, 0, 0])  # a well-formed Babel packet with no TLV
    codes = certificate_codes()
    return [
        Case("babel_before_membership", empty_babel, frozenset({"not_verified"}), False),
        Case("unknown_kind", b"\xff" + b"\x00" * 16, frozenset({"unknown_kind"})),
        Case("truncated_membership", membership[:-1], frozenset({"truncated"})),
        Case("no_certificate", b"\x01\x00\x00\x00\x00", frozenset({"no_certificate"})),
        Case("garbage_certificate", membership_message(b"\x00" * 64), codes),
        *(Case(f"wrong_certificate:{n}", m, codes) for n, m in sorted(wrong.items())),
        Case("babel_bad_magic", bytes([2, 0, 2, 0, 0]), frozenset({"bad_magic"})),
        Case("babel_body_overrun", bytes([2, 42, 2, 0, 9, 1]), frozenset({"truncated"})),
        Case("oversized", bytes([2]) + bytes(70_000), frozenset({"frame_too_large"})),
    ]


def wrong_certificates(bed: Bed, a_cert: bytes) -> dict[str, bytes]:
    """MEMBERSHIP messages with a certificate that is not a's, or not from our admin."""
    from nacl.signing import SigningKey

    from meshd.core.membership import MembershipCertificate, MeshDefinition, create_mesh
    from meshd.core.membership import issue_membership as issue

    mesh = MeshDefinition.decode((bed.state("a") / "mesh.cert").read_bytes())
    cert = MembershipCertificate.decode(a_cert)
    forger = SigningKey.generate()
    forged_mesh = create_mesh(
        forger,
        mesh_id=mesh.mesh_id,
        name=mesh.name,
        ipv4_prefix=mesh.ipv4_prefix,
        ipv6_prefix=mesh.ipv6_prefix,
        issued_at=mesh.issued_at,
    )
    forged = issue(
        forger,
        mesh=forged_mesh,
        node_id=cert.node_id,
        name=cert.name,
        wireguard_public=cert.wireguard_public,
        mesh_ipv4=cert.mesh_ipv4,
        not_before=cert.not_before,
        expires_at=cert.expires_at,
        serial=cert.serial,
    )
    return {
        "c": membership_message((bed.state("c") / "membership.cert").read_bytes()),
        "b": membership_message((bed.state("b") / "membership.cert").read_bytes()),
        "forged": membership_message(forged.encode()),
        "foreign_chain": membership_message(
            a_cert, (bed.state("c") / "delegation.cert").read_bytes()
        ),
    }


def test_malformed_session_messages_close_that_session_only(bed: Bed) -> None:
    """With a's meshd stopped, a session to b as a (a's key, a's valid MEMBERSHIP), then
    one malformed or oversized message, per Hypothesis example. b closes each session
    with the reason code and logs it; its session and route with c never move."""
    from meshd.core.proto import session

    status = {n: bed.status(n) for n in "abc"}
    b_id, b_pid = status["b"]["node_id"], bed.pid("b")
    host = bed.underlay_address("b", towards="a")
    a_cert = (bed.state("a") / "membership.cert").read_bytes()
    # The testbed's admin signs every certificate itself: no chain goes with it.
    membership = membership_message(a_cert)
    wrong = wrong_certificates(bed, a_cert)
    a_state = str(bed.state("a"))
    bed.run("kill", "a")
    try:
        with bed.hostile_peer("a", host, b_id) as peer:
            # Control: as a, with a's certificate, b keeps the session and sends its own
            # MEMBERSHIP. Retried: for 5 s after a's old session came up, b takes a new one
            # for the other half of a simultaneous dial and may keep the old one instead.
            def control() -> bool:
                result = peer.attempt(
                    state_dir=a_state, messages=[membership.hex()], linger=1.0, handshake_timeout=3
                )
                return result["closed"] is None and session.MEMBERSHIP in result["received_kinds"]

            bed.wait("b takes a session from the hostile a", control, within=20)
            offset = bed.log_size("b")
            seen: dict[str, set[str]] = {}

            @settings(
                max_examples=25,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(case=cases(membership, wrong))
            def one(case: Case) -> None:
                start = bed.log_size("b")
                first = [membership.hex()] if case.after_membership else []
                result = peer.attempt(
                    state_dir=a_state,
                    messages=[*first, case.message.hex()],
                    max_frame_size=max(64 * 1024, len(case.message) + 16),
                    linger=5.0,
                )
                assert result["up"], f"b refused the handshake of a itself: {result}"
                reason = assert_refused(result, case.name)
                assert case.accepts(reason), f"{case.name}: closed with {reason}"
                bed.wait(
                    f"b logs reason={reason}",
                    lambda: f"reason={reason}" in bed.log_since("b", start),
                    within=5,
                )
                seen.setdefault(case.name.split(":")[0], set()).add(reason)

            for case in explicit_cases(membership, wrong):
                one = example(case=case)(one)
            one()
        assert len(seen) >= 10, seen  # every kind of case ran
        print(f"b's reasons per case: {seen}")
        assert_b_still_routes_for_c(bed, b_pid, bed.log_since("b", offset))
        bed.sh("c", "ping", "-c", "2", "-i", "0.2", "-W", "2", status["b"]["mesh_ipv4"])
    finally:
        bed.run("start", "a", "--wait")
        bed.run("wait-converged", "--timeout", "40")


# -- 3. a valid TLS stack with a key that is not a member -----------------------------------


def test_a_key_no_admin_signed_gets_no_session_and_no_route(bed: Bed) -> None:
    """A fresh Ed25519 key in a self-signed certificate dials b from a's namespace (and,
    should the handshake pass, replays a's MEMBERSHIP): refused with a reason, no route."""
    b_before = bed.status("b")
    routes_before = {r["prefix"]: r["via"] for r in b_before["routes"]}
    host = bed.underlay_address("b", towards="a")
    a_cert = (bed.state("a") / "membership.cert").read_bytes()
    offset = bed.log_size("b")
    with bed.hostile_peer("a", host, b_before["node_id"]) as peer:
        result = peer.attempt(messages=[membership_message(a_cert).hex()], linger=3.0)
    stranger = result["node_id"]
    reason = assert_refused(result, "a stranger")
    bed.wait(  # b names a node it has no certificate for by its id, or the id's start
        "b logs the refusal",
        lambda: any(
            stranger[:8] in ln and f"reason={reason}" in ln
            for ln in bed.log_since("b", offset).splitlines()
        ),
        within=5,
    )
    b_after = bed.status("b")
    for n in b_after["neighbours"]:
        if n["node_id"] == stranger:  # b may remember it tried; it must not be a link
            assert n["state"] != "up", n
    assert {r["prefix"]: r["via"] for r in b_after["routes"]} == routes_before
    assert bed.link_states("b", "a", "c") == {"a": "up", "c": "up"}


# -- 4. a burst of INITIALs must not lock new neighbours out --------------------------------


def test_new_sessions_are_answered_while_garbage_initials_keep_coming(bed: Bed) -> None:
    """a sends 500 full-size INITIALs a second to b for 4 s (600 kB/s; fresh connection
    ids, payloads that do not decrypt, so no handshake ever completes and a's address is
    never validated); 300 in, a handshake from c's side must still be answered, as one
    from a is after the ~40 such INITIALs of the first test. Last in the module: a b that
    fails this refuses new sessions until the bogus handshakes time out."""
    b_id = bed.status("b")["node_id"]
    host = bed.underlay_address("b", towards="a")
    replay = membership_message((bed.state("a") / "membership.cert").read_bytes())
    flood = subprocess.Popen(
        [str(meshbed.TESTBED), "exec", "a", "--", sys.executable, str(HOSTILE_PEER)]
        + ["initials", host, str(QUIC_PORT), "4"],
        env=bed.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout is not None
        ready, _, _ = select.select([flood.stdout], [], [], 10)
        assert ready, "the flood did not start"
        started = json.loads(flood.stdout.readline())  # 300 INITIALs sent, more coming
        assert started["total"] == 300, started
        with bed.hostile_peer("c", bed.underlay_address("b", towards="c"), b_id) as peer:
            result = peer.attempt(messages=[replay.hex()], linger=1.0, handshake_timeout=2.0)
        out, _ = flood.communicate(timeout=30)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert json.loads(out)["total"] == 2000, out
    assert result["up"] or result["closed"], f"b ignored a new handshake in the flood: {result}"
    assert_answered(result, "a stranger during the flood")
    assert bed.link_states("b", "a", "c") == {"a": "up", "c": "up"}


# -- 5. hostile datagrams built with scapy at the QUIC and beacon ports ----------------------


def test_scapy_garbage_and_spoiled_beacons_change_nothing(bed: Bed) -> None:
    """From a: spoiled beacons signed by fresh keys (bad signature, truncated, trailing
    bytes, wrong version, another mesh, stale), random bytes, bad UDP checksums and IP
    fragments, at b's beacon and QUIC ports. b discovers only the signer of the one valid
    beacon sent as a control, keeps its links and routes, and logs no disturbance."""
    b_pid = bed.pid("b")
    host = bed.underlay_address("b", towards="a")
    before = {n["node_id"] for n in bed.status("b")["neighbours"]}
    offset = bed.log_size("b")
    script = Path(__file__).with_name("scapy_garbage.py")
    out = json.loads(bed.sh("a", sys.executable, str(script), host, str(bed.state("a"))))
    assert sum(out["sent"].values()) >= 40, out
    time.sleep(1.0)
    log = bed.log_since("b", offset)
    found = {
        kind
        for kind, node_id in out["signers"].items()
        if f"peer.discovered peer={node_id[:8]} " in log
    }
    assert found == {"valid"}, log  # the control shows the beacon path listens
    assert {n["node_id"] for n in bed.status("b")["neighbours"]} == before
    assert bed.link_states("b", "a", "c") == {"a": "up", "c": "up"}
    assert not disturbances(log, "a", "c"), log
    assert_b_still_routes_for_c(bed, b_pid, log)
