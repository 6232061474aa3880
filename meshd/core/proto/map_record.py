"""The map record: what a node agrees to show on the community map, signed by the node and
flooded over the neighbour sessions (pure: no sockets, no clocks).

A node publishes one record every few minutes and when its links change; each node keeps
every member's newest (meshd.core.control.community_map) and any node can draw the map
from them (meshd.core.map_export: meshviewer's files). Privacy first: by default a record
holds the node's id and its links with their quality, nothing else; its name, contact
and location only when its operator set them (``[map]``). Whether it is a gateway and
whether it is online are not claims of the node: the exporter reads them from the signed
gateway adverts and from the routes it has.

Canonical bytes (meshd.core.membership.canonical, type tag MAP_RECORD, version 1)::

    field  name        kind          bytes
      1    mesh_id     fixed(16)     the MeshDefinition's mesh id
      2    issuer      fixed(32)     the node's Ed25519 key (node id): who it describes
      3    seqno       u64           grows with every record of the node; the newest wins
      4    issued_at   u64           Unix seconds
      5    lifetime_s  u64           shown offline after issued_at + lifetime_s unless
                                     refreshed; MIN_LIFETIME_S..MAX_LIFETIME_S
      6    name        text 0..64    the name it shows ("": none)
      7    contact     text 0..128   how to reach its operator ("": none)
      8    location    blob 0 or 8   none, or i32 latitude, i32 longitude, in 1e-7 degrees
      9    links       33 x n        n <= MAX_LINKS of (neighbour key | u8 quality), keys
                                     ascending, each once, never the issuer's own
     10    signature   fixed(64)     the issuer's Ed25519 over DOMAIN + fields 1..9

A link's quality is babeld's idea of a good link turned into batman-adv's "TQ": 255 times
the cost of a perfect link (96) over the link's cost, so 255 is a perfect link and it
falls as loss and delay grow. In JSON, keys are node ids, ``tq`` the byte, the location
``{"latitude": degrees, "longitude": degrees}`` or null.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from meshd.core.keys import node_id_from_public, public_from_node_id
from meshd.core.membership._json import JsonFields
from meshd.core.membership.canonical import MessageType, Reader
from meshd.core.membership.messages import (
    KEY_LENGTH,
    MESH_ID,
    NODE_ID,
    SIGNATURE,
    U64,
    Codec,
    SignedMessage,
    text,
)

MAX_LINKS = 64  # a node's links on the map; more are the best MAX_LINKS
NAME_MAX_BYTES = 64
CONTACT_MAX_BYTES = 128
MIN_LIFETIME_S = 60
MAX_LIFETIME_S = 86_400
PERFECT_COST = 96  # the cost of a loss-free, delay-free link (meshd.core.routing.link_quality)
_LOCATION = struct.Struct(">ii")
_E7 = 10_000_000
_LINK_LENGTH = KEY_LENGTH + 1


def link_quality(cost: int) -> int:
    """The TQ byte of a link of Babel cost ``cost`` (0..255; 0: unusable)."""
    return 0 if cost <= 0 or cost >= 0xFFFF else min(255, round(255 * PERFECT_COST / cost))


@dataclass(frozen=True)
class Location:
    """A point, in 1e-7 degrees (about 1 cm), as the record carries it."""

    latitude_e7: int
    longitude_e7: int

    def __post_init__(self) -> None:
        if not -90 * _E7 <= self.latitude_e7 <= 90 * _E7:
            raise ValueError(f"latitude {self.latitude} is not in -90..90")
        if not -180 * _E7 <= self.longitude_e7 <= 180 * _E7:
            raise ValueError(f"longitude {self.longitude} is not in -180..180")

    @property
    def latitude(self) -> float:
        return self.latitude_e7 / _E7

    @property
    def longitude(self) -> float:
        return self.longitude_e7 / _E7

    @classmethod
    def parse(cls, text: str) -> Location:
        """``LATITUDE,LONGITUDE`` in degrees (``53.0793,8.8017``); ValueError if not."""
        parts = text.split(",")
        if len(parts) != 2:
            raise ValueError(f"expected LATITUDE,LONGITUDE in degrees, got {text!r}")
        try:
            latitude, longitude = (float(part) for part in parts)
        except ValueError:
            raise ValueError(f"expected two numbers, got {text!r}") from None
        return cls(round(latitude * _E7), round(longitude * _E7))


def _check_location(what: str, value: object) -> Location | None:
    if value is not None and not isinstance(value, Location):
        raise ValueError(f"{what} must be a Location or None")
    return value


def _read_location(reader: Reader, name: str) -> Location | None:
    raw = reader.blob(name, 0, _LOCATION.size)
    if not raw:
        return None
    if len(raw) != _LOCATION.size:
        raise ValueError(f"{name}: {len(raw)} bytes, expected 0 or {_LOCATION.size}")
    return Location(*_LOCATION.unpack(raw))


def _degrees(fields: JsonFields, key: str) -> int:
    value = fields.raw(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number of degrees")
    e7 = round(value * _E7)
    if e7 / _E7 != value:  # one spelling for one record: at most 7 decimals
        raise ValueError(f"{key} has more than 7 decimals")
    return e7


def _location_from_json(fields: JsonFields, key: str) -> Location | None:
    if fields.raw(key) is None:
        return None
    point = fields.nested(key, key, ("latitude", "longitude"))
    return Location(_degrees(point, "latitude"), _degrees(point, "longitude"))


LOCATION = Codec(
    _check_location,
    lambda writer, value: writer.blob(
        b"" if value is None else _LOCATION.pack(value.latitude_e7, value.longitude_e7)
    ),
    _read_location,
    lambda value: (
        None if value is None else {"latitude": value.latitude, "longitude": value.longitude}
    ),
    _location_from_json,
)


@dataclass(frozen=True)
class MapLink:
    """A neighbour the node has a link to, and the link's quality (TQ, 0..255)."""

    node_id: str
    tq: int
    # The key's bytes, read once (sorting, encoding and signing use them, not the id).
    key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # ValueError if not a node id
        object.__setattr__(self, "key", public_from_node_id(self.node_id))
        if isinstance(self.tq, bool) or not isinstance(self.tq, int) or not 0 <= self.tq <= 255:
            raise ValueError(f"a link's tq is 0..255, got {self.tq!r}")

    @classmethod
    def read(cls, packed: bytes) -> MapLink:
        """A link as a record carries it (key, then tq): any 32 octets are a key, so only
        its id is spelled out, not checked again."""
        link = object.__new__(cls)
        object.__setattr__(link, "node_id", node_id_from_public(packed[:KEY_LENGTH]))
        object.__setattr__(link, "tq", packed[KEY_LENGTH])
        object.__setattr__(link, "key", packed[:KEY_LENGTH])
        return link

    def packed(self) -> bytes:
        return self.key + bytes((self.tq,))


def _check_links(what: str, value: object) -> tuple[MapLink, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, MapLink) for v in value):
        raise ValueError(f"{what} must be a tuple of MapLink")
    if len(value) > MAX_LINKS:
        raise ValueError(f"{what}: {len(value)} links, at most {MAX_LINKS}")
    keys = [link.key for link in value]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
        raise ValueError(f"{what} must be sorted by key bytes, each neighbour once")
    return value


def _read_links(reader: Reader, name: str) -> tuple[MapLink, ...]:
    items = reader.fixed_list(name, _LINK_LENGTH, 0, MAX_LINKS)
    return tuple(MapLink.read(item) for item in items)


def _links_from_json(fields: JsonFields, key: str) -> tuple[MapLink, ...]:
    raw = fields.raw(key)
    if not isinstance(raw, list):
        raise ValueError(f"{key} must be a list")
    items = [JsonFields(obj, f"{key}[{i}]", ("node_id", "tq")) for i, obj in enumerate(raw)]
    return tuple(MapLink(item.node_id("node_id"), item.integer("tq")) for item in items)


LINKS = Codec(
    _check_links,
    lambda writer, value: writer.fixed_list([link.packed() for link in value], _LINK_LENGTH),
    _read_links,
    lambda value: [{"node_id": link.node_id, "tq": link.tq} for link in value],
    _links_from_json,
)


@dataclass(frozen=True)
class MapRecord(SignedMessage):
    """One node's entry on the map, signed by that node (``issuer``)."""

    TYPE: ClassVar[MessageType] = MessageType.MAP_RECORD
    DOMAIN: ClassVar[bytes] = b"meshd-map-v1\0"
    JSON_TYPE: ClassVar[str] = "map_record"

    mesh_id: Annotated[bytes, MESH_ID]
    issuer: Annotated[str, NODE_ID]
    seqno: Annotated[int, U64]
    issued_at: Annotated[int, U64]
    lifetime_s: Annotated[int, U64]
    name: Annotated[str, text(0, NAME_MAX_BYTES)]
    contact: Annotated[str, text(0, CONTACT_MAX_BYTES)]
    location: Annotated[Location | None, LOCATION]
    links: Annotated[tuple[MapLink, ...], LINKS]
    signature: Annotated[bytes, SIGNATURE]

    def _check(self) -> None:
        if not MIN_LIFETIME_S <= self.lifetime_s <= MAX_LIFETIME_S:
            raise ValueError(f"lifetime_s must be {MIN_LIFETIME_S}..{MAX_LIFETIME_S}")
        if any(link.node_id == self.issuer for link in self.links):
            raise ValueError("a node has no link to itself")

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.lifetime_s


def sorted_links(links: dict[str, int]) -> tuple[MapLink, ...]:
    """Links by neighbour (node id -> tq) as a record holds them: the best MAX_LINKS, in
    key order."""
    best = sorted(links.items(), key=lambda item: -item[1])[:MAX_LINKS]
    return tuple(
        MapLink(node_id, tq)
        for node_id, tq in sorted(best, key=lambda i: public_from_node_id(i[0]))
    )
