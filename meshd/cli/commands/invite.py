"""meshd invite --name NAME [--show-name] [--expires 7d] [--config FILE] [--endpoint ...]

On an admin node, or a node holding a delegation for invites and memberships: sign a
one-time invite, record it in the state directory's invite store (so that it can be
redeemed, once), and print the token on a line of its own, then as a QR code. A line
saying what was issued goes to stderr, so that ``meshd invite ... | head -1`` is the token.

The bootstrap endpoints in the invite are this node's own (``--endpoint``, or the IPv4
address of each underlay interface, as the beacons choose them, with the QUIC port) and
the config's ``[[bootstrap]]`` peers, at most eight in all.

The name is private unless ``--show-name``: the invite and the certificate hold only its
commitment, the token the name (meshd.core.membership.names), and the node shows it to its
neighbours alone.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from meshd.cli.commands import add_config_argument

if TYPE_CHECKING:
    from meshd.adapters.identity import Identity
    from meshd.adapters.invite_store import SqliteInviteStore
    from meshd.config import Config
    from meshd.core.invites import BootstrapEndpoint, InviteToken, Issuer
    from meshd.core.membership import OwnMembership

_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="the new household node's name")
    p.add_argument(
        "--show-name",
        action="store_true",
        help="certify the name itself, for every member to read (default: only its "
        "commitment; the node shows the name to its neighbours)",
    )
    p.add_argument(
        "--expires", default="7d", help="how long the invite can be redeemed (30m, 12h, 7d, 2w)"
    )
    add_config_argument(p)
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="this node's QUIC endpoint as the new node reaches it (repeatable; "
        "default: its underlay addresses)",
    )
    p.add_argument(
        "--mesh-ipv4",
        type=ipaddress.IPv4Address,
        help="the mesh address to give (default: the next free one of this node's pool)",
    )


def parse_duration(text: str) -> int:
    """``7d`` -> 604800 seconds; ValueError when it is not a duration."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"--expires {text!r}: expected a number and s, m, h, d or w (7d)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _issuer(ident: Identity, own: OwnMembership, now: float) -> Issuer:
    from meshd.core.invites import Issuer
    from meshd.core.membership import SCOPE_ALL, MembershipError, verify_delegation

    if ident.node_id in own.trust.admins:
        return Issuer(ident.signing_key, own.trust, None)
    delegation = own.delegation
    if delegation is None or delegation.delegate != ident.node_id:
        raise ValueError(
            "this node cannot invite: it is not an admin of the mesh and holds no delegation"
        )
    try:
        verify_delegation(delegation, own.trust, now, SCOPE_ALL)
    except MembershipError as exc:
        raise ValueError(f"this node's delegation cannot issue invites: {exc}") from None
    return Issuer(ident.signing_key, own.trust, delegation)


def _ip_json(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    parsed = json.loads(out)
    return parsed if isinstance(parsed, list) else []


def _own_endpoints(cfg: Config, node_id: str) -> list[BootstrapEndpoint]:
    """This node's underlay addresses: those the beacons use (every up interface with an
    IPv4 broadcast address but ours, the LAN's and the uplinks', or the configured ones)."""
    from meshd.adapters.beacon_socket import candidate_interfaces
    from meshd.core.invites import BootstrapEndpoint

    try:
        addrs = _ip_json("address", "show")
        uplinks = {str(r.get("dev")) for r in _ip_json("route", "show", "default")}
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        raise ValueError(f"cannot read this node's addresses ({exc}): give --endpoint") from None
    exclude = {*cfg.lan.interfaces, *uplinks, cfg.uplink.interface}
    found = candidate_interfaces(
        addrs, wireguard_prefix=cfg.wireguard.interface_prefix, exclude=exclude
    )
    wanted = cfg.discovery.beacon_interfaces
    return [
        BootstrapEndpoint(node_id, ipaddress.IPv4Address(u.address), cfg.control.quic_port)
        for u in found
        if u.address is not None and (u.ifname in wanted if wanted else True)
    ]


def _endpoints(args: argparse.Namespace, cfg: Config, node_id: str) -> list[BootstrapEndpoint]:
    from meshd.core.endpoints import format_endpoint
    from meshd.core.invites import MAX_BOOTSTRAP, BootstrapEndpoint

    own = [
        BootstrapEndpoint.from_address(node_id, text) for text in args.endpoint
    ] or _own_endpoints(cfg, node_id)
    peers = [
        BootstrapEndpoint.from_address(b.node_id, format_endpoint(b.address)) for b in cfg.bootstrap
    ]
    endpoints = list(dict.fromkeys([*own, *peers]))[:MAX_BOOTSTRAP]
    if not endpoints:
        raise ValueError("no endpoint to put in the invite: give --endpoint HOST:PORT")
    return endpoints


def _issue(
    args: argparse.Namespace,
    store: SqliteInviteStore,
    issuer: Issuer,
    endpoints: list[BootstrapEndpoint],
    own_ipv4: ipaddress.IPv4Address,
    now: int,
    lifetime_s: int,
    directory: bytes = b"",
) -> InviteToken:
    """The invite, recorded in ``store`` before its token is out: always redeemable. Its
    address is none that a member holds by the node's certificate directory
    (``directory``, its file) either, and an admin's is in no delegate's pool: the mesh
    would refuse that member (``address_in_use``)."""
    from meshd.core.invites import allocate_ipv4, issue_invite
    from meshd.core.membership.directory import held_in

    held, pools = held_in(directory)
    taken = store.taken_ipv4() | {own_ipv4} | held
    if args.mesh_ipv4 in taken:
        raise ValueError(
            f"{args.mesh_ipv4} is taken (this node's, a member's, or in one of its invites)"
        )
    avoid = pools if issuer.delegation is None else set()
    token = issue_invite(
        issuer,
        name=args.name,
        mesh_ipv4=args.mesh_ipv4 or allocate_ipv4(issuer.pool, taken, avoid),
        bootstrap=endpoints,
        issued_at=now,
        expires_at=now + lifetime_s,
        invite_id=secrets.token_bytes(16),
        secret=secrets.token_bytes(32),
        show_name=args.show_name,
    )
    store.record_issued(token.invite, token.node_name)
    return token


def main(args: argparse.Namespace) -> int:
    from meshd import config
    from meshd.adapters import identity, safe_files, trust
    from meshd.adapters.invite_store import SqliteInviteStore
    from meshd.cli.commands import load_node

    now = int(time.time())
    try:
        lifetime_s = parse_duration(args.expires)
        cfg, ident, own = load_node(args.config, now)
        state_dir = Path(cfg.node.state_dir)
        issuer = _issuer(ident, own, now)
        endpoints = _endpoints(args, cfg, ident.node_id)
        # The daemon's file, in the directory its user owns: opened (made, the first time)
        # with that user's rights, never through a link planted there.
        with safe_files.as_owner_of(state_dir):
            store = SqliteInviteStore.open(state_dir)
            try:
                ipv4 = own.member.mesh_ipv4
                directory = _read_directory(state_dir)
                token = _issue(args, store, issuer, endpoints, ipv4, now, lifetime_s, directory)
            finally:
                store.close()
    except (
        config.ConfigError,
        identity.KeyFileError,
        trust.TrustError,
        OSError,
        ValueError,
    ) as exc:
        print(f"meshd invite: {exc}", file=sys.stderr)
        return 1
    _print(token.text())
    invite = token.invite
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(invite.expires_at))
    print(
        f"meshd invite: {invite.invite_id.hex()} for {token.node_name!r} ({invite.mesh_ipv4}), "
        f"one use, until {until}; on the new node: provisioning/provision --invite - "
        "(then paste it) or --invite-file FILE",
        file=sys.stderr,
    )
    return 0


def _read_directory(state_dir: Path) -> bytes:
    """The daemon's certificate directory file (empty if there is none yet)."""
    from meshd.daemon.control import DIRECTORY_FILE

    try:
        return (state_dir / DIRECTORY_FILE).read_bytes()
    except FileNotFoundError:
        return b""


def _print(text: str) -> None:
    """The token on a line of its own, then as a QR code (half blocks: 2 rows a line)."""
    import segno

    print(text, flush=True)
    segno.make(text, error="l").terminal(out=sys.stdout, compact=True)
