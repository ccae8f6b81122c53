"""The avatar as a virtual camera and microphone for Zoom, Meet, Teams and any other app.

`avatar cam` (see command.py) sends frames to a virtual camera at a constant rate (pyvirtualcam:
v4l2loopback on Linux, OBS Virtual Camera on Windows/macOS) and the matching speech to a
virtual microphone (a PulseAudio/PipeWire null sink + remapped source on Linux, a named output
device such as a virtual cable elsewhere). The speech clock leads; the camera follows it.

Programs drive a running `avatar cam` with `CamControl`; the frames come from any
`FrameSource` (a node through the SDK by default).
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that `avatar` commands other than `cam` stay quick to start.
_EXPORTS = {
    "CamControl": "control",
    "control_file": "control",
    "CamError": "errors",
    "CamOptions": "runner",
    "VirtualCam": "runner",
    "FrameSource": "sources",
    "NodeSource": "sources",
    "SourceFrame": "sources",
    "SyncTestSource": "sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
