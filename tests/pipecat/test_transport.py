"""Through Pipecat's own output transport machinery: the bot speaks (BotStarted/BotStoppedSpeaking)
exactly while the avatar's voice plays, and an interruption stops voice and mouth at once and leaves
Pipecat's bookkeeping with the bot not speaking."""

from __future__ import annotations

import numpy as np
import pytest
from avatar_pipecat import AvatarVideoService
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
)

from .harness import AvatarPipeline, Playout, Speech
from .test_in_process import speaking_bar

pytestmark = pytest.mark.timeout(120)
W, H, FPS = 320, 240, 25.0


def card_pipeline(photo: bytes) -> tuple[AvatarPipeline, Playout]:
    playout = Playout(W, H, FPS)
    avatar = AvatarVideoService(photo=photo, engine="testcard", width=W, height=H, fps=FPS)
    return AvatarPipeline(avatar, after=[playout]), playout


def bot_events(run: AvatarPipeline) -> list[str]:
    bot = BotStartedSpeakingFrame | BotStoppedSpeakingFrame
    return [type(f).__name__ for f in run.upstream() if isinstance(f, bot)]


def voiced(samples: np.ndarray) -> bool:
    return bool(np.abs(samples).max(initial=0) > 30)


async def test_the_bot_speaks_exactly_while_the_avatars_voice_plays(photo: bytes, short_speech: Speech) -> None:
    run, playout = card_pipeline(photo)
    async with run:
        await run.until(lambda: sum(kind == "video" for kind, _ in playout.log) >= 5)
        assert bot_events(run) == [], "idle video and its silence made the bot speak"
        await run.say(short_speech)
        await run.until(lambda: bot_events(run) == ["BotStartedSpeakingFrame", "BotStoppedSpeakingFrame"])
        stopped_at = len(playout.log)
        await run.until(lambda: len(playout.log) >= stopped_at + 20)
        await run.end()
    audio = [samples for kind, samples in playout.log[:stopped_at] if kind == "audio"]
    spoken = sum(len(a) for a in audio if voiced(a)) / 48000
    print(f"voice played before BotStoppedSpeaking: {spoken:.2f} s of {short_speech.seconds:.2f} s")
    # The stop came once the voice had played, not when the TTS had finished generating it.
    assert spoken > short_speech.seconds - 0.3
    assert not any(voiced(s) for kind, s in playout.log[stopped_at:] if kind == "audio")
    pictures = [p for kind, p in playout.log if kind == "video"]
    assert any(speaking_bar(p) for p in pictures), "the screen never showed the avatar speaking"


async def test_an_interruption_stops_voice_and_mouth_at_once_and_the_bot_is_not_speaking(
    photo: bytes, long_speech: Speech
) -> None:
    run, playout = card_pipeline(photo)
    async with run:
        await run.say(long_speech)
        await run.until(lambda: sum(kind == "audio" and voiced(s) for kind, s in playout.log) >= 25)
        await run.queue(InterruptionFrame())
        await run.until(lambda: any(kind == "interruption" for kind, _ in playout.log))
        cut = next(i for i, (kind, _) in enumerate(playout.log) if kind == "interruption")
        await run.until(lambda: sum(kind == "video" for kind, _ in playout.log[cut:]) >= 12)
        await run.end()
    after = playout.log[cut:]
    spoken_after = [s for kind, s in after if kind == "audio" and voiced(s)]
    # The screen redraws the picture it holds until a new one comes: count pictures, not redraws.
    shown_speaking = {p.tobytes() for kind, p in after if kind == "video" and speaking_bar(p)}
    print(f"after the interruption: {len(spoken_after)} voiced chunks, {len(shown_speaking)} speaking pictures")
    assert len(spoken_after) <= 1, "the voice went on after the interruption"
    assert len(shown_speaking) <= 1, "the mouth went on after the interruption"
    events = bot_events(run)
    assert events == ["BotStartedSpeakingFrame", "BotStoppedSpeakingFrame"], events
