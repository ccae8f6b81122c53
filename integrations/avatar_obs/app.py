"""The running `avatar obs` command: source, timeline, publisher, OBS, drivers and controls together."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np
from avatar_client import AvatarError, FeedNotice, FeedTurn, SessionSpec, read_audio_file
from avatar_client.feed_items import FeedFormat
from avatar_client.voice_gate import VoiceGate

from .control import ControlError, ControlServer
from .drivers import AudioCapture, AudioInput, MicrophoneDriver, open_capture
from .errors import NodeUnavailable, SettingsError, SetupError
from .feed import LinkOpener, node_opener, resolve_fps
from .health import FeedWatchdog
from .idle import IdleFrames, still_from_photo
from .obs_link import ObsLink
from .obs_source import SourceSpec
from .obs_ws import ObsAddress, ObsError
from .pictures import SentPictures
from .publisher import Destination, StreamPublisher
from .timeline import FATAL_CODES, LiveTimeline

log = logging.getLogger(__name__)

Repair = Literal["both", "watchdog", "reconnect", "off"]
CLOCK_RATE = 48_000
#: The stream's rate when the node cannot be asked for its engine's (it is down at start).
FALLBACK_FPS = 25.0


@dataclass
class AppConfig:
    spec: SessionSpec  # the avatar and the stream's size and rate (fps 0: the engine's own)
    destination: Destination
    target: str | None = None  # None: an in-process node
    token: str | None = None
    credentials: grpc.ChannelCredentials | None = None  # TLS to `target`; None is plaintext
    obs: ObsAddress | None = None  # set: configure OBS (--setup)
    source: SourceSpec | None = None
    setup_only: bool = False
    repair: Repair = "both"
    watchdog_interval_s: float = 2.0
    mic: AudioInput | None = None
    gate: VoiceGate = field(default_factory=VoiceGate)
    say: list[str] = field(default_factory=list)
    speak: list[Path] = field(default_factory=list)
    control_host: str = "127.0.0.1"
    control_port: int | None = None
    duration_s: float | None = None
    # One keyframe a second: OBS (or a viewer) joining at any moment shows a picture within 1 s.
    keyframe_seconds: float = 1.0
    #: Where sessions come from instead of a node over gRPC (e.g. an in-process pipeline); they
    #: must produce `spec`'s size and frame rate (give one). With it, `target` is not used.
    open_source: LinkOpener | None = None


class AvatarObs:
    """Runs until `duration_s` passes, `stop()` is called, or something fatal happens."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        spec = config.spec
        self.format = FeedFormat(spec.width, spec.height, spec.fps, CLOCK_RATE)
        self.pictures = SentPictures()
        self.timeline: LiveTimeline | None = None
        self.publisher: StreamPublisher | None = None
        self.obs: ObsLink | None = None
        self.watchdog: FeedWatchdog | None = None
        self.control: ControlServer | None = None
        self.capture: AudioCapture | None = None
        self._mic_started = False
        self.last_turn: dict[str, Any] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = time.monotonic()
        self._warned: dict[str, float] = {}

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        config = self.config
        with contextlib.ExitStack() as resources:
            if config.setup_only:
                await self._setup_obs()
                assert self.obs is not None
                await self.obs.aclose()
                return
            resources.enter_context(publishing_lock(config.destination))
            node = None
            try:
                if config.obs is not None:
                    await self._setup_obs()
                if config.mic is not None:  # a wrong device fails now, before anything starts
                    try:
                        self.capture = await asyncio.to_thread(open_capture, config.mic)
                    except OSError as error:
                        raise SettingsError(str(error)) from None
                if config.control_port is not None:
                    self.control = ControlServer(self, config.control_host, config.control_port)
                    try:
                        await self.control.start()
                    except ControlError as error:
                        raise SettingsError(str(error)) from None
                    log.info(
                        "control: http://%s:%d (POST /say, /speak, /interrupt, /behaviour; GET /status)",
                        config.control_host,
                        self.control.port,
                    )
                if config.open_source is not None:
                    if config.spec.fps <= 0:
                        raise SetupError("a stream from open_source needs spec.fps: the rate its frames come at")
                    await self._stream(config.open_source, "the avatar source")
                else:
                    target, credentials = config.target, config.credentials
                    if target is None:
                        node = await asyncio.to_thread(start_local_node, config.spec.engine)
                        target, credentials = node.target, None
                    describe = f"the node at {target}" if config.target else "the local node"
                    await self._resolve_fps(target, credentials)
                    await self._stream(node_opener(target, config.token, self._session_spec(), credentials), describe)
            finally:
                await self._shutdown(node)

    async def _resolve_fps(self, target: str, credentials: grpc.ChannelCredentials | None) -> None:
        """Fix the stream's frame rate before it starts: as asked, or the engine's own."""
        config = self.config
        if config.spec.fps > 0:
            return
        try:
            config.spec = await resolve_fps(target, config.token, config.spec, credentials)
        except AvatarError as error:
            if error.code in FATAL_CODES:
                raise
            config.spec = dataclasses.replace(config.spec, fps=FALLBACK_FPS)
            log.warning(
                "cannot ask %s for its frame rate (%s); streaming at %g fps (pass --fps to choose)",
                target, error, FALLBACK_FPS,
            )
        self.format = dataclasses.replace(self.format, fps=config.spec.fps)

    def _keyframe_interval(self) -> int:
        return max(1, round(self.config.spec.fps * self.config.keyframe_seconds))

    def _session_spec(self) -> SessionSpec:
        """What each node session is asked for: the stream's rate, its keyframes, H.264 at its clock."""
        return dataclasses.replace(
            self.config.spec, keyframe_interval=self._keyframe_interval(), audio_sample_rate=CLOCK_RATE, video="h264"
        )

    async def _setup_obs(self) -> None:
        config = self.config
        assert config.obs is not None and config.source is not None
        self.obs = ObsLink(
            config.obs, config.source, on_action=None if config.setup_only else self._obs_action
        )
        try:
            result = await self.obs.connect()
        except ObsError as error:
            raise SetupError(str(error)) from None
        log.info("%s", result.describe(config.source.name))
        if result.buttons:
            log.info(
                "OBS: host triggers are the hidden scene items %s (bind their 'Show' hotkeys in Settings > Hotkeys)",
                ", ".join(repr(f"{config.source.name}: {a}") for a in result.buttons.values()),
            )

    async def _stream(self, open_source: LinkOpener, describe_source: str) -> None:
        config = self.config
        still = still_from_photo(config.spec.photo, self.format.width, self.format.height)
        self.timeline = LiveTimeline(
            open_source,
            self.format,
            IdleFrames(self.format, still, self._keyframe_interval()),
            describe_node=describe_source,
            on_turn=self._on_turn,
            on_notice=self._on_notice,
        )
        loop = asyncio.get_running_loop()

        def connected(count: int) -> None:  # on the publisher thread
            loop.call_soon_threadsafe(self._on_publisher_connected, count)

        self.publisher = StreamPublisher(
            config.destination, self.format, pictures=self.pictures, on_connected=connected
        )
        self.publisher.start()
        log.info(
            "publishing %s: %dx%d at %g fps, a keyframe every %.1f s",
            config.destination.describe(),
            self.format.width,
            self.format.height,
            self.format.fps,
            config.keyframe_seconds,
        )
        pump = asyncio.create_task(self._pump(), name="avatar-obs-pump")
        self._tasks.append(pump)
        if self.obs is not None and config.repair in ("both", "watchdog") and config.watchdog_interval_s > 0:
            self.watchdog = FeedWatchdog(
                self.obs.look,
                self.obs.reapply,
                self.pictures,
                interval_s=config.watchdog_interval_s,
                window_s=3 * config.watchdog_interval_s,
            )
            self._tasks.append(asyncio.create_task(self.watchdog.run(), name="avatar-obs-watchdog"))
        if config.say or config.speak:
            self._tasks.append(asyncio.create_task(self._say_at_start(), name="avatar-obs-say"))
        if self.capture is not None:
            self._mic_started = True
            driver = MicrophoneDriver(self.capture, self.timeline, config.gate, on_error=self._warn_once)
            log.info("listening to the %s", self.capture.source.describe())
            self._tasks.append(asyncio.create_task(driver.run(), name="avatar-obs-mic"))
        stopper = asyncio.create_task(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {stopper, *self._tasks}
        timeout = config.duration_s
        try:
            while True:
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done or stopper in done:
                    return
                for task in done:
                    waiting.discard(task)
                    error = task.exception()
                    if error is not None:
                        raise error
                    if task is pump:
                        return
                if timeout is not None:
                    timeout = max(0.0, config.duration_s - (time.monotonic() - self._started))  # type: ignore[operator]
        finally:
            stopper.cancel()

    async def _pump(self) -> None:
        assert self.timeline is not None and self.publisher is not None
        async for frame in self.timeline.frames():
            self.publisher.send(frame)
            if self.publisher.failure is not None:
                raise self.publisher.failure

    async def _say_at_start(self) -> None:
        """--say and --speak, once the avatar is live (they wait for the node if it is not)."""
        assert self.timeline is not None
        speech = [await asyncio.to_thread(read_audio_file, path) for path in self.config.speak]
        await self.timeline.connected_event.wait()
        try:
            for text in self.config.say:
                await self.timeline.say(text)
            for samples, rate in speech:
                await self.speak_samples(samples, rate)
        except (NodeUnavailable, ControlError) as error:
            log.warning("could not say it: %s", error)

    def _on_publisher_connected(self, count: int) -> None:
        if count > 1:
            log.warning("publishing again to %s (connection %d)", self.config.destination.describe(), count)
            if self.obs is not None and self.config.repair in ("both", "reconnect"):
                self._tasks.append(asyncio.create_task(self._reopen_in_obs()))

    async def _reopen_in_obs(self) -> None:
        """After the RTMP server came back, OBS may have given up on it: make it open the stream again."""
        assert self.obs is not None
        await asyncio.sleep(0.5)  # let the relay register the stream first
        try:
            await self.obs.reapply()
            log.warning("OBS: re-applied the source settings so it reopens the stream")
        except ObsError as error:
            log.warning("OBS: could not re-apply the source settings: %s", error)
        if self.watchdog is not None:
            self.watchdog.restart_grace()

    async def _shutdown(self, node: Any) -> None:
        """Release everything, in order. Each step runs even if an earlier one failed or this
        task is cancelled meanwhile; a cancellation is passed on once all are done."""
        cancelled = False

        async def stop_tasks() -> None:
            nonlocal cancelled
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                try:
                    await asyncio.shield(task)  # a cancel of this wait must not abandon the rest
                except asyncio.CancelledError:
                    cancelled = cancelled or not task.cancelled()
                except Exception:
                    pass

        async def close_control() -> None:
            if self.control is not None:
                await self.control.close()

        async def close_capture() -> None:
            if self.capture is not None and not self._mic_started:
                self.capture.close()  # opened, never read: nobody else will close it

        async def close_publisher() -> None:
            if self.publisher is not None:
                await _in_thread_even_if_cancelled(self.publisher.close)
                stats = self.publisher.stats
                log.info("stopped: %d frames published, %d dropped", stats.frames_sent, stats.frames_dropped)

        async def close_obs() -> None:
            if self.obs is not None:
                await self.obs.aclose()

        async def stop_node() -> None:
            if node is not None:
                await _in_thread_even_if_cancelled(node.stop)

        for step in (stop_tasks, close_control, close_capture, close_publisher, close_obs, stop_node):
            try:
                await step()
            except asyncio.CancelledError:
                cancelled = True
            except Exception as error:  # keep releasing the rest
                log.debug("shutdown step %s failed: %s", step.__name__, error)
        if cancelled:
            raise asyncio.CancelledError

    # ------------------------------------------------------------------ events from the node

    def _on_turn(self, event: FeedTurn) -> None:
        if event.kind == "started":
            log.info("turn started%s", f" ({event.turn_id})" if event.turn_id else "")
        else:
            how = f"interrupted after {event.played_ms} ms" if event.interrupted else f"{event.played_ms} ms"
            log.info("turn finished (%s)", how)
        self.last_turn = {
            "kind": event.kind,
            "interrupted": event.interrupted,
            "played_ms": event.played_ms,
        }

    def _on_notice(self, notice: FeedNotice) -> None:
        log.warning("the node says: %s", notice.message)

    def _warn_once(self, message: str, every_s: float = 10.0) -> None:
        now = time.monotonic()
        if now - self._warned.get(message, -1e9) >= every_s:
            self._warned[message] = now
            log.warning("%s", message)

    # ------------------------------------------------------------------ controls (HTTP, OBS triggers)

    def _timeline(self) -> LiveTimeline:
        if self.timeline is None:
            raise NodeUnavailable("the stream is still starting")
        return self.timeline

    async def say(self, text: str) -> None:
        await self._control(self._timeline().say(text))

    async def speak(self, audio_file: bytes) -> float:
        with tempfile.NamedTemporaryFile(suffix=".audio") as handle:
            handle.write(audio_file)
            handle.flush()
            try:
                samples, rate = await asyncio.to_thread(read_audio_file, handle.name)
            except (ValueError, OSError) as error:
                raise ControlError(f"cannot read that audio: {error}") from None
        if samples.size == 0:
            raise ControlError("that audio file holds no audio")
        await self.speak_samples(samples, rate)
        return float(samples.size / rate)

    async def speak_samples(self, samples: np.ndarray, rate: int) -> None:
        await self._control(self._timeline().send_audio(samples, rate, end_of_turn=True))

    async def interrupt(self) -> None:
        await self._control(self._timeline().interrupt())

    async def behaviour(self, name: str) -> None:
        await self._control(self._timeline().behaviour(name))

    async def _control(self, call: Any) -> None:
        try:
            await call
        except NodeUnavailable as error:
            raise ControlError(str(error), 503) from None

    async def _obs_action(self, payload: dict[str, Any]) -> None:
        action = payload.get("action")
        log.info("OBS trigger: %s", action)
        if action == "interrupt":
            await self.interrupt()
        elif action == "behaviour":
            await self.behaviour(str(payload.get("name", "")))
        elif action == "say":
            await self.say(str(payload.get("text", "")))
        else:
            log.warning("OBS trigger with an unknown action %r (say, interrupt or behaviour)", action)

    def status(self) -> dict[str, Any]:
        timeline, publisher, watchdog = self.timeline, self.publisher, self.watchdog
        return {
            "uptime_s": round(time.monotonic() - self._started, 1),
            "node_connected": bool(timeline and timeline.stats.connected),
            "node_sessions": timeline.stats.sessions if timeline else 0,
            "outages": timeline.stats.outages if timeline else 0,
            "idle_frames": timeline.stats.idle_frames if timeline else 0,
            "frames_sent": publisher.stats.frames_sent if publisher else 0,
            "frames_dropped": publisher.stats.frames_dropped if publisher else 0,
            "stream_connected": bool(publisher and publisher.stats.connected),
            "stream_interruptions": publisher.stats.interruptions if publisher else 0,
            "obs_connected": bool(self.obs and self.obs.connected),
            "obs_health": watchdog.stats.last_verdict if watchdog else "not watched",
            "obs_repairs": (watchdog.stats.repairs if watchdog else 0),
            "obs_reapplies": self.obs.reapplies if self.obs else 0,
            "last_turn": self.last_turn,
        }


async def _in_thread_even_if_cancelled(fn: Callable[[], None]) -> None:
    """Run a blocking cleanup to completion; a cancellation waits for it, then propagates."""
    work = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await work
        raise


def start_local_node(engine: str) -> Any:
    try:
        from avatar_node.server import NodeConfig, start_background_node
    except ImportError as error:
        raise SetupError(
            f"no --target given and no in-process node available ({error}); pass --target HOST:PORT"
        ) from None
    log.info("starting a local node (pass --target HOST:PORT to use a running one)")
    return start_background_node(
        NodeConfig(host="127.0.0.1", port=0, engines=[engine or "portrait"], max_sessions=1, auth_token=None)
    )


@contextlib.contextmanager
def publishing_lock(destination: Destination) -> Iterator[None]:
    """One `avatar obs` per UDP destination: two would interleave into garbage in OBS."""
    if destination.connected or os.name != "posix":
        yield
        return
    import fcntl

    name = "".join(c if c.isalnum() else "-" for c in destination.url.split("?")[0])
    path = Path(tempfile.gettempdir()) / f"avatar-obs-{name}.lock"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip()
            raise SettingsError(
                f"another `avatar obs`{f' (pid {owner})' if owner else ''} already publishes to "
                f"{destination.url.split('?')[0]}: stop it, or pick another --udp port"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()
