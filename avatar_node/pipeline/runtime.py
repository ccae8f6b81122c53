"""The avatar runtime: engines, threads, prepared avatars, admission and drain, for any transport.

    async with AvatarRuntime(["portrait"]) as runtime:
        stream = await runtime.open_stream(photo_bytes, SessionOptions(live=False))
        await stream.say("Hello!")
        await stream.end()
        async for item in stream:
            ...  # AVFrame, TurnEvent, Notice, Stats, Ended
        await stream.aclose()

The gRPC server is one adapter of it; the LiveKit plugin, the virtual camera and the
web page use it in process.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from avatar_node.engines import registry
from avatar_node.engines.base import Engine, Identity

from . import errors
from .admission import LOAD_TARGET, MIN_MEGAPIXELS, Admission, Demand
from .identities import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, IdentityCache
from .items import EndReason
from .options import SessionOptions, resolve_options
from .scheduler import StepScheduler
from .status import RuntimeStatus, can_take_live, runtime_status
from .stream import AvatarStream
from .threads import WorkPools, limit_numeric_threads, tune_interpreter
from .totals import FrameTotals

if TYPE_CHECKING:
    from avatar_node.speech.tts import SpeechSynthesizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedAvatar:
    identity: Identity
    cached: bool
    prepare_ms: float


class AvatarRuntime:
    def __init__(
        self,
        engines: Sequence[Engine | str] = (registry.DEFAULT_ENGINE,),
        *,
        max_sessions: int = 4,
        text_to_speech: bool = True,
        cores: int | None = None,
        identity_cache_items: int = DEFAULT_MAX_ITEMS,
        identity_cache_bytes: int = DEFAULT_MAX_BYTES,
        weights_dir: str | None = None,
        vae: str | None = None,
        live_load_target: float = LOAD_TARGET,
        hardware_encoder: bool = False,
    ) -> None:
        if not engines:
            raise ValueError("give at least one engine")
        limit_numeric_threads()
        tune_interpreter()
        self.pools = WorkPools(cores)
        self._engines: dict[str, Engine] = {}
        for item in engines:
            engine = registry.create(item, weights_dir=weights_dir, vae=vae) if isinstance(item, str) else item
            if engine.info.name in self._engines:
                raise ValueError(f"engine {engine.info.name!r} given twice")
            self._engines[engine.info.name] = engine
        self._schedulers = {name: StepScheduler(e, self.pools) for name, e in self._engines.items()}
        self.identities = IdentityCache(identity_cache_items, identity_cache_bytes)
        self.admission = Admission(max_sessions, self.pools.cores, live_load_target)
        self._want_tts = text_to_speech
        self.hardware_encoder = hardware_encoder  # NVENC where a GPU offers it; libx264 otherwise
        self._synth: SpeechSynthesizer | None = None
        self.streams: set[AvatarStream] = set()
        self._closing: set[asyncio.Future[None]] = set()
        self._frame_cost_ms: dict[str, float] = {}
        self._listeners: list[Callable[[], None]] = []
        self.draining = False
        self.ended: Counter[str] = Counter()  # sessions ended, by reason (the transports count errors)
        self.started = 0
        self.refused: Counter[str] = Counter()  # sessions refused before they opened, by reason
        self.totals = FrameTotals()  # closed streams' frame figures

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self.pools.start_threads()
        for scheduler in self._schedulers.values():
            scheduler.start()
        if self._want_tts:
            try:
                from avatar_node.speech.tts import SpeechSynthesizer

                self._synth = SpeechSynthesizer()
            except Exception as exc:  # the node still serves speech audio without a voice
                log.warning("text-to-speech unavailable: %s", exc)

    async def aclose(self) -> None:
        for stream in list(self.streams):
            self._close_soon(stream, EndReason.NODE_SHUTDOWN)
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self.identities.aclose()
        for scheduler in self._schedulers.values():
            await scheduler.aclose()
        self.pools.shutdown()
        if self._synth is not None:
            self._synth.close()
        for engine in self._engines.values():
            engine.close()

    async def __aenter__(self) -> AvatarRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called whenever readiness may have changed (a session started or ended, a drain began)."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in self._listeners:
            callback()

    # ------------------------------------------------------------------ engines and avatars

    @property
    def engines(self) -> list[Engine]:
        return list(self._engines.values())

    def engine(self, name: str = "") -> Engine:
        if not name:
            return next(iter(self._engines.values()))
        try:
            return self._engines[name]
        except KeyError:
            raise errors.not_found(
                "UNKNOWN_ENGINE",
                f"engine {name!r} is not served by this node; it serves {', '.join(map(repr, self._engines))}",
            ) from None

    def voices(self) -> list[str]:
        return self._synth.voices() if self._synth is not None else []

    async def prepare(self, image: bytes, engine: str = "") -> PreparedAvatar:
        """Analyse a photo once (cached by content); later streams start from its id."""
        chosen = self.engine(engine)
        if not image:
            raise errors.invalid("BAD_IMAGE", "the image is empty; send the bytes of a photo with a face")
        start = time.perf_counter()
        identity, cached = await self.identities.prepare(image, chosen, self._run_prepare)
        return PreparedAvatar(identity, cached, (time.perf_counter() - start) * 1000)

    async def _run_prepare(self, fn: Callable[[bytes], Identity], image: bytes) -> Identity:
        return await self.pools.run(self.pools.prepare, fn, image)

    def identity(self, avatar_id: str) -> Identity:
        identity = self.identities.get(avatar_id)
        if identity is None:
            raise errors.not_found(
                "UNKNOWN_AVATAR",
                f"unknown avatar_id {avatar_id[:80]!r}; it may have been evicted: prepare the photo again "
                "(PrepareAvatar) or send the image itself",
            )
        return identity

    # ------------------------------------------------------------------ streams

    def _lagging(self) -> bool:
        now = asyncio.get_running_loop().time()
        return any(s.falling_behind_until > now for s in self.streams if s.live)

    def frame_costs(self) -> dict[str, float]:
        """CPU ms per frame per megapixel (engine + encoder) by engine, from the streams running or last seen."""
        by_engine: dict[str, list[float]] = {}
        for stream in self.streams:
            c = stream.counters
            if len(c.engine_cpu_ms) >= 10:
                encode = statistics.median(c.encode_cpu_ms) if c.encode_cpu_ms else 0.0
                megapixels = max(stream.options.width * stream.options.height / 1e6, MIN_MEGAPIXELS)
                cost = (statistics.median(c.engine_cpu_ms) + encode) / megapixels
                by_engine.setdefault(stream.engine.info.name, []).append(cost)
        for name, costs in by_engine.items():
            self._frame_cost_ms[name] = max(costs)
        return dict(self._frame_cost_ms)

    async def open_stream(
        self, avatar: bytes | str | Identity, options: SessionOptions | None = None
    ) -> AvatarStream:
        """Start a stream for a photo (bytes), a prepared avatar id, or an Identity."""
        options = options or SessionOptions()
        engine = self.engine(options.engine)
        resolve_voice = self._synth.resolve_voice if self._synth is not None else None
        options = resolve_options(options, engine.info, resolve_voice)
        demand = Demand(engine.info.name, options.live, options.fps, options.width * options.height / 1e6)
        try:
            if self.draining:
                raise errors.unavailable("NODE_DRAINING", "the node is shutting down; connect to another node")
            lease = self.admission.acquire(demand, self.frame_costs(), engine.realtime_capacity(),
                                           self._lagging() if options.live else False)
        except errors.PipelineError as exc:
            self.refused[exc.reason] += 1
            raise
        self._changed()
        stream: AvatarStream | None = None
        try:
            identity = await self._identity_for(avatar, engine)

            def closed(s: AvatarStream) -> None:
                self.admission.release(lease)
                self.streams.discard(s)
                self.totals.add(s.counters.figures())  # together with the discard: totals stay monotonic
                self.ended[(s.end_reason or EndReason.CLIENT_CANCELLED).value] += 1
                self._changed()

            stream = AvatarStream(
                engine=engine, scheduler=self._schedulers[engine.info.name], pools=self.pools,
                identity=identity, options=options, synthesize=self._synth.synthesize if self._synth else None,
                resolve_voice=resolve_voice, on_closed=closed, hardware_encoder=self.hardware_encoder,
            )
            self.streams.add(stream)
            await stream.start()
            self.started += 1
            if self.draining:  # the node began to shut down while this stream was opening
                stream.begin_drain()
            return stream
        except BaseException:
            if stream is not None:
                self._close_soon(stream, EndReason.CLIENT_CANCELLED)
            else:
                self.admission.release(lease)
                self._changed()
            raise

    async def _identity_for(self, avatar: bytes | str | Identity, engine: Engine) -> Identity:
        if isinstance(avatar, Identity):
            identity = avatar
        elif isinstance(avatar, str):
            identity = self.identity(avatar)
        else:
            identity = (await self.prepare(avatar, engine.info.name)).identity
        if identity.engine != engine.info.name:
            raise errors.invalid(
                "WRONG_ENGINE", f"avatar {identity.avatar_id!r} was prepared for engine {identity.engine!r}, "
                f"not {engine.info.name!r}; prepare the photo for this engine",
            )
        return identity

    def _close_soon(self, stream: AvatarStream, reason: EndReason) -> None:
        """Close a stream in a task of its own, which the runtime keeps until it is done."""
        task = asyncio.ensure_future(stream.aclose(reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------ status and drain

    def status(self) -> RuntimeStatus:
        return runtime_status(self.engines, self.admission, self.frame_costs(), self.draining, self.ready)

    @property
    def ready(self) -> bool:
        """Whether a new live session on the default engine would be admitted now."""
        if self.draining:
            return False
        engine = self.engines[0]
        running = sum(1 for s in self.streams if s.live and s.engine is engine)
        return can_take_live(engine, self.admission, dict(self._frame_cost_ms), running)

    async def drain(self, grace_s: float) -> None:
        """Refuse new sessions; running ones end after their queued speech, or at the grace period's end."""
        self.draining = True
        self._changed()
        for stream in list(self.streams):
            stream.begin_drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.admission.active and loop.time() < deadline:  # streams open or still opening
            await asyncio.sleep(0.05)
        for stream in list(self.streams):
            stream.force_end()
        # Consumers see the end and close their streams; give them a moment, then close the rest.
        deadline = loop.time() + 2.0
        while self.admission.active and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for stream in list(self.streams):
            self._close_soon(stream, EndReason.NODE_SHUTDOWN)
        await asyncio.gather(*self._closing, return_exceptions=True)

