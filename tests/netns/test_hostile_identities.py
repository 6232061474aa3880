"""Addresses and identities (issue 28, item 4), on a star around b (a, c and d its
neighbours): b shares its uplink, so a, c and d leave by it, and b has a small port range
for its links (five ports: 51820-51824) of which one delegate's members may hold one
(``issuer_link_share = 0.2``). d's meshd is stopped and its keys, or identities freshly
minted with the testbed's admin key or d's delegation, speak for it
(tests/netns/hostile_peer.py).

- A second member certified with c's address: d's keys with a certificate for c's
  address, and an entry for a fresh key with c's address in the directory d sends. b
  refuses both (``address_in_use``, counted in d's refusals) and keeps routing to c.
- The gateway: a fresh key certified with c's address (c is b's exit user) asks b for an
  exit: b refuses it (``address_in_use``) and c's allowed-ip on b's exit interface stays
  c's (WireGuard gives an allowed-ip to the peer it was set for last: before this issue
  the newcomer took c's traffic).
- Identities and ports: d's delegation mints two identities; b takes the first (its port
  is the fourth) and refuses the second (``issuer_link_limit``). A delegation the admin
  gives another key later for half of d's pool mints one: refused (``pool_overlap``).
  The admin's fresh identities take the last port and are then refused
  ``no_free_port``; before this issue ``link_port`` raised inside the session's handler.
  b keeps serving a and c throughout.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import meshbed
from tests.netns.test_hostile_input import Bed, membership_message
from tests.netns.test_hostile_member import session_as

pytestmark = meshbed.NEEDS_ROOT_AND_WIREGUARD
EXIT_PORT = 6699  # meshd's default [exit] quic_port
TOPOLOGY = """
[nodes.a]
[nodes.b]
uplink = true
share = true
wireguard = { listen_port_max = 51824, issuer_link_share = 0.2 }
[nodes.c]
[nodes.d]
[[links]]
between = ["a", "b"]
[[links]]
between = ["b", "c"]
[[links]]
between = ["b", "d"]
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    topology = tmp_path_factory.mktemp("identities") / "topology.toml"
    topology.write_text(TOPOLOGY)
    with meshbed.testbed(topology, "hid", Bed) as b:
        b_id = b.status("b")["node_id"]
        b.wait("c leaves by b", lambda: b.status("c")["gateway"]["exit_gateway"] == b_id, 20)
        b.run("kill", "d")
        yield b


def mint(
    bed: Bed,
    where: Path,
    ipv4: str,
    *,
    by_delegate: str | None = None,
    node_id: str | None = None,
    delegated: tuple[Any, Any] | None = None,
) -> Any:
    """A certificate for a fresh identity in ``where`` (or for ``node_id`` with its
    WireGuard key), signed by the testbed's admin, by ``by_delegate``'s delegation, or by
    the key of a ``delegated`` (key, delegation)."""
    from meshd.adapters import identity
    from meshd.core.membership import (
        DelegationCertificate,
        MembershipCertificate,
        MeshDefinition,
        issue_membership,
    )

    mesh = MeshDefinition.decode((bed.state("b") / "mesh.cert").read_bytes())
    if node_id is None:
        fresh = identity.generate(where)
        node_id, wireguard_public = fresh.node_id, fresh.wireguard_public
    else:
        held = MembershipCertificate.decode((where / "membership.cert").read_bytes())
        wireguard_public = held.wireguard_public
    delegation = None
    signer = identity.load(bed.dir / "admin").signing_key
    if by_delegate is not None:
        delegation = DelegationCertificate.decode(
            (bed.state(by_delegate) / "delegation.cert").read_bytes()
        )
        signer = identity.load(bed.state(by_delegate)).signing_key
    if delegated is not None:
        signer, delegation = delegated
    now = int(time.time())
    cert = issue_membership(
        signer,
        mesh=mesh,
        node_id=node_id,
        name="minted",
        wireguard_public=wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address(ipv4),
        not_before=now - 10,
        expires_at=now + 3600,
        serial=int(time.time() * 1000) % 1_000_000 + 5000,
        delegation=delegation,
    )
    return cert, delegation


def refusals_of(bed: Bed, node: str, name: str) -> dict[str, int]:
    (seen,) = [n for n in bed.status(node)["neighbours"] if n["name"] == name]
    return dict(seen["refusals"])


def assert_b_serves_a_and_c(bed: Bed, b_pid: int | None, offset: int) -> None:
    assert bed.pid("b") == b_pid, "b's meshd died or was restarted"
    states = bed.link_states("b", "a", "c")
    assert states == {"a": "up", "c": "up"}, states
    c = bed.status("c")
    route = bed.route("b", f"{c['mesh_ipv4']}/32")
    assert route is not None and route["via"] == c["node_id"], route
    bed.sh("a", "ping", "-c", "2", "-i", "0.2", "-W", "2", c["mesh_ipv4"])
    log = bed.log_since("b", offset)
    assert "Traceback" not in log and "Exception in callback" not in log, log


def test_a_second_member_for_a_used_address_is_refused(bed: Bed, tmp_path: Path) -> None:
    from meshd.adapters import identity
    from meshd.core.membership.directory import Entry
    from meshd.core.proto import session

    b_pid, offset = bed.pid("b"), bed.log_size("b")
    b_id = bed.status("b")["node_id"]
    c_ipv4 = bed.status("c")["mesh_ipv4"]
    assert bed.pid("d") is None  # stopped: its keys are ours
    d_state = bed.state("d")
    d_node = identity.load(d_state).node_id
    taker, _ = mint(bed, d_state, c_ipv4, node_id=d_node)  # d's keys, c's address
    far, _ = mint(bed, tmp_path / "far", c_ipv4)  # a fresh key, c's address
    d_cert = (d_state / "membership.cert").read_bytes()
    relayed = session.DirectoryEntries((Entry(far).encoded,))
    host = bed.underlay_address("b", towards="d")
    with bed.hostile_peer("d", host, b_id) as d:
        result = session_as(d, d_state, [membership_message(taker.encode())])
        assert result["up"] and result["closed"] is not None, result
        assert result["closed"]["by_peer"] and result["closed"]["reason"] == "address_in_use"
        # d's own certificate, then a directory entry giving c's address to another key.
        messages = [
            session.encode(session.Capabilities(session.FEATURES)),
            membership_message(d_cert),
            session.encode(relayed),
        ]
        result = d.attempt(
            state_dir=str(d_state),
            messages=[m.hex() for m in messages],
            linger=3.0,
            protocols=["meshd/2"],
        )
        assert result["up"] and result["closed"] is None, result  # a relay: kept
    refusals = refusals_of(bed, "b", "d")
    print(f"b's refusals of d: {refusals}")
    assert refusals.get("address_in_use") == 1, refusals
    assert refusals.get("directory_address_in_use") == 1, refusals
    members = bed.status("b")["directory"]["members"]
    assert members == 4, members  # a, b, c, d: not the far key
    assert_b_serves_a_and_c(bed, b_pid, offset)


def test_a_gateway_never_gives_a_users_address_to_another_member(bed: Bed, tmp_path: Path) -> None:
    from meshd.core.membership import MembershipCertificate
    from meshd.core.proto import session

    b = bed.status("b")
    c = bed.status("c")
    assert c["gateway"]["exit_gateway"] == b["node_id"]
    offset = bed.log_size("b")
    taker, _ = mint(bed, tmp_path / "taker", c["mesh_ipv4"])
    messages = [membership_message(taker.encode()), session.encode(session.ExitRequest())]
    with bed.hostile_peer("a", b["mesh_ipv4"], b["node_id"], port=EXIT_PORT) as peer:
        result = peer.attempt(
            state_dir=str(tmp_path / "taker"), messages=[m.hex() for m in messages], linger=3.0
        )
    print(f"the taker's exit session: {result}")
    assert result["up"], result
    assert session.EXIT_REFUSED in result["received_kinds"], result
    assert session.EXIT_GRANT not in result["received_kinds"], result
    log = bed.log_since("b", offset)
    assert "exit.refused_user" in log and "reason=address_in_use" in log, log
    users = bed.status("b")["gateway"]["sharing"]["users"]
    assert "c" in users and "minted" not in users, users
    # c's address on b's exit interface is still c's WireGuard peer's.
    c_cert = MembershipCertificate.decode((bed.state("c") / "membership.cert").read_bytes())
    c_key = base64.b64encode(c_cert.wireguard_public).decode()
    links = json.loads(bed.sh("b", "ip", "-j", "link", "show"))
    (exit_if,) = [n["ifname"] for n in links if n["ifname"].endswith("xg")]
    # (by name: wireguard-go's sockets are not per namespace, `wg show all` lists every
    # testbed's on this machine)
    shown = bed.sh("b", "wg", "show", exit_if, "allowed-ips")
    held = [line.split() for line in shown.splitlines() if f"{c['mesh_ipv4']}/32" in line]
    assert len(held) == 1 and held[0][0] == c_key, shown
    bed.sh("c", "curl", "-sf", "--max-time", "5", "-o", "/dev/null", "http://203.0.113.1/")


def test_identities_cost_at_most_their_issuers_share_and_exhaustion_refuses(
    bed: Bed, tmp_path: Path
) -> None:
    b = bed.status("b")
    b_pid, offset = bed.pid("b"), bed.log_size("b")
    pool = mint_pool(bed)
    host = bed.underlay_address("b", towards="d")
    outcomes: list[tuple[str, Any]] = []
    overlapping = overlapping_delegation(bed, tmp_path / "delegate")
    with bed.hostile_peer("d", host, b["node_id"]) as peer:
        for k, (by, address) in enumerate(
            [
                ("d", pool[10]),
                ("d", pool[11]),
                ("overlap", pool[-1]),
                (None, "10.77.0.50"),
                (None, "10.77.0.51"),
            ]
        ):
            where = tmp_path / f"id{k}"
            if by == "overlap":
                cert, delegation = mint(bed, where, address, delegated=overlapping)
            else:
                cert, delegation = mint(bed, where, address, by_delegate=by)
            chain = delegation.encode() if delegation is not None else b""
            message = membership_message(cert.encode(), chain)
            result = session_as(peer, where, [message], linger=2.0)
            reason = result["closed"]["reason"] if result["closed"] else None
            outcomes.append((by or "admin", reason))
    print(f"minted identities at b: {outcomes}")
    assert [reason for _, reason in outcomes] == [
        None,  # d's first: the fourth port
        "issuer_link_limit",  # d's second: one delegate's share is 1 of 5
        "pool_overlap",  # a delegation given later, for half of d's pool
        None,  # the admin's: the last port
        "no_free_port",
    ], outcomes
    discovery = bed.status("b")["discovery"]["refusals"]
    print(f"b's discovery refusals: {discovery}")
    assert discovery.get("issuer_link_limit") == 1 and discovery.get("no_free_port") == 1
    log = bed.log_since("b", offset)
    assert "reason=no_free_port" in log and "reason=issuer_link_limit" in log, log
    assert_b_serves_a_and_c(bed, b_pid, offset)


def overlapping_delegation(bed: Bed, where: Path) -> tuple[Any, Any]:
    """A fresh delegate's key and a delegation the admin gives it now for the upper half
    of d's pool (d's was given at the testbed's start: it comes first)."""
    from meshd.adapters import identity
    from meshd.core.membership import (
        SCOPE_ALL,
        DelegationCertificate,
        MeshDefinition,
        issue_delegation,
    )

    mesh = MeshDefinition.decode((bed.state("b") / "mesh.cert").read_bytes())
    d_pool = DelegationCertificate.decode((bed.state("d") / "delegation.cert").read_bytes())
    upper = list(d_pool.ipv4_pool.subnets())[1]
    delegate = identity.generate(where)
    now = int(time.time())
    delegation = issue_delegation(
        identity.load(bed.dir / "admin").signing_key,
        mesh=mesh,
        delegate=delegate.node_id,
        scope=SCOPE_ALL,
        ipv4_pool=upper,
        not_before=now - 10,
        expires_at=now + 3600,
        serial=9000,
    )
    return delegate.signing_key, delegation


def mint_pool(bed: Bed) -> list[str]:
    from meshd.core.membership import DelegationCertificate

    delegation = DelegationCertificate.decode((bed.state("d") / "delegation.cert").read_bytes())
    return [str(host) for host in delegation.ipv4_pool.hosts()]
