"""The avatar's Media Source in OBS: created or updated idempotently, placed, monitored, repaired."""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .obs_ws import ObsConnection, ObsError, ObsRequestError
from .pictures import decode_image

MEDIA_KIND = "ffmpeg_source"
Placement = Literal["fit", "bottom-right", "bottom-left", "top-right", "top-left"]
PLACEMENTS: tuple[str, ...] = ("fit", "bottom-right", "bottom-left", "top-right", "top-left")

# OBS alignment flags (obs-defs.h): centre is 0.
_LEFT, _RIGHT, _TOP, _BOTTOM = 1, 2, 4, 8


def obs_input_url(destination_url: str) -> tuple[str, str]:
    """What OBS opens to play our stream, and its input format ("" lets FFmpeg probe).

    UDP: OBS listens on the port we send to. On loopback it binds 127.0.0.1 only, so nothing
    on the network can inject a picture; the large FIFO with overrun_nonfatal rides out a
    busy OBS instead of dropping the stream. RTMP: OBS plays what we publish, from the relay.
    """
    parts = urllib.parse.urlsplit(destination_url)
    if parts.scheme == "udp":
        host, port = parts.hostname or "127.0.0.1", parts.port
        local = host.startswith("127.") or host in ("localhost", "::1")
        bind = "127.0.0.1" if local else "0.0.0.0"
        query = "overrun_nonfatal=1&fifo_size=1000000" + ("&localaddr=127.0.0.1" if local else "")
        return f"udp://{bind}:{port}?{query}", "mpegts"
    return destination_url, ""


def media_settings(input_url: str, input_format: str) -> dict[str, Any]:
    """Media Source settings that recover by themselves when the stream stops and comes back."""
    return {
        "is_local_file": False,
        "input": input_url,
        "input_format": input_format,
        "buffering_mb": 0,  # live: show frames as they come, no seconds of buffer
        "reconnect_delay_sec": 1,  # reopen quickly when a connection drops
        # Keep playing (and reconnecting) while another scene is on air, so switching to the
        # avatar's scene shows it at once instead of a black second while the stream reopens.
        "restart_on_activate": False,
        "close_when_inactive": False,
        "hw_decode": False,
        "clear_on_media_end": True,
        "looping": False,
        "speed_percent": 100,
    }


@dataclass(frozen=True)
class SourceSpec:
    """The source to create or update."""

    name: str
    input_url: str
    input_format: str
    scene: str = ""  # "" = the scene on air
    placement: Placement | None = None  # None: "fit" for a new source, unchanged for an existing one
    scale: float = 0.45  # share of the canvas height for a corner placement
    monitor: bool = True  # the host hears the avatar (monitor and output)
    buttons: tuple[str, ...] = ()  # actions to offer as hotkey-able scene items


@dataclass
class SetupResult:
    scene: str
    created: bool  # the input was new
    scene_item_id: int
    removed_duplicates: int = 0
    buttons: dict[int, str] = field(default_factory=dict)  # scene item id -> action

    def describe(self, name: str) -> str:
        verb = "created" if self.created else "updated"
        extra = f", removed {self.removed_duplicates} duplicate(s)" if self.removed_duplicates else ""
        return f"OBS: {verb} the media source {name!r} in scene {self.scene!r}{extra}"


def button_name(source_name: str, action: str) -> str:
    return f"{source_name}: {action}"


class ObsSource:
    """Operations on one named Media Source through an `ObsConnection` (blocking calls)."""

    def __init__(self, obs: ObsConnection, spec: SourceSpec) -> None:
        self.obs = obs
        self.spec = spec

    @property
    def settings(self) -> dict[str, Any]:
        return media_settings(self.spec.input_url, self.spec.input_format)

    # ------------------------------------------------------------------ setup

    def ensure(self) -> SetupResult:
        """Create or update the source and its single scene item; idempotent."""
        spec = self.spec
        scene = self._scene()
        kind = self._input_kind(spec.name)
        if kind is not None and kind != MEDIA_KIND:
            raise ObsError(
                f"OBS already has a source named {spec.name!r} of another kind ({kind}); "
                "pass --source-name to use another name, or rename that source"
            )
        # Buttons first: OBS puts new items on top, so a new avatar lands above them (and selected).
        buttons = {self._ensure_button(scene, action): action for action in spec.buttons}
        created = kind is None
        if created:
            reply = self.obs.request(
                "CreateInput",
                {
                    "sceneName": scene,
                    "inputName": spec.name,
                    "inputKind": MEDIA_KIND,
                    "inputSettings": self.settings,
                    "sceneItemEnabled": True,
                },
            )
            item_id = int(reply["sceneItemId"])
            removed = 0
        else:
            self.reapply()
            item_id, removed = self._single_item(scene, spec.name)
        if created or spec.placement is not None:
            self._place(scene, item_id, spec.placement or "fit")
        self.obs.request(
            "SetInputAudioMonitorType",
            {
                "inputName": spec.name,
                "monitorType": "OBS_MONITORING_TYPE_MONITOR_AND_OUTPUT"
                if spec.monitor
                else "OBS_MONITORING_TYPE_NONE",
            },
        )
        return SetupResult(scene, created, item_id, removed, buttons)

    def _scene(self) -> str:
        scenes = self.obs.request("GetSceneList")
        names = [s["sceneName"] for s in scenes.get("scenes", [])]
        if not self.spec.scene:
            return str(scenes["currentProgramSceneName"])
        if self.spec.scene not in names:
            raise ObsError(
                f"OBS has no scene named {self.spec.scene!r}; its scenes are: "
                + ", ".join(repr(n) for n in names)
            )
        return self.spec.scene

    def _input_kind(self, name: str) -> str | None:
        for item in self.obs.request("GetInputList").get("inputs", []):
            if item["inputName"] == name:
                return str(item["inputKind"])
        return None

    def _single_item(self, scene: str, source: str) -> tuple[int, int]:
        """The one scene item showing `source` in `scene` (added if missing, extras removed)."""
        items = [
            i
            for i in self.obs.request("GetSceneItemList", {"sceneName": scene})["sceneItems"]
            if i["sourceName"] == source
        ]
        if not items:
            reply = self.obs.request(
                "CreateSceneItem", {"sceneName": scene, "sourceName": source, "sceneItemEnabled": True}
            )
            return int(reply["sceneItemId"]), 0
        keep, extras = items[0], items[1:]
        for extra in extras:
            self.obs.request("RemoveSceneItem", {"sceneName": scene, "sceneItemId": extra["sceneItemId"]})
        return int(keep["sceneItemId"]), len(extras)

    def _place(self, scene: str, item_id: int, placement: str) -> None:
        video = self.obs.request("GetVideoSettings")
        canvas_w, canvas_h = float(video["baseWidth"]), float(video["baseHeight"])
        if placement == "fit":
            box_w, box_h, x, y, alignment = canvas_w, canvas_h, 0.0, 0.0, _LEFT | _TOP
        else:
            box_h = round(canvas_h * self.spec.scale)
            box_w = round(box_h * 16 / 9)
            margin = round(canvas_h * 0.03)
            vertical, horizontal = placement.split("-")
            x = canvas_w - margin if horizontal == "right" else float(margin)
            y = canvas_h - margin if vertical == "bottom" else float(margin)
            alignment = (_RIGHT if horizontal == "right" else _LEFT) | (
                _BOTTOM if vertical == "bottom" else _TOP
            )
        self.obs.request(
            "SetSceneItemTransform",
            {
                "sceneName": scene,
                "sceneItemId": item_id,
                "sceneItemTransform": {
                    "positionX": x,
                    "positionY": y,
                    "alignment": alignment,
                    "boundsType": "OBS_BOUNDS_SCALE_INNER",  # keep the aspect ratio inside the box
                    "boundsWidth": float(box_w),
                    "boundsHeight": float(box_h),
                    "boundsAlignment": 0,
                    "rotation": 0.0,
                },
            },
        )

    def _ensure_button(self, scene: str, action: str) -> int:
        """A hidden, invisible scene item whose 'Show' hotkey (or eye icon) triggers `action`."""
        name = button_name(self.spec.name, action)
        kind = self._input_kind(name)
        if kind is None:
            reply = self.obs.request(
                "CreateInput",
                {
                    "sceneName": scene,
                    "inputName": name,
                    "inputKind": self._colour_kind(),
                    "inputSettings": {"color": 0, "width": 2, "height": 2},  # fully transparent
                    "sceneItemEnabled": False,
                },
            )
            return int(reply["sceneItemId"])
        item_id, _ = self._single_item(scene, name)
        self.obs.request(
            "SetSceneItemEnabled", {"sceneName": scene, "sceneItemId": item_id, "sceneItemEnabled": False}
        )
        return item_id

    def _colour_kind(self) -> str:
        kinds = self.obs.request("GetInputKindList", {"unversioned": False}).get("inputKinds", [])
        versions = sorted(k for k in kinds if k.startswith("color_source"))
        return versions[-1] if versions else "color_source"

    # ------------------------------------------------------------------ running

    def reapply(self) -> None:
        """Send the source settings again: this reopens the stream even after OBS gave up on it."""
        self.obs.request(
            "SetInputSettings", {"inputName": self.spec.name, "inputSettings": self.settings, "overlay": True}
        )

    def exists(self) -> bool:
        return self._input_kind(self.spec.name) == MEDIA_KIND

    def screenshot(self, width: int = 64) -> np.ndarray:
        """What OBS shows for the source now, as a small RGB picture."""
        try:
            reply = self.obs.request(
                "GetSourceScreenshot",
                {"sourceName": self.spec.name, "imageFormat": "png", "imageWidth": width},
            )
        except ObsRequestError as error:
            if error.code != ObsRequestError.RENDER_FAILED:
                raise
            # The source has no picture at all (cleared when its media stopped): that is black.
            return np.zeros((max(2, width * 9 // 16), width, 3), np.uint8)
        return decode_data_uri(reply["imageData"])

    def media_state(self) -> str:
        """OBS_MEDIA_STATE_PLAYING, _ENDED, _STOPPED, _ERROR, ..."""
        return str(self.obs.request("GetMediaInputStatus", {"inputName": self.spec.name})["mediaState"])

    def release_button(self, scene: str, item_id: int) -> None:
        """Hide a pressed button again so the next press triggers again."""
        try:
            self.obs.request(
                "SetSceneItemEnabled", {"sceneName": scene, "sceneItemId": item_id, "sceneItemEnabled": False}
            )
        except ObsRequestError:
            pass  # the host removed it meanwhile


def decode_data_uri(data_uri: str) -> np.ndarray:
    _, _, payload = data_uri.partition(",")
    return decode_image(base64.b64decode(payload))
