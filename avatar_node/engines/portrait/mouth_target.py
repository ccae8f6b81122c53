"""The mouth shape speech asks for at each frame: from the sound, or from phonemes when the
text is known. Shared by the photo and the clip avatars, which differ only in how they
show it."""

from __future__ import annotations

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, Conditioning
from avatar_node.engines.portrait.speech_features import MouthShape, SpeechAnalyser
from avatar_node.engines.portrait.visemes import TimedPhoneme, blend_at

#: After an interrupt the mouth springs shut this fast for two frames (rad/s; from rest, 12 %
#: of the opening is left after 40 ms and under 1 % after 80 ms): a barge-in looks like one.
MOUTH_SHUT_OMEGA = 90.0
MOUTH_SHUT_FRAMES = 2


class SpeechMouth:
    """Per-frame mouth targets from a step's conditioning; keeps the level normaliser and the
    phonemes still in play. Not thread-safe: one stream's state."""

    def __init__(self, frame_s: float) -> None:
        self._frame_s = frame_s
        self._analyser = SpeechAnalyser()
        self._phonemes: dict[tuple[int, str], TimedPhoneme] = {}

    def reset(self) -> None:
        """Speech was interrupted: forget the level and the phonemes."""
        self._analyser.reset()
        self._phonemes.clear()

    def target(self, cond: Conditioning, t: float, dt: float) -> tuple[MouthShape, float]:
        """The mouth shape wanted at t, and the speech level (0..1)."""
        frame_samples = int(round(SPEECH_SAMPLE_RATE * self._frame_s))
        # The mouth leads the sound it makes by a few tens of milliseconds: look at the
        # audio around 30 ms after the frame is shown.
        centre = int(SPEECH_SAMPLE_RATE * 0.03)
        half = max(frame_samples // 2, 256)
        speech = np.asarray(cond.speech, dtype=np.float32)
        window = speech[max(0, centre - half) : centre + half]
        audio = self._analyser.analyse(window, dt)
        level = audio.open

        for ev in cond.phonemes:
            start = t + ev.start_s
            key = (int(round(start * 1000)), ev.phoneme)
            self._phonemes[key] = TimedPhoneme(start, t + ev.end_s, ev.phoneme)
        if self._phonemes:
            stale = [k for k, p in self._phonemes.items() if p.end < t - 0.5]
            for k in stale:
                del self._phonemes[k]
        speaking = bool(cond.speaking[0]) if len(cond.speaking) else False
        viseme = blend_at(self._phonemes.values(), t) if self._phonemes else None
        if viseme is not None and speaking:
            # Text-driven: the shape (closures, width, teeth) comes from the phonemes; the
            # opening follows the sound, as in audio-driven speech, a little wider for open
            # vowels (quiet syllables open less, whatever their vowel).
            opening = level * (0.8 + 0.4 * viseme.open)
            shaped = MouthShape(
                opening, viseme.width, viseme.teeth, viseme.lip_close, viseme.lip_bite, viseme.lower_teeth
            )
            return shaped, level
        return audio, level
