"""Local mode under a real AgentSession: the engine renders in the agent's process and the agent's
participant publishes; everything is read back from the published tracks and measured from pixels."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.testing import fake_job_context
from livekit.agents.voice.io import PlaybackFinishedEvent

from avatar_livekit import AvatarLiveKitError, AvatarSession

from .conftest import (RATE, Readback, Speech, abrupt_gaps, audio_series_for_video, best_lag,
                       watch_audio_output)
from .fake_room import FakeHub

pytestmark = pytest.mark.timeout(90)


@dataclass
class LocalRun:
    room: Any
    session: AgentSession
    avatar: AvatarSession
    readback: Readback
    finished: list[PlaybackFinishedEvent] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)  # monotonic time of each clear_buffer


@asynccontextmanager
async def local_avatar(photo: bytes, **options: Any) -> AsyncIterator[LocalRun]:
    hub = FakeHub()
    room = hub.room("agent-1", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    await room.connect()
    readback = Readback()
    # Read the tracks from the moment they are published, before their first frame.
    room.on("local_track_published", lambda publication, track: readback.start([publication]))
    with fake_job_context(room=room):
        session = AgentSession()
        avatar = AvatarSession(image=photo, **options)
        await avatar.start(session, room=room)
        run = LocalRun(room, session, avatar, readback)
        watch_audio_output(session, run.finished, run.clears)
        await session.start(agent=Agent(instructions="You are a test."))
        try:
            yield run
        finally:
            await session.aclose()
            await avatar.aclose()
            await readback.aclose()


def speaking_span(levels: np.ndarray) -> tuple[int, int]:
    speaking = np.flatnonzero(levels > 0.02)
    return int(speaking[0]), int(speaking[-1])


async def test_speech_is_published_in_sync_at_the_asked_size_and_rate(photo: bytes, short_speech: Speech) -> None:
    async with local_avatar(photo, engine="testcard", width=640, height=360, fps=25) as run:
        await asyncio.sleep(0.6)  # idle first: video must flow before anyone speaks
        said_at = time.monotonic()
        await run.session.say("Hello there", audio=short_speech.frames())
        await asyncio.sleep(0.5)
        readback = run.readback
        video, audio = list(readback.video), readback.audio_samples()
        assert len(run.finished) == 1
        finished = run.finished[0]
        publications = {p.name: p for p in run.room.published}
        assert set(publications) == {"avatar_video", "avatar_audio"}
        assert publications["avatar_video"].source == rtc.TrackSource.SOURCE_CAMERA

    # The asked size and rate.
    assert {image.shape for _, image in video} == {(360, 640, 3)}
    assert 24.0 <= readback.video_fps(since=said_at) <= 26.0, readback.video_fps(since=said_at)
    # Idle from the first frame: the photo on the test card, never a blank (black or green) picture.
    levels = readback.bar_levels()
    first_speech, last_speech = speaking_span(levels)
    assert first_speech >= 10, "speech showed before it was said"
    for _, image in video[:first_speech]:
        assert 30 < image.mean() < 120 and image.std() > 10, "a blank frame was published"
        assert abs(int(image[..., 1].mean()) - int(image[..., 0].mean())) < 25, "a green frame was published"
    # Continuous audio: as many samples as wall time, silence while idle, the speech in between.
    elapsed = readback.audio[-1][0] - readback.audio[0][0]
    assert abs(len(audio) / RATE - elapsed) < 0.15, (len(audio) / RATE, elapsed)
    gaps = np.diff([t for t, _ in readback.audio if t > said_at - 0.3])
    assert gaps.max() < 0.12, f"the audio stalled for {gaps.max():.3f} s"
    print(f"abrupt gaps in the published voice: {abrupt_gaps(audio)}")
    assert abrupt_gaps(audio) <= 1, "the voice has dropouts"
    voiced = np.flatnonzero(np.abs(audio) > 30)
    assert abs((voiced[-1] - voiced[0]) / RATE - short_speech.seconds) < 0.1
    # The mouth (the test card's level bar, read from pixels) moves with the published audio.
    lag, correlation = best_lag(levels, audio_series_for_video(readback, 1 / 25))
    print(f"test card, local mode: best lag {lag:+d} frames, correlation {correlation:.2f}")
    assert abs(lag) <= 1 and correlation > 0.8, (lag, correlation)
    # playback_finished: played to the end, at the right position.
    assert not finished.interrupted
    assert abs(finished.playback_position - short_speech.seconds) < 0.041, finished.playback_position


async def test_interrupt_mid_sentence_reports_the_position_and_goes_idle_within_a_frame(
    photo: bytes, long_speech: Speech
) -> None:
    async with local_avatar(photo, engine="testcard", width=640, height=360) as run:
        handle = run.session.say("A long sentence", audio=long_speech.frames())
        readback = run.readback
        while not (len(readback.video) and readback.bar_levels()[-1] > 0.02):
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.2)
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 5)
        await asyncio.sleep(0.6)
        assert len(run.finished) == 1 and run.clears
        finished, cleared_at = run.finished[0], run.clears[0]
        video, audio = list(readback.video), readback.audio_samples()
        audio_times = list(readback.audio)

    assert finished.interrupted
    levels = readback.bar_levels()
    after = [i for i, (t, _) in enumerate(video) if t > cleared_at]
    speaking_after = [i for i in after if levels[i] > 0.02]
    assert len(speaking_after) <= 1, f"{len(speaking_after)} frames showed speech after the interrupt"
    assert all(levels[i] <= 0.02 for i in after[2:]), "the video did not stay idle"
    # The voice stops too.
    late_audio = [a for t, a in audio_times if t > cleared_at + 0.05]
    assert late_audio and not np.any(np.concatenate(late_audio)), "speech was heard after the interrupt"
    # The reported position is the speech that was actually published.
    voiced = np.flatnonzero(np.abs(audio) > 30)
    lead = np.flatnonzero(np.abs(long_speech.samples) > 30)[0] / long_speech.rate
    published = (voiced[-1] - voiced[0]) / RATE + lead
    assert 1.0 < finished.playback_position < long_speech.seconds - 1.0
    assert abs(finished.playback_position - published) < 0.041, (finished.playback_position, published)


async def test_lips_stay_on_the_voice_after_the_event_loop_stalls(photo: bytes, short_speech: Speech) -> None:
    # An agent's process blocks its loop now and then (a large reply parsed, a module imported):
    # the media that piles up meanwhile must not leave the voice behind the face for good.
    async with local_avatar(photo, engine="testcard", width=320, height=240) as run:
        await asyncio.sleep(0.5)
        time.sleep(0.25)  # the stall
        await asyncio.sleep(0.5)
        stalled_at = time.monotonic()
        await run.session.say("Hello there", audio=short_speech.frames())
        await asyncio.sleep(0.3)
        readback = run.readback
    recent = Readback(video=[v for v in readback.video if v[0] > stalled_at], audio=readback.audio)
    lag, correlation = best_lag(recent.bar_levels(), audio_series_for_video(recent, 1 / 25))
    print(f"after a stall: best lag {lag:+d} frames, correlation {correlation:.2f}")
    assert abs(lag) <= 1 and correlation > 0.8, (lag, correlation)


async def test_a_loaded_loop_does_not_gap_the_voice_or_leave_the_picture_behind(
    photo: bytes, short_speech: Speech, long_speech: Speech
) -> None:
    """A busy agent process: the loop is woken 60-340 ms late again and again while the avatar
    speaks, is interrupted and speaks again. The voice may break once, at the first stall (the
    worst, 340 ms), and never again; once the load is gone the picture is on the voice, not
    frames behind it for good."""
    import random

    # espeak's pauses (at commas) are exact silence: fill them with a faint hiss, so that any run
    # of exact zeros inside the voice the subscriber hears is a dropout.
    hiss = np.random.default_rng(1).normal(0, 30, len(long_speech.samples)).astype(np.int16)
    long_speech = Speech(np.where(long_speech.samples == 0, hiss, long_speech.samples), long_speech.rate)
    hiss = hiss[: len(short_speech.samples)]
    short_speech = Speech(np.where(short_speech.samples == 0, hiss, short_speech.samples), short_speech.rate)
    async with local_avatar(photo, engine="testcard", width=320, height=240) as run:
        await asyncio.sleep(0.5)
        loaded = asyncio.Event()

        async def load() -> None:
            stalls = random.Random(7)
            late = 0.34  # the worst first
            while not loaded.is_set():
                await asyncio.sleep(stalls.uniform(0.2, 0.5))
                time.sleep(late)  # the loop woken late
                late = stalls.uniform(0.06, 0.34)

        loading = asyncio.create_task(load())
        handle = run.session.say("A long sentence", audio=long_speech.frames())
        await asyncio.sleep(2.5)
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 5)
        await asyncio.sleep(1.0)
        handle = run.session.say("Hello there", audio=short_speech.frames())
        await asyncio.wait_for(handle.wait_for_playout(), 10)
        loaded.set()
        await loading
        await asyncio.sleep(0.5)
        unloaded_at = time.monotonic()
        handle = run.session.say("Hello there", audio=short_speech.frames())
        await asyncio.wait_for(handle.wait_for_playout(), 10)
        await asyncio.sleep(0.3)
        readback = run.readback
        assert run.avatar.room_avatar is not None
        publisher = run.avatar.room_avatar.publisher
    # Dropouts: exact silence inside the voice (which has none of its own), shorter than the
    # pauses between replies.
    dropouts = abrupt_gaps(readback.audio_samples(), loud=0, longest=round(0.4 * RATE))
    print(f"under load: {dropouts} dropouts in the voice; lead {publisher.lead * 1000:.0f} ms, "
          f"{publisher.pictures_skipped} late pictures skipped, {publisher.idle_frames_left_out} idle frames left out")
    assert dropouts <= 1, "the voice broke up again after the first stall"
    recent = Readback(video=[v for v in readback.video if v[0] > unloaded_at], audio=readback.audio)
    lag, correlation = best_lag(recent.bar_levels(), audio_series_for_video(recent, 1 / 25))
    print(f"after the load: best lag {lag:+d} frames, correlation {correlation:.2f}")
    assert lag == 0 and correlation > 0.8, (lag, correlation)


async def test_a_width_that_is_not_a_multiple_of_four_is_refused_with_a_clear_message(photo: bytes) -> None:
    with pytest.raises(AvatarLiveKitError, match="multiple of 4"):
        AvatarSession(image=photo, width=854, height=480)


async def test_the_default_portrait_engine_moves_the_mouth_with_the_published_voice(
    photo: bytes, long_speech: Speech
) -> None:
    from avatar_node.engines.base import StreamOptions
    from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box

    async with local_avatar(photo, width=424, height=240) as run:  # no engine given: portrait
        await asyncio.sleep(0.5)
        await run.session.say("A sentence", audio=long_speech.frames())
        await asyncio.sleep(0.3)
        avatar = run.avatar.room_avatar
        assert avatar is not None
        (stream,) = avatar.renderer.runtime.streams  # type: ignore[attr-defined]
        assert stream.engine.info.name == "portrait"
        box = mouth_box(stream.identity, StreamOptions(424, 240, 25.0))
        readback = run.readback
        finished = run.finished

    video = readback.video
    aperture = np.array([mouth_aperture(image, box) for _, image in video])
    levels = audio_series_for_video(readback, 1 / 25)
    speaking = levels > 0.01
    # Beyond what the face shows at rest (lip seams and wrinkles are dark too).
    opening = aperture[speaking].mean() - float(np.median(aperture[~speaking]))
    assert opening > 0.5, "the mouth does not open to speak"
    lag, correlation = best_lag(aperture, levels)
    print(f"portrait, local mode: best lag {lag:+d} frames, correlation {correlation:.2f}")
    assert abs(lag) <= 1 and correlation > 0.4, (lag, correlation)
    assert len(finished) == 1 and abs(finished[0].playback_position - long_speech.seconds) < 0.041


async def test_closing_is_complete_even_when_the_caller_is_cancelled(photo: bytes) -> None:
    async with local_avatar(photo, engine="testcard", width=320, height=240) as run:
        avatar = run.avatar.room_avatar
        assert avatar is not None
        runtime = avatar.renderer.runtime  # type: ignore[attr-defined]
        closing = asyncio.create_task(run.avatar.aclose())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await asyncio.wait_for(run.avatar.aclose(), 10)  # the teardown went on; this waits for it
        assert avatar.publisher.closed and not runtime.streams and runtime.admission.active == 0
        assert {p.sid for p in run.room.unpublished} == {p.sid for p in run.room.published}


async def test_barge_in_shuts_the_published_mouth_and_it_stays_shut(photo: bytes, long_speech: Speech) -> None:
    """The portrait engine, interrupted mid-reply, as a subscriber sees the published video: within
    two frames of the interrupt the mouth is shut, and it never opens again in the silence."""
    from avatar_node.engines.base import StreamOptions
    from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box

    async with local_avatar(photo, width=424, height=240) as run:
        avatar = run.avatar.room_avatar
        assert avatar is not None
        (stream,) = avatar.renderer.runtime.streams  # type: ignore[attr-defined]
        box = mouth_box(stream.identity, StreamOptions(424, 240, 25.0))
        await asyncio.sleep(0.5)
        handle = run.session.say("A long sentence", audio=long_speech.frames())
        readback = run.readback
        # Interrupt while the mouth is well open, read from the published pictures.
        deadline = time.monotonic() + 10
        rest = None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            video = list(readback.video)
            if len(video) < 10:
                continue
            rest = rest if rest is not None else float(np.median([mouth_aperture(i, box) for _, i in video[:10]]))
            if time.monotonic() - video[0][0] > 2.0 and mouth_aperture(video[-1][1], box) - rest > 3.0:
                break
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 5)
        await asyncio.sleep(1.0)
        cleared_at = run.clears[0]
        video = list(readback.video)

    assert rest is not None
    after = [mouth_aperture(image, box) - rest for t, image in video if t > cleared_at]
    print("mouth beyond rest after the interrupt: " + ", ".join(f"{a:.1f}" for a in after[:6]))
    assert len(after) >= 20
    assert max(after[2:]) < 1.0, "the mouth is open (again) after the interrupt, in silence"
