"""Text to speech: real espeak-ng synthesis, phoneme timing, validation, threads."""

from __future__ import annotations

import threading
from itertools import pairwise

import numpy as np
import pytest

from avatar_node.engines.base import AvatarInputError, PhonemeEvent
from avatar_node.speech import tts
from avatar_node.speech.espeak import PhonemeMark
from avatar_node.speech.tts import MAX_TEXT_CHARS, SpeechClip, SpeechSynthesizer, phoneme_events

VOWELS = {"a", "a#", "aI", "A:", "@", "eI", "i", "i:", "0", "oU", "U@", "E", "I", "V", "u:"}


@pytest.fixture(scope="module")
def synth() -> SpeechSynthesizer:
    with SpeechSynthesizer() as synthesizer:
        yield synthesizer


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


def segment(clip: SpeechClip, event: PhonemeEvent) -> np.ndarray:
    return clip.samples[round(event.start_s * clip.sample_rate) : round(event.end_s * clip.sample_rate)]


def assert_tiles_clip(clip: SpeechClip) -> None:
    events = clip.phonemes
    assert events, "no phonemes"
    assert events[0].start_s == 0.0
    assert events[-1].end_s == pytest.approx(clip.duration_s, abs=1e-9)
    for before, after in pairwise(events):
        assert before.end_s == after.start_s
    for event in events:
        assert event.end_s > event.start_s
        assert event.phoneme and event.phoneme[0] not in "',%="  # no stress marks
        assert not event.phoneme.startswith("_") or event.phoneme == "_"
    for before, after in pairwise(events):
        assert not (before.phoneme == after.phoneme == "_"), "neighbouring pauses should merge"


def test_hello_sounds_like_a_sentence(synth: SpeechSynthesizer) -> None:
    clip = synth.synthesize("Hello, I am your avatar.")
    assert clip.sample_rate == synth.sample_rate == 22050
    assert clip.samples.dtype == np.int16 and clip.samples.ndim == 1
    assert not clip.samples.flags.writeable
    # Seven syllables at a normal speaking rate, with a pause at the comma.
    assert 0.9 < clip.duration_s < 2.5
    assert rms(clip.samples) > 1000, "speech should be clearly audible"
    assert clip.text == "Hello, I am your avatar."
    assert clip.voice == "en-us"
    symbols = [e.phoneme for e in clip.phonemes]
    assert symbols[:5] == ["_", "h", "@", "l", "oU"]
    assert "_" in symbols[5:-1], "the comma should give a pause"
    assert_tiles_clip(clip)


def test_longer_text_takes_longer(synth: SpeechSynthesizer) -> None:
    short = synth.synthesize("Good morning.")
    long = synth.synthesize("Good morning. Today we will talk about the weather, the news and the markets.")
    assert long.duration_s > 3 * short.duration_s
    # About 2 to 4 words a second.
    assert 14 / 4 < long.duration_s < 14 / 2


@pytest.mark.parametrize(("text", "closure", "max_ratio"), [("my mama", "m", 0.9), ("a papa pie", "p", 0.5)])
def test_bilabial_closures_fall_where_the_audio_is_quieter(
    synth: SpeechSynthesizer, text: str, closure: str, max_ratio: float
) -> None:
    clip = synth.synthesize(text)
    assert_tiles_clip(clip)
    events = clip.phonemes
    closures = [i for i, e in enumerate(events) if e.phoneme == closure]
    assert len(closures) >= 3
    for i in closures:
        vowel = events[i + 1]
        assert vowel.phoneme in VOWELS, vowel
        # Lips closed: a nasal hum or silence, quieter than the vowel that opens them.
        assert rms(segment(clip, events[i])) < max_ratio * rms(segment(clip, vowel))
    for event in events:
        if event.phoneme == "_":
            assert rms(segment(clip, event)) < 200


@pytest.mark.parametrize(
    ("voice", "text"),
    [
        ("en-gb", "Good afternoon, my friend."),
        ("fr", "Bonjour, je suis votre avatar."),
        ("de", "Guten Tag, ich bin Ihr Avatar."),
        ("es", "Hola, soy tu avatar."),
        ("en-us+f3", "Hello, I am your avatar."),
    ],
)
def test_several_voices(synth: SpeechSynthesizer, voice: str, text: str) -> None:
    clip = synth.synthesize(text, voice=voice)
    assert clip.voice == voice
    assert 0.8 < clip.duration_s < 4.0
    assert rms(clip.samples) > 500
    assert_tiles_clip(clip)
    assert len([e for e in clip.phonemes if e.phoneme != "_"]) >= 10


def test_voices_differ_and_are_listed(synth: SpeechSynthesizer) -> None:
    voices = synth.voices()
    assert {"en-us", "en-gb", "fr", "de", "es"} <= set(voices)
    assert {"f3", "m1"} <= set(synth.variants())
    default = synth.synthesize("Hello, I am your avatar.")
    female = synth.synthesize("Hello, I am your avatar.", voice="EN-US+F3")
    assert female.voice == "en-us+f3"
    assert [e.phoneme for e in default.phonemes] == [e.phoneme for e in female.phonemes]

    def pitch_hz(clip: SpeechClip) -> float:
        # Autocorrelation peak of a voiced stretch ("aI" in "I"): the voice's pitch.
        event = next(e for e in clip.phonemes if e.phoneme == "aI")
        x = segment(clip, event).astype(np.float64)
        corr = np.correlate(x, x, "full")[x.size - 1 :]
        lo, hi = clip.sample_rate // 400, clip.sample_rate // 60
        return clip.sample_rate / (lo + int(np.argmax(corr[lo:hi])))

    assert pitch_hz(female) > 1.3 * pitch_hz(default)


def test_default_voice_is_used() -> None:
    with SpeechSynthesizer(default_voice="fr") as french:
        clip = french.synthesize("Bonjour")
    assert clip.voice == "fr"
    with pytest.raises(AvatarInputError, match="unknown voice"):
        SpeechSynthesizer(default_voice="klingon")


def test_concurrent_synthesis_matches_sequential(synth: SpeechSynthesizer) -> None:
    texts = [
        "Hello, I am your avatar.",
        "my mama made me a map",
        "The quick brown fox jumps over the lazy dog.",
        "Bonjour tout le monde.",
    ]
    voices = ["en-us", "en-us", "en-gb", "fr"]
    sequential = [synth.synthesize(t, v) for t, v in zip(texts, voices, strict=True)]
    other = SpeechSynthesizer()  # a second instance shares the one library safely
    results: dict[tuple[int, int], SpeechClip] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(worker: int) -> None:
        try:
            start.wait()
            for round_ in range(5):
                i = (worker + round_) % len(texts)
                s = synth if worker % 2 else other
                results[(worker, round_)] = s.synthesize(texts[i], voices[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert len(results) == 20
    for (worker, round_), clip in results.items():
        expected = sequential[(worker + round_) % len(texts)]
        assert clip.text == expected.text and clip.voice == expected.voice
        assert [e.phoneme for e in clip.phonemes] == [e.phoneme for e in expected.phonemes]
        # espeak-ng's pitch flutter carries over between calls (see espeak.py), so voiced
        # stretches may end a pitch period earlier or later (well under a video frame);
        # garbled or interleaved synthesis would differ far more.
        assert clip.duration_s == pytest.approx(expected.duration_s, abs=0.025)
        starts = np.array([e.start_s for e in clip.phonemes])
        expected_starts = np.array([e.start_s for e in expected.phonemes])
        assert np.abs(starts - expected_starts).max() < 0.025
        n = min(clip.samples.size, expected.samples.size)
        assert abs(rms(clip.samples[:n]) - rms(expected.samples[:n])) < 0.05 * rms(expected.samples[:n])


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\x00\x07"])
def test_empty_text_is_rejected(synth: SpeechSynthesizer, text: str) -> None:
    with pytest.raises(AvatarInputError, match="text is empty"):
        synth.synthesize(text)


def test_over_long_text_is_rejected(synth: SpeechSynthesizer) -> None:
    synth.synthesize("a " * (MAX_TEXT_CHARS // 2))  # at the limit: fine
    with pytest.raises(AvatarInputError, match=rf"limit is {MAX_TEXT_CHARS}.*split it"):
        synth.synthesize("a" * (MAX_TEXT_CHARS + 1))


def test_speech_longer_than_the_cap_is_rejected(
    synth: SpeechSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tts, "MAX_SPEECH_SECONDS", 1.0)
    with pytest.raises(AvatarInputError, match="more than 1 s to speak"):
        synth.synthesize("This sentence certainly takes longer than one second to say aloud.")
    monkeypatch.undo()
    assert synth.synthesize("Still working.").duration_s > 0.3


@pytest.mark.parametrize("voice", ["klingon", "en-zz", "+f3"])
def test_unknown_voice_is_rejected_with_examples(synth: SpeechSynthesizer, voice: str) -> None:
    with pytest.raises(AvatarInputError, match=r"unknown voice .*en-us.*voices\(\)"):
        synth.synthesize("hello", voice=voice)


def test_unknown_variant_is_rejected(synth: SpeechSynthesizer) -> None:
    with pytest.raises(AvatarInputError, match=r"unknown voice variant 'zz'.*en-us\+f3"):
        synth.synthesize("hello", voice="en-us+zz")


def test_control_characters_are_stripped(synth: SpeechSynthesizer) -> None:
    clip = synth.synthesize("\x1b[31mhello\x00\x07\r\nworld\x7f")
    assert clip.text == "[31mhello world"
    plain = synth.synthesize("[31mhello world")
    assert [e.phoneme for e in clip.phonemes] == [e.phoneme for e in plain.phonemes]


@pytest.mark.parametrize(
    "text",
    [
        "<speak>hi <break time='3s'/> there</speak>",
        "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>&a;",
        "[[h@l'oU]] {{x}} \\\\ %s%n",
        "😀 🤖 ☃ 日本語 Ünïcödé",
        "lone \ud800 surrogate",
        "...",
        "-" * 400,
        "1" * 300,
    ],
)
def test_odd_input_is_spoken_as_text_without_crashing(synth: SpeechSynthesizer, text: str) -> None:
    clip = synth.synthesize(text)
    assert clip.samples.size > 0
    assert_tiles_clip(clip)
    # The library is still healthy afterwards.
    assert [e.phoneme for e in synth.synthesize("my mama").phonemes][:2] == ["m", "aI"]


def test_closed_synthesizer_refuses_work() -> None:
    synthesizer = SpeechSynthesizer()
    synthesizer.close()
    with pytest.raises(RuntimeError, match="closed"):
        synthesizer.synthesize("hello")


def test_phoneme_events_from_marks() -> None:
    marks = [
        PhonemeMark(100, "h"),
        PhonemeMark(300, "'oU"),
        PhonemeMark(500, "_:"),
        PhonemeMark(600, "_"),
        PhonemeMark(700, ",a"),
        PhonemeMark(700, "m"),  # the "a" before it would last zero samples
        PhonemeMark(900, "_"),
        PhonemeMark(1000, "_"),
    ]
    events = phoneme_events(marks, n_samples=1000, sample_rate=1000)
    assert [(e.start_s, e.end_s, e.phoneme) for e in events] == [
        (0.0, 0.1, "_"),
        (0.1, 0.3, "h"),
        (0.3, 0.5, "oU"),
        (0.5, 0.7, "_"),
        (0.7, 0.9, "m"),
        (0.9, 1.0, "_"),
    ]
    assert phoneme_events([], 50, 1000) == [PhonemeEvent(0.0, 0.05, "_")]
    assert phoneme_events([], 0, 1000) == []
