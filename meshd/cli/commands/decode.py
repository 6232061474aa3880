"""meshd decode HEX | - | --file PATH: print any control message as JSON lines: a Babel
packet (one line per TLV), a membership record (mesh definition, certificate, delegation,
revocation; a definition with other admins' signatures), an invite or a join request, a
map record, a release manifest, a receipt (as a receipts export line), a message of a
neighbour session (which may wrap those: joins, renewals, the sender's clock and
capabilities) or a discovery beacon."""

from __future__ import annotations

import argparse
import json
import string
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshd.core.proto import session as session_types


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "packet",
        nargs="?",
        metavar="HEX",
        help="the packet in hex (spaces and colons allowed), or - to read it from stdin",
    )
    p.add_argument("--file", help="read the packet from a file, raw bytes or hex text")
    p.add_argument(
        "--kind",
        choices=("auto", "babel", "membership", "receipt", "session", "beacon"),
        default="auto",
        help="what the bytes are (auto: a Babel packet starts with 42, a beacon with MSHB, "
        "a receipt with byte 0x11, a membership record decodes canonically, else a session "
        "message)",
    )
    p.add_argument(
        "--state",
        action="store_true",
        help="add the parser state after each TLV (router-id, next hops, default prefixes)",
    )


def _from_text(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    if len(cleaned) % 2 or any(c not in string.hexdigits for c in cleaned):
        raise ValueError("not hex: expected pairs of hex digits")
    return bytes.fromhex(cleaned)


def _looks_like_hex(raw: bytes) -> bool:
    # A binary Babel packet starts with 42 ('*'), never a hex digit, so this can't misfire.
    allowed = set(string.hexdigits.encode() + string.whitespace.encode() + b":")
    return bool(raw.strip()) and all(b in allowed for b in raw)


def bytes_of(raw: bytes) -> bytes:
    """A file's or stdin's contents: hex text decoded, anything else taken as it is."""
    return _from_text(raw.decode("ascii")) if _looks_like_hex(raw) else raw


def read_packet(args: argparse.Namespace) -> bytes:
    """The packet bytes from the arguments; ValueError with a message if there are none."""
    if args.file:
        with open(args.file, "rb") as f:
            raw = f.read()
        return bytes_of(raw)
    if args.packet is None:
        raise ValueError("give the packet as HEX, - for stdin, or --file PATH")
    if args.packet == "-":
        return bytes_of(sys.stdin.buffer.read())
    return _from_text(args.packet)


def main(args: argparse.Namespace) -> int:
    try:
        data = read_packet(args)
    except (OSError, ValueError) as exc:
        print(f"meshd decode: bad_input: {exc}", file=sys.stderr)
        return 1
    try:
        for obj in decode(data, args.kind, args.state):
            print(json.dumps(obj))
    except DecodeFailure as exc:
        print(f"meshd decode: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    return 0


class DecodeFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def decode(data: bytes, kind: str, with_state: bool = False) -> list[dict[str, object]]:
    """The JSON lines for ``data``; DecodeFailure with the reason code when it is none."""
    if kind == "auto":
        from meshd.core.membership.canonical import MessageType
        from meshd.core.proto import session as session_kinds

        # Membership records start with their type (1-6), receipts with theirs (0x11), map
        # records and release manifests with theirs (0x20, 0x30), session messages with
        # their kind (1-30, RENEW_GRANTED is 0x11 too), beacons with MSHB; anything else is
        # read as Babel, whose errors say what is wrong (bad_magic).
        kind = "babel"
        if data.startswith(b"MSHB"):
            kind = "beacon"
        elif data[:1] == bytes((MessageType.RECEIPT,)):
            try:
                return _receipt(data)
            except DecodeFailure as not_receipt:
                try:
                    return _session(data, with_state)
                except DecodeFailure:
                    raise not_receipt from None
        elif data[:1] and data[0] in (
            MessageType.MAP_RECORD,
            MessageType.RELEASE_MANIFEST,
            MessageType.COSIGNED,
            MessageType.PROPOSAL,
        ):
            kind = "membership"  # no session kind is 0x20, 0x30, 0x40 or 0x41
        elif data[:1] and 1 <= data[0] <= 6:
            try:
                return _membership(data)
            except DecodeFailure:
                kind = "session"
        elif data[:1] and 7 <= data[0] <= session_kinds.PROPOSAL:  # only session ones
            kind = "session"
    if kind == "babel":
        return _babel(data, with_state)
    if kind == "membership":
        return _membership(data)
    if kind == "receipt":
        return _receipt(data)
    if kind == "beacon":
        return _beacon(data)
    return _session(data, with_state)


def _beacon(data: bytes) -> list[dict[str, object]]:
    from meshd.core.proto.beacon import BeaconError, decode_beacon

    try:
        return [{"type": "beacon", **decode_beacon(data).to_json()}]
    except BeaconError as exc:
        raise DecodeFailure(str(exc.reason), exc.message) from None


def _babel(data: bytes, with_state: bool) -> list[dict[str, object]]:
    from meshd.core.proto.babel import BabelDecodeError, decode_packet_detail
    from meshd.core.proto.babel_json import decoded_to_json, skipped_to_json

    try:
        packet = decode_packet_detail(data)
    except BabelDecodeError as exc:
        raise DecodeFailure(exc.reason, exc.message) from None
    lines = [(d.offset, decoded_to_json(d, with_state=with_state)) for d in packet.tlvs]
    lines += [(s.offset, skipped_to_json(s)) for s in packet.skipped]
    out = [obj for _, obj in sorted(lines, key=lambda line: line[0])]
    if packet.trailer:
        out.append({"type": "trailer", "hex": packet.trailer.hex()})
    return out


def _membership(data: bytes) -> list[dict[str, object]]:
    """A membership record (a mesh definition, a revocation or a release manifest with other
    admins' signatures too), an
    invite, a join request, a map record or a release manifest (canonical, by its type
    tag)."""
    from meshd.core.invites import Invite, JoinRequest
    from meshd.core.membership import MembershipError, decode_message
    from meshd.core.membership.canonical import MessageType
    from meshd.core.membership.cosigned import Cosigned, decode_proposal
    from meshd.core.membership.proposals import Proposal
    from meshd.core.proto.map_record import MapRecord
    from meshd.core.proto.release import ReleaseManifest

    others: dict[int, type[Invite | JoinRequest | MapRecord | ReleaseManifest | Proposal]] = {
        MessageType.INVITE: Invite,
        MessageType.JOIN_REQUEST: JoinRequest,
        MessageType.MAP_RECORD: MapRecord,
        MessageType.RELEASE_MANIFEST: ReleaseManifest,
        MessageType.PROPOSAL: Proposal,
    }
    try:
        if data[:1] == bytes((MessageType.COSIGNED,)):
            try:
                return [decode_proposal(data).to_json()]
            except MembershipError:
                return [Cosigned.decode(data, ReleaseManifest).to_json()]
        kind = others.get(data[0]) if data[:1] else None
        return [(kind.decode(data) if kind else decode_message(data)).to_json()]
    except MembershipError as exc:
        raise DecodeFailure(str(exc.reason), exc.message) from None


def _receipt(data: bytes) -> list[dict[str, object]]:
    # Parsed, not verified, like membership records: `meshd receipts verify` judges.
    from meshd.core.receipts import Receipt, ReceiptError, record_to_json

    try:
        return [record_to_json(Receipt.decode(data))]
    except ReceiptError as exc:
        raise DecodeFailure(str(exc.reason), exc.message) from None


def _session(data: bytes, with_state: bool) -> list[dict[str, object]]:
    from meshd.core.proto import session

    try:
        msg = session.decode(data)
    except session.SessionMessageError as exc:
        raise DecodeFailure(exc.reason, exc.message) from None
    if isinstance(msg, session.BabelPacket):
        return [{"type": "session", "kind": "babel"}, *_babel(msg.packet, with_state)]
    if isinstance(msg, session.Link):
        return [{"type": "session", "kind": "link", "wireguard_port": msg.wireguard_port}]
    if isinstance(msg, session.Endpoints):
        return [
            {"type": "session", "kind": "endpoints"},
            *({"node_id": e.node_id, "host": e.host, "port": e.port} for e in msg.endpoints),
        ]
    if isinstance(msg, session.Gateway):
        from meshd.core.proto.gateway import GatewayError, decode_advert

        try:
            advert = decode_advert(msg.advert)
        except GatewayError as exc:
            raise DecodeFailure(str(exc.reason), exc.message) from None
        return [{"type": "session", "kind": "gateway"}, {"type": "gateway", **advert.to_json()}]
    if isinstance(msg, session.ExitRequest):
        return [{"type": "session", "kind": "exit_request"}]
    if isinstance(msg, session.ExitGrant):
        return [{"type": "session", "kind": "exit_grant", "wireguard_port": msg.wireguard_port}]
    if isinstance(msg, session.ExitRefused):
        return [{"type": "session", "kind": "exit_refused", "reason": msg.reason}]
    if isinstance(msg, session.Claim):
        return [
            {
                "type": "session",
                "kind": "claim",
                "epoch": msg.epoch,
                "seq": msg.seq,
                "relayed_for_bytes": msg.relayed_for_bytes,
                "relayed_to_bytes": msg.relayed_to_bytes,
                "throttled": msg.throttled or None,
            }
        ]
    if isinstance(msg, session.ReceiptMessage):
        head: dict[str, object] = {"type": "session", "kind": "receipt"}
        head["dispute"] = msg.dispute or None
        return [head, *_receipt(msg.receipt)]
    if isinstance(msg, session.ReceiptAck):
        return [{"type": "session", "kind": "receipt_ack", "epoch": msg.epoch, "seq": msg.seq}]
    if isinstance(msg, session.JoinRequestMessage | session.JoinGranted | session.JoinRefused):
        return _join(msg)
    if isinstance(msg, session.Revocations):
        return [
            {"type": "session", "kind": "revocations"},
            *(_membership(record)[0] for record in msg.revocations),
        ]
    if isinstance(msg, session.Clock):
        return [{"type": "session", "kind": "clock", "unix_ms": msg.unix_ms}]
    if isinstance(msg, session.Capabilities):
        # Every name as sent, the ones this build does not know too (a newer sender's).
        return [{"type": "session", "kind": "capabilities", "features": sorted(msg.features)}]
    if isinstance(msg, session.MeshDefinitionMessage):
        return [{"type": "session", "kind": "mesh_definition"}, *_membership(msg.definition)]
    if isinstance(msg, session.DirectoryDigest):
        head = {"type": "session", "kind": "directory_digest", "count": msg.count}
        return [{**head, "digest": msg.digest.hex()}]
    if isinstance(msg, session.DirectoryFingerprints):
        head = {"type": "session", "kind": "directory_fingerprints", "total": msg.total}
        return [{**head, "fingerprints": [f.hex() for f in msg.fingerprints]}]
    if isinstance(msg, session.DirectoryEntries):
        from meshd.core.membership.directory import DirectoryError, Entry

        out: list[dict[str, object]] = [{"type": "session", "kind": "directory_entries"}]
        for record in msg.entries:
            try:
                entry = Entry.decode(record)
            except DirectoryError as exc:
                raise DecodeFailure(exc.reason, exc.message) from None
            out.append(_membership(entry.certificate.encode())[0])
            out += (_membership(d.encode())[0] for d in entry.chain)
        return out
    if isinstance(msg, session.MapMessage):
        return [{"type": "session", "kind": "map"}, *_membership(msg.record)]
    if isinstance(msg, session.Release):
        return [{"type": "session", "kind": "release"}, *_membership(msg.manifest)]
    if isinstance(msg, session.ProposalMessage):
        return [{"type": "session", "kind": "proposal"}, *_membership(msg.proposal)]
    if isinstance(msg, session.ReleaseFetch):
        head = {"type": "session", "kind": "release_fetch", "serial": msg.serial}
        return [{**head, "offset": msg.offset, "length": msg.length}]
    if isinstance(msg, session.ReleasePart):
        head = {"type": "session", "kind": "release_part", "serial": msg.serial}
        return [{**head, "offset": msg.offset, "data": msg.data.hex()}]
    if isinstance(msg, session.Name):  # the salt too: it is what a neighbour was shown
        return [{"type": "session", "kind": "name", "name": msg.name, "salt": msg.salt.hex()}]
    if isinstance(msg, session.RenewRefused):
        head = {"type": "session", "kind": "renew_refused", "node_id": msg.node_id}
        return [{**head, "reason": msg.reason, "detail": msg.detail}]
    kinds = {
        session.Membership: "membership",
        session.RenewRequest: "renew_request",
        session.RenewGranted: "renew_granted",
    }
    records = [_membership(msg.certificate)[0]]
    if msg.delegation:
        records.append(_membership(msg.delegation)[0])
    return [{"type": "session", "kind": kinds[type(msg)]}, *records]


def _join(
    msg: session_types.JoinRequestMessage | session_types.JoinGranted | session_types.JoinRefused,
) -> list[dict[str, object]]:
    """The join kinds: the records they carry, parsed but not verified."""
    from meshd.core.proto import session

    if isinstance(msg, session.JoinRefused):
        head = {"type": "session", "kind": "join_refused", "node_id": msg.node_id}
        return [{**head, "reason": msg.reason, "detail": msg.detail}]
    if isinstance(msg, session.JoinGranted):
        records = [_membership(msg.definition)[0], _membership(msg.certificate)[0]]
        if msg.delegation:
            records.append(_membership(msg.delegation)[0])
        return [{"type": "session", "kind": "join_granted"}, *records]
    return [
        {"type": "session", "kind": "join_request"},
        *_membership(msg.invite),
        *_membership(msg.request),
    ]
