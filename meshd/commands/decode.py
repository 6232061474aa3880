"""meshd decode HEX | - | --file PATH: print a Babel packet's TLVs as JSON lines."""

from __future__ import annotations

import argparse
import json
import string
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "packet",
        nargs="?",
        metavar="HEX",
        help="the packet in hex (spaces and colons allowed), or - to read it from stdin",
    )
    p.add_argument("--file", help="read the packet from a file, raw bytes or hex text")
    p.add_argument(
        "--state",
        action="store_true",
        help="add the parser state after each TLV (router-id, next hops, default prefixes)",
    )


def _from_text(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    if len(cleaned) % 2 or any(c not in string.hexdigits for c in cleaned):
        raise ValueError("not hex: expected pairs of hex digits")
    return bytes.fromhex(cleaned)


def _looks_like_hex(raw: bytes) -> bool:
    # A binary Babel packet starts with 42 ('*'), never a hex digit, so this can't misfire.
    allowed = set(string.hexdigits.encode() + string.whitespace.encode() + b":")
    return bool(raw.strip()) and all(b in allowed for b in raw)


def read_packet(args: argparse.Namespace) -> bytes:
    """The packet bytes from the arguments; ValueError with a message if there are none."""
    if args.file:
        with open(args.file, "rb") as f:
            raw = f.read()
        return _from_text(raw.decode("ascii")) if _looks_like_hex(raw) else raw
    if args.packet is None:
        raise ValueError("give the packet as HEX, - for stdin, or --file PATH")
    if args.packet == "-":
        raw = sys.stdin.buffer.read()
        return _from_text(raw.decode("ascii")) if _looks_like_hex(raw) else raw
    return _from_text(args.packet)


def main(args: argparse.Namespace) -> int:
    from meshd.proto.babel import BabelDecodeError, decode_packet_detail
    from meshd.proto.babel_json import decoded_to_json, skipped_to_json

    try:
        data = read_packet(args)
    except (OSError, ValueError) as exc:
        print(f"meshd decode: bad_input: {exc}", file=sys.stderr)
        return 1
    try:
        packet = decode_packet_detail(data)
    except BabelDecodeError as exc:
        print(f"meshd decode: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    lines = [(d.offset, decoded_to_json(d, with_state=args.state)) for d in packet.tlvs]
    lines += [(s.offset, skipped_to_json(s)) for s in packet.skipped]
    for _, obj in sorted(lines, key=lambda line: line[0]):
        print(json.dumps(obj))
    if packet.trailer:
        print(json.dumps({"type": "trailer", "hex": packet.trailer.hex()}))
    return 0
