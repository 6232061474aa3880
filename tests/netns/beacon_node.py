"""One discovery node for tests/netns/test_beacon_socket.py, run inside a namespace:

    ip netns exec NS python -m tests.netns.beacon_node SEED MESH_ID_HEX

It picks its underlay interfaces from ``ip -j addr`` (candidate_interfaces), runs the
BeaconService (adapter + pure core) on them, and prints one JSON line per event, with
CLOCK_MONOTONIC times (system-wide, so comparable between namespaces), until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time

from nacl.signing import SigningKey

from meshd.adapters.beacon_socket import BeaconService, candidate_interfaces
from meshd.core.discovery import BeaconState, Discovered, Rejected


def emit(**fields: object) -> None:
    print(json.dumps({"t": time.monotonic(), **fields}), flush=True)


def on_event(event: Discovered | Rejected) -> None:
    if isinstance(event, Discovered):
        emit(
            event="discovered",
            node_id=event.node_id,
            address=list(event.address),
            ifname=event.ifname,
            new=event.new,
        )
    else:
        emit(event="rejected", reason=str(event.reason), detail=event.detail)


async def main(seed: int, mesh_id: bytes) -> None:
    state = BeaconState(
        mesh_id=mesh_id,
        signing_key=SigningKey(bytes([seed]) * 32),
        quic_port=6000 + seed,
        random=random.Random(seed).random,
    )
    links = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True).stdout)
    underlays = candidate_interfaces(links, wireguard_prefix="mw")
    service = BeaconService(state, on_event)
    opened = await service.set_interfaces(underlays)
    emit(
        event="ready",
        node_id=state.node_id,
        interfaces=sorted(opened),
        underlays=[[u.ifname, u.broadcast, u.address] for u in underlays],
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    service.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), bytes.fromhex(sys.argv[2])))
