"""Mouth shapes from phoneme timing, with co-articulation.

espeak-ng's ASCII phoneme mnemonics are mapped to a small set of visemes. Each phoneme
exerts an influence that peaks over its own span and decays on both sides (a dominance
function); the target at a time is the influence-weighted mean of the neighbouring
visemes, so "m" closes the lips firmly while a vowel between two consonants still
shows its own shape. Bilabials and labiodentals dominate strongly: the lips must really
close for m/b/p, whatever comes next.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from avatar_node.engines.portrait.speech_features import MouthShape

# viseme name -> (shape, dominance). Openings are shares of the widest jaw opening.
_VISEMES: dict[str, tuple[MouthShape, float]] = {
    "rest": (MouthShape(), 0.6),
    "closed": (MouthShape(lip_close=1.0), 4.0),  # m b p: lips pressed
    "bite": (MouthShape(open=0.12, width=0.1, teeth=1.0, lip_bite=1.0), 2.2),  # f v: teeth on the lower lip
    "open": (MouthShape(open=1.0, width=0.15, teeth=0.55, lower_teeth=0.15), 1.0),  # a, aI, aU
    "mid": (MouthShape(open=0.55, width=0.35, teeth=0.6), 1.0),  # E, e, @, V, 3
    "spread": (MouthShape(open=0.26, width=0.95, teeth=0.85, lower_teeth=0.2), 1.0),  # i, I
    "round": (MouthShape(open=0.3, width=-1.0, teeth=0.05), 1.6),  # u, U, w
    "round_open": (MouthShape(open=0.5, width=-0.7, teeth=0.15), 1.2),  # O, o, 0
    "teeth": (MouthShape(open=0.14, width=0.45, teeth=1.0, lower_teeth=0.9), 0.8),  # s z S Z tS dZ: teeth together
    "tongue": (MouthShape(open=0.3, width=0.15, teeth=0.6), 0.5),  # t d n l T D
    "back": (MouthShape(open=0.38, teeth=0.4), 0.4),  # k g N h j
    "r": (MouthShape(open=0.28, width=-0.5, teeth=0.3), 0.7),
}

_PHONEME_VISEME = {
    "m": "closed", "b": "closed", "p": "closed",
    "f": "bite", "v": "bite",
    "a": "open", "a:": "open", "A": "open", "A:": "open", "aI": "open", "aU": "open", "a#": "open",
    "E": "mid", "e": "mid", "e:": "mid", "eI": "mid", "@": "mid", "3": "mid", "3:": "mid",
    "V": "mid", "@L": "mid", "@2": "mid", "@5": "mid", "eA": "mid", "e@": "mid", "a@": "open",
    "i": "spread", "i:": "spread", "I": "spread", "I2": "spread", "i@": "spread", "I@": "spread",
    "u": "round", "u:": "round", "U": "round", "w": "round", "U@": "round", "u@": "round",
    "O": "round_open", "O:": "round_open", "o": "round_open", "oU": "round_open", "0": "round_open",
    "OI": "round_open", "o@": "round_open", "O@": "round_open", "Q": "round_open",
    "s": "teeth", "z": "teeth", "S": "teeth", "Z": "teeth", "tS": "teeth", "dZ": "teeth",
    "T": "tongue", "D": "tongue",
    "t": "tongue", "d": "tongue", "n": "tongue", "l": "tongue", "L": "tongue", "t#": "tongue",
    "k": "back", "g": "back", "N": "back", "h": "back", "j": "back", "x": "back", "?": "back",
    "r": "r", "r-": "r", "R": "r",
    "_": "rest", "": "rest", " ": "rest", "_:": "rest", "_!": "rest",
}


def viseme_shape(name: str) -> MouthShape:
    """The mouth shape of a named viseme (see the table above)."""
    return _VISEMES[name][0]


def viseme_of(phoneme: str) -> str:
    """The viseme for an espeak-ng mnemonic; unknown ones fall back by their first letter."""
    p = phoneme.strip().strip("'\",%=")
    if p in _PHONEME_VISEME:
        return _PHONEME_VISEME[p]
    for cut in range(len(p) - 1, 0, -1):  # longest known prefix: "aI@" -> "aI"
        if p[:cut] in _PHONEME_VISEME:
            return _PHONEME_VISEME[p[:cut]]
    first = p[:1].lower()
    if first in "aeiouy":
        return "mid"
    return "tongue" if first else "rest"


@dataclass(frozen=True)
class TimedPhoneme:
    start: float  # seconds on the stream clock
    end: float
    phoneme: str


#: How far ahead of a frame's time its phonemes are read (seconds): what the mouth's
#: springs lag plus half a frame (a frame is seen while its audio plays). Lips close for
#: m/b/p and meet the teeth for f/v with less lead, and let go sooner: the closure is the
#: silent part of the phoneme itself, not the vowels around it.
LEAD_S = 0.12
_LEAD_BY_VISEME = {"closed": 0.06, "bite": 0.07}


def blend_at(phonemes: Iterable[TimedPhoneme], t: float, spread_s: float = 0.05) -> MouthShape | None:
    """The co-articulated mouth target for the frame shown at time t, or None if no
    phoneme is near."""
    total = 0.0
    acc = [0.0] * len(MouthShape.FIELDS)
    for ph in phonemes:
        if ph.end < t - 0.25 or ph.start > t + 0.4:
            continue
        name = viseme_of(ph.phoneme)
        shape, dominance = _VISEMES[name]
        # Distance from the (led) time to the phoneme's span (0 inside it). Lip closures
        # and bites dominate inside their span but let go quickly outside it.
        at = t + _LEAD_BY_VISEME.get(name, LEAD_S)
        dist = max(ph.start - at, at - ph.end, 0.0)
        spread = spread_s * (0.45 if name in ("closed", "bite") else 1.0)
        weight = dominance * math.exp(-((dist / spread) ** 2))
        if weight < 1e-4:
            continue
        total += weight
        for i, value in enumerate(shape.as_tuple()):
            acc[i] += weight * value
    if total <= 0.0:
        return None
    return MouthShape(*(a / total for a in acc))
