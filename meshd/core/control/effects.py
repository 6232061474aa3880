"""What the control plane asks of its shell (pure): the outputs of ``ControlPlane``.

Every input (a session event, a message, a beacon, a probe, a tick) returns nothing; what
it caused waits in ``ControlPlane.effects`` and the shell takes it with ``drain`` and does
it, in order (aioquic's ``datagrams_to_send`` and ``next_event`` are the model). The one
timer is ``ControlPlane.flush_at``: the shell re-arms it after each input."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshd.core.control.peer import LinkSpec
from meshd.core.endpoints import Address
from meshd.core.membership import (
    Cosigned,
    MembershipCertificate,
    MeshDefinition,
    RevocationSet,
)
from meshd.core.proto import session as messages
from meshd.core.routing.babel import RouteChange

MeteringMessage = messages.Claim | messages.ReceiptMessage | messages.ReceiptAck
RenewalMessage = messages.RenewRequest | messages.RenewGranted | messages.RenewRefused
ReleaseMessage = messages.Release | messages.ReleaseFetch | messages.ReleasePart


@dataclass(frozen=True)
class Send:
    """One message on the session with ``node_id`` (dropped if it has none)."""

    node_id: str
    data: bytes


@dataclass(frozen=True)
class Close:
    """Close the session with ``node_id``, telling it ``reason``."""

    node_id: str
    reason: str


@dataclass(frozen=True)
class Verified:
    """The session with ``node_id`` showed a certificate that verifies: the transport
    counts it with the verified ones from now on (meshd.adapters.quic)."""

    node_id: str


@dataclass(frozen=True)
class Dial:
    address: Address
    node_id: str  # the node expected there: another key closes the session


@dataclass(frozen=True)
class Probe:
    """A link-quality packet through a neighbour's tunnel (to its link-local address)."""

    packet: bytes
    address: ipaddress.IPv6Address
    ifname: str


@dataclass(frozen=True)
class EnsureLink:
    """Build the WireGuard link ``spec`` says, or change it to that."""

    spec: LinkSpec


@dataclass(frozen=True)
class RemoveLink:
    node_id: str


@dataclass(frozen=True)
class ApplyRoutes:
    changes: tuple[RouteChange, ...]


@dataclass(frozen=True)
class Metering:
    """A verified neighbour's claim or receipt (meshd.daemon.claims)."""

    node_id: str
    message: MeteringMessage


@dataclass(frozen=True)
class Release:
    """A verified neighbour's RELEASE, RELEASE_FETCH or RELEASE_PART (meshd.daemon.releases)."""

    node_id: str
    message: ReleaseMessage


@dataclass(frozen=True)
class JoinRequest:
    """A node without a certificate asks to join, on a join-only session (meshd.daemon.joins)."""

    node_id: str
    message: messages.JoinRequestMessage


@dataclass(frozen=True)
class Renewal:
    """A verified neighbour's RENEW_* (meshd.daemon.joins)."""

    node_id: str
    message: RenewalMessage


@dataclass(frozen=True)
class SaveSeqno:
    """RFC 8966 3.5.4: a node that forgets its seqno is shunned until sources expire."""

    seqno: int


@dataclass(frozen=True)
class SaveDirectory:
    data: bytes  # every member's certificate (meshd.core.membership.directory)


@dataclass(frozen=True)
class SaveRevocations:
    revocations: RevocationSet


@dataclass(frozen=True)
class SaveProposals:
    proposals: tuple[bytes, ...]  # every proposal held (meshd.core.membership.proposals)


@dataclass(frozen=True)
class SaveClockFloor:
    floor: float  # Unix seconds the mesh clock never reads below (meshd.core.membership.clock)


@dataclass(frozen=True)
class SaveDefinition:
    """A mesh definition adopted: appended to the stored chain (which starts at
    ``previous`` when none is stored) and stored as ours, with our certificate."""

    definition: Cosigned[MeshDefinition]
    previous: Cosigned[MeshDefinition]
    certificate: MembershipCertificate


Effect = (
    Send
    | Close
    | Verified
    | Dial
    | Probe
    | EnsureLink
    | RemoveLink
    | ApplyRoutes
    | Metering
    | Release
    | JoinRequest
    | Renewal
    | SaveSeqno
    | SaveDirectory
    | SaveRevocations
    | SaveProposals
    | SaveClockFloor
    | SaveDefinition
)
