"""Issuing invites (pure: keys, fields and times in; a signed token out).

These run on our own node with our own key, so a wrong argument is our misuse and raises
ValueError at once (as meshd.core.membership.issue does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from nacl.signing import SigningKey

from meshd.core.invites.invite import BootstrapEndpoint, Invite, bootstrap_order
from meshd.core.invites.token import InviteToken, invite_key
from meshd.core.keys import node_id_from_public
from meshd.core.membership import SCOPE_ALL, DelegationCertificate, MeshTrust
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.membership.names import PREFIX, commit, is_committed, salt_for_invite


@dataclass(frozen=True)
class Issuer:
    """A node that issues invites and later certifies the nodes that redeem them: an
    admin (no delegation), or a delegate whose delegation allows both (Scope.INVITE and
    Scope.MEMBERSHIP), handing out addresses from its pool."""

    signing_key: SigningKey
    trust: MeshTrust
    delegation: DelegationCertificate | None

    def __post_init__(self) -> None:
        if self.delegation is None:
            if self.node_id not in self.trust.admins:
                raise ValueError(f"{self.node_id} is not an admin and has no delegation")
            return
        if self.delegation.delegate != self.node_id or self.delegation.mesh_id != (
            self.trust.mesh_id
        ):
            raise ValueError("the delegation is not for this key and mesh")
        if SCOPE_ALL not in self.delegation.scope:
            raise ValueError("the delegation must allow invites and membership certificates")

    def __repr__(self) -> str:  # never print a private key
        return f"Issuer(node_id={self.node_id!r})"

    @property
    def node_id(self) -> str:
        return node_id_from_public(bytes(self.signing_key.verify_key))

    @property
    def pool(self) -> ipaddress.IPv4Network:
        """The addresses this issuer may hand out."""
        if self.delegation is None:
            return self.trust.definition.ipv4_prefix
        return self.delegation.ipv4_pool


def allocate_ipv4(
    pool: ipaddress.IPv4Network,
    taken: Collection[ipaddress.IPv4Address],
    avoid: Collection[ipaddress.IPv4Network] = (),
) -> ipaddress.IPv4Address:
    """The lowest host address of ``pool`` not in ``taken`` nor in one of ``avoid`` (the
    pools of delegates, when an admin allocates); ValueError when none is left."""
    for address in pool.hosts():
        if address not in taken and not any(address in other for other in avoid):
            return address
    raise ValueError(f"no free address left in {pool}")


def issue_invite(
    issuer: Issuer,
    *,
    name: str,
    mesh_ipv4: ipaddress.IPv4Address,
    bootstrap: Iterable[BootstrapEndpoint],
    issued_at: int,
    expires_at: int,
    invite_id: bytes,
    secret: bytes,
    show_name: bool = False,
) -> InviteToken:
    """A signed invite and its secret. ``invite_id`` (16 bytes) and ``secret`` (32) are
    random bytes the caller draws (``secrets.token_bytes``); the caller records the invite
    in its store before handing the token out. The invite (and the certificate it earns)
    holds the name's commitment, the token the name (meshd.core.membership.names), unless
    ``show_name``: then the name itself, for the whole mesh to read."""
    if is_committed(name):
        raise ValueError(f"a node's name must not begin with {PREFIX!r}")
    if mesh_ipv4 not in issuer.pool:
        raise ValueError(f"{mesh_ipv4} is outside this issuer's pool {issuer.pool}")
    delegation = issuer.delegation
    if delegation is not None and expires_at > delegation.expires_at:
        raise ValueError(f"the delegation ends at {delegation.expires_at}, before the invite")
    definition = issuer.trust.definition
    invite = Invite(
        mesh_id=definition.mesh_id,
        ipv4_prefix=definition.ipv4_prefix,
        ipv6_prefix=definition.ipv6_prefix,
        admins=definition.admins,
        delegation=delegation,
        bootstrap=bootstrap_order(list(bootstrap)),
        name=name if show_name else commit(name, salt_for_invite(secret)),
        mesh_ipv4=mesh_ipv4,
        issued_at=issued_at,
        expires_at=expires_at,
        invite_id=invite_id,
        invite_key=invite_key(secret),
        issuer=issuer.node_id,
        signature=NO_SIGNATURE,
    ).sign(issuer.signing_key)
    return InviteToken(invite, secret, None if show_name else name)
