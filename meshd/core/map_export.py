"""The community map's two files (pure): ``meshviewer.json`` and ``nodelist.json``, in the
schemas of yanic's ``output/meshviewer-ffrgb`` and ``output/nodelist`` (written down from
its Go structs in docs/map/*.schema.json), so that a Freifunk community's meshviewer draws
a meshd mesh as it draws theirs.

From the map records a node keeps (meshd.core.control.community_map) and what the node
knows itself: a node is online while its record has not expired and this node has a route
to it, a gateway while it has a signed gateway advert out, and a link is drawn only
between two online nodes that both list it (one member cannot draw links to others).
Nothing about households' traffic is written: yanic's client counts, load and memory
fields are there because meshviewer expects them, and are zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meshd.core.proto.map_record import MapRecord

NODELIST_VERSION = "1.0.1"  # yanic's
LINK_TYPE = "vpn"  # yanic's name for a tunnel link: every meshd link is a WireGuard tunnel
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"  # yanic's jsontime: 2006-01-02T15:04:05-0700


@dataclass(frozen=True)
class MapNode:
    record: MapRecord
    first_seen: int  # Unix s
    online: bool
    gateway: bool

    @property
    def node_id(self) -> str:
        return self.record.issuer

    @property
    def hostname(self) -> str:
        """Its name when it shows one, else a short form of its id."""
        return self.record.name or f"node-{self.node_id[:8]}"


def jsontime(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime(_TIME_FORMAT)


def _node(node: MapNode, domain: str) -> dict[str, Any]:
    record = node.record
    out: dict[str, Any] = {
        "firstseen": jsontime(node.first_seen),
        "lastseen": jsontime(record.issued_at),
        "is_online": node.online,
        "is_gateway": node.gateway,
        **dict.fromkeys(
            (
                "clients",
                "clients_wifi24",
                "clients_wifi5",
                "clients_other",
                "clients_owe",
                "clients_owe24",
                "clients_owe5",
            ),
            0,
        ),
        "rootfs_usage": 0.0,
        "loadavg": 0.0,
        "node_id": node.node_id,
        "mac": "",
        "addresses": [],
        "domain": domain,
        "hostname": node.hostname,
        "autoupdater": {"enabled": False},
        "nproc": 0,
    }
    if record.contact:
        out["owner"] = record.contact
    if record.location is not None:
        out["location"] = {
            "longitude": record.location.longitude,
            "latitude": record.location.latitude,
        }
    return out


def _links(nodes: list[MapNode]) -> list[dict[str, Any]]:
    online = {n.node_id: n for n in nodes if n.online}
    tq = {
        (node_id, link.node_id): link.tq / 255
        for node_id, n in online.items()
        for link in n.record.links
    }
    links = []
    for (source, target), source_tq in sorted(tq.items()):
        if source < target and target in online and (target, source) in tq:
            links.append(
                {
                    "type": LINK_TYPE,
                    "source": source,
                    "target": target,
                    "source_tq": round(source_tq, 4),
                    "target_tq": round(tq[(target, source)], 4),
                    "source_addr": "",
                    "target_addr": "",
                }
            )
    return links


def meshviewer(nodes: list[MapNode], domain: str, wall: float) -> dict[str, Any]:
    """meshviewer.json: every node on the map and the links both ends list."""
    ordered = sorted(nodes, key=lambda n: n.node_id)
    return {
        "timestamp": jsontime(wall),
        "nodes": [_node(n, domain) for n in ordered],
        "links": _links(ordered),
    }


def nodelist(nodes: list[MapNode], wall: float) -> dict[str, Any]:
    """nodelist.json: the nodes, their names, positions and online state."""
    out = []
    for n in sorted(nodes, key=lambda n: n.node_id):
        entry: dict[str, Any] = {"id": n.node_id, "name": n.hostname}
        if n.record.location is not None:
            entry["position"] = {
                "lat": n.record.location.latitude,
                "long": n.record.location.longitude,
            }
        entry["status"] = {
            "online": n.online,
            "lastcontact": jsontime(n.record.issued_at),
            "clients": 0,
        }
        out.append(entry)
    return {"version": NODELIST_VERSION, "updated_at": jsontime(wall), "nodes": out}
