"""The virtual camera: opening it through pyvirtualcam in the device's own pixel format, and a
thread that hands it a frame at a constant rate whatever the avatar's source is doing."""

from __future__ import annotations

import collections
import glob
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from . import errors, pixels
from .playout import Playout, monotonic


def _pyvirtualcam() -> Any:
    try:
        import pyvirtualcam
    except ImportError:
        raise errors.missing_extra("pyvirtualcam") from None
    return pyvirtualcam


def _explain(message: str, device: str | None) -> errors.CameraUnavailable:
    """Turn pyvirtualcam's error (one line per backend tried) into one line that says what to do."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip()) or "unknown error"
    lowered = text.lower()
    if "busy" in lowered or "already in use" in lowered:
        return errors.camera_busy(device or "device", text)
    if "permission" in lowered:
        return errors.camera_permission(text)
    if "no v4l2 loopback device found" in lowered:
        present = sorted(glob.glob("/dev/video*"))
        if present:
            return errors.CameraUnavailable(
                f"none of {', '.join(present)} is a free v4l2loopback output (busy, or not a "
                "loopback device): close the program using it, or load another with "
                "`sudo modprobe v4l2loopback devices=1 exclusive_caps=1`; --no-camera still gives the microphone"
            )
        return errors.no_camera_device("no /dev/video* loopback device")
    if "not found" in lowered or "not installed" in lowered or "does not exist" in lowered:
        return errors.no_camera_device(text)
    return errors.CameraUnavailable(f"cannot open the virtual camera: {text}")


class CameraOutput:
    """A pyvirtualcam camera fed with frames already in its native pixel format."""

    def __init__(
        self, width: int, height: int, fps: float, device: str | None = None, backend: str | None = None
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._requested_device = device
        self._backend = backend
        self._camera: Any = None
        #: The pixel format frames are converted to (pyvirtualcam's name for it).
        self.format = "RGB"

    def _open(self, fmt: str, device: str | None) -> Any:
        pvc = _pyvirtualcam()
        if self._backend and self._backend not in pvc.camera.BACKENDS:
            known = ", ".join(sorted(pvc.camera.BACKENDS)) or "none"
            raise errors.CamError(f"no camera backend named {self._backend!r} (available here: {known})")
        try:
            return pvc.Camera(
                self.width, self.height, self.fps, fmt=pvc.PixelFormat[fmt], device=device,
                backend=self._backend or None,
            )
        except RuntimeError as error:
            raise _explain(str(error), device) from None
        except (ValueError, OSError) as error:
            raise errors.CameraUnavailable(f"cannot open the virtual camera: {error}") from None

    def open(self) -> None:
        """Open the device; if it works in another format than RGB, reopen it in that format so
        each frame is converted once here rather than on every send."""
        camera = self._open("RGB", self._requested_device)
        native = camera.native_fmt.name if camera.native_fmt is not None else "RGB"
        if native != "RGB" and native in pixels.FORMATS:
            device = camera.device
            camera.close()
            camera = self._open(native, device)
        self._camera = camera
        self.format = camera.fmt.name

    @property
    def device(self) -> str:
        return str(self._camera.device) if self._camera is not None else ""

    def picture(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB image (any size) as this camera's frame."""
        return pixels.convert(pixels.fit(rgb, self.width, self.height), self.format)

    def send(self, picture: np.ndarray) -> None:
        self._camera.send(picture)

    def close(self) -> None:
        if self._camera is not None:
            camera, self._camera = self._camera, None
            camera.close()


class CameraTicker:
    """Sends one frame every 1/fps seconds on absolute deadlines, from its own thread.

    It only ever reads the playout buffer (a short lock), so a stalled, slow or vanished node
    cannot hold it up: without a new frame the previous one is sent again. `lead_s` is how far
    ahead of the speech clock the picture is taken (the A/V correction plus half a frame, so
    each frame is shown nearest to the moment its audio is heard).
    """

    MAX_NUDGE_S = 0.001

    def __init__(
        self,
        camera: CameraOutput,
        playout: Playout,
        lead_s: float,
        on_sent: Callable[[float, int | None], None],
        on_error: Callable[[str], None],
    ) -> None:
        self._camera = camera
        self._playout = playout
        self._lead_s = lead_s
        self._on_sent = on_sent
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avatar-cam-video", daemon=True)
        self._blank = camera.picture(np.full((camera.height, camera.width, 3), 96, np.uint8))
        self.late_ticks = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self._camera.fps
        wanted = self._lead_s - 0.5 * period  # the A/V offset asked for
        shown: collections.deque[tuple[int, float]] = collections.deque(maxlen=64)
        deadline = monotonic()
        while not self._stop.wait(max(0.0, deadline - monotonic())):
            now = monotonic()
            pos, picture = self._playout.picture_for(now, self._lead_s)
            try:
                self._camera.send(self._blank if picture is None else picture)
            except Exception as error:  # the device went away: keep the microphone going
                self._on_error(f"the virtual camera stopped accepting frames ({error})")
                return
            self._on_sent(now, pos)
            deadline += period + self._phase_nudge(shown, pos, now, wanted)
            if monotonic() - deadline > 2 * period:  # the machine stalled us: resume, don't burst
                self.late_ticks += 1
                deadline = monotonic()

    def _phase_nudge(
        self, shown: collections.deque[tuple[int, float]], pos: int | None, now: float, wanted: float
    ) -> float:
        """Phase lock. When camera and source share a frame rate, every frame would keep the
        same sub-frame offset; nudge the ticks (at most 1 ms each, so the rate stays steady)
        until frames reach the camera `wanted` seconds before their sound is heard. A frame's
        sound may be written only after it is shown (a positive offset), so frames wait here
        until their audio time is known."""
        if pos is not None:
            shown.append((pos, now))
        nudge = 0.0
        while shown:
            first_pos, first_time = shown[0]
            heard = self._playout.audio_time_of(first_pos)
            if heard is None:
                if now - first_time < 1.0:
                    break
            else:
                error_s = heard - first_time - wanted
                nudge = max(-self.MAX_NUDGE_S, min(self.MAX_NUDGE_S, 0.1 * error_s))
            shown.popleft()
        return nudge

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
