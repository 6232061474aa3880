"""The exits a node knows of and the one it would take (pure): the control plane's keeping
of gateway adverts. Adverts are flooded: each gateway's newest is kept and passed on once
(``heard`` says when); the choice among them is meshd.core.routing.gateways', made each
tick from Babel's metrics to the gateways, leaving out those that refused us lately."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from meshd.core.journal import Journal
from meshd.core.proto.gateway import GatewayAdvert, GatewayError, decode_advert
from meshd.core.routing.babel import SelectedRoute
from meshd.core.routing.gateways import Choice, GatewayTable


class Gateways:
    def __init__(self, node_id: str, mesh_id: bytes, journal: Journal) -> None:
        self.node_id, self.mesh_id, self.journal = node_id, mesh_id, journal
        self.table = GatewayTable()
        self.choice = Choice(None, (), False)
        self.own_advert: GatewayAdvert | None = None  # ours, while we share (or withdrew)
        # Gateways that refused us an exit: (their reason, until when it is believed).
        self.refusals: dict[str, tuple[str, float]] = {}

    def heard(self, data: bytes, sender: str, wall: float, revoked: Callable[[str], bool]) -> bool:
        """A flooded advert from the neighbour named ``sender``: True when it is a
        gateway's newest and is to be passed on to the other neighbours."""
        try:
            advert = decode_advert(data)
        except GatewayError as exc:
            # Relayed, so not necessarily the sender's fault: drop it, keep the session.
            self.journal("gateway.rejected", logging.WARNING, peer=sender, reason=str(exc.reason))
            return False
        if advert.mesh_id != self.mesh_id or revoked(advert.node_id):
            return False
        if advert.node_id == self.node_id or not self.table.offer(advert, wall):
            return False
        self.journal(
            "gateway.advert",
            gateway=advert.node_id[:8],
            available=advert.available,
            accepts_new=advert.accepts_new,
            seqno=advert.seqno,
        )
        return True

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
        self.choice = self.table.choose(metrics, wall, refused)
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
