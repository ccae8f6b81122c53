"""The playout clock on a simulated timeline: frames arriving with chosen lateness, a device
consuming audio at exactly real time."""

from __future__ import annotations

import numpy as np

from avatar_client.virtualcam.playout import Playout, PlayoutFrame

RATE, FRAME, BLOCK = 48_000, 1920, 480  # 25 fps, 10 ms device blocks
LATENCY = 0.06  # what the device holds after each write


class Timeline:
    def __init__(self, prefill_ms: int = 80) -> None:
        self.now = 0.0
        self.playout = Playout(RATE, prefill_ms, clock=lambda: self.now)
        self.written: list[tuple[int | None, int]] = []

    def run(  # type: ignore[no-untyped-def]
        self, seconds: float, arrivals: dict[int, float], speaking=lambda k: False, loud=lambda k: False,
        device_stalls: tuple[float, float] | None = None,
    ) -> None:
        """Advance time; frame k arrives at arrivals[k] (and carries its index in its picture).
        `device_stalls` = (when, how long) the device takes nothing."""
        pending = sorted(arrivals.items(), key=lambda item: item[1])
        end = self.now + seconds
        while self.now < end:
            while pending and pending[0][1] <= self.now:
                k, _ = pending.pop(0)
                level = 8000 if loud(k) else 0
                self.playout.push(PlayoutFrame(k * FRAME, np.array([k]), np.full(FRAME, level, np.int16), speaking(k)))
            if device_stalls and device_stalls[0] <= self.now < device_stalls[0] + device_stalls[1]:
                self.now += BLOCK / RATE
                continue
            block = self.playout.next_audio_block(BLOCK)
            self.now += len(block.samples) / RATE
            self.playout.written(block, self.now, LATENCY)
            self.written.append((block.pos, len(block.samples)))


def steady(frames: int, late: dict[int, float] | None = None, start: float = 0.0) -> dict[int, float]:
    late = late or {}
    return {k: start + k * FRAME / RATE + late.get(k, 0.0) for k in range(frames)}


def test_the_camera_shows_the_frame_whose_sound_is_heard():
    line = Timeline()
    line.run(3.0, steady(100))
    playout = line.playout
    assert playout.underruns == 0
    for k in (40, 41, 60):
        heard = playout.audio_time_of(k * FRAME)
        assert heard is not None
        assert playout.media_pos_at(heard) == k * FRAME  # the two mappings are each other's inverse
        # Just after its sound starts, and up to half a frame before, frame k is the one to show.
        pos, picture = playout.picture_for(heard - 0.019, lead_s=0.02)
        assert pos == k * FRAME and picture[0] == k


def test_the_delay_settles_at_the_prefill_when_frames_are_punctual():
    line = Timeline(prefill_ms=80)
    line.run(4.0, steady(100))
    heard = line.playout.audio_time_of(90 * FRAME)
    arrived = 90 * FRAME / RATE
    # A frame arriving on time finds the prefill less one frame still queued ahead of it.
    assert heard is not None and abs(heard - arrived - LATENCY - 0.04) <= 0.012


def test_a_late_frame_leaves_a_short_gap_then_a_bigger_margin():
    line = Timeline()
    late = {k: 0.15 for k in range(30, 200)}  # from frame 30 on, everything comes 150 ms later
    line.run(8.0, steady(200, late), speaking=lambda k: True)  # one long turn: nothing stretched
    playout = line.playout
    assert playout.underruns == 1
    # The gap is the lateness beyond what was queued plus a small margin, not a fresh prefill.
    filler = sum(n for pos, n in line.written[50:] if pos is None) / RATE
    assert 0.1 <= filler <= 0.16, filler
    assert playout.goal >= 0.04 * RATE


def test_jittery_arrivals_raise_the_goal_before_any_gap():
    rng = np.random.default_rng(3)
    late = {k: float(rng.uniform(0, 0.12)) for k in range(300)}
    line = Timeline()
    line.run(11.0, steady(300, late))
    assert line.playout.goal >= 0.12 * RATE  # the 99th percentile of lateness, plus a margin


def test_only_quiet_frames_between_turns_are_skipped_or_stretched():
    line = Timeline()
    # The device takes nothing for 0.4 s in the middle of a turn (frames 20..59), so 0.4 s
    # too much is queued; frames outside the turn are quiet.
    line.run(5.5, steady(150), speaking=lambda k: 20 <= k < 60, loud=lambda k: 20 <= k < 60,
             device_stalls=(1.2, 0.4))
    played = {pos // FRAME for pos, _ in line.written if pos is not None}
    assert set(range(20, 60)) <= played  # the whole turn was heard
    skipped = set(range(130)) - played
    assert skipped and all(k >= 60 for k in skipped), skipped
    assert line.playout.trimmed_samples == len(skipped) * FRAME


def test_a_huge_backlog_is_cut_even_in_speech():
    line = Timeline()
    arrivals = {k: 0.0 for k in range(200)}  # 8 s of speech at once
    line.run(3.0, arrivals, speaking=lambda k: True, loud=lambda k: True)
    assert line.playout.trimmed_samples > 0
    assert line.playout.pending_s < 1.0
    # Said apart from the quiet frames skipped, so a cut in speech is never a silent loss.
    assert line.playout.speech_cuts >= 1 and line.playout.speech_cut_samples == line.playout.trimmed_samples


def test_skipping_quiet_frames_cuts_no_speech():
    line = Timeline()
    line.run(5.5, steady(150), speaking=lambda k: 20 <= k < 60, loud=lambda k: 20 <= k < 60,
             device_stalls=(1.2, 0.4))
    assert line.playout.trimmed_samples > 0
    assert line.playout.speech_cuts == line.playout.speech_cut_samples == 0


def test_after_an_interrupt_no_queued_picture_is_shown_and_the_next_arrival_is_shown_at_once():
    line = Timeline()
    line.run(2.0, steady(50), speaking=lambda k: True, loud=lambda k: True)  # frames 0..49 arrived
    playout = line.playout
    shown, _ = playout.picture_for(line.now, lead_s=0.02)
    assert shown is not None and shown // FRAME < 49  # later frames are still queued
    playout.drop_pending()
    # Until something new arrives the picture on screen is held: the queued (speaking) ones are gone.
    for _ in range(3):
        line.run(0.04, {})
        pos, picture = playout.picture_for(line.now, lead_s=0.02)
        assert pos is None and picture is not None and picture[0] == shown // FRAME
    # The source's next frame is shown at the next tick, before its sound has a prefill to play.
    line.run(0.001, {60: line.now})
    pos, picture = playout.picture_for(line.now, lead_s=0.02)
    assert pos == 60 * FRAME and picture is not None and picture[0] == 60
