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
    MAP (26):        one canonical map record (meshd.core.proto.map_record): what a node
                     shows on the community map, flooded like GATEWAY, feature "map"
    RELEASE (27):    one canonical release manifest (meshd.core.proto.release): a release
                     whose whole artifact the sender holds and serves, feature "releases"
    RELEASE_FETCH (28): u64 serial | u64 offset | u32 length (1..32 KiB): asks a neighbour
                     that sent RELEASE for that release's artifact, from offset on
    RELEASE_PART (29): u64 serial | u64 offset | 1..32 KiB of the artifact: the answer
    PROPOSAL (30):   one canonical proposal (meshd.core.membership.proposals): a change
                     admins sign together, held and flooded until it carries the quorum,
                     feature "proposals"

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
mesh's time, not only its own clock (meshd.core.membership.clock). What a neighbour may
send of each costly kind, and what one token is, is written down beside these kinds in
``budget``.

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

from meshd.core.proto.session.codec import CertificateMessage, decode, encode
from meshd.core.proto.session.messages import (
    BABEL,
    CAPABILITIES,
    CLAIM,
    CLOCK,
    DIGEST_LENGTH,
    DIRECTORY_DIGEST,
    DIRECTORY_ENTRIES,
    DIRECTORY_FINGERPRINTS,
    ENDPOINTS,
    EXIT_GRANT,
    EXIT_REFUSED,
    EXIT_REQUEST,
    FEATURES,
    FINGERPRINT_LENGTH,
    GATEWAY,
    JOIN_GRANTED,
    JOIN_REFUSED,
    JOIN_REQUEST,
    LINK,
    MAP,
    MAX_DIRECTORY_ENTRIES,
    MAX_ENDPOINTS,
    MAX_FEATURE_NAME,
    MAX_FEATURES,
    MAX_FINGERPRINTS,
    MAX_JOIN_DETAIL,
    MAX_NAME,
    MAX_REASON,
    MAX_RELEASE_PART,
    MAX_REVOCATIONS,
    MEMBERSHIP,
    MESH_DEFINITION,
    MESHD_1,
    MESHD_2,
    NAME,
    NAME_SALT_LENGTH,
    PROPOSAL,
    PROTOCOLS,
    RECEIPT,
    RECEIPT_ACK,
    RECEIPT_LENGTH,
    RELEASE,
    RELEASE_FETCH,
    RELEASE_PART,
    RENEW_GRANTED,
    RENEW_REFUSED,
    RENEW_REQUEST,
    REVOCATIONS,
    VERSION_UNSUPPORTED,
    WITH_CAPABILITIES,
    BabelPacket,
    Capabilities,
    Claim,
    Clock,
    DirectoryDigest,
    DirectoryEntries,
    DirectoryFingerprints,
    Endpoint,
    Endpoints,
    ExitGrant,
    ExitRefused,
    ExitRequest,
    Feature,
    Gateway,
    JoinGranted,
    JoinRefused,
    JoinRequestMessage,
    Link,
    MapMessage,
    Membership,
    MeshDefinitionMessage,
    Name,
    ProposalMessage,
    ReceiptAck,
    ReceiptMessage,
    Release,
    ReleaseFetch,
    ReleasePart,
    RenewGranted,
    RenewRefused,
    RenewRequest,
    Revocations,
    SessionMessage,
    SessionMessageError,
    is_feature_name,
)

__all__ = [
    "BABEL",
    "BabelPacket",
    "CAPABILITIES",
    "CLAIM",
    "CLOCK",
    "Capabilities",
    "CertificateMessage",
    "Claim",
    "Clock",
    "DIGEST_LENGTH",
    "DIRECTORY_DIGEST",
    "DIRECTORY_ENTRIES",
    "DIRECTORY_FINGERPRINTS",
    "DirectoryDigest",
    "DirectoryEntries",
    "DirectoryFingerprints",
    "ENDPOINTS",
    "EXIT_GRANT",
    "EXIT_REFUSED",
    "EXIT_REQUEST",
    "Endpoint",
    "Endpoints",
    "ExitGrant",
    "ExitRefused",
    "ExitRequest",
    "FEATURES",
    "FINGERPRINT_LENGTH",
    "Feature",
    "GATEWAY",
    "Gateway",
    "JOIN_GRANTED",
    "JOIN_REFUSED",
    "JOIN_REQUEST",
    "JoinGranted",
    "JoinRefused",
    "JoinRequestMessage",
    "LINK",
    "Link",
    "MAP",
    "MapMessage",
    "PROPOSAL",
    "ProposalMessage",
    "MAX_DIRECTORY_ENTRIES",
    "MAX_ENDPOINTS",
    "MAX_FEATURES",
    "MAX_FEATURE_NAME",
    "MAX_FINGERPRINTS",
    "MAX_JOIN_DETAIL",
    "MAX_NAME",
    "MAX_REASON",
    "MAX_RELEASE_PART",
    "MAX_REVOCATIONS",
    "MEMBERSHIP",
    "MESHD_1",
    "MESHD_2",
    "MESH_DEFINITION",
    "Membership",
    "MeshDefinitionMessage",
    "NAME",
    "NAME_SALT_LENGTH",
    "Name",
    "PROTOCOLS",
    "RECEIPT",
    "RECEIPT_ACK",
    "RECEIPT_LENGTH",
    "RELEASE",
    "RELEASE_FETCH",
    "RELEASE_PART",
    "RENEW_GRANTED",
    "RENEW_REFUSED",
    "RENEW_REQUEST",
    "REVOCATIONS",
    "ReceiptAck",
    "ReceiptMessage",
    "Release",
    "ReleaseFetch",
    "ReleasePart",
    "RenewGranted",
    "RenewRefused",
    "RenewRequest",
    "Revocations",
    "SessionMessage",
    "SessionMessageError",
    "VERSION_UNSUPPORTED",
    "WITH_CAPABILITIES",
    "decode",
    "encode",
    "is_feature_name",
]
