"""Against a real OBS Studio under Xvfb: set-up, picture, sound, host triggers, restarts, repairs."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from obsws_python.subs import Subs
from PIL import Image

from avatar_obs import ControlClient, ControlError
from avatar_obs.obs_source import decode_data_uri
from avatar_obs.obs_ws import ObsConnection, ObsEvents

from ..support.waits import free_port, wait_until
from .conftest import ObsStudio, StallingProxy, decode_stream

SIZE = "320x240"


def obs_args(obs: ObsStudio, name: str) -> list[str]:
    return [
        "--setup",
        "--obs-host",
        obs.address.host,
        "--obs-port",
        str(obs.address.port),
        "--source-name",
        name,
    ]


def obs_env(obs: ObsStudio) -> dict[str, str]:
    return {
        "OBS_WEBSOCKET_PASSWORD": obs.address.password
    }  # the password from the environment, as documented


def udp_input(port: int) -> str:
    return f"udp://127.0.0.1:{port}?overrun_nonfatal=1&fifo_size=1000000&localaddr=127.0.0.1"


def grey(rgb: np.ndarray, width: int = 80) -> np.ndarray:
    height = round(rgb.shape[0] * width / rgb.shape[1])
    return cv2.resize(
        cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (width, height), interpolation=cv2.INTER_AREA
    ).astype(np.float32)


def screenshot(obs: ObsConnection, source: str, width: int = 320) -> np.ndarray | None:
    try:
        reply = obs.request(
            "GetSourceScreenshot", {"sourceName": source, "imageFormat": "png", "imageWidth": width}
        )
    except Exception:
        return None  # no picture yet
    return decode_data_uri(reply["imageData"])


_detector: list[Any] = []


def has_face(rgb: np.ndarray) -> bool:
    """MediaPipe's face detector (the one the portrait engine uses) finds a face."""
    if not _detector:
        from avatar_node.engines.portrait.detection import FaceDetector
        from avatar_node.engines.portrait.models import FaceModels

        _detector.append(FaceDetector(FaceModels()))
    return len(_detector[0].detect(np.ascontiguousarray(rgb))) > 0


def shows_live_avatar(obs: ObsConnection, source: str, timeout: float) -> bool:
    """OBS shows a picture with a face, and the picture moves (a live feed, not a frozen frame)."""
    shots: list[np.ndarray] = []

    def moving() -> bool:
        shot = screenshot(obs, source)
        if shot is None or shot.std() < 10 or not has_face(shot):
            shots.clear()
            return False
        shots.append(grey(shot))
        return len(shots) >= 2 and any(np.abs(shots[-1] - s).max() > 12 for s in shots[:-1])

    try:
        wait_until(moving, timeout, f"a live face in {source}", interval=0.5)
    except AssertionError:
        return False
    return True


def scene_items(obs: ObsConnection) -> list[dict[str, Any]]:
    scene = obs.request("GetSceneList")["currentProgramSceneName"]
    return list(obs.request("GetSceneItemList", {"sceneName": scene})["sceneItems"])


def layout(obs: ObsConnection) -> list[tuple[Any, ...]]:
    """What a host arranged: items, order, visibility, position and bounds (not the live picture size)."""
    keys = ("positionX", "positionY", "alignment", "boundsType", "boundsWidth", "boundsHeight", "rotation")
    return [
        (
            i["sourceName"],
            i["sceneItemId"],
            i["sceneItemIndex"],
            i["sceneItemEnabled"],
            *(i["sceneItemTransform"][k] for k in keys),
        )
        for i in scene_items(obs)
    ]


def remove_inputs(obs: ObsConnection, prefix: str) -> None:
    for item in obs.request("GetInputList")["inputs"]:
        if item["inputName"].startswith(prefix):
            obs.request("RemoveInput", {"inputName": item["inputName"]})


class Meters:
    """InputVolumeMeters for one input: (time, loudest peak over channels) as they arrive."""

    def __init__(self, obs: ObsStudio, input_name: str) -> None:
        self.samples: list[tuple[float, float]] = []
        self._lock = threading.Lock()

        def on_meters(event: Any) -> None:
            for item in event.inputs:
                if item["inputName"] == input_name:
                    levels = item.get("inputLevelsMul") or [[0.0, 0.0, 0.0]]
                    with self._lock:
                        self.samples.append((time.monotonic(), max(channel[1] for channel in levels)))

        self._events = ObsEvents(obs.address, Subs.INPUTVOLUMEMETERS, {"input_volume_meters": on_meters})

    def peak(self, start: float, end: float) -> float:
        with self._lock:
            values = [level for t, level in self.samples if start <= t <= end]
        assert values, "no meter readings in that window"
        return max(values)

    def close(self) -> None:
        self._events.close()


@pytest.fixture
def obs(obs_studio: ObsStudio):
    connection = obs_studio.connect()
    yield connection
    connection.close()


def test_setup_shows_the_avatar_with_its_speech_and_the_host_triggers(
    obs_studio, obs, node, start, udp_capture, tmp_path
):
    name = "Avatar"
    obs_port = free_port(socket.SOCK_DGRAM)
    tee = udp_capture(forward_to=obs_port)  # OBS gets every datagram; a copy is decoded here
    control_port = free_port()
    command = start(
        "--target",
        node.target,
        "--udp",
        f"127.0.0.1:{tee.port}",
        "--size",
        SIZE,
        *obs_args(obs_studio, name),
        "--obs-input",
        udp_input(obs_port),
        "--control-port",
        str(control_port),
        env=obs_env(obs_studio),
    )
    meters = Meters(obs_studio, name)
    try:
        command.wait_for(rf"created the media source '{name}'", timeout=20)
        began = time.monotonic()

        # Within a few seconds OBS shows the avatar: the very picture we sent (decoded here), a face.
        def matches_sent() -> tuple[np.ndarray, float] | None:
            shot = screenshot(obs, name)
            if shot is None or shot.std() < 10:
                return None
            sent = decode_stream(tee.bytes_since(time.monotonic() - 4)).images
            if not sent:
                return None
            best = min(np.abs(grey(shot) - grey(frame)).mean() for frame in sent)
            return (shot, best) if best < 6 else None

        try:
            shot, difference = wait_until(matches_sent, 10, "OBS to show the pictures sent", interval=0.25)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{command.output}") from None
        first_picture_s = time.monotonic() - began
        assert has_face(shot)
        assert first_picture_s < 8, first_picture_s
        print(
            f"OBS showed the avatar {first_picture_s:.1f} s after set-up (mean difference {difference:.1f} levels)"
        )

        # Sound: silence while idle, the speech while it speaks, silence again afterwards.
        time.sleep(2.5)
        quiet = meters.peak(time.monotonic() - 2.0, time.monotonic())
        avatar = ControlClient(f"http://127.0.0.1:{control_port}")
        mark = len(command.lines)  # before the action: its first line can come at once
        avatar.say("Thank you all for coming to the stream today. Let us get started.")
        command.wait_for(r"turn started", start=mark)
        spoke_from = time.monotonic()
        finished = command.wait_for(r"turn finished \((\d+) ms\)", start=mark)
        spoke_to = time.monotonic()
        time.sleep(1.0)  # OBS's own audio buffering
        speaking = meters.peak(spoke_from + 0.5, spoke_to)
        time.sleep(2.0)
        after = meters.peak(time.monotonic() - 1.5, time.monotonic())
        assert int(finished.group(1)) > 2000
        assert speaking > 0.05, (quiet, speaking, after)
        assert quiet < 0.003 and after < 0.003, (quiet, speaking, after)

        save_screenshot(obs_studio, obs, tmp_path)

        # Host triggers: a chat bot's custom event makes it speak; the interrupt button's hotkey stops it.
        mark = len(command.lines)
        obs.request(
            "BroadcastCustomEvent",
            {
                "eventData": {
                    "avatar": {
                        "action": "say",
                        "text": "This is a long sentence that the host will cut short with a hotkey.",
                    }
                }
            },
        )
        command.wait_for(r"OBS trigger: say", start=mark)
        command.wait_for(r"turn started", start=mark)
        time.sleep(0.8)
        obs.request("TriggerHotkeyByName", {"hotkeyName": f"libobs.show_scene_item.{name}: interrupt"})
        command.wait_for(r"OBS trigger: interrupt", start=mark)
        command.wait_for(r"turn finished \(interrupted after \d+ ms\)", start=mark)
        button = f"{name}: interrupt"
        wait_until(
            lambda: not next(i for i in scene_items(obs) if i["sourceName"] == button)["sceneItemEnabled"], 5,
            "the button to be released for the next press", interval=0.25,
        )

        # The local control answers a chat bot with clear errors.
        status = avatar.status()
        assert status["node_connected"] and status["frames_sent"] > 100 and status["obs_connected"], status
        avatar.behaviour("nod")
        with pytest.raises(ControlError, match="no such control"):
            avatar._call("POST", "/dance")
        with pytest.raises(ControlError, match="say needs"):
            avatar.say("  ")
        assert command.process.poll() is None
    finally:
        meters.close()
        assert command.stop() == 0, command.output
        remove_inputs(obs, name)
    assert "Traceback" not in command.output


def save_screenshot(obs_studio: ObsStudio, obs: ObsConnection, tmp_path: Path) -> None:
    """OBS's window showing the avatar, for the README: tmp_path/obs-avatar.png, and
    $AVATAR_OBS_SCREENSHOT too when set (the README's image is made this way)."""
    import av

    obs.request("TriggerHotkeyByName", {"hotkeyName": "OBSBasic.EnablePreview"})
    try:
        time.sleep(1.0)
        with av.open(
            obs_studio.display, format="x11grab", options={"video_size": "1280x720", "draw_mouse": "0"}
        ) as grab:
            frame = next(grab.decode(video=0)).to_ndarray(format="rgb24")
    finally:
        obs.request("TriggerHotkeyByName", {"hotkeyName": "OBSBasic.DisablePreview"})
    window = frame[:, :1080]  # OBS's window; the rest of the screen is empty
    image = (
        Image.fromarray(window).resize((720, 480), Image.LANCZOS).quantize(colors=128, method=Image.MEDIANCUT)
    )
    for path in [
        tmp_path / "obs-avatar.png",
        *([Path(os.environ["AVATAR_OBS_SCREENSHOT"])] if os.environ.get("AVATAR_OBS_SCREENSHOT") else []),
    ]:
        image.save(path, optimize=True)
        assert path.stat().st_size < 150_000


def test_restarting_the_stream_and_setting_up_twice_leave_the_scene_alone(obs_studio, obs, node, start):
    name = "Avatar twice"
    port = free_port(socket.SOCK_DGRAM)
    common = ["--target", node.target, "--udp", f"127.0.0.1:{port}", "--size", SIZE]
    try:
        for _ in range(2):  # set up twice: one source, one scene item, one of each button
            setup = start(*common, *obs_args(obs_studio, name), "--setup-only", env=obs_env(obs_studio))
            assert setup.finish(30) == 0, setup.output
        items = [i for i in scene_items(obs) if i["sourceName"].startswith(name)]
        assert sorted(i["sourceName"] for i in items) == sorted(
            [name, f"{name}: interrupt", f"{name}: nod", f"{name}: smile"]
        ), items
        inputs = [i for i in obs.request("GetInputList")["inputs"] if i["inputName"] == name]
        assert len(inputs) == 1
        before = (layout(obs), obs.request("GetInputSettings", {"inputName": name}))

        first = start(*common, env=obs_env(obs_studio))  # no --setup: OBS is not touched
        assert shows_live_avatar(obs, name, timeout=15), first.output
        assert first.stop() == 0
        time.sleep(3.0)  # OBS holds the last picture while nothing comes
        second = start(*common, env=obs_env(obs_studio))
        began = time.monotonic()
        assert shows_live_avatar(obs, name, timeout=15), second.output
        print(f"OBS showed the restarted stream after {time.monotonic() - began:.1f} s, untouched")
        assert second.stop() == 0
        assert (layout(obs), obs.request("GetInputSettings", {"inputName": name})) == before
    finally:
        remove_inputs(obs, name)


def test_the_watchdog_repairs_a_feed_that_died_in_obs(obs_studio, obs, node, start):
    name = "Avatar watchdog"
    port = free_port(socket.SOCK_DGRAM)
    command = start(
        "--target",
        node.target,
        "--udp",
        f"127.0.0.1:{port}",
        "--size",
        SIZE,
        *obs_args(obs_studio, name),
        "--watchdog-interval",
        "1",
        "--buttons",
        "",
        env=obs_env(obs_studio),
    )
    try:
        command.wait_for(rf"created the media source '{name}'")
        assert shows_live_avatar(obs, name, timeout=15), command.output
        # The feed dies inside OBS while the stream goes on (here: its input pointed elsewhere, as a
        # scene collection imported from another machine would); OBS still says it is playing.
        mark = len(command.lines)
        obs.request(
            "SetInputSettings",
            {"inputName": name, "inputSettings": {"input": udp_input(free_port(socket.SOCK_DGRAM))}},
        )
        time.sleep(2.0)
        assert not shows_live_avatar(obs, name, timeout=2), "the sabotage did not take"
        broke = time.monotonic()
        assert shows_live_avatar(obs, name, timeout=30), command.output
        repair = command.wait_for(
            r"OBS feed looks dead \((.*)\); re-applying the source settings", timeout=1, start=mark
        )
        print(
            f"repaired ({repair.group(1)}); live again {time.monotonic() - broke:.1f} s after it was seen dead"
        )
    finally:
        assert command.stop() == 0, command.output
        remove_inputs(obs, name)


def test_the_watchdog_repairs_a_frozen_picture_that_obs_calls_playing(obs_studio, obs, node, start, nginx):
    """OBS's connection to the relay goes silent without closing: OBS keeps the last picture and
    still reports PLAYING. Only the watchdog can tell, by the picture, and reopening fixes it."""
    name = "Avatar frozen"
    proxy = StallingProxy(nginx.port)  # OBS plays through it; the command publishes to nginx directly
    command = start(
        "--target",
        node.target,
        "--rtmp",
        nginx.url("frozen"),
        "--size",
        SIZE,
        *obs_args(obs_studio, name),
        "--obs-input",
        f"rtmp://127.0.0.1:{proxy.port}/live/frozen",
        "--watchdog-interval",
        "1",
        "--buttons",
        "",
        env=obs_env(obs_studio),
    )
    try:
        command.wait_for(rf"created the media source '{name}'")
        assert shows_live_avatar(obs, name, timeout=20), command.output
        mark = len(command.lines)
        proxy.stall()
        time.sleep(2.0)
        assert (
            obs.request("GetMediaInputStatus", {"inputName": name})["mediaState"] == "OBS_MEDIA_STATE_PLAYING"
        )
        frozen = [grey(s) for s in (screenshot(obs, name), screenshot(obs, name)) if s is not None]
        assert len(frozen) == 2 and np.abs(frozen[0] - frozen[1]).max() <= 2, "the picture did not freeze"
        stalled = time.monotonic()
        assert shows_live_avatar(obs, name, timeout=30), command.output
        repair = command.wait_for(r"OBS feed looks dead \((.*)\); re-applying", timeout=1, start=mark)
        assert "frozen picture" in repair.group(1), repair.string
        print(
            f"frozen feed repaired; live again {time.monotonic() - stalled:.1f} s after the relay went silent"
        )
    finally:
        assert command.stop() == 0, command.output
        proxy.close()
        remove_inputs(obs, name)


def test_rtmp_through_nginx_plays_in_obs_and_comes_back_after_nginx_restarts(
    obs_studio, obs, node, start, nginx
):
    name = "Avatar rtmp"
    command = start(
        "--target",
        node.target,
        "--rtmp",
        nginx.url("avatar"),
        "--size",
        SIZE,
        *obs_args(obs_studio, name),
        "--repair",
        "reconnect",
        "--buttons",
        "",
        env=obs_env(obs_studio),
    )
    try:
        command.wait_for(rf"created the media source '{name}'")
        assert shows_live_avatar(obs, name, timeout=20), command.output
        mark = len(command.lines)  # before the kill: the command can report it before kill() returns
        nginx.kill()
        command.wait_for(r"stream interrupted", start=mark, timeout=15)
        time.sleep(4.0)  # long enough for OBS to have tried and failed several times
        nginx.start()
        restarted = time.monotonic()
        command.wait_for(r"publishing again", start=mark, timeout=20)
        command.wait_for(r"OBS: re-applied the source settings", start=mark, timeout=10)
        assert shows_live_avatar(obs, name, timeout=20), command.output
        print(f"OBS showed the avatar again {time.monotonic() - restarted:.1f} s after nginx restarted")
    finally:
        assert command.stop() == 0, command.output
        remove_inputs(obs, name)
