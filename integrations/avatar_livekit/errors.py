"""Errors the LiveKit integration reports as one line that says what to do."""

from __future__ import annotations


class AvatarLiveKitError(Exception):
    """The avatar cannot start as configured; the message says what to change."""


def check_video_format(width: int, height: int, fps: float) -> None:
    """LiveKit's encoders keep widths that are multiples of 4 (an 854-wide source comes back 852 wide)."""
    if width % 4 or height % 2 or width <= 0 or height <= 0:
        raise AvatarLiveKitError(
            f"video size {width}x{height} is not supported: use a width that is a multiple of 4 and an even "
            "height (848x480, not 854x480)"
        )
    if fps != 0 and not 1 <= fps <= 60:
        raise AvatarLiveKitError(
            f"video fps {fps:g} is not supported; use 1 to 60, or 0 for the engine's own rate "
            "(25 for portrait, 16 for livetalk)"
        )
