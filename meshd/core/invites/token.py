"""The invite token a person carries from the issuer to the new node, and its checks (pure).

Token text = URL-safe base64 without padding of ``invite bytes + secret`` (the canonical
Invite, then its 32-byte secret), on one line: it survives copy and paste, a chat message
and a QR code. An invite for a private name (meshd.core.membership.names: the invite, and so
the certificate, holds only the name's commitment) carries the name after the secret:
``invite bytes + secret + name (UTF-8) + u8 its length``; only the household ever reads it.

The secret is the seed of the one-time Ed25519 key whose public half the
signed invite commits to (``invite_key``); the joining node proves it by signing its join
request with that key (meshd.core.invites.request), so the secret itself never leaves the node.

``parse_token`` checks what the token alone can show (its bytes, the issuer's signature,
the secret against the commitment); ``verify_invite`` checks it against the admin keys,
the mesh and the time, with the same clock tolerance as certificates.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from nacl.signing import SigningKey

from meshd.core.invites.errors import InviteError, InviteReason
from meshd.core.invites.invite import Invite
from meshd.core.membership import DEFAULT_SKEW_S, MembershipError, Reason, Scope
from meshd.core.membership.names import NameOpening, is_committed, salt_for_invite

SECRET_LENGTH = 32
_URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def invite_key(secret: bytes) -> bytes:
    """The public key the invite commits to for ``secret``."""
    return bytes(SigningKey(secret).verify_key)


def _refused(exc: MembershipError) -> InviteError:
    reason = (
        InviteReason.BAD_SIGNATURE if exc.reason is Reason.BAD_SIGNATURE else InviteReason.MALFORMED
    )
    return InviteError(reason, exc.message)


def decode_invite(data: bytes) -> Invite:
    """The invite in ``data`` (canonical bytes from a peer) with its signature checked."""
    try:
        invite = Invite.decode(data)
        invite.verify_signature()
    except MembershipError as exc:
        raise _refused(exc) from None
    return invite


@dataclass(frozen=True)
class InviteToken:
    invite: Invite
    secret: bytes  # gives the right to join: never logged, never sent
    name: str | None = None  # the private name the invite commits to; None: not private

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_LENGTH or invite_key(self.secret) != self.invite.invite_key:
            raise ValueError("the secret is not the one the invite commits to")
        if is_committed(self.invite.name) != (self.name is not None):
            raise ValueError("a token carries the name exactly when the invite commits to it")
        if self.opening is not None and not self.opening.opens(self.invite.name):
            raise ValueError("the name is not the one the invite commits to")

    @property
    def opening(self) -> NameOpening | None:
        """The private name and its salt (what the node shows its neighbours)."""
        if self.name is None:
            return None
        return NameOpening(self.name, salt_for_invite(self.secret))

    @property
    def node_name(self) -> str:
        """The household's name: the private one, or the invite's."""
        return self.invite.name if self.name is None else self.name

    def __repr__(self) -> str:  # never print the secret
        return f"InviteToken(invite_id={self.invite.invite_id.hex()!r})"

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey(self.secret)

    def text(self) -> str:
        raw = self.invite.encode() + self.secret
        if self.name is not None:
            name = self.name.encode()
            raw += name + bytes([len(name)])
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse_token(text: str) -> InviteToken:
    """The token in ``text`` (surrounding white space ignored); InviteError when it is not
    one exactly as issued: malformed, bad_signature or bad_secret."""
    text = text.strip()
    if not _URLSAFE.fullmatch(text):
        raise InviteError(InviteReason.MALFORMED, "not an invite token (URL-safe characters)")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InviteError(InviteReason.MALFORMED, "not an invite token (bad length)") from None
    # base64 has spare bits in its last character: refuse all but the one spelling.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise InviteError(InviteReason.MALFORMED, "not an invite token (altered characters)")
    if len(raw) <= SECRET_LENGTH:
        raise InviteError(InviteReason.MALFORMED, f"{len(raw)} bytes is too short for a token")
    try:
        invite, secret, name = decode_invite(raw[:-SECRET_LENGTH]), raw[-SECRET_LENGTH:], None
    except InviteError as exc:
        private = _with_name(raw) if exc.reason is InviteReason.MALFORMED else None
        if private is None:
            raise
        invite, secret, name = private
    if invite_key(secret) != invite.invite_key:
        raise InviteError(InviteReason.BAD_SECRET, "the secret does not match the invite")
    try:
        return InviteToken(invite, secret, name)
    except ValueError as exc:  # the name does not open the invite's commitment
        raise InviteError(InviteReason.MALFORMED, str(exc)) from None


def _with_name(raw: bytes) -> tuple[Invite, bytes, str] | None:
    """A private name's token: invite, secret, name, the name's length last. None when
    ``raw`` is not framed as one (the caller's error about the plain form stands)."""
    cut = len(raw) - 1 - raw[-1]
    if raw[-1] == 0 or cut <= SECRET_LENGTH:
        return None
    try:
        invite = decode_invite(raw[: cut - SECRET_LENGTH])
    except InviteError as exc:
        if exc.reason is InviteReason.MALFORMED:
            return None
        raise
    try:
        name = raw[cut:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise InviteError(InviteReason.MALFORMED, "the token's name is not UTF-8") from None
    return invite, raw[cut - SECRET_LENGTH : cut], name


def _check_issuer(invite: Invite, admins: frozenset[str], now: float, skew_s: int) -> None:
    """An admin, or a delegate whose delegation (from an admin, for invites, in time, with
    the invite's address in its pool) comes with the invite."""
    delegation = invite.delegation
    if invite.issuer in admins:
        if delegation is not None:
            raise InviteError(InviteReason.UNTRUSTED_ISSUER, "an admin's invite has a delegation")
        return
    if delegation is None:
        raise InviteError(
            InviteReason.UNTRUSTED_ISSUER,
            f"issued by {invite.issuer}: not an admin, and no delegation comes with it",
        )
    problem = None
    if delegation.issuer not in admins:
        problem = f"delegation signed by {delegation.issuer}, not an admin"
    elif Scope.INVITE not in delegation.scope:
        problem = "the delegation does not allow invites"
    elif not delegation.not_before - skew_s <= now < delegation.expires_at + skew_s:
        problem = f"the delegation is valid {delegation.not_before}..{delegation.expires_at}"
    elif invite.mesh_ipv4 not in delegation.ipv4_pool:
        problem = f"{invite.mesh_ipv4} is outside the delegation's pool {delegation.ipv4_pool}"
    if problem is not None:
        raise InviteError(InviteReason.UNTRUSTED_ISSUER, f"{problem} (now {now})")
    try:
        delegation.verify_signature()
    except MembershipError as exc:
        raise _refused(exc) from None


def verify_invite(
    invite: Invite,
    now: float,
    *,
    admins: tuple[str, ...] | frozenset[str],
    mesh_id: bytes | None = None,
    skew_s: int = DEFAULT_SKEW_S,
) -> Invite:
    """Check ``invite`` against the admin keys (the joining node passes the invite's own:
    the invite is what it trusts; a member passes its mesh's) at ``now``, widened by
    ``skew_s`` both ways. InviteError with the first reason found."""
    if skew_s < 0:
        raise ValueError(f"skew_s must not be negative, got {skew_s}")
    if mesh_id is not None and invite.mesh_id != mesh_id:
        raise InviteError(
            InviteReason.WRONG_MESH, f"invite for mesh {invite.mesh_id.hex()}, not {mesh_id.hex()}"
        )
    try:
        invite.verify_signature()
    except MembershipError as exc:
        raise _refused(exc) from None
    _check_issuer(invite, frozenset(admins), now, skew_s)
    if now < invite.issued_at - skew_s:
        raise InviteError(
            InviteReason.NOT_YET_VALID,
            f"issued at {invite.issued_at}, now is {now}: is this machine's clock right?",
        )
    if now >= invite.expires_at + skew_s:
        raise InviteError(InviteReason.EXPIRED, f"expired at {invite.expires_at}, now is {now}")
    return invite
