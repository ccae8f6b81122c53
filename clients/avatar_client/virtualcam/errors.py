"""Errors of the virtual camera and microphone, each saying what to do on this OS."""

from __future__ import annotations

import platform


class CamError(Exception):
    """A failure `avatar cam` reports as one line and exits on."""


class CameraUnavailable(CamError):
    pass


class MicUnavailable(CamError):
    pass


def _system() -> str:
    return platform.system()


def no_camera_device(detail: str) -> CameraUnavailable:
    system = _system()
    if system == "Linux":
        how = (
            "install v4l2loopback and load it: `sudo apt install v4l2loopback-dkms` (Fedora: "
            "`sudo dnf install v4l2loopback`), then "
            "`sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=\"Avatar Camera\"`"
        )
    elif system == "Windows":
        how = "install OBS Studio 26+ and start its Virtual Camera once (or install Unity Capture)"
    elif system == "Darwin":
        how = (
            "install OBS Studio 30+ and start its Virtual Camera once to install the camera "
            "extension (allow it in System Settings)"
        )
    else:
        how = "this OS has no virtual camera backend in pyvirtualcam"
    return CameraUnavailable(
        f"no virtual camera device ({detail}): {how}; "
        "or run with --no-camera to get only the virtual microphone"
    )


def camera_busy(device: str, detail: str) -> CameraUnavailable:
    return CameraUnavailable(
        f"the virtual camera {device} is busy ({detail}): close the program writing to it "
        "(or reading it at another size), or pick another device with --device"
    )


def camera_permission(detail: str) -> CameraUnavailable:
    return CameraUnavailable(
        f"no permission to open the virtual camera ({detail}): add yourself to the 'video' "
        "group (`sudo usermod -aG video $USER`, then log in again)"
    )


def no_sound_server(detail: str) -> MicUnavailable:
    return MicUnavailable(
        f"no PulseAudio or PipeWire sound server answered ({detail}): start one (PipeWire: "
        "`systemctl --user start pipewire pipewire-pulse wireplumber`; PulseAudio: "
        "`pulseaudio --start`), or run with --no-mic for the camera alone"
    )


def missing_extra(module: str, needs: str = "the virtual camera") -> CamError:
    also = "; or run with --no-mic for the camera alone" if needs == "the virtual microphone" else ""
    return CamError(f"{needs} needs the '{module}' package: pip install 'avatar-node[virtualcam]'{also}")
