"""Session messages (pure): their kinds, limits, versions and features, and one frozen
dataclass per kind (meshd.core.proto.session: the wire format; codec: bytes to and from)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum

from meshd.core.errors import BadInput

MEMBERSHIP = 1
BABEL = 2
LINK = 3
ENDPOINTS = 4
REVOCATIONS = 5
GATEWAY = 6
EXIT_REQUEST = 7
EXIT_GRANT = 8
EXIT_REFUSED = 9
CLAIM = 10
RECEIPT = 11
RECEIPT_ACK = 12
JOIN_REQUEST = 13
JOIN_GRANTED = 14
JOIN_REFUSED = 15
RENEW_REQUEST = 16
RENEW_GRANTED = 17
RENEW_REFUSED = 18
CLOCK = 19
MESH_DEFINITION = 20
CAPABILITIES = 21
DIRECTORY_DIGEST = 22
DIRECTORY_FINGERPRINTS = 23
DIRECTORY_ENTRIES = 24
NAME = 25
MAP = 26
RELEASE = 27
RELEASE_FETCH = 28
RELEASE_PART = 29
PROPOSAL = 30
NAME_SALT_LENGTH = 16  # meshd.core.membership.names.SALT_LENGTH
MAX_NAME = 64  # octets, as a certificate's name
RECEIPT_LENGTH = 224  # meshd.core.receipts.receipt; checked again when the receipt is decoded
MAX_REASON = 64
MAX_JOIN_DETAIL = 256  # octets of a JOIN_REFUSED's explanation
MAX_ENDPOINTS = 256
MAX_REVOCATIONS = 1024
MAX_FEATURES = 64  # names in one CAPABILITIES
MAX_FEATURE_NAME = 32  # octets of one name
MAX_FINGERPRINTS = 4096  # in one DIRECTORY_FINGERPRINTS part
MAX_DIRECTORY_ENTRIES = 1024  # in one DIRECTORY_ENTRIES
FINGERPRINT_LENGTH = 8
MAX_RELEASE_PART = 32 * 1024  # octets of an artifact in one RELEASE_PART
DIGEST_LENGTH = 32

# Protocol versions: the QUIC ALPN ids of neighbour (and exit) sessions, newest first.
MESHD_2 = "meshd/2"  # adds CAPABILITIES and, with it, features
MESHD_1 = "meshd/1"  # kinds 1-20
PROTOCOLS: tuple[str, ...] = (MESHD_2, MESHD_1)
# Versions whose sessions start with CAPABILITIES (every one after meshd/1).
WITH_CAPABILITIES = frozenset({MESHD_2})
VERSION_UNSUPPORTED = "version_unsupported"  # a session's close reason: no version in common


class Feature(StrEnum):
    """What a node may announce in CAPABILITIES: each new message kind or field from meshd/2
    on is tied to one, and sent only to peers that announced it."""

    CAPABILITIES = "capabilities"  # meshd/2: this message, first on the session
    DIRECTORY = "directory"  # the DIRECTORY_* kinds: every member's certificate
    SIGNED_ROUTES = "signed_routes"  # Babel Updates carry OriginSignature sub-TLVs
    PRIVATE_NAMES = "private_names"  # NAME: a private name shown to a neighbour
    MAP = "map"  # MAP: the community map's records (meshd.core.proto.map_record), flooded
    RELEASES = "releases"  # RELEASE, RELEASE_FETCH, RELEASE_PART: new meshd from neighbours
    PROPOSALS = "proposals"  # PROPOSAL: what admins sign together (issue 27), flooded


FEATURES: frozenset[Feature] = frozenset(Feature)  # what this build supports


class SessionMessageError(BadInput):
    """A session message that is not one: its bytes, or its fields."""


@dataclass(frozen=True)
class Membership:
    certificate: bytes
    delegation: bytes = b""


@dataclass(frozen=True)
class BabelPacket:
    packet: bytes


@dataclass(frozen=True)
class Link:
    wireguard_port: int

    def __post_init__(self) -> None:
        if not 1 <= self.wireguard_port <= 0xFFFF:
            raise ValueError(f"WireGuard port {self.wireguard_port} out of range")


@dataclass(frozen=True)
class Endpoint:
    node_id: str  # 43-character node id
    host: str  # IPv4 or IPv6 address
    port: int


@dataclass(frozen=True)
class Endpoints:
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Revocations:
    revocations: tuple[bytes, ...]  # canonical Revocation records


@dataclass(frozen=True)
class Gateway:
    advert: bytes  # checked (signature, mesh) by whoever acts on it


@dataclass(frozen=True)
class MapMessage:
    record: bytes  # a canonical map record, checked by whoever acts on it


@dataclass(frozen=True)
class ProposalMessage:
    proposal: bytes  # a canonical proposal (meshd.core.membership.proposals), checked on use


@dataclass(frozen=True)
class ExitRequest:
    pass


@dataclass(frozen=True)
class ExitGrant:
    wireguard_port: int

    def __post_init__(self) -> None:
        if not 1 <= self.wireguard_port <= 0xFFFF:
            raise ValueError(f"WireGuard port {self.wireguard_port} out of range")


@dataclass(frozen=True)
class ExitRefused:
    reason: str

    def __post_init__(self) -> None:
        if not _is_reason(self.reason):
            raise ValueError(f"bad refusal reason {self.reason!r}")


@dataclass(frozen=True)
class Claim:
    epoch: int
    seq: int
    relayed_for_bytes: int
    relayed_to_bytes: int
    throttled: str = ""  # why the provider throttles the consumer; empty: it does not

    def __post_init__(self) -> None:
        for value in (self.epoch, self.seq, self.relayed_for_bytes, self.relayed_to_bytes):
            if not 0 <= value < 1 << 64:
                raise ValueError(f"claim field {value} is not a u64")
        if self.throttled and not _is_reason(self.throttled):
            raise ValueError(f"bad throttling reason {self.throttled!r}")


@dataclass(frozen=True)
class ReceiptMessage:
    receipt: bytes  # canonical; checked (signature, fields) by the provider
    dispute: str = ""  # why the consumer signed its own figure; empty: it signed the claim

    def __post_init__(self) -> None:
        if len(self.receipt) != RECEIPT_LENGTH:
            raise ValueError(f"a receipt is {RECEIPT_LENGTH} octets, not {len(self.receipt)}")
        if self.dispute and not _is_reason(self.dispute):
            raise ValueError(f"bad dispute reason {self.dispute!r}")


@dataclass(frozen=True)
class ReceiptAck:
    epoch: int
    seq: int

    def __post_init__(self) -> None:
        if not (0 <= self.epoch < 1 << 64 and 0 <= self.seq < 1 << 64):
            raise ValueError("epoch and seq are u64")


@dataclass(frozen=True)
class JoinRequestMessage:
    invite: bytes  # canonical Invite; checked (signature, time) by whoever acts on it
    request: bytes  # canonical JoinRequest, proving the invite's secret

    def __post_init__(self) -> None:
        if not 0 < len(self.invite) <= 0xFFFF or not self.request:
            raise ValueError("a join request needs the invite (1..65535 octets) and the request")


@dataclass(frozen=True)
class JoinGranted:
    definition: bytes  # canonical MeshDefinition
    certificate: bytes  # canonical MembershipCertificate for the joining node
    delegation: bytes = b""  # the issuer's DelegationCertificate; empty: an admin issued it

    def __post_init__(self) -> None:
        for part in (self.definition, self.certificate, self.delegation):
            if len(part) > 0xFFFF:
                raise ValueError("a record longer than 65535 octets")
        if not self.definition or not self.certificate:
            raise ValueError("a grant carries the mesh definition and the certificate")


@dataclass(frozen=True)
class JoinRefused:
    node_id: str  # the joining node whose request this answers
    reason: str  # a reason code (meshd.core.invites.InviteReason, or a relay's own)
    detail: str = ""  # for the operator of the joining node

    def __post_init__(self) -> None:
        _check_refusal(self.node_id, self.reason, self.detail)


@dataclass(frozen=True)
class RenewRequest:
    """A node's current certificate (and its chain), to be issued again with a new window."""

    certificate: bytes
    delegation: bytes = b""


@dataclass(frozen=True)
class RenewGranted:
    certificate: bytes  # the fresh MembershipCertificate
    delegation: bytes = b""  # the issuer's DelegationCertificate; empty: an admin issued it


@dataclass(frozen=True)
class RenewRefused:
    node_id: str  # the node whose renewal this answers
    reason: str  # a reason code (meshd.core.membership.Reason, or a relay's own)
    detail: str = ""

    def __post_init__(self) -> None:
        _check_refusal(self.node_id, self.reason, self.detail)


@dataclass(frozen=True)
class Clock:
    unix_ms: int  # the sender's wall clock when it sent this

    def __post_init__(self) -> None:
        if not 0 <= self.unix_ms < 1 << 64:
            raise ValueError("the clock is a u64")


@dataclass(frozen=True)
class Name:
    """A private name and its salt (meshd.core.membership.names.NameOpening, unchecked here)."""

    salt: bytes
    name: str

    def __post_init__(self) -> None:
        if len(self.salt) != NAME_SALT_LENGTH:
            raise ValueError(f"a name's salt is {NAME_SALT_LENGTH} octets")
        if not 1 <= len(self.name.encode()) <= MAX_NAME:
            raise ValueError(f"a name is 1..{MAX_NAME} octets of UTF-8")


@dataclass(frozen=True)
class MeshDefinitionMessage:
    definition: bytes  # canonical MeshDefinition; checked by whoever adopts it

    def __post_init__(self) -> None:
        if not self.definition:
            raise ValueError("an empty mesh definition")


@dataclass(frozen=True)
class Capabilities:
    """The features the sender supports; names this build does not know are kept here and
    ignored by the control plane (a newer peer's)."""

    features: frozenset[str]

    def __post_init__(self) -> None:
        if not isinstance(self.features, frozenset):
            raise ValueError("features must be a frozenset of names")
        if len(self.features) > MAX_FEATURES:
            raise ValueError(f"more than {MAX_FEATURES} features")
        for name in self.features:
            if not is_feature_name(name):
                raise ValueError(f"bad feature name {name!r}")


@dataclass(frozen=True)
class DirectoryDigest:
    count: int  # entries the sender holds
    digest: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.count <= 0xFFFFFFFF or len(self.digest) != DIGEST_LENGTH:
            raise ValueError("a directory digest is a u32 count and 32 octets")


@dataclass(frozen=True)
class DirectoryFingerprints:
    total: int  # fingerprints in all the parts of this round
    fingerprints: tuple[bytes, ...]  # this part's

    def __post_init__(self) -> None:
        if not 0 <= self.total <= 0xFFFFFFFF or len(self.fingerprints) > MAX_FINGERPRINTS:
            raise ValueError(f"a u32 total and at most {MAX_FINGERPRINTS} fingerprints")
        if any(len(f) != FINGERPRINT_LENGTH for f in self.fingerprints):
            raise ValueError(f"fingerprints are {FINGERPRINT_LENGTH} octets")


@dataclass(frozen=True)
class DirectoryEntries:
    entries: tuple[bytes, ...]  # each: u16 length | certificate | u16 length | delegation

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_DIRECTORY_ENTRIES:
            raise ValueError(f"more than {MAX_DIRECTORY_ENTRIES} entries")


@dataclass(frozen=True)
class Release:
    manifest: bytes  # a canonical release manifest (meshd.core.proto.release), unchecked here

    def __post_init__(self) -> None:
        if not self.manifest:
            raise ValueError("an empty release manifest")


@dataclass(frozen=True)
class ReleaseFetch:
    """Asks for ``length`` octets of release ``serial``'s artifact from ``offset`` on."""

    serial: int
    offset: int
    length: int

    def __post_init__(self) -> None:
        if not (0 <= self.serial < 1 << 64 and 0 <= self.offset < 1 << 64):
            raise ValueError("serial and offset are u64")
        if not 1 <= self.length <= MAX_RELEASE_PART:
            raise ValueError(f"a part is 1..{MAX_RELEASE_PART} octets")


@dataclass(frozen=True)
class ReleasePart:
    """Octets of release ``serial``'s artifact from ``offset`` on: what a fetch asked for."""

    serial: int
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.serial < 1 << 64 and 0 <= self.offset < 1 << 64):
            raise ValueError("serial and offset are u64")
        if not 1 <= len(self.data) <= MAX_RELEASE_PART:
            raise ValueError(f"a part is 1..{MAX_RELEASE_PART} octets")


def is_feature_name(text: object) -> bool:
    """1..MAX_FEATURE_NAME lowercase ASCII letters, digits and "_"."""
    return (
        isinstance(text, str)
        and 1 <= len(text) <= MAX_FEATURE_NAME
        and all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in text)
    )


def _check_refusal(node_id: str, reason: str, detail: str) -> None:
    _node_key(node_id)  # ValueError if not a node id
    if not _is_reason(reason):
        raise ValueError(f"bad refusal reason {reason!r}")
    if len(detail.encode()) > MAX_JOIN_DETAIL:
        raise ValueError(f"detail longer than {MAX_JOIN_DETAIL} octets")


def _is_reason(text: str) -> bool:
    return 1 <= len(text) <= MAX_REASON and all(
        c.isascii() and (c.isalnum() or c == "_") for c in text
    )


SessionMessage = (
    Membership
    | BabelPacket
    | Link
    | Endpoints
    | Revocations
    | Gateway
    | MapMessage
    | ProposalMessage
    | ExitRequest
    | ExitGrant
    | ExitRefused
    | Claim
    | ReceiptMessage
    | ReceiptAck
    | JoinRequestMessage
    | JoinGranted
    | JoinRefused
    | RenewRequest
    | RenewGranted
    | RenewRefused
    | Clock
    | MeshDefinitionMessage
    | Capabilities
    | DirectoryDigest
    | DirectoryFingerprints
    | DirectoryEntries
    | Name
    | Release
    | ReleaseFetch
    | ReleasePart
)


def _node_key(node_id: str) -> bytes:
    raw = base64.urlsafe_b64decode(node_id + "=")
    if len(raw) != 32:
        raise ValueError(f"node id {node_id!r} is not 32 octets")
    return raw
