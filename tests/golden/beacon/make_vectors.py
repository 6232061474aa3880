"""Regenerate the beacon golden vectors: ``python3 tests/golden/beacon/make_vectors.py``.

The key and the mesh id are those of the membership vectors (derived from fixed strings);
Ed25519 signatures are deterministic, so the output never changes unless the encoding
does. tests/unit/core/proto/test_beacon_codec.py checks that the files here are exactly what this
script produces.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from nacl.signing import SigningKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # run as a script from anywhere

from meshd.adapters.identity import node_id_from_public  # noqa: E402
from meshd.core.proto.beacon import Beacon, make_beacon  # noqa: E402
from tests.golden import vectors  # noqa: E402


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


NODE = SigningKey(seed("meshd test node"))
MESH_ID = seed("meshd test mesh id")[:16]
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
QUIC_PORT = 6697


def node_id(key: SigningKey) -> str:
    return node_id_from_public(bytes(key.verify_key))


def build() -> dict[str, tuple[str, Beacon]]:
    """File stem -> (description, beacon)."""
    return {
        "beacon": (
            "periodic beacon of the test node, QUIC port 6697",
            make_beacon(NODE, mesh_id=MESH_ID, quic_port=QUIC_PORT, timestamp_ms=T0_MS + 1234),
        ),
        "beacon_solicit": (
            "startup (solicit) beacon of the test node on another QUIC port",
            make_beacon(NODE, mesh_id=MESH_ID, quic_port=40000, timestamp_ms=T0_MS, solicit=True),
        ),
    }


def render(description: str, beacon: Beacon) -> str:
    return vectors.render(description, beacon.encode().hex(), beacon.to_json())


def rendered() -> dict[str, str]:
    """File name -> exact file text."""
    return {f"{stem}.json": render(*entry) for stem, entry in build().items()}


def main() -> None:
    vectors.write(HERE, rendered())


if __name__ == "__main__":
    main()
