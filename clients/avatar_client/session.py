"""One conversation with the node: a grpc.aio stream-stream call, sending and receiving at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import grpc
import numpy as np
from avatar_proto import avatar_pb2

from .audio import Pcm, chunk_pcm, to_pcm
from .decode import H264Decoder, MediaFrame, VideoFrame
from .errors import AvatarError
from .events import (
    AudioPacket,
    Ended,
    Event,
    Notice,
    SessionReady,
    Stats,
    VideoPacket,
    event_from_proto,
)
from .pairing import AvPairer

#: Messages waiting to go out. Full means the node is not taking input as fast as we
#: produce it; senders then wait (a few seconds of 100 ms audio chunks fit).
OUTBOX_SIZE = 32
#: After `ended`, how long closing waits for the call's final status before cancelling it.
ENDED_STATUS_WAIT_S = 2.0


class AvatarSession:
    """A live session. Send speech and controls; read video and audio from `events()` or `frames()`.

    Made by `AsyncAvatarClient.start_session`; `ready` holds the format the node produces.
    The send methods may be called while another task reads events: the request stream is
    fed from a queue, so input and output flow independently. Close with `aclose()` or use
    `async with`.
    """

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        outbox: asyncio.Queue[avatar_pb2.ClientEvent | None],
        ready: SessionReady,
    ) -> None:
        self._call = call
        self._outbox = outbox
        self.ready = ready
        #: Set once the node has sent `ended`.
        self.ended: Ended | None = None
        #: The most recent statistics (the node always sends them once at the end).
        self.last_stats: Stats | None = None
        #: Notices the node sent, in order.
        self.notices: list[Notice] = []
        self._reading = False
        self._call_done = asyncio.Event()
        call.add_done_callback(self._on_call_done)

    def _on_call_done(self, _call: object) -> None:
        self._call_done.set()
        self._finish_requests()  # let grpc's request reader finish rather than wait forever

    @property
    def session_id(self) -> str:
        return self.ready.session_id

    @property
    def closed(self) -> bool:
        return self._call_done.is_set()

    # ------------------------------------------------------------------ sending

    async def send_audio(
        self,
        pcm: np.ndarray | bytes,
        sample_rate: int,
        end_of_turn: bool = False,
        turn_id: str = "",
        channels: int = 1,
    ) -> None:
        """Queue speech for the avatar to say.

        `pcm` is int16 or float32 ([-1, 1]) samples, shaped (samples,) or (samples, channels),
        or raw s16le bytes with `channels` interleaved channels. Any rate from 8 to 192 kHz:
        the node resamples. Large inputs go out in <=100 ms messages. Consecutive calls form one
        turn until one passes `end_of_turn=True` (or `end_turn()` is called).
        """
        audio = to_pcm(pcm, sample_rate, channels)
        chunks = list(chunk_pcm(audio)) or [b""]
        for i, chunk in enumerate(chunks):
            await self._send(
                avatar_pb2.ClientEvent(
                    speech_audio=avatar_pb2.SpeechAudio(
                        pcm=chunk,
                        sample_rate=audio.sample_rate,
                        channels=audio.channels,
                        end_of_turn=end_of_turn and i == len(chunks) - 1,
                        turn_id=turn_id,
                    )
                )
            )

    async def end_turn(self, turn_id: str = "") -> None:
        """Close the current speech turn (sends an empty end_of_turn chunk)."""
        await self._send(
            avatar_pb2.ClientEvent(
                speech_audio=avatar_pb2.SpeechAudio(
                    pcm=b"", sample_rate=self.ready.clock_rate, end_of_turn=True, turn_id=turn_id
                )
            )
        )

    async def say(self, text: str, voice: str = "", turn_id: str = "") -> None:
        """Have the avatar speak `text` with the node's voice (queued as one turn)."""
        await self._send(
            avatar_pb2.ClientEvent(text=avatar_pb2.SpeakText(text=text, voice=voice, turn_id=turn_id))
        )

    async def send_listen_audio(
        self, pcm: np.ndarray | bytes, sample_rate: int, channels: int = 1
    ) -> None:
        """Send the user's voice so the avatar can show it is listening (same formats as send_audio)."""
        audio: Pcm = to_pcm(pcm, sample_rate, channels)
        for chunk in chunk_pcm(audio):
            await self._send(
                avatar_pb2.ClientEvent(
                    listen_audio=avatar_pb2.ListenAudio(
                        pcm=chunk, sample_rate=audio.sample_rate, channels=audio.channels
                    )
                )
            )

    async def interrupt(self) -> None:
        """Barge in: stop speaking at the next frame and drop queued speech."""
        await self._send(
            avatar_pb2.ClientEvent(control=avatar_pb2.Control(interrupt=avatar_pb2.Interrupt()))
        )

    async def behaviour(self, name: str) -> None:
        """Trigger a short behaviour such as "nod", "smile" or "blink"."""
        await self._send(
            avatar_pb2.ClientEvent(control=avatar_pb2.Control(behaviour=avatar_pb2.Behaviour(name=name)))
        )

    async def set_prompt(self, prompt: str) -> None:
        """Change the behaviour prompt, for engines that take one."""
        await self._send(
            avatar_pb2.ClientEvent(control=avatar_pb2.Control(prompt=avatar_pb2.SetPrompt(prompt=prompt)))
        )

    async def end(self, discard_pending: bool = False) -> None:
        """Ask the node to close the session; by default queued speech is played out first.

        Keep reading events: the session is over when `Ended` arrives.
        """
        await self._send(
            avatar_pb2.ClientEvent(end=avatar_pb2.EndSession(discard_pending=discard_pending))
        )

    async def _send(self, event: avatar_pb2.ClientEvent) -> None:
        if self._call_done.is_set():
            raise await self._closed_error()
        try:
            self._outbox.put_nowait(event)
            return
        except asyncio.QueueFull:
            pass
        # The node is not keeping up: wait for room, unless the call ends meanwhile.
        put = asyncio.ensure_future(self._outbox.put(event))
        done = asyncio.ensure_future(self._call_done.wait())
        try:
            await asyncio.wait({put, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            raise await self._closed_error()

    async def _closed_error(self) -> AvatarError:
        code = await self._call.code()
        if code != grpc.StatusCode.OK:
            return AvatarError(code, await self._call.details() or code.name)
        return AvatarError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "the session has ended; start a new session to send more",
        )

    # ------------------------------------------------------------------ receiving

    async def events(self) -> AsyncIterator[Event]:
        """Yield everything the node sends, in order, until `Ended` (the last event).

        Raises AvatarError if the call fails. Only one reader at a time.
        """
        if self._reading:
            raise RuntimeError("events() or frames() is already being read for this session")
        if self.ended is not None:
            return
        self._reading = True
        clock_rate = self.ready.clock_rate
        try:
            while True:
                try:
                    message = await self._call.read()
                except grpc.aio.AioRpcError as error:
                    raise AvatarError.from_rpc_error(error) from None
                if message is grpc.aio.EOF:
                    closed = await self._closed_error()
                    if closed.code != grpc.StatusCode.FAILED_PRECONDITION:
                        raise closed
                    return  # the node closed the stream cleanly without `ended`
                event = event_from_proto(message, clock_rate)
                if event is None or isinstance(event, SessionReady):
                    continue
                if isinstance(event, Stats):
                    self.last_stats = event
                elif isinstance(event, Notice):
                    self.notices.append(event)
                elif isinstance(event, Ended):
                    self.ended = event
                    self._finish_requests()
                yield event
                if isinstance(event, Ended):
                    return
        finally:
            self._reading = False

    async def frames(self, on_event: Callable[[Event], None] | None = None) -> AsyncIterator[MediaFrame]:
        """Yield decoded frames, each with the speech audio that plays during it.

        Frames come in order; a frame waits for its audio until audio past it arrives (the
        node sends audio for every frame, so this is at most one packet). Other events are
        consumed; see `ended`, `last_stats` and `notices` for what they carried, or pass
        `on_event`, called with each of them (turn events...) as it arrives; a frame whose
        packets all came before the event has been yielded by then.
        """
        decoder = H264Decoder(self.ready.codec_config)
        rate = self.ready.clock_rate
        pairer: AvPairer[VideoFrame] = AvPairer(lambda frame: frame.pts)
        no_audio = np.zeros(0, dtype=np.int16)
        async for event in self.events():
            if isinstance(event, VideoPacket):
                pairer.add_video(decoder.decode(event))
            elif isinstance(event, AudioPacket):
                pairer.add_audio(event.pts, event.samples)
            else:
                if on_event is not None:
                    on_event(event)
                continue
            for frame, audio in pairer.ready():
                yield MediaFrame(video=frame, audio=no_audio if audio is None else audio, sample_rate=rate)
        pairer.add_video(decoder.flush())
        for frame, audio in pairer.ready(at_end=True):
            yield MediaFrame(video=frame, audio=no_audio if audio is None else audio, sample_rate=rate)

    # ------------------------------------------------------------------ closing

    def _finish_requests(self) -> None:
        """Close our side of the stream once nothing more will be sent."""
        if self._outbox.full():  # drop unsent input: the stream is closing
            while not self._outbox.empty():
                self._outbox.get_nowait()
        self._outbox.put_nowait(None)

    async def aclose(self) -> None:
        """Close the session now. If it has not ended, the call is cancelled (the node
        reports "client_cancelled"); queued speech is dropped. Idempotent.

        Once `ended` has arrived the call is over in all but name: its status follows, so
        it is awaited (briefly) instead of cancelled, and the call finishes with OK.
        """
        self._finish_requests()
        if self.ended is not None and not self._call_done.is_set():
            try:
                async with asyncio.timeout(ENDED_STATUS_WAIT_S):
                    await self._call_done.wait()
            except TimeoutError:
                pass
        if not self._call_done.is_set():
            self._call.cancel()

    async def __aenter__(self) -> AvatarSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def request_stream(
    outbox: asyncio.Queue[avatar_pb2.ClientEvent | None],
) -> AsyncIterator[avatar_pb2.ClientEvent]:
    """The request iterator grpc reads: whatever the send methods queued, until None."""
    while True:
        event = await outbox.get()
        if event is None:
            return
        yield event
