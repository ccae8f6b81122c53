"""The avatar service in real Pipecat pipelines, rendering in this process: what it pushes
downstream is the avatar's timeline, picture then exactly its audio, in step with the TTS audio."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from avatar_pipecat import AvatarVideoService
from pipecat.frames.frames import (
    InterruptionFrame,
    OutputImageRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)

from avatar_node.engines.testcard import BAR_X, bar_level

from .harness import AvatarPipeline, Speech, best_lag, envelope, levels

pytestmark = pytest.mark.timeout(120)
W, H, FPS, RATE = 320, 240, 25.0, 48_000


def speaking_bar(picture: np.ndarray) -> bool:
    """The test card draws its level bar white while the avatar speaks, grey otherwise."""
    x = int((BAR_X[0] + BAR_X[1]) / 2 * picture.shape[1])
    return bool((picture[:, x] >= 230).all(axis=1).any())


def card_avatar(photo: bytes) -> AvatarVideoService:
    return AvatarVideoService(photo=photo, engine="testcard", width=W, height=H, fps=FPS)


async def test_tts_audio_comes_out_unchanged_on_the_avatars_frames_in_step_with_the_mouth(
    photo: bytes, short_speech: Speech
) -> None:
    async with AvatarPipeline(card_avatar(photo)) as run:
        await run.until(lambda: len(run.frames()) >= 10)  # idle video before anyone speaks
        await run.say(short_speech)
        await run.until(lambda: run.finished_turns() >= 1)
        await run.until(lambda: len(run.frames()) >= 10 + round(short_speech.seconds * FPS) + 10)
        await run.end()
    frames = run.frames()
    pictures = [f.picture for f in frames if f.picture is not None]
    assert len(pictures) == len(frames), "every frame has its picture"
    assert {p.shape for p in pictures} == {(H, W, 3)}
    # One timeline: pts one frame apart, each frame's audio exactly one frame long.
    step = 1e9 / FPS
    assert np.allclose(np.diff([f.pts for f in frames]), step, atol=1e6)
    assert {len(f.audio) for f in frames} <= {RATE // 25}
    first = next(i for i, f in enumerate(frames) if f.speech)
    assert first >= 10, "speech showed before it was said"
    # The TTS audio, resampled to 48 kHz, unchanged and without a gap.
    spoken = np.concatenate([f.audio for f in frames if f.speech]).astype(np.float32)
    said = np.interp(np.arange(round(short_speech.seconds * RATE)) / RATE,
                     np.arange(len(short_speech.samples)) / short_speech.rate, short_speech.samples)
    n = min(len(spoken), len(said))
    correlation = float(np.corrcoef(spoken[:n], said[:n])[0, 1])
    print(f"TTS audio against the pushed audio: correlation {correlation:.4f}, {len(spoken)} vs {len(said)} samples")
    assert correlation >= 0.99 and abs(len(spoken) - len(said)) <= RATE // 25
    speaking = [i for i, f in enumerate(frames) if f.speech]
    assert speaking == list(range(speaking[0], speaking[-1] + 1)), "a gap in the speech"
    # The mouth (the test card's level bar, from the pushed pixels) moves with the pushed voice.
    lag, corr = best_lag(levels(frames), envelope(frames))
    print(f"test card, in-process: best lag {lag:+d} frames, correlation {corr:.2f}")
    assert abs(lag) <= 1 and corr >= 0.8, (lag, corr)
    # The turn's frames reach the transport between its started and (held) stopped frames.
    down = run.downstream()
    assert run.position_of(TTSStartedFrame) < frames[speaking[0]].position
    assert run.position_of(TTSStoppedFrame) > frames[speaking[-1]].position
    assert sum(isinstance(f, TTSStoppedFrame) for f in down) == 1


@pytest.mark.parametrize("barge_in", [InterruptionFrame, UserStartedSpeakingFrame])
async def test_a_barge_in_mid_sentence_closes_the_mouth_at_once_and_no_speech_follows(
    photo: bytes, long_speech: Speech, barge_in: type
) -> None:
    async with AvatarPipeline(card_avatar(photo)) as run:
        await run.say(long_speech)
        await run.until(lambda: run.speech_frames() >= 30)
        await run.queue(barge_in())
        await run.until(lambda: any(isinstance(f, barge_in) for f in run.downstream()))
        cut = run.position_of(barge_in)
        await run.until(lambda: sum(f.position > cut for f in run.frames()) >= 15)
        await run.end()
    frames = run.frames()
    after = [f for f in frames if f.position > cut]
    before = [f for f in frames if f.position < cut]
    lv = levels(frames)
    print("levels around the interruption:", np.round(lv[len(before) - 3 : len(before) + 4], 3),
          "withheld:", run.avatar.frames_withheld)
    assert not any(f.speech or np.any(f.audio) for f in after), "speech audio was pushed after the barge-in"
    shown = [f for f in after if f.picture is not None]
    print("after:", [(round(bar_level(f.picture), 3), speaking_bar(f.picture)) for f in shown[:4]])
    # The next picture is the face at rest, pushed with the barge-in itself (not the avatar's
    # next frame, whose mouth is only closing: the card's bar grey, not yet empty)...
    assert not speaking_bar(shown[0].picture) and bar_level(shown[0].picture) <= 0.02, \
        "the picture after the barge-in is not the face at rest"
    # ...and so are the avatar's own frames after it.
    assert all(bar_level(f.picture) <= 0.02 for f in shown[1:]), "the mouth did not close within two frames"
    # The first picture pushed after it is the latest idle picture from before the turn, pushed
    # with the barge-in itself rather than with the avatar's next frame (up to a frame later).
    resting = [f for f in before if f.picture is not None and not f.speech][-1]
    first = next(f for f in run.downstream()[cut:] if isinstance(f, OutputImageRawFrame))
    assert first.image == resting.picture.tobytes(), "the face at rest was not pushed with the barge-in"
    # The turn is over for Pipecat too: its stopped frame is not passed on after the interruption.
    assert not any(isinstance(f, TTSStoppedFrame) for f in run.downstream()[cut:])


@pytest.mark.parametrize("ending", ["end", "cancel"])
async def test_ending_the_pipeline_closes_the_runtime_it_made_and_leaves_no_task_or_thread(
    photo: bytes, short_speech: Speech, ending: str
) -> None:
    tasks, threads = set(asyncio.all_tasks()), set(threading.enumerate())
    async with AvatarPipeline(card_avatar(photo)) as run:
        await run.say(short_speech)
        await run.until(lambda: run.speech_frames() >= 5)
        await (run.end() if ending == "end" else run.cancel())
    assert not set(asyncio.all_tasks()) - tasks - {asyncio.current_task()}, "a task outlived the pipeline"
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - threads and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not set(threading.enumerate()) - threads, f"threads left: {set(threading.enumerate()) - threads}"
    if ending == "end":  # EndFrame lets the avatar finish the sentence it was saying
        assert run.speech_frames() >= short_speech.seconds * FPS - 2


async def test_the_users_voice_passing_by_makes_the_avatar_listen(photo: bytes) -> None:
    """The user's microphone frames (as an STT passes them on) reach the engine as listening:
    the test card's blue listening marker shows while they come, and they go on downstream."""
    from pipecat.frames.frames import InputAudioRawFrame

    def listening(picture: np.ndarray) -> bool:
        return bool(picture[2, int((BAR_X[0] + BAR_X[1]) / 2 * picture.shape[1]), 2] > 200)

    voice = (0.8 * 32767 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.int16)
    async with AvatarPipeline(card_avatar(photo)) as run:
        await run.until(lambda: len(run.frames()) >= 10)
        before = len(run.frames())
        for start in range(0, len(voice), 320):  # 20 ms at a time, as a transport's input delivers it
            await run.queue(InputAudioRawFrame(voice[start : start + 320].tobytes(), 16000, 1))
        await run.until(lambda: len(run.frames()) >= before + 20)
        await run.end()
    pictures = [f.picture for f in run.frames() if f.picture is not None]
    assert not any(listening(p) for p in pictures[:10]), "listening before the user spoke"
    assert sum(listening(p) for p in pictures[before:]) >= 5, "the user's voice did not reach the avatar"
    passed = [f for f in run.downstream() if isinstance(f, InputAudioRawFrame)]
    assert len(passed) == len(voice) // 320, "the user's audio is passed on downstream"
