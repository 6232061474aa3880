"""The exits a node knows of and the one it would take (pure): the control plane's keeping
of gateway adverts. Adverts are flooded: each gateway's newest is kept and passed on once
(``heard`` says when); the choice among them is meshd.core.routing.gateways', made each
tick from Babel's metrics to the gateways, leaving out those that refused us lately.

An advert is signed by the gateway it names, but a key proves no membership: one is
taken only from a member whose certificate this node holds (the directory: every
member's), for the mesh address that certificate gives it (an advert for another's
address would win on that one's metric), issued no later than the clock's tolerance
ahead of the mesh's time (a future one would never expire), and only while the table
holds fewer than ``MAX_GATEWAYS`` gateways (updates of held ones always). What is refused
is counted in the sending neighbour's refusals (``gateway_<reason>``) and not passed on.
An advert of a gateway whose certificate is not here yet (a new member's advert may
outrun its certificate's way through the directory) is held, neither used, passed on nor
counted against the honest relay, and taken once the certificate arrives (``resolved``,
each tick); held ones are bounded (``MAX_GATEWAYS``, the oldest goes) and go when they
expire, so a key no admin certified gets no further.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from meshd.core.journal import Journal
from meshd.core.membership import VerifiedMember
from meshd.core.proto.gateway import GatewayAdvert, GatewayError, decode_advert
from meshd.core.routing.babel import SelectedRoute
from meshd.core.routing.gateways import Choice, GatewayTable

MAX_GATEWAYS = 256  # gateways held: a community has a few; a flood of members cannot grow it
# A gateway whose exit failed our checks (meshd.core.exits): refused while another can be
# used, and still the last resort. It may have been a gateway whose uplink went down
# (honest; it withdrew and is back) or one whose path blipped, and a gateway that may
# work beats none.
NO_INTERNET = "exit_no_internet"


class Gateways:
    def __init__(
        self,
        node_id: str,
        mesh_id: bytes,
        journal: Journal,
        member: Callable[[str], VerifiedMember | None],
        tolerance_s: float = 300,
    ) -> None:
        self.node_id, self.mesh_id, self.journal = node_id, mesh_id, journal
        self.member, self.tolerance_s = member, tolerance_s
        # Adverts of gateways whose certificate is not here yet, by gateway, oldest first.
        self.held: dict[str, GatewayAdvert] = {}
        self.table = GatewayTable()
        self.choice = Choice(None, (), False)
        self.own_advert: GatewayAdvert | None = None  # ours, while we share (or withdrew)
        # Gateways that refused us an exit: (their reason, until when it is believed).
        self.refusals: dict[str, tuple[str, float]] = {}

    def heard(self, data: bytes, sender: str, wall: float) -> tuple[bool, str | None]:
        """A flooded advert from the neighbour named ``sender``: (whether it is a gateway's
        newest, to be passed on to the other neighbours; why it was refused, or None).
        Relayed, so a refusal is not necessarily the sender's fault: its session stays."""
        try:
            advert = decode_advert(data)
        except GatewayError as exc:
            return False, self._refused(sender, str(exc.reason), "?")
        if advert.mesh_id != self.mesh_id or advert.node_id == self.node_id:
            return False, None
        if self.member(advert.node_id) is None:  # not (yet) a member we know of
            held = self.held.get(advert.node_id)
            if advert.expires_at > wall and (held is None or advert.seqno > held.seqno):
                self.held.pop(advert.node_id, None)
                self.held[advert.node_id] = advert
                while len(self.held) > MAX_GATEWAYS:
                    del self.held[next(iter(self.held))]
            return False, None
        return self._take(advert, sender, wall)

    def resolved(self, wall: float) -> list[GatewayAdvert]:
        """Held adverts whose gateway's certificate arrived since, taken now (to be passed
        on); expired ones are dropped."""
        taken = []
        for node_id, advert in list(self.held.items()):
            if advert.expires_at <= wall:
                del self.held[node_id]
            elif self.member(node_id) is not None:
                del self.held[node_id]
                if self._take(advert, "held", wall)[0]:
                    taken.append(advert)
        return taken

    def _take(self, advert: GatewayAdvert, sender: str, wall: float) -> tuple[bool, str | None]:
        known = self.member(advert.node_id)
        assert known is not None
        reason = None
        if known.mesh_ipv4 != advert.mesh_ipv4:
            reason = "not_its_address"
        elif advert.issued_at > wall + self.tolerance_s:
            reason = "from_the_future"
        elif advert.node_id not in self.table.adverts and len(self.table.adverts) >= MAX_GATEWAYS:
            reason = "too_many_gateways"
        if reason is not None:
            return False, self._refused(sender, reason, advert.node_id)
        if not self.table.offer(advert, wall):
            return False, None
        self.journal(
            "gateway.advert",
            gateway=advert.node_id[:8],
            available=advert.available,
            accepts_new=advert.accepts_new,
            seqno=advert.seqno,
        )
        return True, None

    def _refused(self, sender: str, reason: str, gateway: str) -> str:
        self.journal(
            "gateway.rejected", logging.WARNING, peer=sender, gateway=gateway[:8], reason=reason
        )
        return reason

    def originate(self, advert: GatewayAdvert) -> None:
        """Our own advert (sharing our uplink, or withdrawing it)."""
        self.own_advert = advert
        self.journal(
            "gateway.announced",
            available=advert.available,
            accepts_new=advert.accepts_new,
            seqno=advert.seqno,
        )

    def known(self) -> list[GatewayAdvert]:
        """Every advert we hold, ours included: what a newly verified neighbour learns."""
        adverts = list(self.table.adverts.values())
        return adverts if self.own_advert is None else [*adverts, self.own_advert]

    def choose(
        self,
        selected: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, SelectedRoute],
        wall: float,
        now: float,
    ) -> None:
        """Pick the exit from the adverts and Babel's selected routes to the gateways."""
        if not self.table.adverts and self.choice.selected is None:
            return  # nothing to choose from, and nothing chosen
        metrics = {}
        for node_id, advert in self.table.adverts.items():
            route = selected.get(ipaddress.ip_network(f"{advert.mesh_ipv4}/32"))
            if route is not None:
                metrics[node_id] = route.metric
        refused = {g: r for g, (r, until) in self.refusals.items() if now < until}
        self.refusals = {g: self.refusals[g] for g in refused}
        previous = self.table.selected
        self.choice = self.table.choose(metrics, wall, refused)
        if self.choice.selected is None and NO_INTERNET in refused.values():
            hard = {g: r for g, r in refused.items() if r != NO_INTERNET}
            last_resort = self.table.choose(metrics, wall, hard)
            changed = last_resort.selected != previous
            self.choice = dataclasses.replace(last_resort, changed=changed)
        if self.choice.changed:
            self.journal("gateway.selected", gateway=(self.choice.selected or "none")[:8])

    def status(self) -> dict[str, Any]:
        """The exit this node would take and why (DESIGN.md status ``gateway``)."""
        return {
            "selected": self.choice.selected,
            "candidates": [
                {
                    "node_id": c.node_id,
                    "metric": c.metric,
                    "usable": c.usable,
                    "reason": c.reason,
                    **_terms(advert),
                }
                for c in self.choice.candidates
                if (advert := self.table.adverts.get(c.node_id)) is not None
            ],
        }


def _terms(advert: GatewayAdvert) -> dict[str, Any]:
    return {
        "mesh_ipv4": str(advert.mesh_ipv4),
        "available": advert.available,
        "accepts_new": advert.accepts_new,
        "rate_cap_kbit": advert.rate_cap_kbit or None,
    }
