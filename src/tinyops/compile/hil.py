"""Hardware-in-the-loop runner: a small framed serial protocol to a board running the
`hil` firmware (`firmware/main_hil.c`), over pyserial.

Frame, both directions: 0x7E, type (1 byte), payload length (uint32 LE), payload, CRC-32
(IEEE, `zlib.crc32`, uint32 LE) over type, length and payload. The length prefix lets the
receiver read a frame without escaping; the CRC catches a corrupted or misaligned frame,
which the firmware answers with an 'e' frame instead of running garbage.

    'I' -> 'i' input size, output size, arena size (uint32 LE each)
    'R' input bytes -> 'r' status (int32), cycles (uint32, 0 when the core has no DWT
                           cycle counter, as under QEMU), output bytes
    'Q' -> 'q', then the firmware exits
    malformed -> 'e' code (1 bad CRC, 2 bad length, 3 unknown type)

`HilRunner(port_url)` takes any pyserial URL: `/dev/ttyACM0` for a real board,
`socket://127.0.0.1:PORT` for QEMU's `-serial tcp:127.0.0.1:PORT,server=on`, so the tests
drive the emulated AN386's UART with the very code that drives a board.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinyops.compile.errors import CompileError

FRAME_START = 0x7E
ERRORS = {1: "bad CRC", 2: "bad length", 3: "unknown frame type"}


def encode_frame(kind: bytes, payload: bytes = b"") -> bytes:
    head = kind + struct.pack("<I", len(payload))
    return bytes([FRAME_START]) + head + payload + struct.pack("<I", zlib.crc32(head + payload))


@dataclass(frozen=True)
class BoardInfo:
    input_size: int
    output_size: int
    arena_bytes: int


@dataclass(frozen=True)
class HilResult:
    status: int
    cycles: int
    output: NDArray[np.int8]


class HilRunner:
    """Drive one board over a serial link (any pyserial URL)."""

    def __init__(self, url: str, *, baudrate: int = 115200, timeout_s: float = 60.0) -> None:
        import serial

        try:
            self.port: Any = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s)
        except (serial.SerialException, OSError) as exc:
            raise CompileError(f"{url}: cannot open the serial port ({exc})") from exc
        self.url = url

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> HilRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, n: int) -> bytes:
        data = self.port.read(n)
        if len(data) != n:
            raise CompileError(f"{self.url}: the board sent {len(data)} of {n} bytes (timeout)")
        return bytes(data)

    def exchange(self, kind: bytes, payload: bytes = b"") -> tuple[bytes, bytes]:
        """Send one frame and read the reply frame: (type, payload)."""
        return self.transact(encode_frame(kind, payload))

    def transact(self, frame: bytes) -> tuple[bytes, bytes]:
        """Send raw frame bytes (as built by `encode_frame`) and read the reply frame."""
        self.port.write(frame)
        while self._read(1)[0] != FRAME_START:
            pass  # skip anything before a frame (boot messages, line noise)
        head = self._read(5)
        (length,) = struct.unpack("<I", head[1:])
        body = self._read(length)
        (crc,) = struct.unpack("<I", self._read(4))
        if crc != zlib.crc32(head + body):
            raise CompileError(f"{self.url}: reply frame has a bad CRC")
        if head[:1] == b"e":
            code = body[0] if body else 0
            raise CompileError(f"{self.url}: the board refused the frame: {ERRORS.get(code, code)}")
        return head[:1], body

    def info(self) -> BoardInfo:
        kind, body = self.exchange(b"I")
        if kind != b"i" or len(body) != 12:
            raise CompileError(f"{self.url}: unexpected reply {kind!r} to INFO")
        return BoardInfo(*struct.unpack("<III", body))

    def run(self, x: NDArray[np.int8]) -> HilResult:
        """One inference on the board."""
        kind, body = self.exchange(b"R", np.ascontiguousarray(x, dtype=np.int8).tobytes())
        if kind != b"r" or len(body) < 8:
            raise CompileError(f"{self.url}: unexpected reply {kind!r} to RUN")
        status, cycles = struct.unpack("<iI", body[:8])
        return HilResult(status, cycles, np.frombuffer(body[8:], dtype=np.int8).copy())

    def quit(self) -> None:
        kind, _ = self.exchange(b"Q")
        if kind != b"q":
            raise CompileError(f"{self.url}: unexpected reply {kind!r} to QUIT")
