"""meshd invite: on an admin or delegate node, a token line, a QR code, a stored record."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import pytest

from meshd.adapters import identity, trust
from meshd.adapters.invite_store import STORE_FILE, SqliteInviteStore
from meshd.cli import main as meshd
from meshd.cli.commands import invite as command
from meshd.core.invites import parse_token, verify_invite
from meshd.core.membership import SCOPE_ALL, create_mesh, issue_delegation, issue_membership
from tests.golden.membership.make_vectors import ADMIN, node_id
from tests.local_privilege import NOBODY, needs_root, plant, reachable_dir, untouched

NOW = int(time.time())  # the certificates' times; the tokens are checked at the clock's
PEER = node_id(ADMIN)


def _node(tmp_path: Path, *, admin: bool, delegation: bool = False) -> Path:
    """A node's state dir and config: the mesh's admin itself, or a member of ADMIN's mesh
    (with a delegation or not). Returns the config path."""
    state = tmp_path / "state"
    ident = identity.generate(state)
    mesh_key = ident.signing_key if admin else ADMIN
    mesh = create_mesh(
        mesh_key,
        mesh_id=bytes(range(16)),
        name="street",
        ipv4_prefix=ipaddress.IPv4Network("10.77.0.0/16"),
        ipv6_prefix=ipaddress.IPv6Network("fd6d:6573:6864::/48"),
        issued_at=NOW - 60,
    )
    cert = issue_membership(
        mesh_key,
        mesh=mesh,
        node_id=ident.node_id,
        name="first",
        wireguard_public=ident.wireguard_public,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.1"),
        not_before=NOW - 60,
        expires_at=NOW + 86400 * 30,
        serial=1,
    )
    (state / trust.MESH_FILE).write_bytes(mesh.encode())
    (state / trust.MEMBERSHIP_FILE).write_bytes(cert.encode())
    if delegation:
        granted = issue_delegation(
            ADMIN,
            mesh=mesh,
            delegate=ident.node_id,
            scope=SCOPE_ALL,
            ipv4_pool=ipaddress.IPv4Network("10.77.5.0/24"),
            not_before=NOW - 60,
            expires_at=NOW + 86400 * 30,
            serial=2,
        )
        (state / trust.DELEGATION_FILE).write_bytes(granted.encode())
    config = tmp_path / "meshd.toml"
    config.write_text(
        f'[node]\nname = "first"\nstate_dir = "{state}"\nmesh_ipv4 = "10.77.0.1"\n'
        f'[mesh]\nadmin_keys = ["{mesh.issuer}"]\n'
        f'[[bootstrap]]\nnode_id = "{PEER}"\naddress = "192.0.2.7:6697"\n'
    )
    return config


def _invite(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    code = meshd(["invite", "--name", "Haus 2", "--config", str(config), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "one use, until" in err
    return out.splitlines()


def test_an_admin_prints_a_token_line_then_a_qr_code_and_records_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _node(tmp_path, admin=True)
    lines = _invite(config, capsys, "--endpoint", "192.0.2.1:6697", "--expires", "2d")
    token = parse_token(lines[0])
    invite = verify_invite(token.invite, int(time.time()), admins=token.invite.admins)
    assert token.node_name == "Haus 2" and invite.delegation is None
    assert token.opening is not None and token.opening.opens(invite.name)  # private
    assert invite.mesh_ipv4 == ipaddress.IPv4Address("10.77.0.2")  # 10.77.0.1 is ours
    assert invite.expires_at - invite.issued_at == 2 * 86400
    assert sorted(e.address for e in invite.bootstrap) == ["192.0.2.1:6697", "192.0.2.7:6697"]
    assert len(lines) > 20 and all(set(line) <= set(" ▀▄█") for line in lines[1:])
    store = SqliteInviteStore.open(tmp_path / "state")
    record = store.lookup(invite.invite_id)
    assert record is not None and record.redeemed_by is None and record.name == "Haus 2"

    again = parse_token(_invite(config, capsys, "--endpoint", "192.0.2.1:6697")[0])
    assert again.invite.mesh_ipv4 == ipaddress.IPv4Address("10.77.0.3")
    assert again.invite.invite_id != invite.invite_id and again.secret != token.secret


def test_a_delegate_gives_addresses_from_its_pool_and_carries_its_delegation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _node(tmp_path, admin=False, delegation=True)
    token = parse_token(_invite(config, capsys, "--endpoint", "[2001:db8::1]:6697")[0])
    assert token.invite.delegation is not None
    assert token.invite.mesh_ipv4 == ipaddress.IPv4Address("10.77.5.1")
    verify_invite(token.invite, int(time.time()), admins=(PEER,))


def test_an_admin_gives_no_address_a_member_holds_nor_one_in_a_delegates_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The node's certificate directory says who holds what (issue 28, item 4): the mesh
    would refuse a second holder of an address (address_in_use)."""
    from meshd.core.membership import MeshDefinition
    from meshd.core.membership.directory import FILE_MAGIC, Entry

    config = _node(tmp_path, admin=True)
    state = tmp_path / "state"
    admin = identity.load(state).signing_key
    mesh = MeshDefinition.decode((state / trust.MESH_FILE).read_bytes())
    delegate = identity.generate(tmp_path / "delegate")
    pool = issue_delegation(
        admin,
        mesh=mesh,
        delegate=delegate.node_id,
        scope=SCOPE_ALL,
        ipv4_pool=ipaddress.IPv4Network("10.77.0.0/28"),
        not_before=NOW - 60,
        expires_at=NOW + 86400,
        serial=7,
    )
    entries = []
    for k, (signer, ip, chain) in enumerate(
        [(admin, "10.77.0.2", None), (delegate.signing_key, "10.77.0.9", pool)]
    ):
        member = identity.generate(tmp_path / f"m{k}")
        cert = issue_membership(
            signer,
            mesh=mesh,
            node_id=member.node_id,
            name="m",
            wireguard_public=member.wireguard_public,
            mesh_ipv4=ipaddress.IPv4Address(ip),
            not_before=NOW - 60,
            expires_at=NOW + 86400,
            serial=10 + k,
            delegation=chain,
        )
        entries.append(Entry(cert, (chain,) if chain else ()).encoded)
    (state / "directory").write_bytes(FILE_MAGIC + b"".join(entries))
    token = parse_token(_invite(config, capsys, "--endpoint", "192.0.2.1:6697")[0])
    assert token.invite.mesh_ipv4 == ipaddress.IPv4Address("10.77.0.16")  # past the pool
    code = meshd(["invite", "--name", "x", "--config", str(config), "--mesh-ipv4", "10.77.0.2"])
    assert code == 1 and "10.77.0.2 is taken" in capsys.readouterr().err


def test_a_plain_member_cannot_invite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _node(tmp_path, admin=False)
    assert meshd(["invite", "--name", "x", "--config", str(config)]) == 1
    assert "not an admin of the mesh and holds no delegation" in capsys.readouterr().err
    assert not (tmp_path / "state" / "invites.sqlite").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "7 days"], "expected a number and s, m, h, d or w"),
        (["--endpoint", "example.org:6697"], "does not appear to be an IPv4 or IPv6 address"),
        (["--mesh-ipv4", "10.77.0.1"], "10.77.0.1 is taken"),
        (["--mesh-ipv4", "10.99.0.1"], "outside this issuer's pool"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    config = _node(tmp_path, admin=True)
    assert meshd(["invite", "--name", "x", "--config", str(config), *args]) == 1
    assert message in capsys.readouterr().err


def test_own_endpoints_are_the_underlay_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshd import config as meshd_config

    def link(name: str, address: str) -> dict[str, object]:
        info = [{"family": "inet", "local": address, "prefixlen": 24}]
        return {"ifname": name, "flags": ["UP", "LOWER_UP"], "addr_info": info}

    answers = {
        "address": [
            link("lo", "127.0.0.1"),
            link("eth0", "192.168.1.2"),  # the household LAN
            link("wan", "203.0.113.5"),  # the uplink: has the default route
            link("wlan0", "100.64.0.1"),  # the underlay
            link("mw1234", "10.1.2.3"),  # one of meshd's own links
        ],
        "route": [{"dst": "default", "dev": "wan"}],
    }
    monkeypatch.setattr(command, "_ip_json", lambda *args: answers[args[0]])
    cfg = meshd_config.load(_node(tmp_path, admin=True))
    cfg = meshd_config.parse(cfg.path.read_text() + '[lan]\ninterfaces = ["eth0"]\n', cfg.path)
    endpoints = command._own_endpoints(cfg, PEER)
    assert [e.address for e in endpoints] == ["100.64.0.1:6697"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400), ("12h", 43200), ("7d", 604800), ("2w", 1209600)]
)
def test_durations(text: str, seconds: int) -> None:
    assert command.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0d", "7", "d", "1y", "-1d", "1234567d"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a number"):
        command.parse_duration(text)


def test_the_config_comes_from_meshd_config_without_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _node(tmp_path, admin=True)
    monkeypatch.setenv("MESHD_CONFIG", str(config))  # as `testbed exec` sets it
    code = meshd(["invite", "--name", "Haus 3", "--endpoint", "192.0.2.1:6697"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert parse_token(out.splitlines()[0]).node_name == "Haus 3"


def test_show_name_certifies_the_name_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _node(tmp_path, admin=True)
    lines = _invite(config, capsys, "--endpoint", "192.0.2.1:6697", "--show-name")
    token = parse_token(lines[0])
    assert token.invite.name == token.node_name == "Haus 2" and token.opening is None


# ---- local privilege: root runs it in a state directory the meshd user owns --------------

ENDPOINT = ("--endpoint", "192.0.2.1:6697")


def test_a_planted_store_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _node(tmp_path, admin=True)
    victim = plant(tmp_path / "state", STORE_FILE)
    code = meshd(["invite", "--name", "x", "--config", str(config), *ENDPOINT])
    assert code == 1
    assert "invites.sqlite: is a symbolic link: not following it" in capsys.readouterr().err
    untouched(victim)


@needs_root
def test_root_makes_the_store_as_the_state_directorys_owner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with reachable_dir() as base:
        config = _node(base, admin=True)
        state = base / "state"
        for path in (state, *state.iterdir()):
            os.chown(path, NOBODY, NOBODY)
        _invite(config, capsys, *ENDPOINT)
        st = (state / STORE_FILE).stat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)  # the daemon records redemptions
        assert all(p.stat().st_uid == NOBODY for p in state.iterdir())
        assert (os.geteuid(), os.getegid()) == (0, 0)
        # Its owner swaps in a link to where it may not write: root's next run neither
        # makes that file nor gives it away (the old chown by path did both).
        (state / STORE_FILE).unlink()
        (state / STORE_FILE).symlink_to(base / "ld.so.preload")
        assert meshd(["invite", "--name", "x", "--config", str(config), *ENDPOINT]) == 1
        assert "is a symbolic link: not following it" in capsys.readouterr().err
        assert not (base / "ld.so.preload").exists()
