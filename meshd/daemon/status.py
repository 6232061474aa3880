"""The status document (docs/control-api.md ``status``): what the node's services know,
and what the kernel thread reads of the links, routes and receipts, in one answer."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from meshd.core.endpoints import format_endpoint
from meshd.core.membership import MeshDefinition
from meshd.core.membership.proposals import TTL_S
from meshd.daemon.links import round2

if TYPE_CHECKING:
    from meshd.core.control.plane import ControlPlane
    from meshd.core.membership import MeshTrust
    from meshd.daemon.node import Node


def kernel_status(node: Node, routes: bool = True) -> dict[str, Any]:
    """What the kernel thread knows of the links (from their last poll), and the routes
    installed (a dump of the kernel's table: several milliseconds with pyroute2; only
    when ``routes``)."""
    metering = node.metering
    return {
        "links": node.links.status(),
        "receipts": (
            {
                node_id: metering.claims.status(node_id, snap)
                for node_id, snap in metering.link_counts.items()
            }
            if metering.claims is not None
            else {}
        ),
        "receipts_summary": metering.claims.summary() if metering.claims is not None else None,
        "devices": node.devices.entries(),
        "routes": [
            (r, link.node_id if (link := node.links.by_ifname.get(r.ifname)) else None)
            for r in node.netlink.routes(
                node.cfg.routing.route_protocol, table=node.cfg.routing.table
            )
        ]
        if routes
        else [],
    }


def mesh_status(trust: MeshTrust) -> dict[str, Any]:
    """The mesh definition in force, and the nodes revoked on its emergency threshold
    alone (every node shows them)."""
    definition = trust.definition
    return {
        "serial": definition.serial,
        "admins": list(definition.admins),
        "threshold": definition.threshold,
        "emergency_threshold": definition.emergency_threshold,
        "emergency_revoked": [r.target.key for r in trust.revocations if r.emergency],
    }


def proposals_status(core: ControlPlane) -> list[dict[str, Any]]:
    """The proposals held, each with who signed it (the admins whose signatures count),
    who withdrew, how many it needs and when it lapses; ``proposal``: its bytes, hex, for
    an admin to sign or withdraw from."""
    trust, out = core.own.trust, []
    for p in core.proposals:
        record = p.record
        if isinstance(record, MeshDefinition):
            what = f"mesh definition serial {record.serial}"
        else:
            what = f"revocation of {record.target.describe()}"
            if record.emergency:
                what = f"emergency {what}"
        out.append(
            {
                "id": p.id,
                "what": what,
                "issuer": record.issuer,
                "signed_by": sorted(p.signed.signers(trust.definition.admins)),
                "withdrawn_by": sorted(p.withdrawn_by),
                "withdrawn": p.dropped,
                "needed": core.proposals.needed(p, trust),
                "issued_at": p.issued_at,
                "lapses_at": p.issued_at + TTL_S,
                "record": record.to_json(),
                "proposal": p.encode().hex(),
            }
        )
    return out


async def status(node: Node, kernel_routes: bool = True) -> dict[str, Any]:
    """The status call's answer (docs/control-api.md). Without ``kernel_routes`` (a
    Prometheus scrape: only what the daemon holds), ``routes`` are Babel's selected
    ones, without their interface, instead of a read of the kernel's table."""
    kernel = await node.kernel(kernel_status, node, kernel_routes)
    assert node.control is not None
    selected = node.control.core.router.selected()
    metrics = {p: sel.metric for p, sel in selected.items()}
    neighbours = []
    reached = node.control.core.neighbours.reached
    for peer in node.control.core.peers.values():
        if not peer.is_neighbour:
            continue
        link = kernel["links"].get(peer.node_id)
        quality = peer.quality.snapshot() if peer.quality else None
        neighbours.append(
            {
                "node_id": peer.node_id,
                "name": peer.name,
                "interface": peer.ifname,
                "state": peer.state(link["liveness"] if link else None),
                # From the probes through the tunnel; unknown (null) until measured.
                # loss: the share of the neighbour's probes that did not reach us.
                "rtt_ms": round2(quality.rtt_ms) if quality else None,
                "loss": round2(quality.loss) if quality else None,
                "cost": quality.cost if quality else None,
                **(link or {"endpoint": None}),
                "control": {**peer.status(), "reached": reached(peer)},
                # What it sent that we refused, by reason (DESIGN.md contract).
                "refusals": dict(peer.refusals),
                # Destinations it is kept out of the routes to: their traffic got no
                # answer through it (meshd.core.routing.progress).
                "black_holes": sorted(
                    str(p) for p, n, _ in node.control.core.router.penalties() if n == peer.node_id
                ),
            }
        )
    return {
        "node_id": node.node_id,
        "name": node.cfg.node.name,
        "mesh_ipv4": str(node.mesh_ipv4),
        "mesh_ipv6": str(node.mesh_ipv6),
        "backend": node.backend.name,
        # What this daemon routes to: every reachable node (`testbed wait-converged`
        # reads it to know what to expect).
        "routing": "babel",
        "uptime_s": round(time.time() - node.started, 1),
        # Our certificate's window and renewal, and the mesh's time as we keep it.
        "membership": node.joins.own_renewal.status() if node.joins is not None else None,
        "clock": node.clock.status(),
        "mesh": mesh_status(node.control.core.own.trust),
        "proposals": [
            {k: v for k, v in p.items() if k not in ("record", "proposal")}
            for p in proposals_status(node.control.core)
        ],
        "neighbours": neighbours,
        # Every member's certificate this node holds (meshd.core.membership.directory).
        "directory": node.control.core.trust.directory_status(),
        # Route updates held or signed (meshd.core.routing.origin).
        "origins": node.control.core.routes.status(),
        # Strangers' floods: beacons refused and nodes only heard of (docs/threat-model.md).
        "discovery": discovery_status(node),
        # Next hops kept out of routes that lost their traffic (meshd.core.routing.progress).
        "black_holes": node.control.black_hole_status(),
        "routes": [
            {
                "prefix": str(r.dst),
                "via": via,
                "interface": r.ifname,
                # The Babel metric where Babel chose the route, else the kernel's.
                "metric": metrics.get(r.dst, r.metric),
            }
            for r, via in kernel["routes"]
        ]
        if kernel_routes
        else [
            {"prefix": str(p), "via": sel.next_hop, "interface": None, "metric": sel.metric}
            for p, sel in selected.items()
            if sel.next_hop is not None
        ],
        "gateway": gateway_status(node),
        "usage": [
            {
                "node_id": node_id,
                "relayed_for_bytes": snap.totals[0],
                "relayed_to_bytes": snap.totals[1],
                "sent_bytes": snap.totals[2],
                "received_bytes": snap.totals[3],
                **kernel["receipts"].get(node_id, {}),
            }
            for node_id, snap in sorted(node.metering.link_counts.items())
        ],
        "receipts": kernel["receipts_summary"],
        # Receipts signed for, day by day (meshd.core.receipts.days), read every minute.
        "usage_days": node.metering.days,
        # Control API callers refused a call that changes the node (meshd.api.calls).
        "api": {"refused": dict(node.api_refused)},
        "metrics": metrics_status(node),
        # The community map's records kept (meshd.core.control.community_map).
        "map": node.map.status(node.control.core),
        # New meshd over the mesh (meshd.daemon.releases).
        "releases": node.releases.status() if node.releases is not None else None,
        # The household's roaming devices (meshd.daemon.devices).
        "devices": node.devices.status(kernel["devices"]),
    }


def metrics_status(node: Node) -> dict[str, Any] | None:
    """Where the Prometheus metrics are served, who may scrape them over the mesh now,
    or why they are not served; None when ``[metrics] listen`` is off."""
    listen = node.cfg.metrics.listen
    if listen is None:
        return None
    return {
        "listen": format_endpoint(listen),
        "serving": node.metrics is not None,
        "refused": node.metrics_refused,
        "allowed": [str(a) for a in node.tunnels.spec.metrics_allow],
    }


def discovery_status(node: Node) -> dict[str, Any]:
    """Beacons refused by reason (``off_subnet``, ``bad_signature``, ...) and candidates
    not taken (``candidates_full``), and how many candidates the node holds now."""
    assert node.control is not None
    neighbours = node.control.core.neighbours
    refusals = dict(neighbours.refusals)
    if node.control.beacons is not None:
        refusals.update(node.control.beacons.state.refusals)
    transport = node.control.transport
    return {
        "candidates": neighbours.candidates(),
        "refusals": refusals,
        # The neighbour port's sessions: held, half-open, up but unverified, and those
        # closed to make room by why (meshd.adapters.quic).
        "sessions": transport.status() if transport is not None else None,
    }


def gateway_status(node: Node) -> dict[str, Any]:
    """The exit choice (``selected`` only while this node needs an exit: a working
    uplink of its own carries its traffic), the candidates, and our own uplink."""
    assert node.control is not None
    out = node.control.core.gateways.status()
    if node.exits is not None:
        if not node.exits.needs_exit:
            out["selected"] = None
        out.update(node.exits.status(time.monotonic()))
    return out
