"""`avatar cam` put together: devices, the frame source, drivers, status, and a cleanup that
runs on every way out (normal end, Ctrl-C, SIGTERM/SIGHUP, an error, a node that vanished)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
import numpy as np

from ..feed_items import FeedNotice
from ..voice_gate import DEFAULT_THRESHOLD_DBFS, VoiceGate
from .audio_out import AudioDevice, AudioWriter, ClockOnlyDevice
from .camera import CameraOutput, CameraTicker
from .drivers import PuppetDriver, Turns, speak_once
from .errors import CamError
from .playout import Playout, PlayoutFrame, monotonic
from .sources import (
    Connected,
    Disconnected,
    FrameSource,
    NodeSource,
    NotConnected,
    SourceFrame,
    SourceHealth,
    SyncTestSource,
    TurnFinished,
    TurnStarted,
)
from .status import Meters, StatusPrinter


@dataclass
class CamOptions:
    """Everything `avatar cam` can be asked; the defaults are the command's."""

    target: str | None = None  # HOST:PORT of a node; None starts one in this process
    token: str | None = None
    credentials: grpc.ChannelCredentials | None = None  # TLS to `target`; None is plaintext
    image: bytes | None = None
    avatar_id: str = ""
    engine: str = ""
    voice: str = ""
    width: int = 848
    height: int = 480
    fps: float = 25.0  # the camera's rate; the avatar renders at its engine's and is re-timed to it
    camera: bool = True
    device: str | None = None  # camera device (/dev/videoN, "OBS Virtual Camera")
    backend: str | None = None  # pyvirtualcam backend name
    mic: bool = True
    name: str = "avatar"  # names the virtual microphone and the control endpoint
    audio_device: str | None = None  # a named output device instead of a PulseAudio virtual mic
    mic_buffer_ms: int = 80
    prefill_ms: int = 80
    av_offset_ms: float = 0.0  # wanted audio-minus-video offset at the devices
    puppet: bool = False
    puppet_mic: str | None = None
    voice_threshold_db: float = DEFAULT_THRESHOLD_DBFS  # the voice gate's, for --puppet
    say: str | None = None
    speak: tuple[np.ndarray, int] | None = None
    exit_when_done: bool = False
    sync_test: bool = False
    control: bool = True
    status: bool = True
    keys: bool = True
    stall_s: float = 3.0
    rate: int = 48_000


class _StopRequest:
    """Signals and keys ask to stop; the request is only a flag and an event, so a second
    Ctrl-C during cleanup cannot break the cleanup."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._event = loop, asyncio.Event()
        if self.reason is not None:
            self._event.set()

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self._loop is not None and self._event is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        assert self._event is not None
        await self._event.wait()


@contextlib.contextmanager
def _stop_on_signals(stop: _StopRequest) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP only raise the stop flag (no exception, no output: a handler
    that printed could collide with a write already in progress)."""
    names = ["SIGINT", "SIGTERM", "SIGHUP"]
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: object) -> None:
        stop.request(signal.Signals(signum).name)

    for name in names:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _keys(loop: asyncio.AbstractEventLoop, on_key: Callable[[str], None], enabled: bool) -> Iterator[bool]:
    """Single keys from a terminal (cbreak mode, restored on exit); nothing when not a terminal."""
    if not enabled or sys.platform == "win32" or not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    loop.add_reader(fd, lambda: on_key(os.read(fd, 1).decode(errors="ignore")))
    try:
        yield True
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _photo_rgb(image: bytes | None) -> np.ndarray | None:
    if not image:
        return None
    import cv2

    decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    return None if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


class VirtualCam:
    """One run of `avatar cam`. `run()` blocks until asked to stop and returns an exit status."""

    def __init__(self, options: CamOptions, stream: TextIO = sys.stderr) -> None:
        self.options = options
        self.playout = Playout(
            options.rate,
            prefill_ms=options.prefill_ms + max(0, int(options.av_offset_ms)),
            max_pictures=int(3 * options.fps) + 1,  # 3 s of frames: more than the delay is let grow
        )
        self.meters = Meters(self.playout, options.av_offset_ms)
        self.printer = StatusPrinter(self.meters, stream, enabled=options.status)
        self._stop = _StopRequest()
        self._camera: CameraOutput | None = None
        self._mic: Any = None  # VirtualMic on Linux
        self._device: AudioDevice | None = None
        self._writer: AudioWriter | None = None
        self._ticker: CameraTicker | None = None
        self._capture: Any = None
        self._monitor: Any = None
        self._node: Any = None
        self._source: FrameSource | None = None
        self._control: Any = None
        self._turns = Turns()
        self._connected_once = False
        # After an interrupt, speech still in flight from the node is silenced here until the
        # node confirms the interruption, so the avatar stops at once even on a slow link.
        self._mute_until = 0.0

    def log(self, message: str) -> None:
        self.printer.log(message)

    def stop(self, reason: str = "stop") -> None:
        """Ask a running `run()` to finish (thread-safe)."""
        self._stop.request(reason)

    # ------------------------------------------------------------------ devices

    def _open_audio(self) -> AudioDevice:
        o = self.options
        if not o.mic:
            return ClockOnlyDevice(o.rate)
        if o.audio_device:
            from .sound_device import SoundDeviceOutput

            device = SoundDeviceOutput(o.audio_device, o.rate)
            self.log(f"microphone: speech plays on {device.name!r}; pick its other end as the microphone")
            self.meters.mic = "on"
            return device
        if not sys.platform.startswith("linux"):
            raise CamError(
                "on this OS the speech goes to a named output device: install a virtual cable "
                "(Windows: VB-Audio Virtual Cable, macOS: BlackHole 2ch) and pass --audio-device "
                "'CABLE Input' or 'BlackHole 2ch'; or run with --no-mic"
            )
        from .pulse_stream import PulseError, PulsePlayback
        from .virtual_mic import VirtualMic

        self._mic = VirtualMic(o.name, o.rate)
        devices = self._mic.create()
        for note in self._mic.notes:
            self.log(note)
        try:
            playback = PulsePlayback(devices.sink, o.rate, buffer_ms=o.mic_buffer_ms)
        except PulseError as error:
            raise CamError(f"cannot play into the virtual microphone: {error}") from None
        self.log(
            f"microphone: \"{devices.description}\" (source {devices.source} on {self._mic.server_name})"
        )
        self.meters.mic = "on"
        try:
            from .mic_monitor import MicMonitor

            self._monitor = MicMonitor(devices.source, self.playout, self.log)
        except PulseError as error:
            self.log(f"warning: cannot listen to the virtual microphone ({error}); A/V offset uncorrected")
        return playback

    def _open_camera(self) -> CameraOutput | None:
        o = self.options
        if not o.camera:
            return None
        camera = CameraOutput(o.width, o.height, o.fps, device=o.device, backend=o.backend)
        camera.open()
        self.log(f"camera: {camera.device} ({o.width}x{o.height} at {o.fps:g} fps, {camera.format})")
        self.meters.camera = "on"
        return camera

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        status = 0
        with _stop_on_signals(self._stop):
            try:
                self._device = self._open_audio()
                self._camera = self._open_camera()
                if self._stop.reason is None:
                    status = self._run_loop()
            except CamError as error:
                self.log(f"error: {error}")
                status = 1
            finally:
                if (self._stop.reason or "").startswith("SIG"):
                    self.printer.finish()
                    self.log(f"{self._stop.reason}: stopping")
                self._release()
        if self._stop.reason in ("SIGINT",):
            return 130
        return status

    def _run_loop(self) -> int:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(self._main(loop))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _start_threads(self) -> None:
        o = self.options
        if self._camera is not None:
            photo = _photo_rgb(o.image)
            if photo is not None:
                self.playout.idle_picture = self._camera.picture(photo)
        assert self._device is not None
        self._writer = AudioWriter(self.playout, self._device, on_error=self._device_lost("mic"))
        self._writer.start()
        if self._monitor is not None:
            self._monitor.start()
        if self._camera is not None:
            lead_s = o.av_offset_ms / 1000 + 0.5 / o.fps
            self._ticker = CameraTicker(
                self._camera, self.playout, lead_s, self.meters.camera_sent, self._device_lost("camera")
            )
            self._ticker.start()

    def _device_lost(self, which: str) -> Callable[[str], None]:
        def report(message: str) -> None:
            setattr(self.meters, which, "lost")
            self.log(message)

        return report

    async def _main(self, loop: asyncio.AbstractEventLoop) -> int:
        o = self.options
        self._stop.bind(loop)
        self._start_threads()
        # Frames arriving before the sound device plays would only pile up; wait for it.
        assert self._writer is not None
        for _ in range(50):
            if self._stop.reason is not None or await asyncio.to_thread(self._writer.wait_running, 0.1):
                break
        else:
            self.log("warning: the sound device has not started playing after 5 s")
        source = await self._make_source()
        if source is None:
            return 0  # asked to stop while the node was starting
        self._source = source
        connected = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self._consume(source, connected), name="consume"),
            asyncio.create_task(self._status_loop(), name="status"),
        ]
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        if o.control:
            from .control import ControlServer

            self._control = ControlServer(o.name, self._handle_control)
            await self._control.start()
            self.log(f"control: programs reach this avatar with CamControl.connect({o.name!r})")
        if o.say is not None or o.speak is not None:
            tasks.append(asyncio.create_task(self._speak(source, connected), name="speak"))
        if o.puppet:
            tasks.append(asyncio.create_task(self._puppet(source, loop), name="puppet"))
        try:
            with _keys(loop, self._on_key, o.keys) as keys:
                if keys:
                    self.log("keys: i = interrupt the avatar, q = quit")
                running = {stop_task, *tasks}
                while stop_task in running:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if task is not stop_task and not task.cancelled() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
        finally:
            for task in [stop_task, *tasks]:
                task.cancel()
            await asyncio.gather(stop_task, *tasks, return_exceptions=True)
            if self._control is not None:
                await self._control.aclose()
        return 0

    async def _make_source(self) -> FrameSource | None:
        o = self.options
        if o.sync_test:
            return SyncTestSource(o.width, o.height, o.fps, o.rate)
        target, token, credentials = o.target, o.token, o.credentials
        if not target:
            try:
                from avatar_node.server import NodeConfig, start_background_node
            except ImportError as error:
                raise CamError(f"no --target given and no in-process node available ({error})") from None
            config = NodeConfig(host="127.0.0.1", port=0, engines=[o.engine or "portrait"], max_sessions=1)
            self.log("starting an avatar node in this process...")
            starting = asyncio.ensure_future(asyncio.to_thread(start_background_node, config))
            waiting = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([starting, waiting], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            try:
                self._node = await starting  # a start cannot be abandoned half-way; stopped in _release
            except Exception as error:
                raise CamError(f"the in-process node did not start: {error}") from None
            if self._stop.reason is not None:
                return None
            target, token, credentials = self._node.target, None, None
        image = o.image if not o.avatar_id else None
        if image is None and not o.avatar_id:
            raise CamError("no photo: pass --image PHOTO or --avatar-id ID")
        return NodeSource(
            target, token, image=image, avatar_id=o.avatar_id, engine=o.engine, voice=o.voice,
            width=o.width, height=o.height, stall_s=o.stall_s, credentials=credentials,
        )

    async def _consume(self, source: FrameSource, connected: asyncio.Event) -> None:
        camera = self._camera
        async for item in source.items():
            if isinstance(item, SourceFrame):
                picture = camera.picture(item.image) if camera is not None else None
                audio = item.audio
                if item.speaking and monotonic() < self._mute_until:
                    # Rendered before the node saw the interrupt: neither heard nor seen.
                    audio, picture = np.zeros_like(audio), None
                self.playout.push(PlayoutFrame(item.pos, picture, audio, item.speaking))
            elif isinstance(item, TurnStarted):
                self.meters.turn_started(item.turn_id, item.pos)
                self._broadcast({"event": "turn", "kind": "started", "turn_id": item.turn_id})
            elif isinstance(item, TurnFinished):
                if item.interrupted:
                    self._mute_until = 0.0
                self._turns.finished(item)
                self._broadcast(
                    {"event": "turn", "kind": "finished", "turn_id": item.turn_id,
                     "interrupted": item.interrupted, "played_ms": item.played_ms}
                )
            elif isinstance(item, SourceHealth):
                self.meters.node_health(item.speech_underruns, item.frames_dropped)
            elif isinstance(item, FeedNotice):
                self.log(f"the node says: {item.message}")
            elif isinstance(item, Connected):
                if self._connected_once:
                    self.meters.reconnects += 1
                self._connected_once = True
                self.playout.source_restarted()
                self.meters.connection = "connected"
                self.log(f"connected: {item.description}")
                connected.set()
            elif isinstance(item, Disconnected):
                connected.clear()
                self._turns.lost(item.reason)
                self.meters.connection = f"reconnecting (attempt {item.attempt})"
                self.log(
                    f"node unreachable: {item.reason}; the camera holds the last frame; "
                    f"retrying in {item.retry_in_s:g} s (attempt {item.attempt})"
                )

    def _broadcast(self, event: dict[str, Any]) -> None:
        if self._control is not None:
            self._control.broadcast(event)

    async def _status_loop(self) -> None:
        next_draw = 0.0
        while True:
            self.meters.update()
            if monotonic() >= next_draw:
                self.printer.draw()
                next_draw = monotonic() + self.printer.interval_s
            await asyncio.sleep(0.1)

    async def _speak(self, source: FrameSource, connected: asyncio.Event) -> None:
        o = self.options
        # Speak once the avatar's sound has flowed steadily for a moment: a new session's
        # first frames come irregularly, and the playout learns their jitter meanwhile.
        await connected.wait()
        deadline = monotonic() + 3.0
        while self.playout.steady_for() < 0.5 and monotonic() < deadline:
            await asyncio.sleep(0.05)
        finished = await speak_once(
            source, connected, self._turns, self.meters, self.log, text=o.say, audio=o.speak
        )
        if not o.exit_when_done:
            return
        # Leave once the end of the speech has been heard from the microphone.
        end = finished.pos + o.rate // 4
        deadline = monotonic() + 10.0
        while monotonic() < deadline:
            heard = self.playout.media_pos_at(monotonic())
            if heard is not None and heard >= end:
                break
            await asyncio.sleep(0.05)
        self._stop.request("done")

    async def _puppet(self, source: FrameSource, loop: asyncio.AbstractEventLoop) -> None:
        o = self.options
        driver = PuppetDriver(source, self._turns, self.meters, o.rate, VoiceGate(o.voice_threshold_db))
        driver.attach(loop)
        if sys.platform.startswith("linux") and not (o.puppet_mic or "").startswith("sounddevice:"):
            from .capture import MicCapture

            self._capture = MicCapture(o.puppet_mic, driver.on_chunk, self.log, rate=o.rate)
        else:
            from .sound_device import SoundDeviceCapture

            name = (o.puppet_mic or "").removeprefix("sounddevice:") or None
            self._capture = SoundDeviceCapture(name, driver.on_chunk, self.log, rate=o.rate)
        self._capture.start()
        self.log(f"puppet: the avatar follows {o.puppet_mic or 'the default microphone'}")
        try:
            await driver.run()
        finally:
            capture, self._capture = self._capture, None
            capture.stop()  # before the loop it reports to is closed

    def _on_key(self, key: str) -> None:
        if key in ("i", " "):
            asyncio.ensure_future(self.interrupt())
        elif key == "q":
            self._stop.request("q")

    async def interrupt(self) -> None:
        """Barge in: the node drops its queued speech; what is buffered here is dropped too."""
        if self._source is None:
            return
        self._mute_until = monotonic() + 3.0
        self.playout.drop_pending()
        try:
            await self._source.interrupt()
        except NotConnected:
            pass
        self.log("interrupted")

    async def _handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        source = self._source
        assert source is not None
        op = request.get("op")
        try:
            if op == "say":
                turn_id = str(request.get("turn_id") or self._turns.new_id("agent"))
                self.meters.speech_sent(turn_id, monotonic())
                await source.say(str(request["text"]), turn_id=turn_id)
                return {"turn_id": turn_id}
            if op == "speak":
                turn_id = str(request.get("turn_id") or "")
                if not turn_id:
                    turn_id = self._turns.new_id("agent")
                    self.meters.speech_sent(turn_id, monotonic())
                pcm = np.frombuffer(base64.b64decode(request["pcm"]), "<i2")
                await source.send_speech(
                    pcm, int(request["sample_rate"]), bool(request.get("end_of_turn", True)), turn_id=turn_id
                )
                return {"turn_id": turn_id}
            if op == "interrupt":
                await self.interrupt()
                return {}
            if op == "behaviour":
                await source.behaviour(str(request["name"]))
                return {}
            if op == "status":
                return {
                    "line": self.meters.line(),
                    "camera_fps": self.meters.camera_fps(),
                    "av_offset_ms": self.meters.av_offset_ms(),
                    "node_latency_ms": self.meters.node_latency_ms,
                    "reconnects": self.meters.reconnects,
                    "connection": self.meters.connection,
                }
        except NotConnected as error:
            raise CamError(f"{error}; try again once the avatar is connected") from None
        raise CamError(f"unknown op {op!r} (say, speak, interrupt, behaviour, status)")

    # ------------------------------------------------------------------ cleanup

    def _release(self) -> None:
        """Give everything back, newest first. Each step runs even if an earlier one fails;
        nothing here awaits, so neither a signal nor a cancellation can cut it short."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("capture", lambda: self._capture.stop() if self._capture is not None else None),
            ("monitor", lambda: self._monitor.stop() if self._monitor is not None else None),
            ("camera thread", lambda: self._ticker.stop() if self._ticker is not None else None),
            ("audio thread", lambda: self._writer.stop() if self._writer is not None else None),
            ("audio device", lambda: self._device.close() if self._device is not None else None),
            ("camera", lambda: self._camera.close() if self._camera is not None else None),
            ("virtual microphone", lambda: self._mic.remove() if self._mic is not None else None),
            ("node", lambda: self._node.stop() if self._node is not None else None),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as error:  # report and go on: the rest must still be released
                self.log(f"warning: releasing the {what} failed: {error}")
        self.printer.finish()
        p = self.playout
        dry = self._writer.device_underruns if self._writer is not None else 0
        if p.underruns or p.trimmed_samples or p.stretched_samples or dry:
            self.log(
                f"speech timing: {p.underruns} gap(s) waiting for the source, {dry} time(s) the sound "
                f"device ran dry; {1000 * p.stretched_samples / p.rate:.0f} ms of silence added and "
                f"{1000 * p.trimmed_samples / p.rate:.0f} ms skipped to follow the source's jitter"
            )
        if p.speech_cuts:
            self.log(
                f"speech cut: {p.speech_cuts} time(s), {1000 * p.speech_cut_samples / p.rate:.0f} ms of "
                f"speech skipped to catch up after the sound device or the source fell behind by over "
                f"{1000 * p.FORCE_TRIM_S:.0f} ms"
            )
        if self._mic is not None and self._mic.was_created:
            self.log(f"removed the virtual microphone ({self._mic.devices.source})")
