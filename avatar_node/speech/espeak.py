"""A ctypes binding to the espeak-ng library shipped by the `espeakng-loader` wheel.

Only what text-to-speech needs: initialise once in synchronous mode, list voices,
select a voice, and synthesise text into int16 samples plus the phoneme marks the
synthesiser emits while it renders (mnemonic and exact sample offset).

espeak-ng keeps all of its state in C globals: one voice, one output buffer, one
synthesis callback per process. So this module holds exactly one `EspeakEngine`
per process (`shared_engine()`), and every call into the library runs under that
engine's lock. That shared object is the one piece of process-wide state here; it
mirrors the library's own and cannot be made per-instance.

Determinism: espeak-ng keeps its pitch-flutter phase and gain control in
function-level static variables that no API call resets, so the same text can
come out a few samples longer or shorter depending on what the process said
before. The phoneme sequence is unaffected and the marks move by well under a
millisecond.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field

import numpy as np

# speak_lib.h: espeak_AUDIO_OUTPUT
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# speak_lib.h: espeak_Initialize options
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
# speak_lib.h: espeak_EVENT_TYPE
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
# speak_lib.h: espeak_POSITION_TYPE and synthesis flags. No espeakSSML and no
# espeakPHONEMES: markup and "[[...]]" are read as plain text, never interpreted.
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
# speak_lib.h: espeak_ERROR
_EE_OK = 0
# Milliseconds of audio per callback; larger means fewer Python round trips.
_CALLBACK_BUFFER_MS = 200


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    """espeak_EVENT from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # sample offset from the start of this synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """espeak_VOICE from speak_lib.h."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        # Pairs of (priority byte, NUL-terminated language), ended by a zero byte.
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class SpeechTooLongError(Exception):
    """Synthesis was stopped because the audio passed the caller's sample limit."""


@dataclass(frozen=True)
class PhonemeMark:
    """Where the synthesiser started a phoneme: sample offset and ASCII mnemonic."""

    sample: int
    mnemonic: str


@dataclass
class _Job:
    """The synthesis in progress; filled by the callback."""

    max_samples: int
    chunks: list[np.ndarray] = field(default_factory=list)
    marks: list[PhonemeMark] = field(default_factory=list)
    n_samples: int = 0
    too_long: bool = False
    error: BaseException | None = None


def _read_languages(address: int | None) -> list[tuple[int, str]]:
    """Decode espeak_VOICE.languages into (priority, code) pairs; a lower priority is preferred."""
    languages: list[tuple[int, str]] = []
    if not address:
        return languages
    while True:
        priority = ctypes.c_ubyte.from_address(address).value
        if priority == 0:
            return languages
        name = ctypes.string_at(address + 1)
        languages.append((priority, name.decode("ascii", "replace")))
        address += 2 + len(name)


class EspeakEngine:
    """The process's espeak-ng library, initialised once. Use `shared_engine()`."""

    def __init__(self) -> None:
        import espeakng_loader  # imported here so that merely importing this module loads nothing

        self._lock = threading.Lock()
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._declare_signatures()
        # Keep a reference: the C library holds this pointer for the life of the process.
        self._callback = _SynthCallback(self._on_audio)
        self._job: _Job | None = None
        self._current_voice = ""

        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            _CALLBACK_BUFFER_MS,
            data_path,
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise RuntimeError(
                f"espeak-ng failed to initialise (code {rate}) with data at {data_path.decode()}; "
                "reinstall the espeakng-loader package"
            )
        self.sample_rate: int = rate
        self._lib.espeak_SetSynthCallback(self._callback)
        self.languages, self.variants = self._list_voices()

    def _declare_signatures(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # size in bytes, terminator included
            ctypes.c_uint,  # position
            ctypes.c_int,  # position type
            ctypes.c_uint,  # end position (0: none)
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique identifier out
            ctypes.c_void_p,  # user data
        ]
        lib.espeak_Synth.restype = ctypes.c_int

    def _list_voices(self) -> tuple[dict[str, str], dict[str, str]]:
        """Language codes (lower case -> voice file) and voice variants (lower case -> file name).

        espeak_SetVoiceByName matches voice file names, not language codes, so each
        code maps to the file of the voice that lists it with the best priority.
        """
        best: dict[str, tuple[int, str]] = {}
        voices = self._lib.espeak_ListVoices(None)
        for i in range(100_000):
            if not voices[i]:
                break
            voice = voices[i].contents
            identifier = (voice.identifier or b"").decode("ascii", "replace")
            if not identifier or identifier.startswith("mb/"):
                continue  # MBROLA voices need data this package does not ship
            for priority, code in _read_languages(voice.languages):
                key = code.lower()
                if key not in best or priority < best[key][0]:
                    best[key] = (priority, identifier)
        languages = {code: identifier for code, (_, identifier) in best.items()}

        spec = _Voice()
        spec.languages = ctypes.cast(ctypes.c_char_p(b"variant"), ctypes.c_void_p)
        variants: dict[str, str] = {}
        listed = self._lib.espeak_ListVoices(ctypes.byref(spec))
        for i in range(100_000):
            if not listed[i]:
                break
            identifier = (listed[i].contents.identifier or b"").decode("ascii", "replace")
            name = identifier.rsplit("/", 1)[-1]
            if name:
                variants.setdefault(name.lower(), name)
        return languages, variants

    def _on_audio(self, wav, n_samples, events) -> int:  # noqa: ANN001 - ctypes callback
        """Called by espeak-ng from inside espeak_Synth, on the synthesising thread."""
        job = self._job
        if job is None:
            return 1
        try:
            if n_samples > 0 and wav:
                job.chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
                job.n_samples += n_samples
            if events:
                i = 0
                while events[i].type != _EVENT_LIST_TERMINATED:
                    event = events[i]
                    if event.type == _EVENT_PHONEME:
                        mnemonic = bytes(event.id.string).split(b"\0", 1)[0].decode("ascii", "replace")
                        job.marks.append(PhonemeMark(int(event.sample), mnemonic))
                    i += 1
            if job.n_samples > job.max_samples:
                job.too_long = True
                return 1  # tells espeak-ng to stop this synthesis
            return 0
        except BaseException as exc:  # an exception must not unwind through C
            job.error = exc
            return 1

    def synthesize(self, text: str, voice: str, max_samples: int) -> tuple[np.ndarray, list[PhonemeMark]]:
        """Speak `text` with `voice` (a voice file name, optionally "+variant": "gmw/en-US+f3").

        Returns int16 mono samples at `sample_rate` and the phoneme marks in order.
        Raises SpeechTooLongError past `max_samples`.
        """
        encoded = text.encode("utf-8") + b"\0"
        with self._lock:
            if voice != self._current_voice:
                status = self._lib.espeak_SetVoiceByName(voice.encode("ascii"))
                if status != _EE_OK:
                    raise RuntimeError(f"espeak-ng could not load voice {voice!r} (code {status})")
                self._current_voice = voice
            job = _Job(max_samples=max_samples)
            self._job = job
            try:
                status = self._lib.espeak_Synth(
                    encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
            finally:
                self._job = None
        if job.error is not None:
            raise RuntimeError("espeak-ng synthesis callback failed") from job.error
        if job.too_long:
            raise SpeechTooLongError()
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng synthesis failed (code {status})")
        samples = np.concatenate(job.chunks) if job.chunks else np.zeros(0, dtype=np.int16)
        return samples.astype(np.int16, copy=False), job.marks


_shared_engine: EspeakEngine | None = None
_shared_engine_lock = threading.Lock()


def shared_engine() -> EspeakEngine:
    """The process's espeak-ng engine, initialised on first use (thread-safe)."""
    global _shared_engine
    with _shared_engine_lock:
        if _shared_engine is None:
            _shared_engine = EspeakEngine()
        return _shared_engine
