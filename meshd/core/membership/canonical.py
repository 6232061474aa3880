"""One canonical byte encoding for every signed meshd control message (pure).

Certificates and receipts (meshd.core.receipts) use it: a signature is always over the exact
bytes below, prefixed by a per-message-type domain string, so a signature made for one kind
of message can never verify as another.

Layout::

    offset 0   type tag   u8    which message (MessageType below)
    offset 1   version    u8    ENCODING_VERSION, or a later one the message declares
                                (for fields added later: a record that uses one takes
                                its version and that version's fields); anything else is
                                refused
    offset 2   fields, each present exactly once, in the schema's fixed order:
                 tag     u8          the field's position, 1, 2, 3, ... (never skipped)
                 length  u16 BE      number of value bytes
                 value   length bytes

Value encodings (the length is fixed where the kind has a fixed size):

    u8 / u64        1 / 8 bytes, unsigned big-endian
    fixed(n)        exactly n bytes (keys: 32, mesh id: 16, signature: 64)
    blob            min..max bytes, their meaning the field's (a map record's location)
    text            UTF-8, NFC, printable (no control characters), min..max bytes
    ipv4 / ipv6     4 / 16 bytes
    ipv4net         5 bytes: network address, prefix length; host bits must be zero
    ipv6net         17 bytes: network address, prefix length; host bits must be zero
    fixed list      n * item bytes, items strictly ascending (sorted, no duplicates)

The decoder accepts exactly one byte string per value: wrong type tag, unknown version,
missing, repeated, unknown or out-of-order fields, wrong lengths, non-canonical values and
trailing bytes are all a DecodeError. The signature, when a message has one, is its last
field, and the signed bytes are ``domain + everything before the signature field``.
"""

from __future__ import annotations

import enum
import ipaddress
import unicodedata
from collections.abc import Sequence

ENCODING_VERSION = 1
HEADER_LENGTH = 2
FIELD_HEADER_LENGTH = 3
MAX_FIELD_LENGTH = 0xFFFF
U64_MAX = 2**64 - 1


class MessageType(enum.IntEnum):
    """Type tags: one registry for every canonical message, so no two kinds share a tag."""

    MESH_DEFINITION = 0x01
    MEMBERSHIP_CERTIFICATE = 0x02
    DELEGATION_CERTIFICATE = 0x03
    REVOCATION = 0x04
    INVITE = 0x05  # meshd.core.invites: a one-time, expiring invitation to join
    JOIN_REQUEST = 0x06  # meshd.core.invites: the joining node's keys, proving the secret
    # 0x10..0x1f are for metering (claims travel as session messages, meshd.core.proto.session).
    RECEIPT = 0x11  # meshd.core.receipts: a consumer's signed cumulative byte counts
    # 0x20..0x2f are for the community map.
    MAP_RECORD = 0x20  # meshd.core.proto.map_record: what a node shows on the map
    # 0x30..0x3f are for releases (updates over the mesh).
    RELEASE_MANIFEST = 0x30  # meshd.core.proto.release: a new meshd, signed by an admin
    # 0x40..0x4f are for governance.
    COSIGNED = 0x40  # meshd.core.membership.cosigned: a record and more admins' signatures
    PROPOSAL = 0x41  # meshd.core.membership.proposals: one, and the withdrawals from it


class DecodeError(Exception):
    """Bytes that are not the canonical encoding of the expected message."""


def check_text(value: str, min_bytes: int, max_bytes: int) -> bytes:
    """The canonical UTF-8 of ``value``, or ValueError saying why it has none.

    NFC and no control characters, so that two names that look the same are the same
    bytes and a name cannot rewrite an operator's terminal.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    raw = value.encode("utf-8", errors="strict")
    if not min_bytes <= len(raw) <= max_bytes:
        raise ValueError(f"must be {min_bytes} to {max_bytes} UTF-8 bytes, got {len(raw)}")
    if not unicodedata.is_normalized("NFC", value):
        raise ValueError("must be Unicode NFC")
    if not value.isprintable():
        raise ValueError("must not contain control or non-printable characters")
    return raw


class Writer:
    """Builds one message field by field; the caller writes fields in schema order."""

    def __init__(self, message_type: MessageType, version: int = ENCODING_VERSION) -> None:
        self._parts: list[bytes] = [bytes((message_type, version))]
        self._next_tag = 1

    def _field(self, value: bytes) -> None:
        if len(value) > MAX_FIELD_LENGTH:
            raise ValueError(f"field {self._next_tag} is {len(value)} bytes, too long")
        if self._next_tag > 0xFF:
            raise ValueError("too many fields")
        self._parts.append(bytes((self._next_tag,)) + len(value).to_bytes(2, "big") + value)
        self._next_tag += 1

    def u8(self, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise ValueError(f"u8 out of range: {value}")
        self._field(bytes((value,)))

    def u64(self, value: int) -> None:
        if not 0 <= value <= U64_MAX:
            raise ValueError(f"u64 out of range: {value}")
        self._field(value.to_bytes(8, "big"))

    def fixed(self, value: bytes, length: int) -> None:
        if len(value) != length:
            raise ValueError(f"expected {length} bytes, got {len(value)}")
        self._field(bytes(value))

    def text(self, value: str, min_bytes: int, max_bytes: int) -> None:
        self._field(check_text(value, min_bytes, max_bytes))

    def blob(self, value: bytes) -> None:
        self._field(bytes(value))

    def ipv4(self, value: ipaddress.IPv4Address) -> None:
        self._field(value.packed)

    def ipv6(self, value: ipaddress.IPv6Address) -> None:
        self._field(value.packed)

    def ipv4net(self, value: ipaddress.IPv4Network) -> None:
        self._field(value.network_address.packed + bytes((value.prefixlen,)))

    def ipv6net(self, value: ipaddress.IPv6Network) -> None:
        self._field(value.network_address.packed + bytes((value.prefixlen,)))

    def fixed_list(self, items: Sequence[bytes], item_length: int) -> None:
        if any(len(item) != item_length for item in items):
            raise ValueError(f"every item must be {item_length} bytes")
        if any(a >= b for a, b in zip(items, items[1:], strict=False)):
            raise ValueError("items must be strictly ascending")
        self._field(b"".join(items))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads one message field by field, refusing anything but the canonical bytes."""

    def __init__(
        self, data: bytes, message_type: MessageType, versions: Sequence[int] = (ENCODING_VERSION,)
    ) -> None:
        if not isinstance(data, bytes):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        if len(data) < HEADER_LENGTH:
            raise DecodeError(f"{len(data)} bytes is shorter than the header")
        if data[0] != message_type:
            raise DecodeError(f"type tag 0x{data[0]:02x}, expected 0x{message_type:02x}")
        if data[1] not in versions:
            raise DecodeError(f"unknown encoding version {data[1]}")
        self.version = data[1]
        self._data = data
        self._offset = HEADER_LENGTH
        self._next_tag = 1

    @property
    def offset(self) -> int:
        return self._offset

    def _field(self, name: str, min_length: int, max_length: int) -> bytes:
        start = self._offset
        if start + FIELD_HEADER_LENGTH > len(self._data):
            raise DecodeError(f"{name}: truncated before field {self._next_tag}")
        tag = self._data[start]
        length = int.from_bytes(self._data[start + 1 : start + 3], "big")
        if tag != self._next_tag:
            raise DecodeError(f"{name}: field tag {tag}, expected {self._next_tag}")
        if not min_length <= length <= max_length:
            expected = (
                str(min_length) if min_length == max_length else f"{min_length}..{max_length}"
            )
            raise DecodeError(f"{name}: length {length}, expected {expected}")
        end = start + FIELD_HEADER_LENGTH + length
        if end > len(self._data):
            raise DecodeError(f"{name}: truncated value")
        self._offset = end
        self._next_tag += 1
        return self._data[start + FIELD_HEADER_LENGTH : end]

    def u8(self, name: str) -> int:
        return self._field(name, 1, 1)[0]

    def u64(self, name: str) -> int:
        return int.from_bytes(self._field(name, 8, 8), "big")

    def fixed(self, name: str, length: int) -> bytes:
        return self._field(name, length, length)

    def text(self, name: str, min_bytes: int, max_bytes: int) -> str:
        raw = self._field(name, min_bytes, max_bytes)
        try:
            value = raw.decode("utf-8", errors="strict")
            check_text(value, min_bytes, max_bytes)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise DecodeError(f"{name}: {exc}") from None
        return value

    def blob(self, name: str, min_length: int, max_length: int) -> bytes:
        return self._field(name, min_length, max_length)

    def ipv4(self, name: str) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(self._field(name, 4, 4))

    def ipv6(self, name: str) -> ipaddress.IPv6Address:
        return ipaddress.IPv6Address(self._field(name, 16, 16))

    def ipv4net(self, name: str) -> ipaddress.IPv4Network:
        raw = self._field(name, 5, 5)
        try:  # strict: host bits set is a second spelling of the same network
            return ipaddress.IPv4Network((raw[:4], raw[4]), strict=True)
        except ValueError as exc:
            raise DecodeError(f"{name}: {exc}") from None

    def ipv6net(self, name: str) -> ipaddress.IPv6Network:
        raw = self._field(name, 17, 17)
        try:
            return ipaddress.IPv6Network((raw[:16], raw[16]), strict=True)
        except ValueError as exc:
            raise DecodeError(f"{name}: {exc}") from None

    def fixed_list(
        self, name: str, item_length: int, min_items: int, max_items: int
    ) -> tuple[bytes, ...]:
        raw = self._field(name, min_items * item_length, max_items * item_length)
        if len(raw) % item_length:
            raise DecodeError(f"{name}: length {len(raw)} is not a multiple of {item_length}")
        items = tuple(raw[i : i + item_length] for i in range(0, len(raw), item_length))
        if any(a >= b for a, b in zip(items, items[1:], strict=False)):
            raise DecodeError(f"{name}: items are not strictly ascending")
        return items

    def end(self) -> None:
        if self._offset != len(self._data):
            raise DecodeError(f"{len(self._data) - self._offset} trailing bytes")


def walk(data: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    """Split any canonical message into (type tag, version, [(field tag, value)]) without
    knowing its schema: for ``meshd decode`` on a type it does not know."""
    if len(data) < HEADER_LENGTH:
        raise DecodeError(f"{len(data)} bytes is shorter than the header")
    fields: list[tuple[int, bytes]] = []
    offset = HEADER_LENGTH
    while offset < len(data):
        if offset + FIELD_HEADER_LENGTH > len(data):
            raise DecodeError("truncated field header")
        tag = data[offset]
        if tag != len(fields) + 1:
            raise DecodeError(f"field tag {tag}, expected {len(fields) + 1}")
        length = int.from_bytes(data[offset + 1 : offset + 3], "big")
        end = offset + FIELD_HEADER_LENGTH + length
        if end > len(data):
            raise DecodeError("truncated value")
        fields.append((tag, data[offset + FIELD_HEADER_LENGTH : end]))
        offset = end
    return data[0], data[1], fields
