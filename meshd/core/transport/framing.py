"""Control frames on the session's bidirectional stream: ``varint(length) || payload``.

The length is a QUIC variable-length integer (RFC 9000 16), in its shortest form (our rule:
one frame, one encoding). A zero-length frame is a no-op; the dialling side sends one right
after the handshake to open the stream, since the accepting side may not send on a
client-initiated stream before the client opened it (RFC 9000 3.2).
"""

from __future__ import annotations

DEFAULT_MAX_FRAME_SIZE = 64 * 1024
OPEN_FRAME = b"\x00"


class FrameError(ValueError):
    """The peer broke the framing; ``reason`` is the reason code the session closes with."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def varint_size(value: int) -> int:
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x4000_0000:
        return 4
    if value < 0x4000_0000_0000_0000:
        return 8
    raise ValueError(f"{value} does not fit a QUIC varint")


def encode_varint(value: int) -> bytes:
    size = varint_size(value)
    prefix = {1: 0x00, 2: 0x40, 4: 0x80, 8: 0xC0}[size]
    raw = bytearray(value.to_bytes(size, "big"))
    raw[0] |= prefix
    return bytes(raw)


def encode_frame(payload: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Frame one message; our own oversized message is a ValueError (API misuse)."""
    if not payload:
        raise ValueError("an empty message cannot be sent (length 0 is the no-op frame)")
    if len(payload) > max_frame_size:
        raise ValueError(f"message of {len(payload)} bytes exceeds the {max_frame_size} limit")
    return encode_varint(len(payload)) + payload


class FrameDecoder:
    """Reassemble frames from stream bytes, whatever the packet boundaries."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._max_frame_size = max_frame_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete frames' payloads; raise FrameError on a broken frame."""
        self._buffer += data
        frames: list[bytes] = []
        while self._buffer:
            size = 1 << (self._buffer[0] >> 6)
            if len(self._buffer) < size:
                break
            length = int.from_bytes(self._buffer[:size], "big") & ((1 << (8 * size - 2)) - 1)
            if varint_size(length) != size:
                raise FrameError("malformed_frame", f"length {length} not in its shortest form")
            if length > self._max_frame_size:
                raise FrameError(
                    "frame_too_large", f"{length} bytes exceeds the {self._max_frame_size} limit"
                )
            if len(self._buffer) < size + length:
                break
            payload = bytes(self._buffer[size : size + length])
            del self._buffer[: size + length]
            if payload:  # length 0: the no-op frame
                frames.append(payload)
        return frames
