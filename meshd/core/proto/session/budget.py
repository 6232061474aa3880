"""What a neighbour may send of each costly kind (pure): the budget beside the message kinds.

Each verified session holds one token bucket per kind below (meshd.core.control.rates),
full when it comes up: a neighbour that dials again gets new ones, but not new octets
(the transport's receive bucket, meshd.adapters.quic, is kept across its sessions). A
bucket holds ``burst`` tokens, what an honest neighbour sends at once: a full route table to a
new neighbour, the certificate directory's sync, every revocation and gateway advert the
sender holds; it regains ``per_s`` a second, what an honest neighbour sends for as long as it
likes. A message that would overdraw its bucket is not acted on: it is counted in the
sender's refusals as ``rate_<kind>`` and the session stays up (Babel, revocations, adverts
and the directory repeat what matters; a lost LINK or NAME is sent again by the next
session). What one token is (``unit``) is what the message costs the receiver: a TLV of
a Babel packet (decoded, an update's origin checked, the route stored), an octet of a
directory part (parsed, its certificates verified), one record of REVOCATIONS and
ENDPOINTS, otherwise one message. A message is charged before it is decoded (decoding is
a cost too): the counts are read from its headers.

The kinds every session starts with and that cost nothing to take (CAPABILITIES, CLOCK, the
first MEMBERSHIP: once a session) and JOIN_REQUEST (join-only sessions, closed after one)
draw on no bucket. Claims have their own gate besides
(meshd.daemon.metering: one a neighbour at a time, every 2.5 s).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshd.core.proto.babel import count_tlvs
from meshd.core.proto.session import messages as m

KIB = 1024


@dataclass(frozen=True)
class Budget:
    burst: float  # tokens a full bucket holds
    per_s: float  # tokens regained a second
    unit: str  # what one token is


BUDGETS: dict[str, Budget] = {
    # A full table of 10,000 routes (routing.max_routes_per_neighbour) is at most 20,000
    # TLVs (Router-Id, Update); periodic updates are every 120 s (routing.update_interval_s),
    # triggered ones a few TLVs. Each TLV is decoded, and an update's origin checked.
    "babel": Budget(20_000, 1024, "tlv"),
    # A new neighbour's sync: every entry (about 600 octets each: 1,000 members are 600 KiB)
    # and the fingerprints; a round every half second at most after that
    # (directory_sync.MIN_ROUND_S), of the few entries that changed.
    "directory": Budget(4096 * KIB, 32 * KIB, "octet"),
    # Every revocation the sender holds, on each session; then one as an admin issues it.
    "revocations": Budget(4 * m.MAX_REVOCATIONS, 16, "record"),
    # Its other neighbours, when it verifies and when one joins it.
    "endpoints": Budget(2 * m.MAX_ENDPOINTS, 4, "record"),
    # Every advert it holds (256 at most, meshd.core.control.gateways), then re-adverts.
    "gateway": Budget(512, 8, "message"),
    # Map records (about 250 octets and 33 a link): every one the sender holds to a new
    # neighbour (1,000 members are about 500 KiB), then each member's every few minutes,
    # each passed on once (meshd.core.control.community_map takes one a member per 30 s).
    "map": Budget(2048 * KIB, 16 * KIB, "octet"),
    # Each reconfigures the WireGuard link: once a session, again when its port changes.
    "link": Budget(4, 0.1, "message"),
    # Once a session; each costs a verification or a commitment check.
    "name": Budget(4, 1 / 60, "message"),
    "definition": Budget(4, 1 / 60, "message"),
    "membership": Budget(4, 1 / 60, "message"),  # a renewed certificate
    "renewal": Budget(8, 0.1, "message"),
    # CLAIM, RECEIPT, RECEIPT_ACK: a claim every few seconds, or every few MiB it relays.
    "metering": Budget(64, 8, "message"),
    # RELEASE: the newest release the sender holds, on each session and once when it has
    # fetched one (admins publish a few a year). Each costs a signature's check.
    "release": Budget(8, 1 / 60, "message"),
    # PROPOSAL: every proposal held, on each session, then one per signature or withdrawal
    # an admin adds (a few a month). Each costs a signature's check per admin on it.
    "proposal": Budget(40, 1 / 10, "message"),
    # RELEASE_FETCH: a fetching neighbour asks one part at a time, two a second at most
    # (meshd.core.releases.ASK_EVERY_S); each costs a file read of 32 KiB and its sending.
    "release_fetch": Budget(16, 4, "message"),
    # RELEASE_PART: only what this node asked for is taken (anything else is refused as
    # ``release_unasked``), two parts a second.
    "release_part": Budget(256 * KIB, 96 * KIB, "octet"),
}


_KINDS: dict[int, str] = {
    m.BABEL: "babel",
    m.DIRECTORY_DIGEST: "directory",
    m.DIRECTORY_FINGERPRINTS: "directory",
    m.DIRECTORY_ENTRIES: "directory",
    m.REVOCATIONS: "revocations",
    m.ENDPOINTS: "endpoints",
    m.GATEWAY: "gateway",
    m.MAP: "map",
    m.PROPOSAL: "proposal",
    m.LINK: "link",
    m.NAME: "name",
    m.MESH_DEFINITION: "definition",
    m.RENEW_REQUEST: "renewal",
    m.RENEW_GRANTED: "renewal",
    m.RENEW_REFUSED: "renewal",
    m.CLAIM: "metering",
    m.RECEIPT: "metering",
    m.RECEIPT_ACK: "metering",
    m.RELEASE: "release",
    m.RELEASE_FETCH: "release_fetch",
    m.RELEASE_PART: "release_part",
}


def charge(data: bytes, verified: bool) -> tuple[str, int] | None:
    """The bucket a message (its bytes, not decoded yet: decoding is a cost too) draws on,
    and how many tokens; None for the kinds that draw on none. ``verified``: the sender's
    certificate verified on this session already (a MEMBERSHIP is then a renewed one). A
    record count is read from the message's u16 count (a message whose count lies is
    refused when it is decoded)."""
    if not data:
        return None
    if data[0] == m.MEMBERSHIP:
        return ("membership", 1) if verified else None
    kind = _KINDS.get(data[0])
    if kind is None:
        return None
    unit = BUDGETS[kind].unit
    if unit == "octet":
        return kind, len(data)
    if unit == "tlv":
        return kind, max(1, count_tlvs(data[1:]))
    if unit == "record":
        return kind, max(1, int.from_bytes(data[1:3], "big"))
    return kind, 1
