"""Session messages to bytes and back (pure): ``encode`` and ``decode``, the wire format of
meshd.core.proto.session."""

from __future__ import annotations

import base64
import ipaddress
import struct

from meshd.core.proto.session.messages import (
    BABEL,
    CAPABILITIES,
    CLAIM,
    CLOCK,
    DIRECTORY_DIGEST,
    DIRECTORY_ENTRIES,
    DIRECTORY_FINGERPRINTS,
    ENDPOINTS,
    EXIT_GRANT,
    EXIT_REFUSED,
    EXIT_REQUEST,
    FINGERPRINT_LENGTH,
    GATEWAY,
    JOIN_GRANTED,
    JOIN_REFUSED,
    JOIN_REQUEST,
    LINK,
    MAP,
    MAX_DIRECTORY_ENTRIES,
    MAX_ENDPOINTS,
    MAX_FEATURES,
    MAX_FINGERPRINTS,
    MAX_JOIN_DETAIL,
    MAX_NAME,
    MAX_RELEASE_PART,
    MAX_REVOCATIONS,
    MEMBERSHIP,
    MESH_DEFINITION,
    NAME,
    NAME_SALT_LENGTH,
    PROPOSAL,
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
    _is_reason,
    _node_key,
    is_feature_name,
)

_ENDPOINT = struct.Struct("!32s16sH")
_CLAIM = struct.Struct("!QQQQ")
_ACK = struct.Struct("!QQ")
_CLOCK = struct.Struct("!Q")
_DIGEST = struct.Struct("!I32s")
_TOTAL = struct.Struct("!I")
_FETCH = struct.Struct("!QQI")
_PART = struct.Struct("!QQ")


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
    if isinstance(message, MapMessage):
        return bytes([MAP]) + message.record
    if isinstance(message, ProposalMessage):
        return bytes([PROPOSAL]) + message.proposal
    if isinstance(message, Release):
        return bytes([RELEASE]) + message.manifest
    if isinstance(message, ReleaseFetch):
        return bytes([RELEASE_FETCH]) + _FETCH.pack(message.serial, message.offset, message.length)
    if isinstance(message, ReleasePart):
        return bytes([RELEASE_PART]) + _PART.pack(message.serial, message.offset) + message.data
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
    if kind == MAP:
        if not body:
            raise SessionMessageError("truncated", "MAP without a record")
        return MapMessage(body)
    if kind == PROPOSAL:
        if not body:
            raise SessionMessageError("truncated", "PROPOSAL without a proposal")
        return ProposalMessage(body)
    if kind in (RELEASE, RELEASE_FETCH, RELEASE_PART):
        return _decode_release(kind, body)
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


def _decode_release(kind: int, body: bytes) -> SessionMessage:
    if kind == RELEASE:
        if not body:
            raise SessionMessageError("truncated", "RELEASE without a manifest")
        return Release(body)
    if kind == RELEASE_FETCH:
        if len(body) != _FETCH.size:
            raise SessionMessageError("bad_length", f"RELEASE_FETCH of {len(body)} octets")
        serial, offset, length = _FETCH.unpack(body)
        if not 1 <= length <= MAX_RELEASE_PART:
            raise SessionMessageError("bad_length", f"RELEASE_FETCH of {length} octets")
        return ReleaseFetch(serial, offset, length)
    data = body[_PART.size :]
    if len(body) <= _PART.size or len(data) > MAX_RELEASE_PART:
        raise SessionMessageError("bad_length", f"RELEASE_PART of {len(body)} octets")
    serial, offset = _PART.unpack(body[: _PART.size])
    return ReleasePart(serial, offset, data)


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
