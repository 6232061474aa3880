"""The JSON form of Babel TLVs: what golden vectors hold and what ``meshd decode`` prints.

One object per TLV with a ``type`` name; addresses and prefixes as strings, router-ids as
colon-separated hex (babeld's notation), sub-TLVs under ``sub_tlvs`` only when present.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from meshd.core.proto.babel import (
    IHU,
    TLV,
    Ack,
    AckRequest,
    DecodedTLV,
    Hello,
    HelloTimestamp,
    IHUTimestamp,
    NextHop,
    OriginSignature,
    Pad1,
    PadN,
    ParserState,
    RouteRequest,
    RouterId,
    SeqnoRequest,
    SkippedTLV,
    SubPad1,
    SubPadN,
    SubTLV,
    UnknownSubTLV,
    Update,
)
from meshd.core.proto.babel_wire import IPAddress, IPNetwork

TYPE_NAMES: dict[type, str] = {
    Pad1: "pad1",
    PadN: "padn",
    AckRequest: "ack_request",
    Ack: "ack",
    Hello: "hello",
    IHU: "ihu",
    RouterId: "router_id",
    NextHop: "next_hop",
    Update: "update",
    RouteRequest: "route_request",
    SeqnoRequest: "seqno_request",
}


def router_id_text(router_id: bytes) -> str:
    return ":".join(f"{b:02x}" for b in router_id)


def router_id_from_text(text: str) -> bytes:
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 8:
        raise ValueError(f"a router-id is 8 octets, not {text!r}")
    return raw


def _opt_str(value: IPAddress | IPNetwork | None) -> str | None:
    return None if value is None else str(value)


def subtlv_to_json(sub: SubTLV) -> dict[str, Any]:
    if isinstance(sub, SubPad1):
        return {"type": "pad1"}
    if isinstance(sub, SubPadN):
        return {"type": "padn", "length": sub.length}
    if isinstance(sub, HelloTimestamp):
        return {"type": "timestamp", "transmit": sub.transmit}
    if isinstance(sub, IHUTimestamp):
        return {"type": "timestamp", "origin": sub.origin, "receive": sub.receive}
    if isinstance(sub, OriginSignature):
        return {"type": "origin_signature", "time": sub.time, "signature": sub.signature.hex()}
    return {"type": "unknown", "code": sub.code, "body": sub.body.hex()}


def tlv_to_json(tlv: TLV) -> dict[str, Any]:
    out: dict[str, Any] = {"type": TYPE_NAMES[type(tlv)]}
    if isinstance(tlv, PadN):
        out["length"] = tlv.length
    elif isinstance(tlv, AckRequest):
        out.update(opaque=tlv.opaque, interval=tlv.interval)
    elif isinstance(tlv, Ack):
        out["opaque"] = tlv.opaque
    elif isinstance(tlv, Hello):
        out.update(unicast=tlv.unicast, seqno=tlv.seqno, interval=tlv.interval)
    elif isinstance(tlv, IHU):
        out.update(ae=tlv.ae, address=_opt_str(tlv.address), rxcost=tlv.rxcost)
        out["interval"] = tlv.interval
    elif isinstance(tlv, RouterId):
        out["router_id"] = router_id_text(tlv.router_id)
    elif isinstance(tlv, NextHop):
        out.update(ae=tlv.ae, address=str(tlv.address))
    elif isinstance(tlv, Update):
        out.update(ae=tlv.ae, prefix=_opt_str(tlv.prefix), omitted=tlv.omitted)
        out.update(sets_default_prefix=tlv.sets_default_prefix)
        out.update(sets_router_id=tlv.sets_router_id)
        out.update(interval=tlv.interval, seqno=tlv.seqno, metric=tlv.metric)
    elif isinstance(tlv, RouteRequest):
        out.update(ae=tlv.ae, prefix=_opt_str(tlv.prefix))
    elif isinstance(tlv, SeqnoRequest):
        out.update(ae=tlv.ae, prefix=str(tlv.prefix), seqno=tlv.seqno)
        out.update(hop_count=tlv.hop_count, router_id=router_id_text(tlv.router_id))
    if not isinstance(tlv, Pad1 | PadN) and tlv.sub_tlvs:
        out["sub_tlvs"] = [subtlv_to_json(s) for s in tlv.sub_tlvs]
    return out


def state_to_json(state: ParserState) -> dict[str, Any]:
    def default(packed: bytes | None) -> str | None:
        return None if packed is None else str(ipaddress.ip_address(packed))

    return {
        "router_id": None if state.router_id is None else router_id_text(state.router_id),
        "next_hop_v4": _opt_str(state.next_hop_v4),
        "next_hop_v6": _opt_str(state.next_hop_v6),
        "default_prefix_ae1": default(state.default_prefix_ae1),
        "default_prefix_ae2": default(state.default_prefix_ae2),
    }


def decoded_to_json(decoded: DecodedTLV, *, with_state: bool = False) -> dict[str, Any]:
    out = tlv_to_json(decoded.tlv)
    out["offset"] = decoded.offset
    if with_state:
        out["state"] = state_to_json(decoded.state)
    return out


def skipped_to_json(skipped: SkippedTLV) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "skipped",
        "tlv_type": skipped.tlv_type,
        "offset": skipped.offset,
        "reason": skipped.reason,
    }
    if skipped.tlv is not None:
        out["tlv"] = tlv_to_json(skipped.tlv)
    return out


# --- from JSON (golden vectors, tests); bad input raises ValueError -----------------------


def _address(value: Any) -> IPAddress | None:
    return None if value is None else ipaddress.ip_address(value)


def _prefix(value: Any) -> IPNetwork | None:
    return None if value is None else ipaddress.ip_network(value)


def subtlv_from_json(obj: dict[str, Any]) -> SubTLV:
    kind = obj["type"]
    if kind == "pad1":
        return SubPad1()
    if kind == "padn":
        return SubPadN(obj.get("length", 0))
    if kind == "timestamp" and "transmit" in obj:
        return HelloTimestamp(obj["transmit"])
    if kind == "timestamp":
        return IHUTimestamp(obj["origin"], obj["receive"])
    if kind == "origin_signature":
        return OriginSignature(obj["time"], bytes.fromhex(obj["signature"]))
    if kind == "unknown":
        return UnknownSubTLV(obj["code"], bytes.fromhex(obj.get("body", "")))
    raise ValueError(f"unknown sub-TLV type {kind!r}")


def tlv_from_json(obj: dict[str, Any]) -> TLV:
    """Build a TLV from its JSON form; ValueError when it doesn't describe one."""
    try:
        return _tlv_from_json(obj)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"bad TLV JSON {obj!r}: {exc!r}") from exc


def _tlv_from_json(obj: dict[str, Any]) -> TLV:
    kind = obj["type"]
    subs = tuple(subtlv_from_json(s) for s in obj.get("sub_tlvs", []))
    if kind == "pad1":
        return Pad1()
    if kind == "padn":
        return PadN(length=obj.get("length", 0))
    if kind == "ack_request":
        return AckRequest(opaque=obj["opaque"], interval=obj["interval"], sub_tlvs=subs)
    if kind == "ack":
        return Ack(opaque=obj["opaque"], sub_tlvs=subs)
    if kind == "hello":
        return Hello(
            seqno=obj["seqno"],
            interval=obj["interval"],
            unicast=obj.get("unicast", False),
            sub_tlvs=subs,
        )
    if kind == "ihu":
        return IHU(
            ae=obj["ae"],
            address=_address(obj.get("address")),
            rxcost=obj["rxcost"],
            interval=obj["interval"],
            sub_tlvs=subs,
        )
    if kind == "router_id":
        return RouterId(router_id=router_id_from_text(obj["router_id"]), sub_tlvs=subs)
    if kind == "next_hop":
        address = ipaddress.ip_address(obj["address"])
        return NextHop(ae=obj["ae"], address=address, sub_tlvs=subs)
    if kind == "update":
        return Update(
            ae=obj["ae"],
            prefix=_prefix(obj.get("prefix")),
            omitted=obj.get("omitted", 0),
            sets_default_prefix=obj.get("sets_default_prefix", False),
            sets_router_id=obj.get("sets_router_id", False),
            interval=obj["interval"],
            seqno=obj["seqno"],
            metric=obj["metric"],
            sub_tlvs=subs,
        )
    if kind == "route_request":
        return RouteRequest(ae=obj["ae"], prefix=_prefix(obj.get("prefix")), sub_tlvs=subs)
    if kind == "seqno_request":
        return SeqnoRequest(
            ae=obj["ae"],
            prefix=ipaddress.ip_network(obj["prefix"]),
            seqno=obj["seqno"],
            hop_count=obj["hop_count"],
            router_id=router_id_from_text(obj["router_id"]),
            sub_tlvs=subs,
        )
    raise ValueError(f"unknown TLV type {kind!r}")
