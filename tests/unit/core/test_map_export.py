"""The community map's files: yanic's schemas (docs/map/, validated here), links only where
both ends list them, and nothing an operator did not choose to show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.map_export import MapNode, jsontime, meshviewer, nodelist
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.proto.map_record import Location, MapRecord, sorted_links

DOCS = Path(__file__).resolve().parents[3] / "docs" / "map"
WALL = 1_800_000_000
KEYS = [SigningKey(bytes([i]) * 32) for i in (1, 2, 3)]
A, B, C = (node_id_from_public(bytes(k.verify_key)) for k in KEYS)


def schema(name: str) -> dict[str, Any]:
    loaded = json.loads((DOCS / f"{name}.schema.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def node(
    i: int, links: dict[str, int], online: bool = True, gateway: bool = False, **shown: Any
) -> MapNode:
    record = MapRecord(
        mesh_id=bytes(16),
        issuer=(A, B, C)[i],
        seqno=1,
        issued_at=WALL - 10,
        lifetime_s=900,
        name=shown.get("name", ""),
        contact=shown.get("contact", ""),
        location=shown.get("location"),
        links=sorted_links(links),
        signature=NO_SIGNATURE,
    ).sign(KEYS[i])
    return MapNode(record, WALL - 86400, online, gateway)


def test_the_files_follow_yanics_schemas_and_links_need_both_ends() -> None:
    nodes = [
        node(0, {B: 255, C: 200}, gateway=True, name="Bakery", location=Location.parse("53,8")),
        node(1, {A: 128}, contact="ops@example.org"),
        node(2, {B: 255}),  # C claims B; B does not list C: no link
    ]
    mv = meshviewer(nodes, "street", WALL)
    jsonschema.validate(mv, schema("meshviewer"))
    jsonschema.validate(nodelist(nodes, WALL), schema("nodelist"))
    (link,) = mv["links"]
    ends = {link["source"]: link["source_tq"], link["target"]: link["target_tq"]}
    assert ends == {A: 1.0, B: round(128 / 255, 4)} and link["type"] == "vpn"
    by_id = {n["node_id"]: n for n in mv["nodes"]}
    assert by_id[A]["hostname"] == "Bakery" and by_id[A]["is_gateway"]
    assert by_id[A]["location"] == {"longitude": 8.0, "latitude": 53.0}
    assert by_id[B]["owner"] == "ops@example.org"
    assert mv["timestamp"] == jsontime(WALL) == "2027-01-15T08:00:00+0000"


def test_a_node_that_chose_nothing_shows_its_id_role_state_and_links_only() -> None:
    nodes = [node(0, {B: 255}), node(1, {A: 255}, online=False)]
    mv = meshviewer(nodes, "street", WALL)
    shown = mv["nodes"][[n["node_id"] for n in mv["nodes"]].index(A)]
    assert shown["hostname"] == f"node-{A[:8]}"
    assert "owner" not in shown and "location" not in shown and shown["addresses"] == []
    assert all(shown[k] == 0 for k in shown if k.startswith("clients"))  # no traffic, ever
    assert mv["links"] == []  # an offline end draws no link
    listed = nodelist(nodes, WALL)["nodes"]
    assert [n["status"]["online"] for n in listed] == [
        n.online for n in sorted(nodes, key=lambda n: n.node_id)
    ]
    assert all("position" not in n for n in listed)


def test_the_schema_refuses_what_meshviewer_could_not_draw() -> None:
    mv = meshviewer([node(0, {})], "street", WALL)
    del mv["nodes"][0]["hostname"]
    try:
        jsonschema.validate(mv, schema("meshviewer"))
    except jsonschema.ValidationError as exc:
        assert "hostname" in exc.message
    else:
        raise AssertionError("a node without a hostname passed the schema")


def test_the_demo_meshs_committed_map_follows_the_schemas() -> None:
    """docs/map/demo/: `meshd map export` on the demo mesh's b, once e's cable was cut."""
    for name in ("meshviewer", "nodelist"):
        doc = json.loads((DOCS / "demo" / f"{name}.json").read_text())
        jsonschema.validate(doc, schema(name))
    mv = json.loads((DOCS / "demo" / "meshviewer.json").read_text())
    assert sorted(n["is_online"] for n in mv["nodes"]) == [False, True, True, True, True]
