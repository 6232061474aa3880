"""Write the gateway advert's golden vector, signed with a fixed test key. From the repo
root: python -m tests.golden.gateway.make_vectors"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from nacl.signing import SigningKey

from meshd.core.proto.gateway import make_advert

HERE = Path(__file__).resolve().parent
KEY = SigningKey(bytes(range(32)))  # a fixed test key
MESH_ID = bytes.fromhex("a2e8efa88f9a2fc610601fc30b9f0e1d")


def advert() -> bytes:
    return make_advert(
        KEY,
        mesh_id=MESH_ID,
        mesh_ipv4=ipaddress.IPv4Address("10.77.0.4"),
        exit_port=51999,
        seqno=7,
        issued_at=1767225600,
        lifetime_s=90,
        available=True,
        accepts_new=False,
        rate_cap_kbit=20000,
    ).encode()


def main() -> None:
    from meshd.core.proto.gateway import decode_advert

    data = advert()
    vector = {"hex": data.hex(), "json": decode_advert(data).to_json()}
    (HERE / "advert.json").write_text(json.dumps(vector, indent=2) + "\n")


if __name__ == "__main__":
    main()
