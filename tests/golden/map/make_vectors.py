"""Write the map record's golden vectors, signed with fixed test keys: one with everything
an operator may show, one with the defaults (the id and the links only). From the repo
root: python -m tests.golden.map.make_vectors"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.proto.map_record import Location, MapRecord, sorted_links
from tests.golden import vectors

HERE = Path(__file__).resolve().parent
KEY = SigningKey(bytes(range(32)))  # a fixed test key
NEIGHBOURS = [node_id_from_public(bytes(SigningKey(bytes([i]) * 32).verify_key)) for i in (1, 2)]
MESH_ID = bytes.fromhex("a2e8efa88f9a2fc610601fc30b9f0e1d")


def signed(key: SigningKey, mesh_id: bytes, seqno: int, issued_at: int, **shown: Any) -> MapRecord:
    """``key``'s record: 15 minutes' lifetime, nothing shown but what ``shown`` sets (name,
    contact, location, links), for the vectors and the tests."""
    defaults: dict[str, Any] = {"name": "", "contact": "", "location": None, "links": ()}
    return MapRecord(
        mesh_id=mesh_id,
        issuer=node_id_from_public(bytes(key.verify_key)),
        seqno=seqno,
        issued_at=issued_at,
        lifetime_s=900,
        **{**defaults, **shown},
        signature=NO_SIGNATURE,
    ).sign(key)


def record(shown: bool) -> MapRecord:
    fields: dict[str, Any] = (
        {
            "name": "Bäckerei Elm Street",
            "contact": "mesh@example.org",
            "location": Location.parse("53.0793,-8.8017"),
        }
        if shown
        else {}
    )
    links = sorted_links({NEIGHBOURS[0]: 255, NEIGHBOURS[1]: 87})
    return signed(KEY, MESH_ID, 1767225600123, 1767225600, links=links, **fields)


def main() -> None:
    rendered = {}
    for name, shown, what in (
        ("record.json", True, "a map record with a name, a contact and a location"),
        ("record_private.json", False, "a map record as the defaults publish it"),
    ):
        r = record(shown)
        rendered[name] = vectors.render(what, r.encode().hex(), r.to_json())
    vectors.write(HERE, rendered)


if __name__ == "__main__":
    main()
