"""Hostile datagrams built with scapy, sent from a testbed node's namespace to a neighbour's
QUIC and beacon ports (run it with `testbed exec NODE -- python scapy_garbage.py HOST`).

Prints one JSON object: how many of each kind were sent, and the node ids of the beacons'
signers. Each beacon is signed by a fresh key for the testbed's mesh id (read from the
state directory given), then spoiled: a flipped signature bit, a truncation, trailing
bytes, a wrong version, another mesh id, a stale timestamp. One beacon, the control, is
left valid: b must discover its signer and no other; and a valid one from our own
address, which b must ignore (a verified neighbour holds it). Then random bytes, UDP datagrams with
a wrong checksum and IP fragments at both ports."""

from __future__ import annotations

import ipaddress
import json
import random
import sys
import time
from pathlib import Path

from nacl.signing import SigningKey
from scapy.all import IP, UDP, Raw, fragment, send  # type: ignore[import-untyped]

from meshd.adapters import identity
from meshd.core.membership import MeshDefinition
from meshd.core.proto.beacon import make_beacon

QUIC_PORT, BEACON_PORT = 6697, 6698


def main(host: str, state: Path) -> None:
    rng = random.Random(1)
    mesh_id = MeshDefinition.decode((state / "mesh.cert").read_bytes()).mesh_id
    now_ms = int(time.time() * 1000)
    signers: dict[str, str] = {}

    def beacon(kind: str, mesh: bytes = mesh_id, at_ms: int = now_ms) -> bytes:
        key = SigningKey.generate()
        signers[kind] = identity.node_id_from_public(bytes(key.verify_key))
        return make_beacon(key, mesh_id=mesh, quic_port=QUIC_PORT, timestamp_ms=at_ms).encode()

    def spoil(kind: str, how: object) -> bytes:
        raw = beacon(kind)
        return how(raw)  # type: ignore[operator, no-any-return]

    beacons = {
        "valid": beacon("valid"),
        "bad_signature": spoil("bad_signature", lambda r: r[:-1] + bytes([r[-1] ^ 1])),
        "truncated": spoil("truncated", lambda r: r[: rng.randrange(1, len(r))]),
        "trailing_bytes": spoil("trailing_bytes", lambda r: r + b"\0"),
        "bad_version": spoil("bad_version", lambda r: r[:4] + b"\x09" + r[5:]),
        "other_mesh": beacon("other_mesh", mesh=bytes(16)),
        "stale": beacon("stale", at_ms=now_ms - 10**8),
        "random": bytes(rng.randrange(256) for _ in range(128)),
    }
    sent: dict[str, int] = {}

    def out(kind: str, packets: list[object]) -> None:
        send(packets, verbose=False)
        sent[kind] = sent.get(kind, 0) + len(packets)

    # From an address no node holds (a beacon's source is not signed, and meshd does not
    # dial a verified neighbour's address for another node id), so that b would try to
    # reach any signer it accepted.
    spoofed = str(ipaddress.ip_address(host) + 75)
    for kind, data in beacons.items():
        packet = IP(src=spoofed, dst=host) / UDP(sport=BEACON_PORT, dport=BEACON_PORT) / Raw(data)
        out(f"beacon_{kind}", [packet] * 3)
    # A valid beacon of a stranger from our own address, where b has a verified session
    # with us: b must neither dial it nor let our session be disturbed.
    at_us = beacon("at_neighbour")
    out(
        "beacon_at_neighbour",
        [IP(dst=host) / UDP(sport=BEACON_PORT, dport=BEACON_PORT) / Raw(at_us)],
    )
    for port in (QUIC_PORT, BEACON_PORT):
        noise = [
            IP(dst=host) / UDP(dport=port) / Raw(bytes(rng.randrange(256) for _ in range(n)))
            for n in (0, 1, 7, 64, 1200, 1400)
        ]
        out(f"random_{port}", noise)
        out(
            f"bad_checksum_{port}",
            [IP(dst=host) / UDP(dport=port, chksum=0x1234) / Raw(b"x" * 1300)],
        )
        out(
            f"fragments_{port}", fragment(IP(dst=host) / UDP(dport=port) / Raw(b"\xc3" * 3000), 600)
        )
    print(json.dumps({"sent": sent, "signers": signers}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
