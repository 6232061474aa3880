"""Babel wire primitives (RFC 8966 section 4.1): the decode error, a bounds-checked reader,
and the address encodings (AE) with the prefix compression of section 4.6.9."""

from __future__ import annotations

import ipaddress
from typing import Final

from meshd.core.errors import BadInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BabelDecodeError(BadInput):
    """The bytes are not a well-formed Babel packet (the peer's fault, never ours).

    ``reason`` is a short snake_case code for logs and counters; ``message`` says where and why.
    """


# RFC 8966 4.1.5: address encodings.
AE_WILDCARD: Final = 0
AE_IPV4: Final = 1
AE_IPV6: Final = 2
AE_LINK_LOCAL: Final = 3
ADDRESS_ENCODINGS: Final = (AE_WILDCARD, AE_IPV4, AE_IPV6, AE_LINK_LOCAL)

# RFC 8966 4.1.5: AE 3 carries the low 8 octets; fe80::/64 is implied.
LINK_LOCAL_HIGH: Final = bytes.fromhex("fe80000000000000")
LINK_LOCAL_NET: Final = ipaddress.IPv6Network("fe80::/64")


class Reader:
    """A cursor over ``data[start:end]`` that raises BabelDecodeError instead of running off."""

    def __init__(
        self, data: bytes, start: int, end: int, reason: str, where: str | tuple[int, int]
    ) -> None:
        self.data = data
        self.pos = start
        self.end = end
        self.reason = reason  # what running out means here: "truncated" or "bad_length"
        self._where = where

    @property
    def where(self) -> str:
        """Where in the packet, for an error: a TLV's (type, offset) is spelled out only
        when one is raised (a packet holds hundreds of TLVs, most decode)."""
        if isinstance(self._where, tuple):
            return "TLV type {} at offset {}".format(*self._where)
        return self._where

    @where.setter
    def where(self, where: str | tuple[int, int]) -> None:
        self._where = where

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise BabelDecodeError(
                self.reason,
                f"{self.where}: needs {n} more octets at offset {self.pos}, "
                f"has {self.end - self.pos}",
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def rest(self) -> bytes:
        return self.take(self.end - self.pos)


def check_uint(name: str, value: int, bits: int) -> None:
    """Misuse check: ``value`` must fit the wire field."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be in 0..{(1 << bits) - 1}, not {value}")


def check_ae(ae: int) -> None:
    if ae not in ADDRESS_ENCODINGS:
        raise ValueError(f"address encoding must be one of 0, 1, 2, 3, not {ae!r}")


def address_family_size(ae: int) -> int:
    """Octets of a full address for this AE (0 for the wildcard)."""
    return 4 if ae == AE_IPV4 else 0 if ae == AE_WILDCARD else 16


def router_id_from_address(packed: bytes) -> bytes:
    """RFC 8966 4.6.9, Router-Id flag: the low 8 octets of the address, or the address
    right-aligned behind zero octets when it is shorter (IPv4)."""
    return packed[-8:] if len(packed) >= 8 else bytes(8 - len(packed)) + packed


# --- addresses (IHU, Next Hop): no compression, RFC 8966 4.1.5 ---------------------------


def check_address(ae: int, address: IPAddress | None, *, wildcard_ok: bool) -> None:
    check_ae(ae)
    if ae == AE_WILDCARD:
        if not wildcard_ok:
            raise ValueError("AE 0 (wildcard) is not allowed here")
        if address is not None:
            raise ValueError("AE 0 (wildcard) carries no address: use address=None")
    elif ae == AE_IPV4:
        if not isinstance(address, ipaddress.IPv4Address):
            raise ValueError(f"AE 1 needs an IPv4Address, not {address!r}")
    elif not isinstance(address, ipaddress.IPv6Address):
        raise ValueError(f"AE {ae} needs an IPv6Address, not {address!r}")
    elif ae == AE_LINK_LOCAL and address not in LINK_LOCAL_NET:
        raise ValueError(f"AE 3 only encodes addresses in fe80::/64, not {address}")


def encode_address(ae: int, address: IPAddress | None) -> bytes:
    if address is None:
        return b""
    return address.packed[8:] if ae == AE_LINK_LOCAL else address.packed


def decode_address(ae: int, reader: Reader) -> IPAddress | None:
    if ae == AE_WILDCARD:
        return None
    if ae == AE_IPV4:
        return ipaddress.IPv4Address(reader.take(4))
    if ae == AE_IPV6:
        return ipaddress.IPv6Address(reader.take(16))
    if ae == AE_LINK_LOCAL:
        return ipaddress.IPv6Address(LINK_LOCAL_HIGH + reader.take(8))
    raise BabelDecodeError("bad_ae", f"{reader.where}: unknown address encoding {ae}")


# --- prefixes (Update, Route Request, Seqno Request) -------------------------------------


def _network(ae: int, packed: bytes, plen: int) -> IPNetwork:
    """The prefix of length ``plen`` starting with ``packed``, host bits cleared."""
    size = address_family_size(ae)
    full = (packed + bytes(size))[:size]
    if ae == AE_IPV4:
        return ipaddress.IPv4Network((full, plen), strict=False)
    return ipaddress.IPv6Network((full, plen), strict=False)


def check_prefix(ae: int, prefix: IPNetwork | None) -> None:
    """Misuse check: the prefix must be representable in this AE."""
    check_ae(ae)
    if ae == AE_WILDCARD:
        if prefix is not None:
            raise ValueError("AE 0 (wildcard) carries no prefix: use prefix=None")
        return
    if ae == AE_IPV4:
        if not isinstance(prefix, ipaddress.IPv4Network):
            raise ValueError(f"AE 1 needs an IPv4Network, not {prefix!r}")
        return
    if not isinstance(prefix, ipaddress.IPv6Network):
        raise ValueError(f"AE {ae} needs an IPv6Network, not {prefix!r}")
    if ae == AE_LINK_LOCAL:
        packed = prefix.network_address.packed
        if _network(ae, LINK_LOCAL_HIGH + packed[8:], prefix.prefixlen) != prefix:
            raise ValueError(f"AE 3 only encodes prefixes under fe80::/64, not {prefix}")


def prefix_octets(plen: int) -> int:
    return (plen + 7) // 8


def encode_prefix(ae: int, prefix: IPNetwork | None, omitted: int, default: bytes | None) -> bytes:
    """The Prefix field: the octets of the prefix after the ``omitted`` ones, which the
    receiver takes from ``default`` (RFC 8966 4.6.9). Raises ValueError if they don't match."""
    if prefix is None:
        return b""
    packed = prefix.network_address.packed
    octets = prefix_octets(prefix.prefixlen)
    if ae == AE_LINK_LOCAL:
        return packed[8:octets] if octets > 8 else b""
    if omitted:
        if default is None:
            raise ValueError(
                f"{prefix}: omitted={omitted} but no earlier Update in this packet set "
                f"a default prefix for AE {ae}"
            )
        rebuilt = _network(ae, default[:omitted] + packed[omitted:], prefix.prefixlen)
        if rebuilt != prefix:
            raise ValueError(
                f"{prefix}: its first {omitted} octets differ from the default prefix "
                f"{_network(ae, default, 8 * len(default)).network_address}"
            )
    return packed[omitted:octets]


def decode_prefix(
    ae: int, plen: int, omitted: int, reader: Reader, default: bytes | None
) -> IPNetwork | None:
    if ae == AE_WILDCARD:
        if plen != 0:
            raise BabelDecodeError("bad_prefix_length", f"{reader.where}: AE 0 with plen {plen}")
        if omitted != 0:
            raise BabelDecodeError("bad_omitted", f"{reader.where}: AE 0 with omitted {omitted}")
        return None
    if ae not in ADDRESS_ENCODINGS:
        raise BabelDecodeError("bad_ae", f"{reader.where}: unknown address encoding {ae}")
    size = address_family_size(ae)
    if plen > 8 * size:
        raise BabelDecodeError("bad_prefix_length", f"{reader.where}: plen {plen} for AE {ae}")
    octets = prefix_octets(plen)
    if ae == AE_LINK_LOCAL:
        # RFC 8966 4.6.9: "If AE is 3 (link-local IPv6), the Omitted field MUST be 0."
        if omitted != 0:
            raise BabelDecodeError("bad_omitted", f"{reader.where}: AE 3 with omitted {omitted}")
        return _network(ae, LINK_LOCAL_HIGH + reader.take(max(0, octets - 8)), plen)
    if omitted > size:
        raise BabelDecodeError("bad_omitted", f"{reader.where}: omitted {omitted} for AE {ae}")
    head = b""
    if omitted:
        if default is None:
            raise BabelDecodeError(
                "no_default_prefix",
                f"{reader.where}: omits {omitted} octets but no default prefix for AE {ae} is set",
            )
        head = default[:omitted]
    return _network(ae, head + reader.take(max(0, octets - omitted)), plen)
