"""Invites: how a new household's node joins the mesh (pure, but for the store adapter).

An admin, or a node holding a delegation for invites and memberships, issues an invite:
a signed record (mesh, admin keys, bootstrap endpoints, the invited name and address,
expiry, a random invite id, a commitment to a one-time secret) carried as a one-line
token together with the secret (``issue_invite``, ``InviteToken.text``). The new node
parses and checks it (``parse_token``, ``verify_invite``), makes its keys, and sends a
join request proving the secret for those keys (``join_request``); the issuer answers
with a membership certificate or a refusal with a reason (``redeem``).

One-time redemption across several bootstrap nodes: a bootstrap node does not decide. It
forwards the join request over the mesh to the invite's issuer, whose store of issued and
redeemed invites (meshd.adapters.invite_store) is the single truth, and relays the answer. So
a token cannot be redeemed twice, however many bootstrap nodes it is shown to, and an
issuer that lost its store refuses its outstanding invites (``unknown_invite``) instead
of honouring them twice.
"""

from meshd.core.invites.errors import InviteError, InviteReason, JoinRefusal
from meshd.core.invites.invite import MAX_BOOTSTRAP, BootstrapEndpoint, Invite
from meshd.core.invites.issue import Issuer, allocate_ipv4, issue_invite
from meshd.core.invites.redeem import InviteStore, IssuedInvite, redeem
from meshd.core.invites.request import JoinRequest, decode_join_request, join_request
from meshd.core.invites.token import InviteToken, decode_invite, parse_token, verify_invite

TOKEN_FILE = "invite.token"  # in a new node's state dir: the daemon redeems it on first start

__all__ = [
    "MAX_BOOTSTRAP",
    "TOKEN_FILE",
    "BootstrapEndpoint",
    "Invite",
    "InviteError",
    "InviteReason",
    "InviteStore",
    "InviteToken",
    "IssuedInvite",
    "Issuer",
    "JoinRequest",
    "JoinRefusal",
    "allocate_ipv4",
    "decode_invite",
    "decode_join_request",
    "issue_invite",
    "join_request",
    "parse_token",
    "redeem",
    "verify_invite",
]
