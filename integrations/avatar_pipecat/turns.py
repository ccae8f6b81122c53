"""Pipecat's TTS turns as the avatar plays them, and what an interruption leaves in flight.

A TTS turn (TTSStartedFrame ... TTSStoppedFrame) becomes one avatar turn with its own id. The
TTSStoppedFrame is held back until the avatar has finished saying it, so the output transport
sees the bot stop speaking when its voice does, not when the TTS finished generating.

After an interruption, frames the engine made before it may still be on their way (the feed's
inbox, the network): their speech must not be heard nor their open mouth seen. They are stale
until the first frame without speech, or the first turn begun after the interruption starts.
"""

from __future__ import annotations

import enum
import itertools

from avatar_client.feed_items import FeedFrame, FeedTurn
from pipecat.frames.frames import TTSStoppedFrame


class Kind(enum.Enum):
    SPEECH = "speech"
    IDLE = "idle"
    STALE = "stale"  # speech from before an interruption: shown as nothing, heard as silence


class Turns:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.current: str | None = None  # the turn the TTS audio goes to now
        self._contexts: dict[str, str | None] = {}  # turn -> the TTS context id
        self._sent: set[str] = set()  # turns some audio was sent for
        self._held: dict[str, TTSStoppedFrame] = {}
        self._stale = False
        self._since_interrupt: set[str] = set()
        self.on_screen: str | None = None  # the turn the avatar is saying

    @property
    def pending(self) -> bool:
        """Speech sent that the avatar has not finished saying."""
        return bool(self._held) or (self.current is not None and self.current in self._sent)

    def begin(self, context_id: str | None) -> str:
        turn_id = f"tts-{next(self._ids)}"
        self.current = turn_id
        self._contexts[turn_id] = context_id
        if self._stale:
            self._since_interrupt.add(turn_id)
        return turn_id

    def audio(self, context_id: str | None) -> str:
        """The turn this TTS audio belongs to (one begins if the TTS sent no TTSStartedFrame)."""
        turn_id = self.current if self.current is not None else self.begin(context_id)
        self._sent.add(turn_id)
        return turn_id

    def stop(self, frame: TTSStoppedFrame) -> tuple[str | None, TTSStoppedFrame | None]:
        """The turn that ends here (None if none was open), and the stop frame to pass on now
        (None while it waits for the avatar to finish saying the turn)."""
        turn_id, self.current = self.current, None
        if turn_id is None or turn_id not in self._sent:
            if turn_id is not None:
                self._contexts.pop(turn_id, None)
            return turn_id, frame
        self._held[turn_id] = frame
        return turn_id, None

    def interrupt(self) -> bool:
        """Drop every turn; True if the avatar had speech to drop."""
        active = self.pending or self.on_screen is not None
        self.current = self.on_screen = None
        self._held.clear()
        self._sent.clear()
        self._contexts.clear()
        self._since_interrupt.clear()
        self._stale = True
        return active

    def context_of(self, turn_id: str | None) -> str | None:
        return self._contexts.get(turn_id) if turn_id is not None else None

    def seen(self, event: FeedTurn) -> TTSStoppedFrame | None:
        """A turn event from the feed; returns the held stop frame once its turn is finished."""
        if event.kind == "started":
            if event.turn_id in self._since_interrupt:
                self._stale = False
            self.on_screen = event.turn_id
            return None
        if self.on_screen == event.turn_id:
            self.on_screen = None
        self._sent.discard(event.turn_id)
        if event.turn_id != self.current:
            self._contexts.pop(event.turn_id, None)
        return self._held.pop(event.turn_id, None)

    def lost(self) -> list[TTSStoppedFrame]:
        """The session went away with its turns: the held stop frames, to pass on now."""
        held = list(self._held.values())
        self._held.clear()
        self._sent.clear()
        self.on_screen = None
        return held

    def kind(self, frame: FeedFrame) -> Kind:
        if not frame.speaking:
            self._stale = False
            return Kind.IDLE
        return Kind.STALE if self._stale else Kind.SPEECH
