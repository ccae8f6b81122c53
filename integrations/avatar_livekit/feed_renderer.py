"""The avatar as a renderer for the room: the SDK's live feed, on a node over gRPC or in this process.

The feed keeps one timeline across node sessions: it pairs each picture with its exact audio,
reopens a lost session with back-off and holds the last picture with silence meanwhile, so
the room never goes dark. Here: speech, turn ends and interrupts go to the feed in the order
given (one sender task); an interrupt drops the speech not sent yet, and a storm of them costs
one message. Every turn that was on a lost session is reported finished (interrupted) with
what was played, so the agent never waits for a playback that cannot come.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from avatar_client import AvatarError, FeedFrame, FeedHealth, FeedNotice, FeedStatus, FeedTurn, LiveFeed, SessionSpec
from avatar_client.live_feed import FeedUnavailable

from .errors import AvatarLiveKitError, check_video_format
from .frames import RenderedFrame, RenderItem, TurnFinished, TurnStarted, VideoFormat

if TYPE_CHECKING:
    from avatar_node.pipeline import AvatarRuntime

log = logging.getLogger(__name__)

#: How often the sender looks for a session again while the node is away.
RECONNECT_POLL_S = 0.05


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


class FeedRenderer:
    """Speech in, RGB frames with their audio out at 1x, over one `LiveFeed` (see `frames.Renderer`)."""

    def __init__(
        self, feed: LiveFeed, *, runtime: AvatarRuntime | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        fmt = feed.format
        self.feed = feed
        #: The in-process runtime rendering it (None on a node).
        self.runtime = runtime
        self.format = VideoFormat(fmt.width, fmt.height, fmt.fps, fmt.clock_rate)
        self._on_close = on_close
        self._commands: deque[_Command] = deque()
        self._wake = asyncio.Event()
        self._turns: dict[str, _Turn] = {}
        self._events: deque[RenderItem] = deque()
        self._closed = False
        #: Sessions opened in all (the first, then one per reconnect).
        self.sessions_opened = 0
        #: The current session's latest counters (speech that arrived late, frames dropped).
        self.health: FeedHealth | None = None
        self._sender = asyncio.create_task(self._send_commands(), name="avatar-renderer-sender")

    @classmethod
    async def open_node(
        cls, target: str, token: str | None, credentials: grpc.ChannelCredentials | None, spec: SessionSpec
    ) -> FeedRenderer:
        """Render on the node at `target`; AvatarLiveKitError says why its first session was refused."""
        check_video_format(spec.width, spec.height, spec.fps)
        try:
            feed = await LiveFeed.open_node(target, token, credentials, spec)
        except AvatarError as exc:
            raise AvatarLiveKitError(f"the avatar node at {target} refused the session: {exc}") from None
        except TimeoutError:
            raise AvatarLiveKitError(f"the avatar node at {target} did not answer; is it running?") from None
        return cls(feed)

    @classmethod
    async def open_runtime(cls, spec: SessionSpec, runtime: AvatarRuntime | None = None) -> FeedRenderer:
        """Render in this process, on `runtime` or on one made here (and closed with the renderer)."""
        from avatar_node.pipeline import AvatarRuntime

        check_video_format(spec.width, spec.height, spec.fps)
        owned = None
        if runtime is None:
            owned = runtime = AvatarRuntime([spec.engine or "portrait"], max_sessions=1, text_to_speech=False)
            await runtime.start()
        try:
            feed = await LiveFeed.open_runtime(runtime, spec)
        except BaseException as exc:
            if owned is not None:
                await owned.aclose()
            if isinstance(exc, AvatarError):
                raise AvatarLiveKitError(exc.message) from None
            raise
        return cls(feed, runtime=runtime, on_close=owned.aclose if owned is not None else None)

    # ------------------------------------------------------------------ input

    async def push_speech(self, pcm: bytes, sample_rate: int, channels: int, turn_id: str) -> None:
        self._turns.setdefault(turn_id, _Turn())
        self._queue(_Speech(turn_id, pcm, sample_rate, channels))

    async def end_turn(self, turn_id: str) -> None:
        turn = self._turns.get(turn_id)
        if turn is None:
            return  # interrupted meanwhile: already finished
        turn.ended = True
        if not turn.on_node and not self.feed.connected:
            self._lost(turn_id)  # none of it can reach a session now
            return
        self._queue(_EndTurn(turn_id))

    def interrupt(self) -> None:
        # Speech not sent yet is dropped here; what the session has, it drops itself.
        self._commands = deque(c for c in self._commands if isinstance(c, _Interrupt))
        if not self._commands:
            self._queue(_Interrupt())
        for turn_id, turn in list(self._turns.items()):
            if not turn.on_node:  # never reached a session: finished here
                self._lost(turn_id, interrupted=True)

    def _queue(self, command: _Command) -> None:
        self._commands.append(command)
        self._wake.set()

    async def _send_commands(self) -> None:
        while True:
            while not self._commands:
                self._wake.clear()
                await self._wake.wait()
            command = self._commands.popleft()
            try:
                if isinstance(command, _Speech):
                    turn = self._turns.get(command.turn_id)
                    if turn is None:
                        continue
                    turn.on_node = True
                    await self.feed.send_audio(command.pcm, command.sample_rate, turn_id=command.turn_id,
                                               channels=command.channels)
                elif isinstance(command, _EndTurn):
                    await self.feed.end_turn(command.turn_id)
                else:
                    await self.feed.interrupt()
            except FeedUnavailable:
                # The node is away: keep the order and send to the next session (an interrupt
                # meanwhile drops what is waiting here).
                self._commands.appendleft(command)
                while not self.feed.connected:
                    await asyncio.sleep(RECONNECT_POLL_S)
            except AvatarError as exc:
                log.debug("avatar: %s not sent (%s)", type(command).__name__, exc)

    # ------------------------------------------------------------------ output

    async def items(self) -> AsyncIterator[RenderItem]:
        async for item in self.feed:
            if isinstance(item, FeedFrame):
                if item.picture is None:
                    continue
                while self._events:
                    yield self._events.popleft()
                yield self._frame(item)
            elif isinstance(item, FeedTurn):
                self._turn_event(item)
            elif isinstance(item, FeedStatus):
                if item.connected:
                    self.sessions_opened += 1
                    if self.sessions_opened > 1:
                        log.warning("avatar: rendering again (%s)", item.detail)
                else:
                    log.warning("avatar: %s; the last picture holds while it reconnects", item.detail)
                    for turn_id in list(self._turns):  # whatever was on that session is gone
                        self._lost(turn_id, interrupted=True, only_on_node=True)
            elif isinstance(item, FeedNotice):
                log.info("avatar: %s", item.message)
            elif isinstance(item, FeedHealth):
                self.health = item
            while self._events:
                yield self._events.popleft()

    def _frame(self, frame: FeedFrame) -> RenderedFrame:
        assert frame.picture is not None
        if frame.speaking:
            for turn in self._turns.values():
                if turn.started:
                    turn.played_samples += len(frame.audio)
                    break
        return RenderedFrame(frame.picture, frame.audio, frame.speaking)

    def _turn_event(self, event: FeedTurn) -> None:
        turn = self._turns.get(event.turn_id)
        if turn is None:
            return
        if event.kind == "started":
            turn.started, turn.start_pts = True, event.pts
            self._events.append(TurnStarted(event.turn_id))
        else:
            del self._turns[event.turn_id]
            rate = self.format.sample_rate
            played = (event.pts - turn.start_pts) / rate if turn.started else event.played_ms / 1000
            self._events.append(TurnFinished(event.turn_id, played, event.interrupted))

    def _lost(self, turn_id: str, interrupted: bool = True, only_on_node: bool = False) -> None:
        """Finish a turn here: it cannot (or can no longer) be played by a session."""
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
        """Stop sending, close the feed (its session), then what was made for it; safe to cancel."""
        if self._closed:
            return
        self._closed = True
        self._sender.cancel()
        try:
            await asyncio.gather(self._sender, return_exceptions=True)
            await self.feed.aclose()
        finally:
            if self._on_close is not None:
                await self._on_close()
