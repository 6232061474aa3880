"""Why a thing is red or yellow, in words an operator understands, from the fields the
daemon reports (docs/control-api.md). Pure: status parts in, a level and a sentence out.

``Level.BAD`` is red (no traffic flows that should), ``Level.WARN`` yellow (it flows, but
something needs a look or is on its way), ``Level.OK`` green.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rich.text import Text

from meshd.api.schema import (
    ConsumerReceipts,
    Gateway,
    GatewayCandidate,
    Neighbour,
    ProviderReceipts,
    ReceiptTerms,
    Usage,
)
from tui import fmt


class Level(enum.Enum):
    OK = "green"
    WARN = "yellow"
    BAD = "red"


@dataclass(frozen=True)
class Why:
    level: Level
    text: str


def styled(why: Why, text: str | None = None) -> Text:
    """``text`` (else the reason itself) in the colour of ``why``'s level."""
    return Text(why.text if text is None else text, style=why.level.value)


LOSSY = 0.05  # a link losing more of its probes than this is worth a look

# How a neighbour's session reaches it (status: control.reached).
REACHED = {
    "segment": "on a shared segment",
    "bootstrap": "at its bootstrap address",
    "punched": "punched through NAT",
    "internet": "over the internet",
}

# The reason codes a session is refused or closed with (meshd.core.control, meshd.core.membership).
_REFUSALS = {
    "idle_timeout": "it stopped answering (idle timeout)",
    "handshake_timeout": "no answer to the connection handshake",
    "evicted": "the session gave way to a newer one",
    "closed": "the session was closed",
    "revoked": "its membership has been revoked",
    "expired": "its membership certificate has expired",
    "not_yet_valid": "its certificate is not valid yet (a clock off?)",
    "unknown_issuer": "its certificate is not signed by this mesh's admin",
    "wrong_mesh": "it is a member of another mesh",
    "bad_signature": "its certificate's signature does not verify",
    "malformed": "it sent a malformed certificate",
    "bad_chain": "its certificate comes with a wrong delegation chain",
    "bad_address": "its certificate gives mesh addresses it may not have",
    "delegation_expired": "the delegation behind its certificate has expired",
    "delegation_not_yet_valid": "the delegation behind its certificate is not valid yet",
    "delegation_scope": "its certificate was issued beyond a delegation's rights",
    "not_verified": "it sent messages before proving its membership",
    "wrong_node_id": "its certificate names another node",
    "unexpected_kind": "it sent a message that does not belong in a session",
}

# Why a neighbour's route updates were dropped (meshd.core.routing.origin, BabelParams limits).
ROUTE_REFUSALS = {
    "prefix_not_host": "a default or wider prefix",
    "prefix_outside_mesh": "an address outside the mesh",
    "wrong_origin": "another member's address",
    "not_its_address": "an address its certificate does not hold",
    "route_limit": "more routes than a neighbour may send",
    "unknown_origin": "routes no member's certificate names",
    "hold_full": "more unknown routes than are held",
    "unsigned": "newer seqnos without their origin's signature",
    "bad_signature": "seqnos their origin did not sign",
    "stale_signature": "origin signatures too old or from the future",
}

# What a neighbour sent that no honest meshd of this version sends (docs/threat-model.md):
# refusals with these reasons tell a hostile box from a broken one (a malformed message,
# an expired certificate, a clock off, an older version), and are worth a `meshd block`.
HOSTILE = {
    "prefix_not_host": "routes for a default or wider prefix",
    "prefix_outside_mesh": "routes for addresses outside the mesh",
    "wrong_origin": "routes for another member's address",
    "not_its_address": "routes for addresses its certificate does not hold",
    "unsigned": "newer seqnos without their origin's signature",
    "bad_signature": "seqnos or records whose signature does not verify",
    "forged_revocation": "a revocation with a forged admin signature",
    "revocation_bad_signature": "a revocation with a forged admin signature",
    "gateway_not_its_address": "gateway adverts for another member's address",
    "bad_name": "a name its certificate does not commit to",
    "address_in_use": "a certificate for another member's address",
    "claim_rate": "claims faster than an honest provider makes them",
    "claim_pending": "claims faster than an honest provider makes them",
    "claim_epoch_too_soon": "a new metering epoch with claim after claim",
}
RATE_PREFIX = "rate_"  # rate_<kind>: messages beyond their kind's budget


def hostile(n: Neighbour) -> dict[str, int]:
    """Its refusals that no honest meshd causes, by reason code."""
    return {
        reason: count
        for reason, count in (n.get("refusals") or {}).items()
        if reason in HOSTILE or reason.startswith(RATE_PREFIX)
    }


def refused_thing(code: str) -> str:
    """What a refusal reason says it sent, in words."""
    if code.startswith(RATE_PREFIX):
        return f"{code[len(RATE_PREFIX) :].replace('_', ' ')} messages beyond their budget"
    return HOSTILE.get(code) or ROUTE_REFUSALS.get(code) or refusal(code)


# Why receipts are throttled or disputed (meshd.core.receipts.exchange).
_RECEIPT_REASONS = {
    "no_receipts": "claims left unsigned beyond the credit allowance",
    "over_tolerance": "a claim exceeded the other side's own count beyond the tolerance",
    "claim_decreased": "a claim went below what was signed before",
    "signed_less": "the other side signed less than was claimed",
}


def refusal(code: str) -> str:
    return _REFUSALS.get(code, code.replace("_", " "))


def receipt_reason(code: str | None) -> str:
    if not code:
        return "no reason given"
    return _RECEIPT_REASONS.get(code, code.replace("_", " "))


def neighbour(n: Neighbour) -> Why:
    """Why a neighbour is up, connecting or down."""
    control = n.get("control")
    silent = n.get("silent_s")
    tunnel = n.get("liveness")
    if n["state"] == "up":
        holes = n.get("black_holes") or []
        if holes:
            return Why(
                Level.BAD,
                f"up, but traffic to {len(holes)} destination(s) got no answer through it: "
                "kept out of those routes",
            )
        bad = hostile(n)
        if bad:
            worst = max(bad, key=lambda r: bad[r])
            return Why(
                Level.BAD,
                f"up, but it sends what no honest meshd does ({refused_thing(worst)}): "
                "meshd block it?",
            )
        routes = {r: c for r, c in (n.get("refusals") or {}).items() if r in ROUTE_REFUSALS}
        if routes:
            worst = max(routes, key=lambda r: routes[r])
            return Why(
                Level.WARN,
                f"up, but {sum(routes.values())} of its routes refused "
                f"(mostly {ROUTE_REFUSALS[worst]})",
            )
        loss = n["loss"]
        if loss is not None and loss > LOSSY:
            return Why(Level.WARN, f"up, but {fmt.percent(loss)} of its probes are lost")
        reached = control.get("reached") if control else None
        if reached in REACHED:
            return Why(Level.OK, f"up ({REACHED[reached]})")
        how = ", ".join(control["found_by"]) if control and control["found_by"] else None
        return Why(Level.OK, f"up (found by {how})" if how else "up")
    if control is None:
        return Why(Level.WARN if n["state"] == "connecting" else Level.BAD, n["state"])
    refused = control["refusal"]
    if control["session"] == "up":
        if not control["verified"]:
            return Why(Level.WARN, "connected, checking its membership certificate")
        if tunnel == "down":
            return Why(
                Level.BAD,
                f"its WireGuard tunnel carries nothing (silent {fmt.duration(silent)})",
            )
        return Why(Level.WARN, "connected, waiting for the WireGuard tunnel to carry packets")
    if n["state"] == "down" and refused:
        return Why(Level.BAD, f"refused: {refusal(refused)}")
    if refused:
        return Why(Level.WARN, f"reconnecting after: {refusal(refused)}")
    if control["address"] is None and not control["found_by"]:
        return Why(Level.WARN, "no address known for it yet")
    found = ", ".join(control["found_by"]) or "none"
    return Why(Level.WARN, f"dialling it (addresses from: {found})")


def uplink(gateway: Gateway) -> Why | None:
    """Our own uplink; None when the node has none configured."""
    up = gateway.get("uplink")
    if up is None:
        return None
    since = f" for {fmt.duration(up['since_s'])}" if up["since_s"] is not None else ""
    text = f"uplink {up['interface']} {up['state']}{since}: {up['reason']}"
    level = {"up": Level.OK, "down": Level.BAD}.get(up["state"], Level.WARN)
    return Why(level, text)


def way_out(gateway: Gateway, names: dict[str, str]) -> Why:
    """How this node's own traffic leaves the mesh."""
    using = gateway.get("using")
    selected = gateway["selected"]
    if using == "own_uplink":
        return Why(Level.OK, "leaving by our own uplink")
    if selected is not None:
        chosen = next((c for c in gateway["candidates"] if c["node_id"] == selected), None)
        why = f": {chosen['reason']}" if chosen else ""
        name = names.get(selected, fmt.short_id(selected))
        if using == "exit":
            return Why(Level.OK, f"leaving by {name}'s uplink{why}")
        return Why(Level.WARN, f"chose {name}{why}; its exit is not granted yet")
    if using == "none" or gateway.get("uplink") is not None:
        return Why(Level.BAD, "no way out: no working uplink and no usable gateway")
    return Why(Level.WARN, "no gateway chosen yet")


def candidate(c: GatewayCandidate, selected: str | None) -> Why:
    if c["node_id"] == selected:
        return Why(Level.OK, c["reason"])
    if c["usable"]:
        return Why(Level.OK, c["reason"])
    return Why(Level.WARN if c["metric"] is not None else Level.BAD, c["reason"])


def tolerance(figure: int, terms: ReceiptTerms) -> int:
    """How far a claim may exceed ``figure`` and still be signed (meshd.core.receipts)."""
    return int(figure * terms["tolerance_percent"] / 100) + terms["tolerance_bytes"]


def provider(p: ProviderReceipts, name: str, terms: ReceiptTerms | None) -> Why:
    """We relay for ``name``: are our claims signed, is it on credit, throttled?"""
    if p["state"] == "throttled":
        return Why(
            Level.BAD,
            f"throttling {name}: {receipt_reason(p['reason'])} "
            f"({fmt.size(p['unreceipted_bytes'])} unsigned, credit {fmt.size(p['credit_bytes'])})",
        )
    if p["disputes"]:
        return Why(Level.WARN, f"{_disputes(p['disputes'])}: {name} signed less than we claimed")
    if terms is not None:
        over = _over(p["claimed_for_bytes"], p["receipted_for_bytes"], terms) or _over(
            p["claimed_to_bytes"], p["receipted_to_bytes"], terms
        )
        if over:
            return Why(Level.WARN, f"our last claim is beyond {name}'s signed figure: {over}")
    if p["credit_bytes"] and p["unreceipted_bytes"] > 0.8 * p["credit_bytes"]:
        return Why(Level.WARN, f"{name} has used most of its credit; throttled at the limit")
    return Why(Level.OK, f"{name} signs our claims")


def consumer(c: ConsumerReceipts, name: str) -> Why:
    """``name`` relays for us: does it throttle us, did we sign less than it claimed?"""
    if c["throttled"]:
        return Why(Level.BAD, f"{name} throttles us: {receipt_reason(c['reason'])}")
    if c["disputes"]:
        return Why(Level.WARN, f"{_disputes(c['disputes'])}: we signed less than {name} claimed")
    return Why(Level.OK, f"we sign {name}'s claims")


def usage(u: Usage, name: str, terms: ReceiptTerms | None) -> list[Why]:
    """Both roles' states for neighbour ``name``; none before any receipt was exchanged."""
    found = []
    if "provider" in u:
        found.append(provider(u["provider"], name, terms))
    if "consumer" in u:
        found.append(consumer(u["consumer"], name))
    return found


def _over(claimed: int, signed: int, terms: ReceiptTerms) -> str | None:
    allowed = tolerance(signed, terms)
    if claimed - signed > allowed:
        return f"{fmt.size(claimed - signed)} more, tolerance {fmt.size(allowed)}"
    return None


def _disputes(n: int) -> str:
    return "1 dispute" if n == 1 else f"{n} disputes"
