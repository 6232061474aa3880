"""Wireshark, which none of us wrote, reads our golden packets as we mean them.

Every golden vector becomes one IPv6/UDP datagram to port 6696 in a pcap; tshark dissects
them and each TLV it shows is compared with what our decoder says. Wireshark quirks that
are its own bugs, not ours, are pinned down explicitly below.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from meshd.core.proto.babel import (
    IHU,
    TLV,
    Ack,
    AckRequest,
    Hello,
    NextHop,
    Pad1,
    PadN,
    RouteRequest,
    RouterId,
    SeqnoRequest,
    Update,
    decode_packet,
)

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(
    TSHARK is None,
    reason="tshark is not installed (apt-get install tshark; it belongs in install.sh)",
)

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "babel"
VECTORS = sorted(GOLDEN.glob("*.json"))
SRC = ipaddress.IPv6Address("fe80::21e:2fff:fe3a:4b5c")
DST = ipaddress.IPv6Address("ff02::1:6")  # RFC 8966 5: the Babel multicast group
BABEL_PORT = 6696
TYPE_NUMBERS: dict[type, int] = {
    Pad1: 0,
    PadN: 1,
    AckRequest: 2,
    Ack: 3,
    Hello: 4,
    IHU: 5,
    RouterId: 6,
    NextHop: 7,
    Update: 8,
    RouteRequest: 9,
    SeqnoRequest: 10,
}
# Wireshark's Babel dissector adds a 4-octet receive-timestamp item 8 octets long (its
# own range bug): when an IHU with a Timestamp sub-TLV ends the datagram, that item runs
# past the end and Wireshark calls the packet malformed. Our bytes follow RFC 9616 3.1
# (test_babel_golden checks them); the same packet with a 4-octet trailer, which Babel
# ignores (RFC 8966 4.2), dissects cleanly and shows both timestamps.
WIRESHARK_IHU_TIMESTAMP_BUG = "ihu_timestamp"


# --- a pcap written by hand ---------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet_ipv6_udp(payload: bytes) -> bytes:
    udp_length = 8 + len(payload)
    # RFC 8200 8.1: IPv6 UDP checksums are mandatory, over a pseudo-header.
    pseudo = SRC.packed + DST.packed + struct.pack("!I3xB", udp_length, 17)
    udp = struct.pack("!HHHH", BABEL_PORT, BABEL_PORT, udp_length, 0) + payload
    checksum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", checksum) + udp[8:]
    ipv6 = struct.pack("!IHBB", 6 << 28, udp_length, 17, 1) + SRC.packed + DST.packed
    ethernet = bytes.fromhex("333300010006021e2f3a4b5c86dd")
    return ethernet + ipv6 + udp


def write_pcap(path: Path, payloads: list[bytes]) -> None:
    # pcap: global header (magic, v2.4, zone, sigfigs, snaplen, linktype 1 = Ethernet),
    # then a record header (seconds, microseconds, captured, original length) per frame.
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, payload in enumerate(payloads):
        frame = ethernet_ipv6_udp(payload)
        out += struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(out)


def test_udp_checksum_of_the_frame_verifies() -> None:
    frame = ethernet_ipv6_udp(b"\x2a\x02\x00\x00")
    udp = frame[14 + 40 :]
    pseudo = SRC.packed + DST.packed + struct.pack("!I3xB", len(udp), 17)
    assert _checksum(pseudo + udp) == 0


# --- running tshark -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dissected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ET.Element]:
    """Each vector name (and the padded IHU one) -> its <packet> element from PDML."""
    names = [p.stem for p in VECTORS] + ["ihu_timestamp+trailer"]
    payloads = [bytes.fromhex(json.loads(p.read_text())["hex"]) for p in VECTORS]
    payloads.append(payloads[names.index(WIRESHARK_IHU_TIMESTAMP_BUG)] + bytes(4))
    pcap = tmp_path_factory.mktemp("tshark") / "babel-golden.pcap"
    write_pcap(pcap, payloads)
    assert TSHARK is not None
    result = subprocess.run(
        [TSHARK, "-r", str(pcap), "-T", "pdml", "-o", "udp.check_checksum:TRUE"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    packets = ET.fromstring(result.stdout).findall("packet")
    assert len(packets) == len(payloads)
    return dict(zip(names, packets, strict=True))


def tshark_version() -> str:
    assert TSHARK is not None
    return subprocess.run([TSHARK, "--version"], capture_output=True, text=True).stdout


def problems(packet: ET.Element) -> list[str]:
    """Malformed-packet markers and expert warnings or errors."""
    found = [
        f.get("showname") or f.get("show") or "?"
        for f in packet.iter("field")
        if (f.get("name") or "").startswith("_ws.malformed")
        or (f.get("name") == "_ws.expert" and "Chat" not in (f.get("showname") or ""))
    ]
    found += [
        p.get("showname") or "?" for p in packet.iter("proto") if p.get("name") == "_ws.malformed"
    ]
    checksum = [f for f in packet.iter("field") if f.get("name") == "udp.checksum.status"]
    found += [f"udp checksum {f.get('showname')}" for f in checksum if f.get("show") != "1"]
    if not checksum:
        found.append("tshark did not verify the UDP checksum")
    return found


def messages(packet: ET.Element) -> list[ET.Element]:
    proto = next(p for p in packet.iter("proto") if p.get("name") == "babel")
    return [f for f in proto if f.get("name") == "babel.message"]


def field(message: ET.Element, name: str) -> ET.Element:
    found = [f for f in message.iter("field") if f.get("name") == name]
    assert found, f"tshark shows no {name} in {message.get('showname')}"
    return found[0]


def number(message: ET.Element, name: str) -> int:
    show = field(message, name).get("show") or ""
    return int(show, 16) if show.startswith("0x") else int(show)


def raw(message: ET.Element, name: str) -> bytes:
    return bytes.fromhex(field(message, name).get("value") or "")


def texts(message: ET.Element) -> list[str]:
    """The unnamed text items Wireshark adds (e.g. "Prefix: 10.0.0.0/8")."""
    return [f.get("show") or "" for f in message.iter("field") if not f.get("name")]


def microseconds(value: int) -> str:
    # Wireshark prints RFC 9616 timestamps as seconds.microseconds.
    return f"{value // 1_000_000}.{value % 1_000_000:06d}s"


def check_message(message: ET.Element, tlv: TLV) -> None:
    assert number(message, "babel.message.type") == TYPE_NUMBERS[type(tlv)]
    if isinstance(tlv, PadN):
        assert number(message, "babel.message.length") == tlv.length
    elif isinstance(tlv, AckRequest):
        assert number(message, "babel.message.nonce") == tlv.opaque
        assert number(message, "babel.message.interval") == tlv.interval
    elif isinstance(tlv, Ack):
        assert number(message, "babel.message.nonce") == tlv.opaque
    elif isinstance(tlv, Hello):
        assert number(message, "babel.message.seqno") == tlv.seqno
        assert number(message, "babel.message.interval") == tlv.interval
        # Wireshark's "Unicast : N" text reads the wrong octet (the packet's body length),
        # so check the raw Flags octets it highlights instead.
        flags = next(
            f for f in message.iter("field") if (f.get("show") or "").startswith("Unicast")
        )
        assert flags.get("value") == ("8000" if tlv.unicast else "0000")
        if tlv.timestamp is not None:
            assert f"Timestamp : {microseconds(tlv.timestamp)}" in texts(message)
    elif isinstance(tlv, IHU):
        assert number(message, "babel.message.ae") == tlv.ae
        assert number(message, "babel.message.rxcost") == tlv.rxcost
        assert number(message, "babel.message.interval") == tlv.interval
        shown = "::" if tlv.address is None else str(tlv.address)  # AE 0: Wireshark shows ::
        assert f"Address: {shown}" in texts(message)
        if tlv.timestamp is not None:
            assert f"Timestamp origin : {microseconds(tlv.timestamp.origin)}" in texts(message)
    elif isinstance(tlv, RouterId):
        assert raw(message, "babel.message.routerid") == tlv.router_id
    elif isinstance(tlv, NextHop):
        assert number(message, "babel.message.ae") == tlv.ae
        assert f"NH: {tlv.address}" in texts(message)
    elif isinstance(tlv, Update):
        assert number(message, "babel.message.ae") == tlv.ae
        bits = (0x80 if tlv.sets_default_prefix else 0) | (0x40 if tlv.sets_router_id else 0)
        assert number(message, "babel.message.flags") == bits
        assert number(message, "babel.message.interval") == tlv.interval
        assert number(message, "babel.message.seqno") == tlv.seqno
        assert number(message, "babel.message.metric") == tlv.metric
        assert number(message, "babel.message.omitted") == tlv.omitted
        # Wireshark decompresses omitted octets itself, from the previous Update.
        shown = "::/0" if tlv.prefix is None else str(tlv.prefix)
        assert f"Prefix: {shown}" in texts(message)
    elif isinstance(tlv, RouteRequest):
        assert number(message, "babel.message.ae") == tlv.ae
        shown = "::/0" if tlv.prefix is None else str(tlv.prefix)
        assert f"Prefix: {shown}" in texts(message)
    elif isinstance(tlv, SeqnoRequest):
        assert number(message, "babel.message.ae") == tlv.ae
        assert number(message, "babel.message.seqno") == tlv.seqno
        assert number(message, "babel.message.hopcount") == tlv.hop_count
        assert raw(message, "babel.message.routerid") == tlv.router_id
        assert f"Prefix: {tlv.prefix}" in texts(message)


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_wireshark_reads_every_tlv_as_we_do(path: Path, dissected: dict[str, ET.Element]) -> None:
    packet = dissected[path.stem]
    tlvs = decode_packet(bytes.fromhex(json.loads(path.read_text())["hex"]))
    shown = messages(packet)
    assert len(shown) == len(tlvs), tshark_version()
    for message, tlv in zip(shown, tlvs, strict=True):
        check_message(message, tlv)
    if path.stem != WIRESHARK_IHU_TIMESTAMP_BUG:
        assert problems(packet) == []


def test_wireshark_ihu_timestamp_quirk_is_its_own(dissected: dict[str, ET.Element]) -> None:
    bare = dissected[WIRESHARK_IHU_TIMESTAMP_BUG]
    # Everything up to the receive timestamp is dissected; then Wireshark trips.
    assert "Timestamp origin : 123.456789s" in texts(messages(bare)[0])
    assert not any(t.startswith("Timestamp receive") for t in texts(messages(bare)[0]))
    assert problems(bare)
    padded = dissected["ihu_timestamp+trailer"]
    assert problems(padded) == []
    ihu = messages(padded)[0]
    assert "Timestamp origin : 123.456789s" in texts(ihu)
    assert "Timestamp receive: 123.470000s" in texts(ihu)
    # And in the combined packet, where the IHU is not last, both show without help.
    combined = messages(dissected["packet_combined"])[1]
    assert "Timestamp receive: 0.000017s" in texts(combined)
