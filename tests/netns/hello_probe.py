"""One side of a link-quality probe exchange, for tests/netns/test_hello_socket.py: run
inside a namespace with ``ip netns exec NS python -m tests.netns.hello_probe ...``.

It runs HelloSocket + LinkQuality against the peer's link-local address on ``--ifname``
between two wall-clock instants shared by both sides, and prints one JSON object: the
snapshot at ``--snapshot-at``, send and receive counts, and received probes per second.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import sys
import time
from collections import Counter
from typing import Any

from meshd.adapters.net.hello_socket import HelloSocket
from meshd.core.proto.babel import BabelDecodeError, decode_packet, encode_packet
from meshd.core.routing.link_quality import LinkQuality, LinkQualityParams


async def run(args: argparse.Namespace) -> dict[str, Any]:
    peer = ipaddress.IPv6Address(args.peer)
    params = LinkQualityParams(hello_interval_s=args.interval)
    quality: LinkQuality | None = None
    stats: dict[str, Any] = {
        "sent": 0,
        "send_failed": 0,
        "received": 0,
        "garbage": 0,
        "foreign": 0,
        "rtt_samples": 0,
    }
    per_second: Counter[int] = Counter()
    costs: list[int] = []

    def on_packet(data: bytes, source: ipaddress.IPv6Address, ifname: str, arrived: float) -> None:
        if ifname != args.ifname or source != peer:
            stats["foreign"] += 1
            return
        try:
            tlvs = decode_packet(data)
        except BabelDecodeError:
            stats["garbage"] += 1
            return
        if quality is None:
            return  # before the shared start
        result = quality.receive(tlvs, arrived)
        stats["received"] += 1
        stats["rtt_samples"] += result.rtt_sample_ms is not None
        per_second[int(time.time() - args.start_at)] += 1

    hello = await HelloSocket.open(on_packet, port=args.port)
    try:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        quality = LinkQuality(params, now=time.monotonic(), initial_seqno=random.randrange(65536))
        snapshot: dict[str, Any] | None = None
        while time.time() < args.stop_at:
            now = time.monotonic()
            if now >= quality.next_send_at:
                data = encode_packet(quality.build(now))
                if hello.send(data, peer, args.ifname):
                    stats["sent"] += 1
                else:
                    stats["send_failed"] += 1
                quality.check(now)
                if time.time() > args.start_at + 2:
                    costs.append(quality.cost())
            if snapshot is None and time.time() >= args.snapshot_at:
                snapshot = quality.snapshot().__dict__
            await asyncio.sleep(max(0.0, min(quality.next_send_at - time.monotonic(), 0.05)))
        if snapshot is None:
            snapshot = quality.snapshot().__dict__
    finally:
        hello.close()
    return {
        **stats,
        "snapshot": snapshot,
        "mean_cost": sum(costs) / len(costs) if costs else None,
        "per_second": {str(k): v for k, v in sorted(per_second.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--peer", required=True, help="the peer's link-local address")
    parser.add_argument("--port", type=int, default=6696)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--start-at", type=float, required=True, help="wall clock, seconds")
    parser.add_argument("--snapshot-at", type=float, required=True)
    parser.add_argument("--stop-at", type=float, required=True)
    args = parser.parse_args()
    json.dump(asyncio.run(run(args)), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
