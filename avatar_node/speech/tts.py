"""Text to speech with phoneme timing, offline, from espeak-ng.

`SpeechSynthesizer.synthesize` turns text into a `SpeechClip`: int16 mono samples at
the voice's native rate and the phonemes the synthesiser actually rendered, with
their times taken from the synthesiser's own sample offsets (not estimated), so a
face can shape its mouth for each sound.

Phoneme symbols are espeak-ng's ASCII mnemonics ("m", "b", "aI", "@", "u:", ...)
without stress marks; every pause is "_". The events tile the clip: each one ends
where the next begins, the first starts at 0 and the last ends at the clip's end.
"""

from __future__ import annotations

import threading
import unicodedata
from dataclasses import dataclass

import numpy as np

from avatar_node.engines.base import PhonemeEvent
from avatar_node.errors import AvatarInputError
from avatar_node.speech.espeak import PhonemeMark, SpeechTooLongError, shared_engine

#: Longest text one request may carry. Longer text should be sent sentence by sentence,
#: which also lets speech start before the whole text is synthesised.
MAX_TEXT_CHARS = 5000
#: Longest speech one request may produce (guards against text like "$$$$..." that
#: expands into far more words than characters).
MAX_SPEECH_SECONDS = 600.0

PAUSE = "_"
_EXAMPLE_VOICES = ("en-us", "en-gb", "fr", "de", "es", "it", "ja")
_EXAMPLE_VARIANTS = ("f1", "f3", "m1", "m3", "klatt")
_STRESS_MARKS = "',%="
_WHITESPACE_CONTROLS = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x1f\x85")


@dataclass(frozen=True, eq=False)
class SpeechClip:
    """Synthesised speech: samples plus the phonemes that were spoken, on one timeline."""

    samples: np.ndarray  # int16 mono, read-only
    sample_rate: int
    phonemes: list[PhonemeEvent]  # seconds from the clip start, tiling [0, duration_s]
    text: str  # the text as spoken, after cleaning
    voice: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


class SpeechSynthesizer:
    """Offline text to speech. Thread-safe; several instances may share a process.

    All instances drive the one espeak-ng library of the process (the library keeps
    its state in C globals), so synthesis is serialised process-wide; a short
    sentence takes a few milliseconds.
    """

    def __init__(self, default_voice: str = "en-us") -> None:
        self._engine = shared_engine()
        self._closed = threading.Event()
        self._default_voice = self.resolve_voice(default_voice)

    @property
    def sample_rate(self) -> int:
        """The voice's native sample rate (espeak-ng: 22050 Hz)."""
        return self._engine.sample_rate

    @property
    def default_voice(self) -> str:
        return self._default_voice

    def voices(self) -> list[str]:
        """Voice names usable as `voice`: espeak-ng language codes such as "en-us", "fr-fr", "de".

        A variant may be appended with "+", e.g. "en-us+f3" (see `variants()`).
        """
        return sorted(self._engine.languages)

    def variants(self) -> list[str]:
        """Voice variants ("f3", "m1", "klatt", ...) that can follow a voice name after "+"."""
        return sorted(self._engine.variants)

    def synthesize(self, text: str, voice: str = "") -> SpeechClip:
        """Speak `text` with `voice` (default: the synthesiser's default voice).

        Raises AvatarInputError for empty or over-long text and unknown voices.
        """
        if self._closed.is_set():
            raise RuntimeError("this SpeechSynthesizer is closed; create a new one")
        cleaned = clean_text(text)
        resolved = self.resolve_voice(voice) if voice else self._default_voice
        base, _, variant = resolved.partition("+")
        voice_file = self._engine.languages[base] + (f"+{self._engine.variants[variant]}" if variant else "")
        rate = self._engine.sample_rate
        try:
            samples, marks = self._engine.synthesize(
                cleaned, voice_file, max_samples=int(MAX_SPEECH_SECONDS * rate)
            )
        except SpeechTooLongError:
            raise AvatarInputError(
                f"this text would take more than {MAX_SPEECH_SECONDS:.0f} s to speak; "
                "split it into shorter parts and send them one after another"
            ) from None
        samples.setflags(write=False)
        return SpeechClip(
            samples=samples,
            sample_rate=rate,
            phonemes=phoneme_events(marks, len(samples), rate),
            text=cleaned,
            voice=resolved,
        )

    def close(self) -> None:
        """Stop accepting work. The shared espeak-ng library stays loaded for other instances."""
        self._closed.set()

    def __enter__(self) -> SpeechSynthesizer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def resolve_voice(self, voice: str) -> str:
        """Normalise a user's voice name ("EN-US+F3" -> "en-us+f3"), or explain what is valid."""
        if not isinstance(voice, str):
            raise AvatarInputError(f"voice must be a string such as 'en-us'; got {type(voice).__name__}")
        base, _, variant = voice.strip().lower().partition("+")
        if base not in self._engine.languages:
            examples = [v for v in _EXAMPLE_VOICES if v in self._engine.languages]
            raise AvatarInputError(
                f"unknown voice {voice!r}: use a language code such as {', '.join(examples)} "
                f"({len(self._engine.languages)} voices; SpeechSynthesizer.voices() lists them all)"
            )
        if not variant:
            return base
        variant_name = self._engine.variants.get(variant)
        if variant_name is None:
            variants = [v for v in _EXAMPLE_VARIANTS if v in self._engine.variants]
            raise AvatarInputError(
                f"unknown voice variant {variant!r} in {voice!r}: use one such as "
                f"{', '.join(base + '+' + v for v in variants)} (SpeechSynthesizer.variants() lists them all)"
            )
        return f"{base}+{variant_name.lower()}"


def clean_text(text: str) -> str:
    """Validate text to speak: size capped, control characters out, runs of whitespace made one space."""
    if not isinstance(text, str):
        raise AvatarInputError(f"text must be a string; got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise AvatarInputError(
            f"text is {len(text)} characters long; the limit is {MAX_TEXT_CHARS} per request: "
            "split it (for example into sentences) and send the parts one after another"
        )
    kept: list[str] = []
    for ch in text:
        if ch in _WHITESPACE_CONTROLS:
            kept.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cs"):  # controls and lone surrogates
            kept.append(ch)
    cleaned = " ".join("".join(kept).split())
    if not cleaned:
        raise AvatarInputError("text is empty: send the words the avatar should say")
    return cleaned


def phoneme_events(marks: list[PhonemeMark], n_samples: int, sample_rate: int) -> list[PhonemeEvent]:
    """Turn the synthesiser's phoneme start marks into events that tile [0, n_samples).

    Stress marks are dropped, pauses become "_", neighbouring pauses merge, gaps
    before the first mark become a pause, and zero-length entries are left out.
    """
    starts: list[tuple[int, str]] = []
    for mark in sorted(marks, key=lambda m: m.sample):
        symbol = mark.mnemonic.lstrip(_STRESS_MARKS)
        if not symbol:
            continue
        if symbol.startswith("_"):
            symbol = PAUSE
        sample = min(max(mark.sample, 0), n_samples)
        if not starts and sample > 0:
            starts.append((0, PAUSE))
        if starts and starts[-1][1] == PAUSE and symbol == PAUSE:
            continue  # a pause running on
        if starts and starts[-1][0] == sample:
            starts.pop()  # the earlier entry would last zero samples
            if starts and starts[-1][1] == PAUSE and symbol == PAUSE:
                continue
        starts.append((sample, symbol))
    if not starts and n_samples > 0:
        starts.append((0, PAUSE))

    events: list[PhonemeEvent] = []
    for i, (start, symbol) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else n_samples
        if end > start:
            events.append(PhonemeEvent(start / sample_rate, end / sample_rate, symbol))
    return events
