"""What a stream is asked to produce, checked once at open with messages that say what to do."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from avatar_node.engines.base import FRAMINGS, EngineInfo

from . import errors

VideoOutput = Literal["h264", "rgb", "both"]

AUDIO_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MIN_SIDE, MAX_SIDE = 64, 1920
MIN_FPS, MAX_FPS = 1.0, 60.0
MIN_BITRATE_KBPS, MAX_BITRATE_KBPS = 100, 50_000
MAX_KEYFRAME_INTERVAL = 600
MAX_PROMPT_CHARS = 2000
MAX_NAME_CHARS = 128  # voices, turn ids, behaviour names
MIN_STATS_INTERVAL_MS, MAX_STATS_INTERVAL_MS = 100, 60_000


@dataclass(frozen=True)
class SessionOptions:
    engine: str = ""  # empty = the node's first engine
    live: bool = True  # paced at 1x; False = render as fast as the engine goes
    width: int = 848
    height: int = 480
    fps: float = 0.0  # 0 = the engine's native fps
    clock_rate: int = 48000  # output audio sample rate, and the pts clock
    bitrate_kbps: int = 0  # 0 = chosen for the size
    keyframe_interval: int = 0  # frames; 0 = two seconds' worth
    voice: str = ""  # text-to-speech voice; empty = the default
    prompt: str = ""
    framing: str = "auto"
    stats_interval_ms: int = 0  # 0 = only the final stats
    video: VideoOutput = "h264"  # encoded access units, RGB images, or both
    seed: int = 0


def resolve_options(
    options: SessionOptions, engine: EngineInfo, resolve_voice: Callable[[str], str] | None
) -> SessionOptions:
    """Fill in defaults and check every field; raises PipelineError(INVALID_ARGUMENT)."""
    width, height = options.width or 848, options.height or 480
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE) or width % 2 or height % 2:
        raise errors.invalid(
            "BAD_OUTPUT_FORMAT",
            f"output size {width}x{height} is not supported; use even sizes from {MIN_SIDE} to "
            f"{MAX_SIDE} (default 848x480)",
        )
    fps = options.fps or engine.native_fps
    if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise errors.invalid(
            "BAD_OUTPUT_FORMAT", f"output fps {fps:g} is not supported; use {MIN_FPS:g} to {MAX_FPS:g} (0 = native)"
        )
    if options.clock_rate not in AUDIO_RATES:
        raise errors.invalid(
            "BAD_OUTPUT_FORMAT",
            f"audio_sample_rate {options.clock_rate} is not supported; use one of "
            f"{', '.join(map(str, AUDIO_RATES))} (default 48000)",
        )
    if options.bitrate_kbps and not MIN_BITRATE_KBPS <= options.bitrate_kbps <= MAX_BITRATE_KBPS:
        raise errors.invalid(
            "BAD_OUTPUT_FORMAT",
            f"bitrate_kbps {options.bitrate_kbps} is out of range; use {MIN_BITRATE_KBPS} to "
            f"{MAX_BITRATE_KBPS}, or 0 for the node's choice",
        )
    if options.keyframe_interval > MAX_KEYFRAME_INTERVAL or options.keyframe_interval < 0:
        raise errors.invalid(
            "BAD_OUTPUT_FORMAT",
            f"keyframe_interval {options.keyframe_interval} is out of range; use 1 to "
            f"{MAX_KEYFRAME_INTERVAL} frames, or 0 for two seconds' worth",
        )
    if options.framing not in FRAMINGS:
        raise errors.invalid("BAD_OUTPUT_FORMAT", f"framing {options.framing!r} is unknown; use one of {FRAMINGS}")
    if len(options.prompt) > MAX_PROMPT_CHARS:
        raise errors.invalid("PROMPT_TOO_LONG", f"the prompt has {len(options.prompt)} characters; "
                             f"keep it under {MAX_PROMPT_CHARS}")
    voice = options.voice
    if voice:
        voice = check_voice(voice, resolve_voice)
    stats = options.stats_interval_ms
    if stats:
        stats = min(max(stats, MIN_STATS_INTERVAL_MS), MAX_STATS_INTERVAL_MS)
    return dataclasses.replace(
        options, width=width, height=height, fps=float(fps), voice=voice, stats_interval_ms=stats
    )


def check_voice(voice: str, resolve_voice: Callable[[str], str] | None) -> str:
    """The canonical name of a voice (case and variant spelling as the synthesiser wants)."""
    if resolve_voice is None:
        raise errors.precondition("NO_TTS", "this node has no text-to-speech voice; send speech audio instead")
    if len(voice) > MAX_NAME_CHARS:
        raise errors.invalid("UNKNOWN_VOICE", f"voice name is {len(voice)} characters long; GetNodeInfo lists voices")
    try:
        return resolve_voice(voice)
    except ValueError as exc:
        raise errors.invalid("UNKNOWN_VOICE", f"{exc}; GetNodeInfo lists the voices") from None
