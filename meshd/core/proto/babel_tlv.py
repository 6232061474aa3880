"""Babel TLVs (RFC 8966 section 4.6) as frozen dataclasses, and the parser state of
section 4.5 that Update, Router-Id and Next Hop TLVs read and write.

Every TLV except Pad1 is Type (8) | Length (8) | Body; the body is the TLV's fields (its
"natural length") followed by sub-TLVs. Constructors check only that a value fits its wire
field (ValueError at once); what depends on earlier TLVs (omitted prefix octets) is checked
by the encoder, which walks the same parser state as the decoder.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Final

from meshd.core.proto.babel_subtlv import (
    HelloTimestamp,
    IHUTimestamp,
    SubTLV,
    check_subtlvs,
)
from meshd.core.proto.babel_wire import (
    AE_IPV4,
    AE_IPV6,
    AE_WILDCARD,
    IPAddress,
    IPNetwork,
    address_family_size,
    check_address,
    check_prefix,
    check_uint,
    router_id_from_address,
)

# RFC 8966 4.6: TLV types.
PAD1: Final = 0
PADN: Final = 1
ACK_REQUEST: Final = 2
ACK: Final = 3
HELLO: Final = 4
IHU_TYPE: Final = 5
ROUTER_ID: Final = 6
NEXT_HOP: Final = 7
UPDATE: Final = 8
ROUTE_REQUEST: Final = 9
SEQNO_REQUEST: Final = 10

HELLO_UNICAST: Final = 0x8000  # 4.6.5, Flags: U
UPDATE_PREFIX_FLAG: Final = 0x80  # 4.6.9: sets the default prefix for this AE
UPDATE_ROUTER_ID_FLAG: Final = 0x40  # 4.6.9: sets the router-id from the prefix
METRIC_INFINITY: Final = 0xFFFF


def _check_router_id(owner: str, router_id: bytes) -> None:
    if not isinstance(router_id, bytes) or len(router_id) != 8:
        raise ValueError(f"{owner}.router_id must be 8 bytes, not {router_id!r}")


@dataclass(frozen=True, kw_only=True)
class Pad1:
    """4.6.1: one octet of padding."""


@dataclass(frozen=True, kw_only=True)
class PadN:
    """4.6.2: ``length`` octets of padding (MBZ, ignored on reception)."""

    length: int = 0

    def __post_init__(self) -> None:
        check_uint("PadN.length", self.length, 8)


@dataclass(frozen=True, kw_only=True)
class AckRequest:
    """4.6.3: asks for an Ack echoing ``opaque`` within ``interval`` centiseconds."""

    opaque: int
    interval: int
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        check_uint("AckRequest.opaque", self.opaque, 16)
        check_uint("AckRequest.interval", self.interval, 16)
        object.__setattr__(
            self, "sub_tlvs", check_subtlvs("AckRequest", ACK_REQUEST, self.sub_tlvs)
        )


@dataclass(frozen=True, kw_only=True)
class Ack:
    """4.6.4: answers an Ack Request."""

    opaque: int
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        check_uint("Ack.opaque", self.opaque, 16)
        object.__setattr__(self, "sub_tlvs", check_subtlvs("Ack", ACK, self.sub_tlvs))


@dataclass(frozen=True, kw_only=True)
class Hello:
    """4.6.5: neighbour discovery; ``interval`` in centiseconds (0: unscheduled)."""

    seqno: int
    interval: int
    unicast: bool = False
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        check_uint("Hello.seqno", self.seqno, 16)
        check_uint("Hello.interval", self.interval, 16)
        object.__setattr__(self, "sub_tlvs", check_subtlvs("Hello", HELLO, self.sub_tlvs))

    @property
    def timestamp(self) -> int | None:
        """RFC 9616 transmit timestamp, if the Hello carries one."""
        for sub in self.sub_tlvs:
            if isinstance(sub, HelloTimestamp):
                return sub.transmit
        return None


@dataclass(frozen=True, kw_only=True)
class IHU:
    """4.6.6: "I Heard You": the sender's rxcost for the interface at ``address``
    (AE 0: no address, e.g. on a point-to-point link)."""

    ae: int
    address: IPAddress | None
    rxcost: int
    interval: int
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        check_address(self.ae, self.address, wildcard_ok=True)
        check_uint("IHU.rxcost", self.rxcost, 16)
        check_uint("IHU.interval", self.interval, 16)
        object.__setattr__(self, "sub_tlvs", check_subtlvs("IHU", IHU_TYPE, self.sub_tlvs))

    @property
    def timestamp(self) -> IHUTimestamp | None:
        """RFC 9616 origin and receive timestamps, if the IHU carries them."""
        for sub in self.sub_tlvs:
            if isinstance(sub, IHUTimestamp):
                return sub
        return None


@dataclass(frozen=True, kw_only=True)
class RouterId:
    """4.6.7: the router-id of the Updates that follow."""

    router_id: bytes
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        _check_router_id("RouterId", self.router_id)
        object.__setattr__(self, "sub_tlvs", check_subtlvs("RouterId", ROUTER_ID, self.sub_tlvs))


@dataclass(frozen=True, kw_only=True)
class NextHop:
    """4.6.8: the next hop of the following Updates of this address family."""

    ae: int
    address: IPAddress
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        # 4.6.8: AE "MUST NOT be 0".
        check_address(self.ae, self.address, wildcard_ok=False)
        object.__setattr__(self, "sub_tlvs", check_subtlvs("NextHop", NEXT_HOP, self.sub_tlvs))


@dataclass(frozen=True, kw_only=True)
class Update:
    """4.6.9: a route (or a retraction, metric 0xFFFF; AE 0 retracts everything).

    ``prefix`` is always the whole prefix; ``omitted`` says how many of its leading octets
    the wire form leaves out because the default prefix of this AE already has them.
    ``sets_default_prefix`` / ``sets_router_id`` are the Prefix (0x80) and Router-Id (0x40)
    flags; ``interval`` is in centiseconds.
    """

    ae: int
    prefix: IPNetwork | None
    interval: int
    seqno: int
    metric: int
    sets_default_prefix: bool = False
    sets_router_id: bool = False
    omitted: int = 0
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        check_prefix(self.ae, self.prefix)
        check_uint("Update.interval", self.interval, 16)
        check_uint("Update.seqno", self.seqno, 16)
        check_uint("Update.metric", self.metric, 16)
        check_uint("Update.omitted", self.omitted, 8)
        if self.omitted and self.ae not in (AE_IPV4, AE_IPV6):
            raise ValueError(f"Update: AE {self.ae} allows no omitted octets")
        if self.omitted > address_family_size(self.ae):
            raise ValueError(f"Update: omitted {self.omitted} is longer than an address")
        if self.sets_router_id and self.ae == AE_WILDCARD:
            raise ValueError("Update: AE 0 has no prefix to take a router-id from")
        object.__setattr__(self, "sub_tlvs", check_subtlvs("Update", UPDATE, self.sub_tlvs))

    @property
    def retraction(self) -> bool:
        return self.metric == METRIC_INFINITY


@dataclass(frozen=True, kw_only=True)
class RouteRequest:
    """4.6.10: asks for an Update for ``prefix`` (AE 0, prefix None: for every route)."""

    ae: int
    prefix: IPNetwork | None
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        check_prefix(self.ae, self.prefix)
        object.__setattr__(
            self, "sub_tlvs", check_subtlvs("RouteRequest", ROUTE_REQUEST, self.sub_tlvs)
        )


@dataclass(frozen=True, kw_only=True)
class SeqnoRequest:
    """4.6.11: asks the source ``router_id`` for an Update of ``prefix`` with a seqno of at
    least ``seqno``, forwarded at most ``hop_count`` - 1 times."""

    ae: int
    prefix: IPNetwork
    seqno: int
    hop_count: int
    router_id: bytes
    sub_tlvs: tuple[SubTLV, ...] = ()

    def __post_init__(self) -> None:
        if self.ae == AE_WILDCARD:
            raise ValueError("SeqnoRequest: AE MUST NOT be 0 (RFC 8966 4.6.11)")
        check_prefix(self.ae, self.prefix)
        check_uint("SeqnoRequest.seqno", self.seqno, 16)
        check_uint("SeqnoRequest.hop_count", self.hop_count, 8)
        _check_router_id("SeqnoRequest", self.router_id)
        object.__setattr__(
            self, "sub_tlvs", check_subtlvs("SeqnoRequest", SEQNO_REQUEST, self.sub_tlvs)
        )


TLV = (
    Pad1
    | PadN
    | AckRequest
    | Ack
    | Hello
    | IHU
    | RouterId
    | NextHop
    | Update
    | RouteRequest
    | SeqnoRequest
)


@dataclass(frozen=True, kw_only=True)
class ParserState:
    """RFC 8966 4.5: what a TLV may take from the TLVs before it in the same packet.

    - ``router_id``: set by Router-Id TLVs and Updates with the Router-Id flag; None until
      then (an Update other than AE 0 then has no source and must be ignored by routing).
    - ``next_hop_v4`` / ``next_hop_v6``: set by Next Hop TLVs; None means the packet's
      source address (for the transport's own family) or, otherwise, unknown.
    - ``default_prefix_ae1`` / ``default_prefix_ae2``: the full address of the last Update
      of that AE with the Prefix flag; the source of omitted octets. AE 3 allows no
      compression, so it has none (4.6.9: "If AE is 3 ... Omitted MUST be 0").

    Parsing a TLV updates the state even when the TLV is otherwise ignored (4.4).
    """

    router_id: bytes | None = None
    next_hop_v4: ipaddress.IPv4Address | None = None
    next_hop_v6: ipaddress.IPv6Address | None = None
    default_prefix_ae1: bytes | None = None
    default_prefix_ae2: bytes | None = None

    def default_prefix(self, ae: int) -> bytes | None:
        return (
            self.default_prefix_ae1
            if ae == AE_IPV4
            else self.default_prefix_ae2
            if ae == AE_IPV6
            else None
        )

    def next_hop(self, ae: int) -> IPAddress | None:
        """The next hop of an Update with this AE (None: the sender itself)."""
        return self.next_hop_v4 if ae == AE_IPV4 else self.next_hop_v6

    def after(self, tlv: TLV) -> ParserState:
        """The state once ``tlv`` has been parsed (or sent)."""
        if isinstance(tlv, RouterId):
            return replace(self, router_id=tlv.router_id)
        if isinstance(tlv, NextHop):
            if isinstance(tlv.address, ipaddress.IPv4Address):
                return replace(self, next_hop_v4=tlv.address)
            return replace(self, next_hop_v6=tlv.address)
        if isinstance(tlv, Update) and tlv.prefix is not None:
            state = self
            packed = tlv.prefix.network_address.packed
            if tlv.sets_default_prefix and tlv.ae == AE_IPV4:
                state = replace(state, default_prefix_ae1=packed)
            elif tlv.sets_default_prefix and tlv.ae == AE_IPV6:
                state = replace(state, default_prefix_ae2=packed)
            if tlv.sets_router_id:
                state = replace(state, router_id=router_id_from_address(packed))
            return state
        return self
