"""A stranger's flood for the netns tests, run in its namespace (`testbed exec xS -- ...`).

    python flood_stranger.py STATE_DIR BROADCAST TARGET... [--beacons N] [--off-subnet IP]
        [--sources IP,...] [--rate R] [--seconds S]

Two floods at once, both bounded, then one JSON object on standard output:

- beacons: N beacons for the mesh's id (read from a member's state directory: any beacon
  on the segment shows it), each signed by a fresh key, sent to BROADCAST:6698 from this
  namespace's own address, spread over the first half of the run; and, with
  ``--off-subnet``, a tenth as many from that address (outside the segment's subnet);
- handshakes: R a second for S seconds, round robin over the TARGETs' QUIC ports and the
  ``--sources`` addresses, each a real QUIC client (meshd's own session, aioquic) with a
  fresh key that completes the TLS handshake and then never shows a certificate. It
  answers Retry packets as any client does (aioquic) and counts them as they arrive.

Every session is dropped at the end; the script stops on its own after S seconds plus a
few for the last handshakes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import time
from pathlib import Path
from typing import Any, cast

from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from nacl.signing import SigningKey

from meshd.core.membership import MeshDefinition
from meshd.core.proto.beacon import make_beacon
from meshd.core.transport.certs import NodeCredentials, node_certificate
from meshd.core.transport.events import SessionClosed, SessionUp
from meshd.core.transport.session import Session, SessionSettings

QUIC_PORT, BEACON_PORT = 6697, 6698
SETTINGS = SessionSettings(idle_timeout=30.0, keepalive_interval=10.0, handshake_timeout=5.0)


class Tally:
    def __init__(self) -> None:
        self.started = 0
        self.up = 0
        self.retries = 0  # Retry packets received
        self.closed: dict[str, int] = {}  # how sessions that came up ended, by reason
        self.failed: dict[str, int] = {}  # how the others ended


class Client(asyncio.DatagramProtocol):
    """One QUIC client pumped by hand, as meshd.adapters.quic pumps its sessions."""

    def __init__(self, session: Session, tally: Tally) -> None:
        self.session = session
        self.tally = tally
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.was_up = False
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.service()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            if header.packet_type == QuicPacketType.RETRY:
                self.tally.retries += 1
        except ValueError:
            pass
        self.session.receive_datagram(data, addr, now=asyncio.get_running_loop().time())
        self.service()

    def service(self) -> None:
        loop = asyncio.get_running_loop()
        while (event := self.session.next_event()) is not None:
            if isinstance(event, SessionUp):
                self.was_up = True
                self.tally.up += 1
            elif isinstance(event, SessionClosed):
                kind = self.tally.closed if self.was_up else self.tally.failed
                kind[event.reason] = kind.get(event.reason, 0) + 1
        if self.transport is not None:
            for data, addr in self.session.datagrams_to_send(loop.time()):
                self.transport.sendto(data, addr)
        if self.session.is_terminated:
            self.finish()
            return
        if self.timer is not None:
            self.timer.cancel()
        at = self.session.get_timer()
        self.timer = None if at is None else loop.call_at(at, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        self.session.handle_timer(now=asyncio.get_running_loop().time())
        self.service()

    def finish(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


async def handshake(source: str, target: str, credentials: NodeCredentials, tally: Tally) -> Client:
    loop = asyncio.get_running_loop()
    session = Session.dial(
        credentials=credentials,
        authorize=lambda _: None,
        addr=(target, QUIC_PORT),
        now=loop.time(),
        settings=SETTINGS,
    )
    tally.started += 1
    _, client = await loop.create_datagram_endpoint(
        lambda: Client(session, tally), local_addr=(source, 0)
    )
    return client


async def handshakes(
    targets: list[str],
    sources: list[str],
    rate: float,
    keys: list[NodeCredentials],
    tally: Tally,
) -> None:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    start = loop.time()
    for k, credentials in enumerate(keys):
        await asyncio.sleep(max(0.0, start + k / rate - loop.time()))
        source, target = sources[k % len(sources)], targets[k % len(targets)]
        clients.append(await handshake(source, target, credentials, tally))
    # The last ones get a few seconds to finish their handshakes, then everything goes.
    await asyncio.sleep(3.0)
    for client in clients:
        if client.session.is_up:
            client.session.close("done")
            client.service()
        elif not client.session.is_terminated:
            client.session.drop("done")
            client.service()
        client.finish()


async def beacons(
    mesh_id: bytes, broadcast: str, count: int, off_subnet: str | None, seconds: float
) -> dict[str, int]:
    sent = {"in_subnet": 0, "off_subnet": 0}
    plan = [("in_subnet", None)] * count
    if off_subnet is not None:
        plan += [("off_subnet", off_subnet)] * max(1, count // 10)
    socks: dict[str | None, socket.socket] = {}
    try:
        for _, source in plan:
            if source not in socks:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                if source is not None:
                    sock.bind((source, 0))
                socks[source] = sock
        gap = seconds / max(1, len(plan))
        for kind, source in plan:
            data = make_beacon(
                SigningKey.generate(),
                mesh_id=mesh_id,
                quic_port=QUIC_PORT,
                timestamp_ms=int(time.time() * 1000),
            ).encode()
            socks[source].sendto(data, (broadcast, BEACON_PORT))
            sent[kind] += 1
            await asyncio.sleep(gap)
    finally:
        for sock in socks.values():
            sock.close()
    return sent


async def main(args: argparse.Namespace) -> dict[str, Any]:
    mesh_id = MeshDefinition.decode((Path(args.state) / "mesh.cert").read_bytes()).mesh_id
    tally = Tally()
    # Fresh keys, made before the clock starts: on the testbed the stranger shares the
    # machine's cores with the mesh, which a real one would not.
    keys = [node_certificate(SigningKey.generate()) for _ in range(int(args.rate * args.seconds))]
    started = resource.getrusage(resource.RUSAGE_SELF)
    sent, _ = await asyncio.gather(
        beacons(mesh_id, args.broadcast, args.beacons, args.off_subnet, args.seconds / 2),
        handshakes(args.targets, args.sources.split(","), args.rate, keys, tally),
    )
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": round(used.ru_utime + used.ru_stime - started.ru_utime - started.ru_stime, 1),
        "beacons": sent,
        "handshakes": {
            "started": tally.started,
            "up": tally.up,
            "retries": tally.retries,
            "closed": tally.closed,
            "failed": tally.failed,
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("state")
    parser.add_argument("broadcast")
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--beacons", type=int, default=600)
    parser.add_argument("--off-subnet", default=None)
    parser.add_argument("--sources", required=True)
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=25.0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
