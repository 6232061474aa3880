"""A live join on a running mesh (netns-testbed/topologies/join.toml: a line a - b - c and
two fresh boxes, n cabled to a, m cabled to a and b). A member issues an invite (`meshd
invite` on a); `testbed join n` provisions n from it with provisioning/provision, the
same code path as a Pi's (into a scratch root; the testbed starts meshd instead of
systemd); n's meshd redeems the invite on its first start and routes to every node.
``join.seconds`` is measured from that command to full reachability (every node routes to
every other), target under 15 s. Then the same token is refused at a second bootstrap node
(b, which forwards to the issuer a) and by the daemon, and an altered and an expired token
are refused with their reasons, by provisioning, by meshd and by the mesh; nothing of the
mesh changes."""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.netns import meshbed

pytestmark = [*meshbed.NEEDS_ROOT_AND_WIREGUARD, pytest.mark.timed]
Bed = meshbed.Bed

PROBE = Path(__file__).with_name("join_probe.py")
JOIN_TARGET_S = 15.0
# Addresses of the testbed's plan (netns-testbed/README.md): p2p link k in the file's order
# is 100.64.k.0/24, the first node of `between` .1. In join.toml, links[3] is a - m and
# links[4] is b - m: where m reaches a (the issuer) and b (a second bootstrap node).
A_FROM_M = "100.64.3.1:6697"
B_FROM_M = "100.64.4.1:6697"
MEMBERS = "abc"


@dataclass(frozen=True)
class Joined:
    token: str
    seconds: float


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with meshbed.testbed("join.toml", "j", Bed) as b:
        yield b


def invite(bed: Bed, name: str) -> str:
    out = bed.sh("a", "meshd", "invite", "--name", name, "--config", str(config_of(bed, "a")))
    return out.splitlines()[0]


def run_testbed(bed: Bed, *args: str) -> tuple[int, str]:
    """A testbed command that may fail: its exit status, and what it said (both streams)."""
    res = subprocess.run(
        [str(meshbed.TESTBED), *args], env=bed.env, capture_output=True, text=True, timeout=120
    )
    return res.returncode, res.stdout + res.stderr


def config_of(bed: Bed, node: str) -> Path:
    return bed.dir / "nodes" / node / "meshd.toml"


def state_of(bed: Bed, node: str) -> Path:
    """A member's state directory (`up` made it), or an invited node's (provision did)."""
    if node in MEMBERS:
        return bed.dir / "nodes" / node / "state"
    return bed.dir / "nodes" / node / "root" / "var" / "lib" / "meshd"


@pytest.fixture(scope="module")
def joined(bed: Bed) -> Joined:
    token = invite(bed, "n")
    started = time.monotonic()
    bed.run("join", "n", "--invite", token, "--wait")
    bed.run("wait-converged", "--timeout", "60")
    seconds = time.monotonic() - started
    print(f"\njoin.seconds={seconds:.2f} (target < {JOIN_TARGET_S:g})")
    return Joined(token, seconds)


def probe(bed: Bed, token: str, node_id: str, address: str, tmp: Path, *extra: str) -> Any:
    path = tmp / f"token-{secrets.token_hex(4)}"
    path.write_text(token + "\n")
    out = bed.sh(
        "m", sys.executable, str(PROBE), str(path), f"--node-id={node_id}", address, *extra
    )
    return json.loads(out)


def redeemed_by(bed: Bed, invite_id: bytes) -> str | None:
    from meshd.adapters.invite_store import SqliteInviteStore

    store = SqliteInviteStore.open(state_of(bed, "a"))
    try:
        record = store.lookup(invite_id)
    finally:
        store.close()
    assert record is not None
    return record.redeemed_by


def mesh_view(bed: Bed) -> dict[str, tuple[list[str], list[str]]]:
    """What every member and n sees: its neighbours and the prefixes it routes."""
    out = {}
    for node in (*MEMBERS, "n"):
        status = bed.status(node)
        neighbours = sorted(n["node_id"] for n in status["neighbours"])
        out[node] = (neighbours, sorted(r["prefix"] for r in status["routes"]))
    return out


def test_a_fresh_box_joins_with_an_invite_and_routes_to_every_node(
    bed: Bed, joined: Joined
) -> None:
    from meshd.core.invites import parse_token

    invite_record = parse_token(joined.token).invite
    n = bed.status("n")
    assert n["name"] == "n" and n["mesh_ipv4"] == str(invite_record.mesh_ipv4)
    assert ipaddress.ip_address(n["mesh_ipv4"]) in ipaddress.ip_network("10.77.1.0/24")  # a's pool
    for name in MEMBERS:
        other = bed.status(name)
        assert bed.route("n", f"{other['mesh_ipv4']}/32") is not None, name
        assert bed.route("n", f"{other['mesh_ipv6']}/128") is not None, name
        assert bed.route(name, f"{n['mesh_ipv4']}/32") is not None, name
        for address in (other["mesh_ipv4"], other["mesh_ipv6"]):
            bed.sh("n", "ping", "-c", "1", "-W", "2", address)
    # Redeemed once, in the issuer's store, by n's keys; n keeps its token.
    assert redeemed_by(bed, invite_record.invite_id) == n["node_id"]
    assert (state_of(bed, "n") / "invite.token").read_text().strip() == joined.token
    log = (bed.dir / "nodes" / "n" / "meshd.log").read_text()
    assert "join.joined" in log and "node.started" in log
    assert joined.seconds < JOIN_TARGET_S, f"join.seconds={joined.seconds:.1f}"


def test_the_name_is_private_but_to_the_neighbour_it_showed_it_to(bed: Bed, joined: Joined) -> None:
    """n was invited without --show-name: its certificate, which c holds in its directory
    without being its neighbour, carries only the commitment to "n"; a, its neighbour, was
    shown the name (NAME) and checked it against that commitment."""
    from meshd.core.membership.directory import FILE_MAGIC, Entry
    from meshd.core.membership.names import NameOpening, is_committed

    n_id = bed.status("n")["node_id"]
    row = next(r for r in bed.status("a")["neighbours"] if r["node_id"] == n_id)
    assert row["name"] == "n" and not row["refusals"], row
    salt = (state_of(bed, "n") / "name.salt").read_bytes()

    def in_cs_directory() -> Entry | None:
        data = (state_of(bed, "c") / "directory").read_bytes()[len(FILE_MAGIC) :]
        while data:
            entry, data = Entry.read(data)
            if entry.certificate.node_id == n_id:
                return entry
        return None

    bed.wait("c stored n's certificate", lambda: in_cs_directory() is not None, within=30)
    entry = in_cs_directory()
    assert entry is not None
    certified = entry.certificate.name
    assert is_committed(certified) and NameOpening("n", salt).opens(certified), certified


def test_the_same_token_is_refused_at_a_second_bootstrap_node(
    bed: Bed, joined: Joined, tmp_path: Path
) -> None:
    from meshd.core.invites import parse_token

    invite_record = parse_token(joined.token).invite
    n_id = bed.status("n")["node_id"]
    before = mesh_view(bed)
    # Shown to b, which did not issue it: b forwards it to a over the mesh; a refuses.
    b_id = bed.status("b")["node_id"]
    answer = probe(bed, joined.token, b_id, B_FROM_M, tmp_path)
    assert answer == {
        "answer": "refused",
        "reason": "already_redeemed",
        "detail": f"invite {invite_record.invite_id.hex()} was redeemed already",
    }
    assert "join.forwarding" in (bed.dir / "nodes" / "b" / "meshd.log").read_text()
    # A second box provisioned with it: its meshd is refused and exits, with the reason.
    status, said = run_testbed(bed, "join", "m", "--invite", joined.token, "--wait")
    assert status == 1 and "meshd of m exited" in said, said
    log = (bed.dir / "nodes" / "m" / "meshd.log").read_text()
    assert "cannot join the mesh: the invite is refused (already_redeemed)" in log
    for name in ("membership.cert", "mesh.cert"):
        assert not (state_of(bed, "m") / name).exists()
    # Nothing of the mesh changed.
    assert redeemed_by(bed, invite_record.invite_id) == n_id
    assert mesh_view(bed) == before
    bed.run("wait-converged", "--timeout", "30")


def expired_invite(bed: Bed, bootstrap_from: str) -> tuple[str, bytes]:
    """An invite a issued two days ago for one day, recorded in its store: genuine, but
    expired (well beyond the clocks' tolerance)."""
    from meshd import config
    from meshd.adapters import identity, trust
    from meshd.adapters.invite_store import SqliteInviteStore
    from meshd.core.invites import Issuer, allocate_ipv4, issue_invite, parse_token

    cfg = config.load(config_of(bed, "a"))
    ident = identity.load(cfg.node.state_dir)
    own = trust.load(cfg.node.state_dir, cfg.mesh.admin_keys, ident.node_id, time.time())
    issuer = Issuer(ident.signing_key, own.trust, own.delegation)
    store = SqliteInviteStore.open(cfg.node.state_dir)
    try:
        now = int(time.time())
        token = issue_invite(
            issuer,
            name="late",
            mesh_ipv4=allocate_ipv4(issuer.pool, store.taken_ipv4() | {own.member.mesh_ipv4}),
            bootstrap=parse_token(bootstrap_from).invite.bootstrap,
            issued_at=now - 2 * 86400,
            expires_at=now - 86400,
            invite_id=secrets.token_bytes(16),
            secret=secrets.token_bytes(32),
        )
        store.record_issued(token.invite)
    finally:
        store.close()
    return token.text(), token.invite.invite_id


def test_an_altered_and_an_expired_token_are_refused_with_reasons(
    bed: Bed, joined: Joined, tmp_path: Path
) -> None:
    from meshd.core.invites import parse_token

    before = mesh_view(bed)
    a_id, b_id = bed.status("a")["node_id"], bed.status("b")["node_id"]
    fresh = invite(bed, "m")  # a good invite, to alter
    fresh_id = parse_token(fresh).invite.invite_id
    middle = len(fresh) // 2
    altered = fresh[:middle] + ("A" if fresh[middle] != "A" else "B") + fresh[middle + 1 :]

    # Provisioning refuses them before writing anything, with the reason.
    status, said = run_testbed(bed, "join", "m", "--invite", altered)
    assert status == 1, said
    assert "the invite is refused (bad_signature)" in said or "refused (malformed)" in said, said
    expired, expired_id = expired_invite(bed, joined.token)
    status, said = run_testbed(bed, "join", "m", "--invite", expired)
    assert status == 1 and "the invite is refused (expired)" in said, said

    # The mesh refuses them too, when a joining node skips its own checks: the bootstrap
    # node b (which is not the issuer), and a (which is).
    for node_id, address in ((b_id, B_FROM_M), (a_id, A_FROM_M)):
        answer = probe(bed, fresh, node_id, address, tmp_path, "--alter")
        assert (answer["answer"], answer["reason"]) == ("refused", "bad_signature"), answer
        answer = probe(bed, expired, node_id, address, tmp_path)
        assert (answer["answer"], answer["reason"]) == ("refused", "expired"), answer

    # And so does meshd, for a token that expired after provisioning: exit 78, a reason.
    (state_of(bed, "m") / "invite.token").write_text(expired + "\n")
    out = bed.sh("m", "sh", "-c", f"meshd run --config {config_of(bed, 'm')} 2>&1; echo rc=$?")
    assert "rc=78" in out and "the invite is refused (expired)" in out, out
    assert not (state_of(bed, "m") / "membership.cert").exists()

    # Nothing changed: neither invite was redeemed, the mesh looks as it did.
    assert redeemed_by(bed, expired_id) is None
    assert redeemed_by(bed, fresh_id) is None
    assert mesh_view(bed) == before
