"""Mesh membership as a pure core: who is in the mesh, who said so, and since when.

A mesh is a signed MeshDefinition (random mesh id, IPv4/IPv6 prefixes, admin keys). Nodes
hold MembershipCertificates signed by an admin or by a delegate (DelegationCertificate);
admins sign Revocations, gossiped as a RevocationSet. ``verify_membership`` decides.
No I/O and no clock: ``now`` is passed in as Unix seconds.
"""

from meshd.core.membership.canonical import DecodeError, MessageType
from meshd.core.membership.cosigned import Cosigned
from meshd.core.membership.errors import MembershipError, Reason
from meshd.core.membership.issue import create_mesh, issue_delegation, issue_membership, revoke
from meshd.core.membership.messages import (
    SCOPE_ALL,
    DelegationCertificate,
    MembershipCertificate,
    MeshDefinition,
    Message,
    Revocation,
    RevocationKind,
    RevocationTarget,
    Scope,
    decode_message,
    message_from_json,
)
from meshd.core.membership.revocations import RevocationSet
from meshd.core.membership.verify import (
    DEFAULT_SKEW_S,
    MeshTrust,
    OwnMembership,
    VerifiedMember,
    verify_delegation,
    verify_membership,
)

__all__ = [
    "DEFAULT_SKEW_S",
    "SCOPE_ALL",
    "Cosigned",
    "DecodeError",
    "DelegationCertificate",
    "MembershipCertificate",
    "MembershipError",
    "MeshDefinition",
    "MeshTrust",
    "Message",
    "MessageType",
    "OwnMembership",
    "Reason",
    "Revocation",
    "RevocationKind",
    "RevocationSet",
    "RevocationTarget",
    "Scope",
    "VerifiedMember",
    "create_mesh",
    "decode_message",
    "issue_delegation",
    "issue_membership",
    "message_from_json",
    "revoke",
    "verify_delegation",
    "verify_membership",
]
