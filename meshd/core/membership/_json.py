"""Strict reading of the JSON form: exactly the expected keys, each of the expected type.

The JSON form must map to one byte string, so it is as strict as the decoder: a missing or
extra key, a bool where an int belongs, upper-case hex or padded base64 is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

from meshd.core.keys import decode_wireguard_key, encode_key, public_from_node_id
from meshd.core.membership.errors import MembershipError, Reason

JSON_VERSION = 1
_HEX = re.compile(r"[0-9a-f]*")
_Ip = TypeVar(
    "_Ip",
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


def _malformed(message: str) -> MembershipError:
    return MembershipError(Reason.MALFORMED, message)


class JsonFields:
    def __init__(self, obj: object, what: str, keys: tuple[str, ...]) -> None:
        if not isinstance(obj, Mapping):
            raise _malformed(f"{what}: expected a JSON object, got {type(obj).__name__}")
        if any(not isinstance(key, str) for key in obj):
            raise _malformed(f"{what}: object keys must be strings")
        missing = [key for key in keys if key not in obj]
        extra = sorted(str(key) for key in obj if key not in keys)
        if missing or extra:
            raise _malformed(f"{what}: missing keys {missing}, unexpected keys {extra}")
        self._obj = obj
        self._what = what

    def _get(self, key: str, kind: type) -> object:
        value = self._obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _malformed(f"{self._what}.{key}: expected {kind.__name__}")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key, int)
        assert isinstance(value, int)
        return value

    def boolean(self, key: str) -> bool:
        value = self._get(key, bool)
        assert isinstance(value, bool)
        return value

    def string(self, key: str) -> str:
        value = self._get(key, str)
        assert isinstance(value, str)
        return value

    def constant(self, key: str, expected: object) -> None:
        value = self._obj[key]
        if type(value) is not type(expected) or value != expected:
            raise _malformed(f"{self._what}.{key}: expected {expected!r}")

    def hex(self, key: str, length: int) -> bytes:
        text = self.string(key)
        if len(text) != 2 * length or not _HEX.fullmatch(text):
            raise _malformed(f"{self._what}.{key}: expected {length} bytes as lower-case hex")
        return bytes.fromhex(text)

    def node_id(self, key: str) -> str:
        text = self.string(key)
        try:
            public_from_node_id(text)
        except ValueError as exc:
            raise _malformed(f"{self._what}.{key}: {exc}") from None
        return text

    def node_ids(self, key: str) -> tuple[str, ...]:
        value = self._get(key, list)
        assert isinstance(value, list)
        ids: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise _malformed(f"{self._what}.{key}[{index}]: expected a node id")
            try:
                public_from_node_id(item)
            except ValueError as exc:
                raise _malformed(f"{self._what}.{key}[{index}]: {exc}") from None
            ids.append(item)
        return tuple(ids)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key, list)
        assert isinstance(value, list)
        if any(not isinstance(item, str) for item in value):
            raise _malformed(f"{self._what}.{key}: expected a list of strings")
        return tuple(value)

    def wireguard_key(self, key: str) -> bytes:
        text = self.string(key)
        try:
            raw = decode_wireguard_key(text)
        except ValueError as exc:
            raise _malformed(f"{self._what}.{key}: {exc}") from None
        if encode_key(raw) != text:
            raise _malformed(f"{self._what}.{key}: not the canonical base64 spelling")
        return raw

    def _ip(self, key: str, parse: Callable[[str], _Ip]) -> _Ip:
        text = self.string(key)
        try:
            value = parse(text)
        except ValueError as exc:
            raise _malformed(f"{self._what}.{key}: {exc}") from None
        if str(value) != text:  # one spelling per value, as in the bytes
            raise _malformed(f"{self._what}.{key}: expected the canonical spelling {value}")
        return value

    def ipv4(self, key: str) -> ipaddress.IPv4Address:
        return self._ip(key, ipaddress.IPv4Address)

    def ipv6(self, key: str) -> ipaddress.IPv6Address:
        return self._ip(key, ipaddress.IPv6Address)

    def ipv4net(self, key: str) -> ipaddress.IPv4Network:
        return self._ip(key, ipaddress.IPv4Network)

    def ipv6net(self, key: str) -> ipaddress.IPv6Network:
        return self._ip(key, ipaddress.IPv6Network)

    def raw(self, key: str) -> object:
        return self._obj[key]

    def nested(self, key: str, what: str, keys: tuple[str, ...]) -> JsonFields:
        return JsonFields(self._obj[key], f"{self._what}.{what}", keys)
