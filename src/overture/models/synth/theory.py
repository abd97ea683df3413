"""Music theory for the composer: pitch classes, chords from roman numerals with the scale a melody
uses over each, and the sixteenth-note grid that every part is written on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The grid: sixteenth-note steps, four-bar phrases.
STEPS_PER_BEAT = 4
STEPS_PER_BAR = 16
BARS_PER_PHRASE = 4

_LETTERS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_NUMERALS = ("i", "ii", "iii", "iv", "v", "vi", "vii")
_NUMERAL = re.compile(r"^(b|#)?(vii|iii|vi|iv|ii|v|i)(°)?$", re.IGNORECASE)


def pitch_class(key: str) -> int:
    """Pitch class of a tonic name such as ``C``, ``F#`` or ``Bb``."""
    match = re.fullmatch(r"([A-Ga-g])([#b]?)", key)
    if not match:
        raise ValueError(f"unknown key {key!r}; expected a note name such as C, F# or Bb")
    offset = {"#": 1, "b": -1, "": 0}[match.group(2)]
    return (_LETTERS[match.group(1).lower()] + offset) % 12


@dataclass(frozen=True)
class Chord:
    """A chord and the scale a melody should use over it; pitches are semitones above the tonic."""

    tones: tuple[int, ...]  # root first
    scale: tuple[int, ...]  # the key's seven notes, bent to contain every chord tone

    @property
    def root(self) -> int:
        return self.tones[0]


def chord_from_numeral(numeral: str, mode: str, seventh: bool) -> Chord:
    """Build a chord from a roman numeral relative to the mode's scale (``V`` in minor is major)."""
    match = _NUMERAL.match(numeral)
    if not match:
        raise ValueError(f"bad roman numeral {numeral!r}")
    accidental, name, diminished = match.groups()
    scale = SCALES[mode]
    root = (scale[_NUMERALS.index(name.lower())] + {"b": -1, "#": 1, None: 0}[accidental]) % 12
    third = 4 if name.isupper() else 3
    fifth = 6 if diminished else 7
    tones = [root, (root + third) % 12, (root + fifth) % 12]
    if seventh:
        # The key's own seventh above the root: minor, unless only the major one is in the key.
        minor_seventh, major_seventh = (root + 10) % 12, (root + 11) % 12
        tones.append(major_seventh if major_seventh in scale and minor_seventh not in scale else minor_seventh)
    return Chord(tuple(tones), _bend_scale(scale, tones))


def _bend_scale(scale: tuple[int, ...], tones: list[int]) -> tuple[int, ...]:
    """Swap scale notes for chromatic chord tones (e.g. G for G# over E major in A minor).

    Of the two neighbours a chromatic tone could replace, the one leaving fewer semitone
    clashes goes (the lower on a tie), which yields harmonic minor, Lydian or Mixolydian colours.
    """
    notes = set(scale)
    for tone in tones:
        if tone in notes:
            continue
        below, above = (tone - 1) % 12, (tone + 1) % 12
        candidates = [n for n in (below, above) if n in notes and n not in tones]
        if candidates:
            notes.remove(min(candidates, key=lambda n: (_semitone_clashes((notes - {n}) | {tone}), n != below)))
            notes.add(tone)
    return tuple(sorted(notes))


def _semitone_clashes(notes: set[int]) -> int:
    return sum((n + 1) % 12 in notes for n in notes)
