"""Rendering on an avatar node over gRPC, as a renderer that outlives the node's sessions.

Speech, turn ends and interrupts go to the node in the order they were given (one sender
task), an interrupt never waits behind queued speech, and a storm of interrupts costs one
message. Frames come back through the SDK's `frames()` (H.264 decoded, each picture with
its exact audio). If the session or the node goes away, the last idle picture keeps
flowing with silence at the frame rate while a new session is opened (with backoff), and
every turn that was on the node is reported finished (interrupted) with what was played:
the room never goes dark and the agent never waits for a playback that cannot come.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
from avatar_client import AsyncAvatarClient, AvatarError, MediaFrame
from avatar_client import AvatarSession as NodeSession
from avatar_client.events import Event, Notice, TurnEvent, TurnKind

from .errors import AvatarLiveKitError, check_video_format
from .frames import RenderedFrame, RenderItem, TurnFinished, TurnStarted, VideoFormat

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)


@dataclass
class _Speech:
    turn_id: str
    pcm: bytes = field(repr=False)
    sample_rate: int
    channels: int


@dataclass
class _EndTurn:
    turn_id: str


class _Interrupt:
    pass


_Command = _Speech | _EndTurn | _Interrupt


@dataclass
class _Turn:
    ended: bool = False  # end_turn was given
    on_node: bool = False  # some of it reached the current session
    started: bool = False
    start_pts: int = 0
    played_samples: int = 0  # counted from frames, for a session that is lost


class NodeRenderer:
    def __init__(
        self,
        client: AsyncAvatarClient,
        *,
        image: bytes = b"",
        avatar_id: str = "",
        engine: str = "",
        width: int = 848,
        height: int = 480,
        fps: float = 0.0,
        sample_rate: int = 48000,
        prompt: str = "",
        owns_client: bool = False,
    ) -> None:
        check_video_format(width, height, fps)
        if not image and not avatar_id:
            raise AvatarLiveKitError("give the avatar a photo (image bytes) or the avatar_id of one "
                                     "prepared on the node")
        self.client = client
        self.format = VideoFormat(width, height, fps, sample_rate)
        self._image, self._avatar_id, self._engine, self._prompt = image, avatar_id, engine, prompt
        self._owns_client = owns_client
        self._commands: deque[_Command] = deque()
        self._wake = asyncio.Event()
        self._session: NodeSession | None = None
        self._session_ready = asyncio.Event()
        self._turns: dict[str, _Turn] = {}
        self._events: deque[RenderItem] = deque()
        self._idle_image: np.ndarray | None = None
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        #: Sessions opened in all (the first, then one per reconnect).
        self.sessions_opened = 0

    async def start(self) -> None:
        """Open the first session; raises AvatarLiveKitError with the node's reason if it refuses."""
        try:
            await self._open()
        except AvatarError as exc:
            raise AvatarLiveKitError(f"the avatar node at {self.client.target} refused the session: {exc}") from None
        self._sender = asyncio.create_task(self._send_commands(), name="avatar-node-sender")

    async def _open(self) -> None:
        fmt = self.format
        kwargs = dict(engine=self._engine, width=fmt.width, height=fmt.height, fps=fmt.fps, mode="live",
                      prompt=self._prompt, audio_sample_rate=fmt.sample_rate)
        if self._image:
            session = await self.client.start_session(image=self._image, **kwargs)  # type: ignore[arg-type]
        else:
            session = await self.client.start_session(avatar_id=self._avatar_id, **kwargs)  # type: ignore[arg-type]
        if fmt.fps == 0:  # asked for the engine's own rate: publish at it, and keep it on reconnects
            self.format = VideoFormat(fmt.width, fmt.height, session.ready.fps, fmt.sample_rate)
        self._session = session
        self.sessions_opened += 1
        self._session_ready.set()

    # ------------------------------------------------------------------ input

    async def push_speech(self, pcm: bytes, sample_rate: int, channels: int, turn_id: str) -> None:
        self._turns.setdefault(turn_id, _Turn())
        self._queue(_Speech(turn_id, pcm, sample_rate, channels))

    async def end_turn(self, turn_id: str) -> None:
        turn = self._turns.get(turn_id)
        if turn is None:
            return
        turn.ended = True
        if not turn.on_node and self._session is None:
            self._lost(turn_id)  # none of it can reach a node now
            return
        self._queue(_EndTurn(turn_id))

    def interrupt(self) -> None:
        # Speech not sent yet is dropped here; what the node has, it drops itself.
        self._commands = deque(c for c in self._commands if isinstance(c, _Interrupt))
        if not self._commands:
            self._queue(_Interrupt())
        for turn_id, turn in list(self._turns.items()):
            if not turn.on_node:  # never reached the node: finished here
                self._lost(turn_id, interrupted=True)

    def _queue(self, command: _Command) -> None:
        self._commands.append(command)
        self._wake.set()

    async def _send_commands(self) -> None:
        while True:
            while not self._commands:
                self._wake.clear()
                await self._wake.wait()
            await self._session_ready.wait()
            session = self._session
            assert session is not None  # ready is cleared whenever the session goes
            command = self._commands.popleft()
            try:
                if isinstance(command, _Speech):
                    turn = self._turns.get(command.turn_id)
                    if turn is None:
                        continue
                    turn.on_node = True
                    await session.send_audio(command.pcm, command.sample_rate, turn_id=command.turn_id,
                                             channels=command.channels)
                elif isinstance(command, _EndTurn):
                    await session.end_turn(command.turn_id)
                else:
                    await session.interrupt()
            except AvatarError as exc:
                log.debug("avatar node: %s not sent (%s)", type(command).__name__, exc)

    # ------------------------------------------------------------------ output

    async def items(self) -> AsyncIterator[RenderItem]:
        attempt = 0
        while not self._closed:
            session = self._session
            if session is not None:
                try:
                    async for media in session.frames(on_event=self._on_event):
                        while self._events:
                            yield self._events.popleft()
                        yield self._frame(media)
                        attempt = 0
                    reason = session.ended.reason if session.ended else "closed"
                    log.warning("avatar node session ended (%s); opening another", reason)
                except AvatarError as exc:
                    log.warning("avatar node session failed (%s); opening another", exc)
                finally:
                    await session.aclose()
                    self._session = None
                    self._session_ready.clear()
                while self._events:
                    yield self._events.popleft()
                for turn_id in list(self._turns):  # whatever was on that node is gone
                    self._lost(turn_id, interrupted=True, only_on_node=True)
                while self._events:
                    yield self._events.popleft()
            if self._closed:
                return
            async for item in self._reconnect(attempt):
                yield item
            attempt += 1

    async def _reconnect(self, attempt: int) -> AsyncIterator[RenderItem]:
        """Open a new session; meanwhile the last idle picture with silence, at the frame rate."""
        delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
        loop = asyncio.get_running_loop()
        opening = asyncio.ensure_future(self._open_after(delay))
        try:
            period = 1 / self.format.fps
            next_at = loop.time()
            silence = np.zeros(round(self.format.frame_samples), np.int16)
            while not opening.done():
                if self._idle_image is not None:
                    while self._events:
                        yield self._events.popleft()
                    yield RenderedFrame(self._idle_image, silence, speaking=False)
                next_at += period
                await asyncio.wait({opening}, timeout=max(0.0, next_at - loop.time()))
            if opening.exception() is not None:
                log.warning("avatar node %s: %s", self.client.target, opening.exception())
        finally:
            if not opening.done():
                opening.cancel()
                await asyncio.gather(opening, return_exceptions=True)

    async def _open_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._open()

    def _frame(self, media: MediaFrame) -> RenderedFrame:
        image, speaking = media.video.image, media.video.speaking
        if not speaking:
            self._idle_image = image
        else:
            for turn in self._turns.values():
                if turn.started:
                    turn.played_samples += len(media.audio)
                    break
        return RenderedFrame(image, media.audio, speaking)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TurnEvent):
            turn = self._turns.get(event.turn_id)
            if turn is None:
                return
            if event.kind is TurnKind.STARTED:
                turn.started, turn.start_pts = True, event.pts
                self._events.append(TurnStarted(event.turn_id))
            elif event.kind is TurnKind.FINISHED:
                del self._turns[event.turn_id]
                rate = self.format.sample_rate
                played = (event.pts - turn.start_pts) / rate if turn.started else event.played_ms / 1000
                self._events.append(TurnFinished(event.turn_id, played, event.interrupted))
        elif isinstance(event, Notice):
            log.info("avatar node: %s", event.message)

    def _lost(self, turn_id: str, interrupted: bool = True, only_on_node: bool = False) -> None:
        """Finish a turn here: it cannot (or can no longer) be played by a node."""
        turn = self._turns.get(turn_id)
        if turn is None or (only_on_node and not turn.on_node):
            return
        if only_on_node and not turn.ended:
            # The agent is still sending it: what comes next goes to the next session as a new
            # turn under the same id; report this part when the turn ends.
            turn.on_node = False
            turn.played_samples = 0
            turn.started = False
            return
        del self._turns[turn_id]
        self._events.append(TurnFinished(turn_id, turn.played_samples / self.format.sample_rate, interrupted))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._sender is not None:
                self._sender.cancel()
                await asyncio.gather(self._sender, return_exceptions=True)
            if self._session is not None:
                await self._session.aclose()
        finally:
            if self._owns_client:
                await self.client.aclose()
