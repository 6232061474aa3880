"""A hostile neighbour for the netns tests, run inside a node's namespace.

    python hostile_peer.py garbage HOST PORT [--seed N]
        sends a few hundred datagrams that are not QUIC, or only look like it, to HOST:PORT
        and prints one JSON object: how many of each kind it sent.
    python hostile_peer.py initials HOST PORT SECONDS [--seed N]
        for SECONDS, sends 500 whole INITIALs a second (1200 bytes, fresh 8-byte connection
        ids) that do not decrypt; prints how many it sent after the first 300, and at the
        end.
    python hostile_peer.py peer HOST PORT NODE_ID
        reads one JSON attempt per line on stdin and answers each with one JSON line: dial
        HOST:PORT expecting NODE_ID with meshd's own QUIC transport, as the identity in
        ``state_dir`` (or a fresh key that no admin signed when it is null), send
        ``messages`` (hex, each one framed control message) once the session is up, and
        report how the session ended within ``linger`` seconds; with ``flood`` (hex
        messages), ``per_second`` and ``seconds``, it then sends those, in turn, at that rate
        for that long (``flooded``: how many; ``cpu_of``: the share of a core process
        ``cpu_of`` used meanwhile). It offers ``protocols``
        (default ["meshd/1"]: its messages are meshd/1's, which need no CAPABILITIES first).

Plain UDP sockets, no scapy: scapy is not a dependency of this project (not in the venv),
and every datagram here is a few lines of ``struct`` anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_UDP_PAYLOAD = 65_507  # IPv4: 65535 - 20 (IP header) - 8 (UDP header)
QUIC_V1 = 0x0000_0001


# -- garbage datagrams -------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """RFC 9000 16: a QUIC variable-length integer in its shortest form."""
    for size, prefix in ((1, 0x00), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            raw = bytearray(value.to_bytes(size, "big"))
            raw[0] |= prefix
            return bytes(raw)
    raise ValueError(value)


def _initial(
    rng: random.Random, total: int, version: int = QUIC_V1, dcid_length: int | None = None
) -> bytes:
    """A datagram of ``total`` bytes holding one INITIAL-looking packet (RFC 9000 17.2.2)
    whose header parses, with random bytes where the protected payload belongs."""
    first = 0xC0 | rng.randrange(16)  # long header, fixed bit, type INITIAL, random low bits
    if dcid_length is None:
        dcid_length = rng.choice((8, 8, 8, 0, 1, 20))
    dcid = rng.randbytes(dcid_length)
    scid = rng.randbytes(rng.choice((0, 8, 20)))
    token = rng.randbytes(rng.choice((0, 0, 16)))
    head = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + _varint(len(token))
        + token
    )
    rest = total - len(head) - 2
    if rest >= 1 << 14:  # needs the 4-byte length
        rest -= 2
    return head + _varint(rest) + rng.randbytes(rest)


def _short_header(rng: random.Random) -> bytes:
    """A 1-RTT-looking packet (RFC 9000 17.3) to a connection id nobody issued."""
    return bytes([0x40 | rng.randrange(64)]) + rng.randbytes(rng.randrange(8, 1400))


def garbage(rng: random.Random) -> list[tuple[str, bytes]]:
    """The datagrams, by kind, in a shuffled order."""
    out: list[tuple[str, bytes]] = []
    out += [("random", rng.randbytes(rng.randrange(1, 1500))) for _ in range(200)]
    out += [("short_header", _short_header(rng)) for _ in range(40)]
    # Cut anywhere, header included: what is left claims more than it holds, or is an
    # INITIAL in a datagram under the 1200 bytes a server must drop (RFC 9000 14.1).
    out += [("truncated_initial", _initial(rng, 1200)[: rng.randrange(1, 1200)]) for _ in range(60)]
    # Whole INITIALs whose payload does not decrypt: the transport must not hold a session
    # for them (it opens none for an INITIAL that does not decrypt).
    out += [("garbage_initial", _initial(rng, rng.randrange(1200, 1453))) for _ in range(30)]
    out += [
        ("unknown_version", _initial(rng, 1200, version=rng.getrandbits(32) | 0x0A0A0A0A))
        for _ in range(10)
    ]
    # Larger than any path MTU here (the kernel fragments them), up to the UDP limit.
    sizes = [MAX_UDP_PAYLOAD] + [rng.randrange(1500, MAX_UDP_PAYLOAD) for _ in range(19)]
    for k, size in enumerate(sizes):
        data = _initial(rng, size) if k % 2 else rng.randbytes(size)
        out.append(("oversized", data))
    rng.shuffle(out)
    return out


def initials(rng: random.Random, seconds: float, per_second: int = 500) -> list[tuple[str, bytes]]:
    count = int(seconds * per_second)
    return [("garbage_initial", _initial(rng, 1200, dcid_length=8)) for _ in range(count)]


def send(
    host: str, port: int, datagrams: list[tuple[str, bytes]], burst: int = 25, pause: float = 0.005
) -> dict[str, Any]:
    """Send in bursts: a line-rate flood would mostly fill the receiver's socket buffer
    and be dropped by the kernel; the point is what meshd does with each datagram."""
    sent: dict[str, int] = {}
    errors: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        for k, (kind, data) in enumerate(datagrams):
            try:
                sock.send(data)
                sent[kind] = sent.get(kind, 0) + 1
            except OSError as exc:  # e.g. ECONNREFUSED from an earlier ICMP unreachable
                errors.append(f"{kind} {len(data)}: {exc.strerror}")
            if k % burst == burst - 1:
                time.sleep(pause)
    return {"sent": sent, "total": sum(sent.values()), "errors": errors}


# -- a peer speaking meshd's session protocol ----------------------------------------------


async def attempt(host: str, port: int, expected: str, command: dict[str, Any]) -> dict[str, Any]:
    """One session: dial, send the messages once up, report how it ended."""
    from nacl.signing import SigningKey

    from meshd.adapters import identity
    from meshd.adapters.quic import PeerEvent, QuicTransport
    from meshd.core.transport.certs import node_certificate
    from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
    from meshd.core.transport.session import SessionNotUp, SessionSettings

    state_dir = command.get("state_dir")
    key = identity.load(Path(state_dir)).signing_key if state_dir else SigningKey.generate()
    credentials = node_certificate(key)
    settings = SessionSettings(
        alpn_protocols=tuple(command.get("protocols", ["meshd/1"])),
        max_frame_size=int(command.get("max_frame_size", 64 * 1024)),
    )
    events: asyncio.Queue[PeerEvent] = asyncio.Queue()
    handshakes = 0

    def authorize(node_id: str) -> str | None:
        # Only the session we dial. meshd dials back the address a session came from, at
        # once for a node it never met: a second session from it would replace ours (the
        # transport keeps one per peer) before our session's close, held back by QUIC's
        # draining period, said why it was closed.
        nonlocal handshakes
        handshakes += 1
        if node_id != expected:
            return "unexpected_peer"
        return None if handshakes == 1 else "dial_only"

    transport = await QuicTransport.listen(
        credentials=credentials,
        authorize=authorize,
        on_event=events.put_nowait,
        host="0.0.0.0",
        port=0,
        settings=settings,
    )
    result: dict[str, Any] = {
        "node_id": credentials.node_id,
        "up": False,
        "closed": None,
        "received_kinds": [],
        "sent": 0,
    }
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def until(deadline: float, stop: Callable[[PeerEvent], bool]) -> None:
        while (left := deadline - loop.time()) > 0:
            try:
                ev = await asyncio.wait_for(events.get(), left)
            except TimeoutError:
                return
            if isinstance(ev.event, MessageReceived) and ev.event.data:
                result["received_kinds"].append(ev.event.data[0])
            elif isinstance(ev.event, SessionClosed) and (ev.was_up or not result["up"]):
                # (once ours is up, a close of a session that never was is one we refused)
                result["closed"] = {
                    "reason": ev.event.reason,
                    "by_peer": ev.event.by_peer,
                    "error_code": ev.event.error_code,
                    "after_s": round(loop.time() - start, 3),
                }
            if stop(ev):
                return

    try:
        transport.dial((host, port), expected_node_id=expected)
        await until(
            start + float(command.get("handshake_timeout", 10.0)),
            lambda ev: isinstance(ev.event, SessionUp | SessionClosed),
        )
        if result["closed"] is None and expected in transport.peers():
            result["up"] = True
            result["up_after_s"] = round(loop.time() - start, 3)
            for hex_message in command.get("messages", []):
                try:
                    transport.send_message(expected, bytes.fromhex(hex_message))
                except SessionNotUp:
                    break  # closed under us: the close event says why
                result["sent"] += 1
            if command.get("flood"):
                await flood(transport, expected, command, result, until)
            await until(
                loop.time() + float(command.get("linger", 5.0)),
                lambda ev: isinstance(ev.event, SessionClosed) and ev.was_up,
            )
    finally:
        await transport.close("done")
    return result


async def flood(
    transport: Any,
    expected: str,
    command: dict[str, Any],
    result: dict[str, Any],
    until: Callable[[float, Callable[[Any], bool]], Any],
) -> None:
    """Send ``flood`` (hex messages, in turn) at ``per_second`` for ``seconds``, in steps
    of 10 ms (aioquic queues whatever it is given: pacing keeps the sender's memory flat),
    or until the session closes; ``flooded``: how many went."""
    from meshd.core.transport.session import SessionNotUp

    messages = [bytes.fromhex(h) for h in command["flood"]]
    rate, seconds = float(command["per_second"]), float(command["seconds"])
    loop = asyncio.get_running_loop()
    start = loop.time()
    result["flooded"] = 0
    pid = command.get("cpu_of")
    cpu = cpu_seconds(pid) if pid else 0.0
    while (elapsed := loop.time() - start) < seconds and result["closed"] is None:
        due = int(elapsed * rate) + 1
        try:
            while result["flooded"] < due:
                message = messages[result["flooded"] % len(messages)]
                transport.send_message(expected, message)
                result["flooded"] += 1
        except SessionNotUp:
            break
        await until(loop.time() + 0.01, lambda ev: False)
    if pid:
        result["cpu_of"] = (cpu_seconds(pid) - cpu) / (loop.time() - start)


def cpu_seconds(pid: int) -> float:
    """User and system time of process ``pid`` so far (proc(5): stat's fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serve(host: str, port: int, expected: str) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        result = await attempt(host, port, expected, json.loads(line))
        print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    g = sub.add_parser("garbage")
    g.add_argument("host")
    g.add_argument("port", type=int)
    g.add_argument("--seed", type=int, default=0)
    i = sub.add_parser("initials")
    i.add_argument("host")
    i.add_argument("port", type=int)
    i.add_argument("seconds", type=float)
    i.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("peer")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("node_id")
    args = parser.parse_args(argv)
    if args.mode == "garbage":
        datagrams = garbage(random.Random(args.seed))
        print(json.dumps(send(args.host, args.port, datagrams)), flush=True)
    elif args.mode == "initials":
        # Two lines: one after the first 300 (more than the 256 handshakes meshd holds at
        # once), so a test can act while the flood goes on, and the total at the end.
        datagrams = initials(random.Random(args.seed), args.seconds)
        first = send(args.host, args.port, datagrams[:300], 10, 0.02)
        print(json.dumps(first), flush=True)
        rest = send(args.host, args.port, datagrams[300:], 10, 0.02)
        total = first["total"] + rest["total"]
        print(json.dumps({"total": total, "errors": first["errors"] + rest["errors"]}))
    else:
        asyncio.run(serve(args.host, args.port, args.node_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
