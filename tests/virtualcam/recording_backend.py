"""A pyvirtualcam backend that records what a virtual camera device would receive.

No v4l2loopback device can exist on the test machines, so this stands in for the device at
pyvirtualcam's own backend boundary (registered with `pyvirtualcam.register_backend`). Every
`send` appends one record to the file named by AVATAR_TEST_CAMERA_LOG: the monotonic time, the
frame's fourcc, byte size and mean luma, and (when AVATAR_TEST_CAMERA_FRAMES names a file) the frame's
bytes to that file, each written whole as it is sent (a test can read the pictures while
the command runs). The device works natively in AVATAR_TEST_CAMERA_FORMAT (default I420) and,
like the real backends, accepts RGB too.
"""

from __future__ import annotations

import os
import struct
import time

import numpy as np
from pyvirtualcam.util import decode_fourcc, encode_fourcc

RECORD = struct.Struct("<d4sIf")  # time, fourcc, frame bytes, mean luma
FOURCC_OF = {"RGB": "raw ", "BGR": "24BG", "GRAY": "J400", "I420": "I420", "NV12": "NV12", "YUYV": "YUY2", "UYVY": "UYVY"}
NAME_OF = {fourcc: name for name, fourcc in FOURCC_OF.items()}


class RecordingCamera:
    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: object) -> None:
        self._native = os.environ.get("AVATAR_TEST_CAMERA_FORMAT", "I420")
        self._format = NAME_OF.get(decode_fourcc(fourcc), "?")
        if self._format not in (self._native, "RGB"):
            raise RuntimeError("Unsupported image format.")
        if device not in (None, "test-camera"):
            raise RuntimeError(f"Device {device} does not exist.")
        busy = os.environ.get("AVATAR_TEST_CAMERA_BUSY")
        if busy:
            raise RuntimeError("Device test-camera could not be opened: Device or resource busy")
        self._fourcc = FOURCC_OF[self._format].encode()
        self._pixels = width * height
        self._log = open(os.environ["AVATAR_TEST_CAMERA_LOG"], "ab", buffering=0)
        frames = os.environ.get("AVATAR_TEST_CAMERA_FRAMES")
        self._frames = open(frames, "ab", buffering=0) if frames else None  # readable while running

    def send(self, frame: np.ndarray) -> None:
        now = time.monotonic()
        self._log.write(RECORD.pack(now, self._fourcc, frame.nbytes, self._luma(frame)))
        if self._frames is not None:
            self._frames.write(frame.tobytes())

    def _luma(self, frame: np.ndarray) -> float:
        if self._format in ("I420", "NV12", "GRAY"):
            return float(frame[: self._pixels].mean())
        if self._format == "YUYV":
            return float(frame[0::2].mean())
        if self._format == "UYVY":
            return float(frame[1::2].mean())
        return float(frame.mean())

    def close(self) -> None:
        self._log.close()
        if self._frames is not None:
            self._frames.close()

    def device(self) -> str:
        return "test-camera"

    def native_fourcc(self) -> int:
        return encode_fourcc(FOURCC_OF[self._native])


def read_log(path: str) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(send times, format names, frame sizes, mean lumas) from a recording."""
    data = open(path, "rb").read()
    times, formats, sizes, lumas = [], [], [], []
    for offset in range(0, len(data) - RECORD.size + 1, RECORD.size):
        t, fourcc, size, luma = RECORD.unpack_from(data, offset)
        times.append(t)
        formats.append(NAME_OF[fourcc.decode()])
        sizes.append(size)
        lumas.append(luma)
    return np.array(times), formats, np.array(sizes), np.array(lumas)
