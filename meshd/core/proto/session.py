"""Messages on a neighbour's QUIC session (pure): one kind byte, then the body.

    MEMBERSHIP (1):  u16 length | membership certificate | u16 length | delegation (0: none)
    BABEL (2):       one RFC 8966 packet (magic 42, version 2, body), as on UDP port 6696
    LINK (3):        u16 the sender's WireGuard listen port for this link
    ENDPOINTS (4):   u16 count | count x (32-octet node key | 16-octet IPv6 address, IPv4
                     mapped | u16 QUIC port): where the sender reaches its other neighbours
    REVOCATIONS (5): u16 count | count x (u16 length | canonical Revocation)
    GATEWAY (6):     one signed gateway advert (meshd.core.proto.gateway, 192 octets), flooded
    EXIT_REQUEST (7): (no body) on an exit session, the user asks to leave by this gateway
    EXIT_GRANT (8):  u16 the gateway's WireGuard exit port: the user's key is a peer there
    EXIT_REFUSED (9): the reason, 1..64 octets of ASCII letters, digits and "_"
    CLAIM (10):      u64 epoch | u64 seq | u64 relayed_for | u64 relayed_to | a reason (0..64
                     octets, as EXIT_REFUSED's): the provider's cumulative counts in the
                     epoch; the reason, when there is one, is why it throttles the consumer
    RECEIPT (11):    a 224-octet receipt (meshd.core.receipts) | a dispute reason (0..64 octets):
                     the consumer's signature; the reason when it signed its own figure
    RECEIPT_ACK (12): u64 epoch | u64 seq: the provider has stored that receipt durably
    JOIN_REQUEST (13): u16 length | invite (canonical) | join request (canonical, the rest):
                     a joining node's first and only message on a join-only session, and
                     what a bootstrap node forwards to the invite's issuer (meshd.daemon.joins)
    JOIN_GRANTED (14): u16 length | mesh definition | u16 length | membership certificate |
                     u16 length | the issuer's delegation (0: an admin issued it)
    JOIN_REFUSED (15): 32-octet key of the joining node | u8 length | reason (1..64 octets,
                     as EXIT_REFUSED's) | what went wrong (the rest, 0..256 octets UTF-8)
    RENEW_REQUEST (16): as MEMBERSHIP: the certificate the sender wants renewed (its own,
                     or, on a relay session, the one a neighbour asked about) and its chain
    RENEW_GRANTED (17): as MEMBERSHIP: the fresh certificate and the issuer's delegation
    RENEW_REFUSED (18): as JOIN_REFUSED, naming the node whose renewal is refused
    CLOCK (19):      u64 the sender's wall clock, Unix milliseconds, when it sent this
    MESH_DEFINITION (20): one canonical mesh definition (a newer serial: admin rotation),
                     flooded like REVOCATIONS
    CAPABILITIES (21): u8 count | count x (u8 length | a feature name, 1..32 octets of
                     lowercase ASCII letters, digits and "_"), names in ascending byte order,
                     each once: the features the sender supports (meshd/2 on)
    DIRECTORY_DIGEST (22): u32 count | 32-octet digest: the sender's certificate directory
                     (meshd.core.membership.directory), feature "directory"
    DIRECTORY_FINGERPRINTS (23): u32 total | u16 count | count x 8-octet fingerprint: one
                     part of every fingerprint the sender holds (parts of at most 4,096,
                     in order, ``total`` in each), sent when the digests differ
    DIRECTORY_ENTRIES (24): u16 count | count x (u16 length | membership certificate |
                     u16 length | delegation, 0: none): entries the receiver lacks
    NAME (25):       16-octet salt | the sender's name (UTF-8, 1..64 octets): what opens the
                     commitment its certificate holds in place of a private name
                     (meshd.core.membership.names), sent to verified neighbours only, feature
                     "private_names"

Integers are big-endian. The certificate, delegation and revocations are the canonical bytes
of meshd.core.membership; the first message each side sends is its MEMBERSHIP, and nothing else
is accepted before it verifies. The WireGuard public key is the certificate's, and the
endpoint is the address the session comes from with the LINK port, so LINK carries only
the port. Exit sessions (meshd.daemon.exits) run over the mesh to a gateway's mesh address and
carry only MEMBERSHIP and the EXIT kinds. CLAIM, RECEIPT and RECEIPT_ACK are the metering
exchange of meshd.core.receipts.exchange. The JOIN kinds are the exception to "MEMBERSHIP
first": a node without a certificate sends JOIN_REQUEST instead and is answered
JOIN_GRANTED or JOIN_REFUSED, nothing else; the same kinds travel, after MEMBERSHIP, on the
relay sessions between a bootstrap node and the issuer (meshd.daemon.joins). The RENEW kinds
travel on verified neighbour sessions and, forwarded, on those relay sessions; a second
MEMBERSHIP on a verified session replaces the sender's certificate (a renewed one). CLOCK
goes first on every session, before MEMBERSHIP: its peer checks certificates against the
mesh's time, not only its own clock (meshd.core.membership.clock).

Versions. A session's protocol version is its QUIC ALPN id, negotiated in the TLS handshake:
each node offers and accepts ``PROTOCOLS`` (newest first) and the accepting side picks the
first of its own list that the dialler offers; with none in common the handshake fails
(``version_unsupported``). ``meshd/1`` is the kinds 1-20 above. ``meshd/2`` adds
CAPABILITIES, each side's first message on the session (before CLOCK): from then on, each
new kind or field belongs to a ``Feature``, and is sent only to a peer whose CAPABILITIES
named that feature (``ControlPlane.peer_supports``), because a kind a node does not know
closes its session (``unknown_kind``). A feature name the receiver does not know is
ignored, so a newer node may announce what an older one never heard of.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
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
NAME_SALT_LENGTH = 16  # meshd.core.membership.names.SALT_LENGTH
MAX_NAME = 64  # octets, as a certificate's name
RECEIPT_LENGTH = 224  # meshd.core.receipts.receipt; checked again when the receipt is decoded
MAX_REASON = 64
MAX_JOIN_DETAIL = 256  # octets of a JOIN_REFUSED's explanation
MAX_ENDPOINTS = 256
MAX_REVOCATIONS = 1024
_ENDPOINT = struct.Struct("!32s16sH")
_CLAIM = struct.Struct("!QQQQ")
_ACK = struct.Struct("!QQ")
_CLOCK = struct.Struct("!Q")
MAX_FEATURES = 64  # names in one CAPABILITIES
MAX_FEATURE_NAME = 32  # octets of one name
MAX_FINGERPRINTS = 4096  # in one DIRECTORY_FINGERPRINTS part
MAX_DIRECTORY_ENTRIES = 1024  # in one DIRECTORY_ENTRIES
FINGERPRINT_LENGTH = 8
DIGEST_LENGTH = 32
_DIGEST = struct.Struct("!I32s")
_TOTAL = struct.Struct("!I")

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
)


def _node_key(node_id: str) -> bytes:
    raw = base64.urlsafe_b64decode(node_id + "=")
    if len(raw) != 32:
        raise ValueError(f"node id {node_id!r} is not 32 octets")
    return raw


def _host_bytes(host: str) -> bytes:
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed).packed
    return ip.packed


def _host_text(raw: bytes) -> str:
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped or ip)


CertificateMessage = Membership | RenewRequest | RenewGranted
_CERTIFICATE_KINDS: dict[type[CertificateMessage], int] = {
    Membership: MEMBERSHIP,
    RenewRequest: RENEW_REQUEST,
    RenewGranted: RENEW_GRANTED,
}


def encode(message: SessionMessage) -> bytes:
    if isinstance(message, CertificateMessage):
        for part in (message.certificate, message.delegation):
            if len(part) > 0xFFFF:
                raise ValueError("certificate or delegation longer than 65535 bytes")
        return (
            bytes([_CERTIFICATE_KINDS[type(message)]])
            + struct.pack("!H", len(message.certificate))
            + message.certificate
            + struct.pack("!H", len(message.delegation))
            + message.delegation
        )
    if isinstance(message, Clock):
        return bytes([CLOCK]) + _CLOCK.pack(message.unix_ms)
    if isinstance(message, Name):
        return bytes([NAME]) + message.salt + message.name.encode()
    if isinstance(message, DirectoryDigest):
        return bytes([DIRECTORY_DIGEST]) + _DIGEST.pack(message.count, message.digest)
    if isinstance(message, DirectoryFingerprints):
        return (
            bytes([DIRECTORY_FINGERPRINTS])
            + _TOTAL.pack(message.total)
            + struct.pack("!H", len(message.fingerprints))
            + b"".join(message.fingerprints)
        )
    if isinstance(message, DirectoryEntries):
        return (
            bytes([DIRECTORY_ENTRIES])
            + struct.pack("!H", len(message.entries))
            + b"".join(message.entries)
        )
    if isinstance(message, Capabilities):
        names = sorted(name.encode("ascii") for name in message.features)
        return bytes([CAPABILITIES, len(names)]) + b"".join(bytes([len(n)]) + n for n in names)
    if isinstance(message, MeshDefinitionMessage):
        return bytes([MESH_DEFINITION]) + message.definition
    if isinstance(message, BabelPacket):
        return bytes([BABEL]) + message.packet
    if isinstance(message, Link):
        return bytes([LINK]) + struct.pack("!H", message.wireguard_port)
    if isinstance(message, Gateway):
        return bytes([GATEWAY]) + message.advert
    if isinstance(message, ExitRequest):
        return bytes([EXIT_REQUEST])
    if isinstance(message, ExitGrant):
        return bytes([EXIT_GRANT]) + struct.pack("!H", message.wireguard_port)
    if isinstance(message, ExitRefused):
        return bytes([EXIT_REFUSED]) + message.reason.encode("ascii")
    if isinstance(message, Claim):
        return (
            bytes([CLAIM])
            + _CLAIM.pack(
                message.epoch, message.seq, message.relayed_for_bytes, message.relayed_to_bytes
            )
            + message.throttled.encode("ascii")
        )
    if isinstance(message, ReceiptMessage):
        return bytes([RECEIPT]) + message.receipt + message.dispute.encode("ascii")
    if isinstance(message, ReceiptAck):
        return bytes([RECEIPT_ACK]) + _ACK.pack(message.epoch, message.seq)
    if isinstance(message, JoinRequestMessage):
        return (
            bytes([JOIN_REQUEST])
            + struct.pack("!H", len(message.invite))
            + message.invite
            + message.request
        )
    if isinstance(message, JoinGranted):
        parts = (message.definition, message.certificate, message.delegation)
        return bytes([JOIN_GRANTED]) + b"".join(struct.pack("!H", len(p)) + p for p in parts)
    if isinstance(message, JoinRefused | RenewRefused):
        reason = message.reason.encode("ascii")
        return (
            bytes([JOIN_REFUSED if isinstance(message, JoinRefused) else RENEW_REFUSED])
            + _node_key(message.node_id)
            + bytes([len(reason)])
            + reason
            + message.detail.encode()
        )
    if isinstance(message, Endpoints):
        if len(message.endpoints) > MAX_ENDPOINTS:
            raise ValueError(f"more than {MAX_ENDPOINTS} endpoints")
        return (
            bytes([ENDPOINTS])
            + struct.pack("!H", len(message.endpoints))
            + b"".join(
                _ENDPOINT.pack(_node_key(e.node_id), _host_bytes(e.host), e.port)
                for e in message.endpoints
            )
        )
    if len(message.revocations) > MAX_REVOCATIONS:
        raise ValueError(f"more than {MAX_REVOCATIONS} revocations")
    out = [bytes([REVOCATIONS]), struct.pack("!H", len(message.revocations))]
    for record in message.revocations:
        if len(record) > 0xFFFF:
            raise ValueError("revocation longer than 65535 bytes")
        out += [struct.pack("!H", len(record)), record]
    return b"".join(out)


def decode(data: bytes) -> SessionMessage:
    if not data:
        raise SessionMessageError("empty", "empty session message")
    kind, body = data[0], data[1:]
    if kind == BABEL:
        return BabelPacket(body)
    if kind == LINK:
        if len(body) != 2:
            raise SessionMessageError("bad_length", f"LINK of {len(body)} octets, expected 2")
        (port,) = struct.unpack("!H", body)
        if port == 0:
            raise SessionMessageError("bad_port", "LINK with port 0")
        return Link(port)
    if kind == ENDPOINTS:
        return _decode_endpoints(body)
    if kind == REVOCATIONS:
        return _decode_revocations(body)
    if kind == GATEWAY:
        return Gateway(body)
    if kind == EXIT_REQUEST:
        if body:
            raise SessionMessageError("bad_length", "EXIT_REQUEST with a body")
        return ExitRequest()
    if kind == EXIT_GRANT:
        if len(body) != 2:
            raise SessionMessageError("bad_length", f"EXIT_GRANT of {len(body)} octets")
        (port,) = struct.unpack("!H", body)
        if port == 0:
            raise SessionMessageError("bad_port", "EXIT_GRANT with port 0")
        return ExitGrant(port)
    if kind == EXIT_REFUSED:
        reason = body.decode("ascii", errors="replace")
        if not _is_reason(reason):
            raise SessionMessageError("malformed", "EXIT_REFUSED reason is not a reason code")
        return ExitRefused(reason)
    if kind == CLAIM:
        if len(body) < _CLAIM.size:
            raise SessionMessageError("truncated", f"CLAIM of {len(body)} octets")
        epoch, seq, relayed_for, relayed_to = _CLAIM.unpack(body[: _CLAIM.size])
        reason = _optional_reason(body[_CLAIM.size :])
        return Claim(epoch, seq, relayed_for, relayed_to, reason)
    if kind == RECEIPT:
        if len(body) < RECEIPT_LENGTH:
            raise SessionMessageError("truncated", f"RECEIPT of {len(body)} octets")
        return ReceiptMessage(body[:RECEIPT_LENGTH], _optional_reason(body[RECEIPT_LENGTH:]))
    if kind == RECEIPT_ACK:
        if len(body) != _ACK.size:
            raise SessionMessageError("bad_length", f"RECEIPT_ACK of {len(body)} octets")
        return ReceiptAck(*_ACK.unpack(body))
    if kind in (JOIN_REQUEST, JOIN_GRANTED, JOIN_REFUSED):
        return _decode_join(kind, body)
    if kind == RENEW_REFUSED:
        return RenewRefused(*_refusal(body, "RENEW_REFUSED"))
    if kind == MESH_DEFINITION:
        if not body:
            raise SessionMessageError("truncated", "MESH_DEFINITION without a definition")
        return MeshDefinitionMessage(body)
    if kind == CLOCK:
        if len(body) != _CLOCK.size:
            raise SessionMessageError("bad_length", f"CLOCK of {len(body)} octets, expected 8")
        return Clock(*_CLOCK.unpack(body))
    if kind == CAPABILITIES:
        return _decode_capabilities(body)
    if kind == NAME:
        if not NAME_SALT_LENGTH < len(body) <= NAME_SALT_LENGTH + MAX_NAME:
            raise SessionMessageError("bad_length", f"NAME of {len(body)} octets")
        try:
            return Name(body[:NAME_SALT_LENGTH], body[NAME_SALT_LENGTH:].decode("utf-8"))
        except UnicodeDecodeError:
            raise SessionMessageError("malformed", "a NAME that is not UTF-8") from None
    if kind == DIRECTORY_DIGEST:
        if len(body) != _DIGEST.size:
            raise SessionMessageError("bad_length", f"DIRECTORY_DIGEST of {len(body)} octets")
        return DirectoryDigest(*_DIGEST.unpack(body))
    if kind == DIRECTORY_FINGERPRINTS:
        return _decode_fingerprints(body)
    if kind == DIRECTORY_ENTRIES:
        return _decode_directory_entries(body)
    by_kind: dict[int, type[CertificateMessage]] = {
        code: cls for cls, code in _CERTIFICATE_KINDS.items()
    }
    if kind not in by_kind:
        raise SessionMessageError("unknown_kind", f"unknown session message kind {kind}")
    certificate, delegation = _records(body, ("certificate", "delegation"))
    if not certificate:
        raise SessionMessageError("no_certificate", "a message without its certificate")
    return by_kind[kind](certificate, delegation)


def _records(body: bytes, names: tuple[str, ...]) -> list[bytes]:
    """Records each after its u16 length, exactly filling ``body``."""
    parts: list[bytes] = []
    for what in names:
        if len(body) < 2:
            raise SessionMessageError("truncated", f"no length for the {what}")
        (length,) = struct.unpack("!H", body[:2])
        if len(body) < 2 + length:
            raise SessionMessageError("truncated", f"{what} shorter than its length")
        parts.append(body[2 : 2 + length])
        body = body[2 + length :]
    if body:
        raise SessionMessageError("trailing_bytes", f"{len(body)} bytes after the message")
    return parts


def _decode_join(kind: int, body: bytes) -> SessionMessage:
    if kind == JOIN_REQUEST:
        if len(body) < 2:
            raise SessionMessageError("truncated", "no length for the invite")
        (length,) = struct.unpack("!H", body[:2])
        invite, request = body[2 : 2 + length], body[2 + length :]
        if len(invite) < length or not invite or not request:
            raise SessionMessageError("truncated", "JOIN_REQUEST without an invite and a request")
        return JoinRequestMessage(invite, request)
    if kind == JOIN_GRANTED:
        definition, certificate, delegation = _records(
            body, ("mesh definition", "certificate", "delegation")
        )
        if not definition or not certificate:
            raise SessionMessageError("no_certificate", "JOIN_GRANTED without its records")
        return JoinGranted(definition, certificate, delegation)
    return JoinRefused(*_refusal(body, "JOIN_REFUSED"))


def _refusal(body: bytes, what: str) -> tuple[str, str, str]:
    """The node id, reason and detail of a JOIN_REFUSED or RENEW_REFUSED body."""
    if len(body) < 33 or len(body) < 33 + body[32]:
        raise SessionMessageError("truncated", f"{what} of {len(body)} octets")
    node_id = base64.urlsafe_b64encode(body[:32]).rstrip(b"=").decode()
    reason = body[33 : 33 + body[32]].decode("ascii", errors="replace")
    if not _is_reason(reason):
        raise SessionMessageError("malformed", f"{what} reason is not a reason code")
    raw_detail = body[33 + body[32] :]
    if len(raw_detail) > MAX_JOIN_DETAIL:
        raise SessionMessageError("too_long", f"{what} detail of {len(raw_detail)} octets")
    try:
        detail = raw_detail.decode()
    except UnicodeDecodeError:
        raise SessionMessageError("malformed", f"{what} detail is not UTF-8") from None
    return node_id, reason, detail


def _optional_reason(raw: bytes) -> str:
    reason = raw.decode("ascii", errors="replace")
    if reason and not _is_reason(reason):
        raise SessionMessageError("malformed", "the reason is not a reason code")
    return reason


def _count(body: bytes, limit: int, what: str) -> int:
    if len(body) < 2:
        raise SessionMessageError("truncated", f"no count of {what}")
    (count,) = struct.unpack("!H", body[:2])
    if count > limit:
        raise SessionMessageError("too_many", f"{count} {what}, at most {limit}")
    return int(count)


def _decode_endpoints(body: bytes) -> Endpoints:
    count = _count(body, MAX_ENDPOINTS, "endpoints")
    rest = body[2:]
    if len(rest) != count * _ENDPOINT.size:
        raise SessionMessageError(
            "bad_length", f"{len(rest)} octets for {count} endpoints of {_ENDPOINT.size}"
        )
    out = []
    for key, raw_host, port in _ENDPOINT.iter_unpack(rest):
        if port == 0:
            raise SessionMessageError("bad_port", "endpoint with port 0")
        node_id = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
        out.append(Endpoint(node_id, _host_text(raw_host), port))
    return Endpoints(tuple(out))


def _decode_revocations(body: bytes) -> Revocations:
    count = _count(body, MAX_REVOCATIONS, "revocations")
    rest = body[2:]
    records = []
    for _ in range(count):
        if len(rest) < 2:
            raise SessionMessageError("truncated", "no length for a revocation")
        (length,) = struct.unpack("!H", rest[:2])
        if len(rest) < 2 + length:
            raise SessionMessageError("truncated", "revocation shorter than its length")
        records.append(rest[2 : 2 + length])
        rest = rest[2 + length :]
    if rest:
        raise SessionMessageError("trailing_bytes", f"{len(rest)} bytes after the message")
    return Revocations(tuple(records))


def _decode_fingerprints(body: bytes) -> DirectoryFingerprints:
    if len(body) < _TOTAL.size:
        raise SessionMessageError("truncated", "DIRECTORY_FINGERPRINTS without a total")
    (total,) = _TOTAL.unpack_from(body)
    rest = body[_TOTAL.size :]
    count = _count(rest, MAX_FINGERPRINTS, "fingerprints")
    rest = rest[2:]
    if len(rest) != count * FINGERPRINT_LENGTH:
        raise SessionMessageError("bad_length", f"{len(rest)} octets for {count} fingerprints")
    prints = tuple(rest[i : i + FINGERPRINT_LENGTH] for i in range(0, len(rest), 8))
    return DirectoryFingerprints(total, prints)


def _decode_directory_entries(body: bytes) -> DirectoryEntries:
    count = _count(body, MAX_DIRECTORY_ENTRIES, "directory entries")
    rest = body[2:]
    entries = []
    for _ in range(count):
        start = rest
        for what in ("certificate", "delegation"):
            if len(rest) < 2:
                raise SessionMessageError("truncated", f"no length for a {what}")
            (length,) = struct.unpack("!H", rest[:2])
            if len(rest) < 2 + length:
                raise SessionMessageError("truncated", f"{what} shorter than its length")
            rest = rest[2 + length :]
        entries.append(start[: len(start) - len(rest)])
    if rest:
        raise SessionMessageError("trailing_bytes", f"{len(rest)} bytes after the message")
    return DirectoryEntries(tuple(entries))


def _decode_capabilities(body: bytes) -> Capabilities:
    """Canonical only: names sorted, each once, so that one set has one encoding."""
    if not body:
        raise SessionMessageError("truncated", "CAPABILITIES without a count")
    count, rest = body[0], body[1:]
    if count > MAX_FEATURES:
        raise SessionMessageError("too_many", f"{count} features, at most {MAX_FEATURES}")
    names: list[bytes] = []
    for _ in range(count):
        if not rest or len(rest) < 1 + rest[0]:
            raise SessionMessageError("truncated", "a feature name shorter than its length")
        name, rest = rest[1 : 1 + rest[0]], rest[1 + rest[0] :]
        if not is_feature_name(name.decode("ascii", errors="replace")):
            raise SessionMessageError("malformed", f"bad feature name {name!r}")
        if names and name <= names[-1]:
            raise SessionMessageError("not_canonical", "feature names unsorted or repeated")
        names.append(name)
    if rest:
        raise SessionMessageError("trailing_bytes", f"{len(rest)} bytes after the message")
    return Capabilities(frozenset(n.decode("ascii") for n in names))
