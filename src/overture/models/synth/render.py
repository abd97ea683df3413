"""The algorithmic composer behind ``overture/synth``: a prompt becomes an ``Arrangement``, and an
arrangement plus a seed becomes a deterministic stereo track of drums, bass, chords and a melody.

Pure numpy/scipy and no weights, so it runs anywhere and fast: one-shot drum samples and note
waveforms are synthesized once per render (wavetables, FM, filtered noise) and placed with
slice-adds on a strict sixteenth-note grid.
"""

from __future__ import annotations

import functools

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy import signal

SAMPLE_RATE = 44100

_STEPS_PER_BEAT = 4
_STEPS_PER_BAR = 16
_BARS_PER_PHRASE = 4

# ---------------------------------------------------------------------------------------------
# Music theory
# ---------------------------------------------------------------------------------------------

_LETTERS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_NUMERALS = ("i", "ii", "iii", "iv", "v", "vi", "vii")
_NUMERAL = re.compile(r"^(b|#)?(vii|iii|vi|iv|ii|v|i)(°)?$", re.IGNORECASE)


def _pitch_class(key: str) -> int:
    """Pitch class of a tonic name such as ``C``, ``F#`` or ``Bb``."""
    match = re.fullmatch(r"([A-Ga-g])([#b]?)", key)
    if not match:
        raise ValueError(f"unknown key {key!r}; expected a note name such as C, F# or Bb")
    offset = {"#": 1, "b": -1, "": 0}[match.group(2)]
    return (_LETTERS[match.group(1).lower()] + offset) % 12


@dataclass(frozen=True)
class _Chord:
    """A chord and the scale a melody should use over it; pitches are semitones above the tonic."""

    tones: tuple[int, ...]  # root first
    scale: tuple[int, ...]  # the key's seven notes, bent to contain every chord tone

    @property
    def root(self) -> int:
        return self.tones[0]


def _chord(numeral: str, mode: str, seventh: bool) -> _Chord:
    """Build a chord from a roman numeral relative to the mode's scale (``V`` in minor is major)."""
    match = _NUMERAL.match(numeral)
    if not match:
        raise ValueError(f"bad roman numeral {numeral!r}")
    accidental, name, diminished = match.groups()
    scale = _SCALES[mode]
    root = (scale[_NUMERALS.index(name.lower())] + {"b": -1, "#": 1, None: 0}[accidental]) % 12
    third = 4 if name.isupper() else 3
    fifth = 6 if diminished else 7
    tones = [root, (root + third) % 12, (root + fifth) % 12]
    if seventh:
        # The key's own seventh above the root: minor, unless only the major one is in the key.
        minor_seventh, major_seventh = (root + 10) % 12, (root + 11) % 12
        tones.append(major_seventh if major_seventh in scale and minor_seventh not in scale else minor_seventh)
    return _Chord(tuple(tones), _bend_scale(scale, tones))


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


# ---------------------------------------------------------------------------------------------
# Styles
# ---------------------------------------------------------------------------------------------

# Every progression starts on the tonic, and none dwells on the relative key: a listener (and a
# key finder) should hear the asked-for key.
_MAJOR_POP = ("I V vi IV", "I vi IV V", "I IV V IV", "I IV vi V", "I IV I V")
_MINOR_POP = ("i iv VI V", "i VI iv V", "i VI VII i", "i iv V i", "i VII VI V")
_PROGRESSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pop": (_MAJOR_POP, _MINOR_POP),
    "modal": (
        ("I IV I V", "I bVII IV I", "I V IV IV", "I ii IV I"),
        ("i i VI VII", "i VI i VII", "i iv i VII", "i iv v i", "i VI VII i"),
    ),
    "jazz": (("I vi ii V", "I IV ii V", "I I ii V"), ("i iv ii° V", "i VI ii° V", "i iv V i")),
    "ambient": (("I iii IV I", "I V vi IV", "I IV I V"), ("i VI i VII", "i iv VI i", "i VI iv i")),
}

# Melody rhythm cells: 'x' starts a note, '-' holds it, '.' rests; one sixteenth per character.
_CELLS = {
    "sparse": ("x-------", "x---x---", "x-----------x---", "x---", "....x---", "x-------........"),
    "medium": ("x-x-", "x---", "x--x", "x-xx", "..x-", "x-", ".x-x", "x---x-x-"),
    "busy": ("xxx-", "x-xx", "xx-x", "x-x-", "x.x.", ".xx-", "x---", "xxxx"),
}
_DENSITIES = ("sparse", "medium", "busy")


@dataclass(frozen=True)
class _Style:
    """Everything a genre decides; drum, bass and chord patterns are 16 sixteenths of one bar."""

    tempo: float
    tonic: str
    mode: str
    chords: str  # default chord instrument
    lead: str  # default lead instrument
    bass: str  # bass timbre
    drums: tuple[tuple[str, str], ...]  # (voice, pattern) with X/x/o for loud/medium/soft hits
    bass_pattern: str  # r=root, o=octave, f=fifth, a=approach to the next root, '-' hold, '.' rest
    chord_pattern: str
    progressions: str
    density: str
    drum_gain: float = 1.0
    swing: tuple[int, float] = (0, 0.0)  # (grid: 8 or 16, delay of the off-beat in sixteenths)
    sevenths: bool = False
    sidechain: bool = False
    reverb: float = 1.0  # wet level


_FOUR = "X...X...X...X..."
_BACKBEAT = "....X.......X..."
_EIGHTHS = "x.o.x.o.x.o.x.o."

# Each: tempo, tonic, mode, chord / lead instrument, bass timbre; drum patterns;
# bass pattern, chord pattern, progression family, melody density; then extras.
# fmt: off
_STYLES: dict[str, _Style] = {
    "techno": _Style(
        128, "A", "minor", "pad", "pluck", "synth",
        (("kick", _FOUR), ("clap", "....x.......x..."), ("hat", ".o.o.o.o.o.o.o.o"), ("open", "..x...x...x...x.")),
        "..r-..r-..r-..r-", "x---------------", "modal", "busy", sidechain=True,
    ),
    "house": _Style(
        124, "F", "minor", "piano", "pluck", "synth",
        (("kick", _FOUR), ("clap", "....x.......x..."), ("hat", "oooooooooooooooo"), ("open", "..x...x...x...x.")),
        "..r-..r...r-..o-", "..x-..x-..x-..x-", "pop", "medium", sevenths=True, sidechain=True,
    ),
    "edm": _Style(
        128, "F", "minor", "pad", "lead", "synth",
        (("kick", _FOUR), ("clap", _BACKBEAT), ("open", "..x...x...x...x.")),
        "r-r-r-r-r-r-r-r-", "x---------------", "pop", "medium", sidechain=True,
    ),
    "ambient": _Style(
        70, "E", "major", "pad", "bells", "sub",
        (("kick", "X...X...X...X..."), ("shaker", "o...o...o...o...")),
        "r---------------", "x---------------", "ambient", "sparse", drum_gain=0.55, reverb=1.8,
    ),
    "lofi": _Style(
        85, "Eb", "major", "piano", "guitar", "sub",
        (("kick", "X.......X..x...."), ("snare", _BACKBEAT), ("hat", _EIGHTHS)),
        "r-----.r--r-f---", "x---------x-----", "jazz", "sparse", drum_gain=0.85, swing=(8, 0.33), sevenths=True,
    ),
    "hiphop": _Style(
        90, "C", "minor", "piano", "bells", "sub",
        (("kick", "X.....x.X......."), ("snare", _BACKBEAT), ("hat", _EIGHTHS)),
        "r-----r---r-----", "x---------------", "pop", "medium", swing=(16, 0.2),
    ),
    "rock": _Style(
        120, "E", "minor", "guitar", "lead", "electric",
        (("kick", "X.....x.X......."), ("snare", _BACKBEAT), ("hat", _EIGHTHS)),
        "r-r-r-r-r-r-r-r-", "x-x-x-x-x-x-x-x-", "modal", "medium",
    ),
    "pop": _Style(
        110, "C", "major", "piano", "lead", "electric",
        (("kick", "X.......X.x....."), ("clap", _BACKBEAT), ("hat", _EIGHTHS)),
        "r-.r..r-r-.r..o-", "x---x---x---x---", "pop", "medium",
    ),
    "jazz": _Style(
        120, "Bb", "major", "piano", "brass", "upright",
        (("kick", "o...o...o...o..."), ("ride", "X...x.o.X...x.o."), ("hat", "....x.......x...")),
        "walk", "x-....x-........", "jazz", "medium", drum_gain=0.8, swing=(8, 0.67), sevenths=True,
    ),
    "orchestral": _Style(
        100, "D", "minor", "strings", "brass", "sub",
        (("kick", "X...x...X...x..."), ("snare", "....o.......o...")),
        "r-------r-----f-", "x---------------", "pop", "sparse", drum_gain=0.8, reverb=1.5,
    ),
    "funk": _Style(
        105, "E", "minor", "guitar", "brass", "electric",
        (("kick", "X..x..x.X.....x."), ("snare", "....X..o.o..X..o"), ("hat", "xoxoxoxoxoxoxoxo")),
        "r..o..r.r.o..ro.", "..x.x...x.x..x..", "modal", "busy", swing=(16, 0.12), sevenths=True,
    ),
    "reggae": _Style(
        80, "G", "major", "organ", "flute", "sub",
        (("kick", "X...x...X...x..."), ("snare", "........X......."), ("hat", "x...x...x...x...")),
        "r---..f-r-....a-", "..x...x...x...x.", "pop", "medium",
    ),
    "dnb": _Style(
        174, "F", "minor", "pad", "lead", "synth",
        (("kick", "X.........X....."), ("snare", _BACKBEAT), ("hat", "X.o.X.o.X.o.X.o.")),
        "r---------r-----", "x---------------", "modal", "busy",
    ),
}
# fmt: on
_DEFAULT_GENRE = "pop"

# ---------------------------------------------------------------------------------------------
# Prompt parsing
# ---------------------------------------------------------------------------------------------

_GENRE_WORDS: tuple[tuple[str, str], ...] = (
    ("dnb", r"drum\s*(?:and|&|n|'n')\s*bass|\bdnb\b|\bd&b\b|\bjungle\b"),
    ("lofi", r"\blo-?\s?fi\b|\bchillhop\b"),
    ("hiphop", r"\bhip[\s-]?hop\b|\btrap\b|\brap\b|\bboom[\s-]?bap\b"),
    ("techno", r"\btechno\b"),
    ("house", r"\bhouse\b"),
    ("edm", r"\bedm\b|\btrance\b|\belectro\b|\bdubstep\b|\bsynthwave\b"),
    ("ambient", r"\bambient\b|\bdrone\b|\batmospheric\b"),
    ("rock", r"\brock\b|\bmetal\b|\bpunk\b|\bgrunge\b"),
    ("pop", r"\bpop\b"),
    ("jazz", r"\bjazz\w*|\bbebop\b|\bblues\b|\bswing\b"),
    ("orchestral", r"\borchestra\w*|\bcinematic\b|\bsymphon\w*|\bsoundtrack\b|\bfilm score\b"),
    ("funk", r"\bfunk\w*|\bdisco\b"),
    ("reggae", r"\breggae\b|\bdub\b|\bska\b"),
)
# Words that hint at a genre but also describe others ("chill house", "electronic ambient").
_WEAK_GENRE_WORDS: tuple[tuple[str, str], ...] = (
    ("lofi", r"\bchill\w*"),
    ("edm", r"\belectronic\b|\bdance\b|\bclub\b"),
    ("orchestral", r"\bepic\b"),
)

# Checked in this order; each match is blanked so "synth pads" is not also a synth lead.
_INSTRUMENT_WORDS: tuple[tuple[str, str], ...] = (
    ("pad", r"\b(?:synth\s*)?pads?\b"),
    ("lead", r"\b(?:synth\s*)?leads?\b"),
    ("piano", r"\b(?:electric\s+)?piano\b|\bkeys\b|\brhodes\b|\bkeyboards?\b|\bwurlitzer\b"),
    ("guitar", r"\bguitars?\b"),
    ("pluck", r"\bplucks?\b|\barp\w*|\bmarimba\b|\bharp\b"),
    ("strings", r"\bstrings?\b|\bviolins?\b|\bviolas?\b|\bcellos?\b"),
    ("bells", r"\bbells?\b|\bchimes?\b|\bglockenspiel\b|\bcelesta\b|\bmusic box\b"),
    ("organ", r"\borgans?\b|\bhammond\b"),
    ("flute", r"\bflutes?\b|\bwoodwinds?\b|\bclarinets?\b|\bwhistle\b"),
    ("brass", r"\bbrass\b|\bhorns?\b|\btrumpets?\b|\bsax\w*|\btrombones?\b"),
    ("bass", r"\bsynth\s*bass\b|\bbass\w*|\b808s?\b"),
    ("lead", r"\bsynth\w*"),
)
_CHORD_INSTRUMENTS = ("pad", "strings", "organ", "piano", "guitar")
MELODIC_INSTRUMENTS = ("piano", "guitar", "lead", "pluck", "pad", "strings", "bells", "organ", "flute", "brass")
INSTRUMENTS = ("drums", "bass", *MELODIC_INSTRUMENTS)

# Mood word -> the mode it implies (None: no preference).
# fmt: off
_MOODS: dict[str, str | None] = {
    "dark": "minor", "sad": "minor", "melancholic": "minor", "melancholy": "minor", "moody": "minor",
    "gloomy": "minor", "somber": "minor", "sombre": "minor", "tense": "minor", "mysterious": "minor",
    "haunting": "minor", "ominous": "minor", "aggressive": "minor", "angry": "minor",
    "happy": "major", "upbeat": "major", "uplifting": "major", "joyful": "major", "cheerful": "major",
    "bright": "major", "sunny": "major", "hopeful": "major", "playful": "major", "triumphant": "major",
    "calm": None, "relaxed": None, "relaxing": None, "peaceful": None, "dreamy": None, "chill": None,
    "mellow": None, "energetic": None, "romantic": None, "epic": None, "driving": None,
}
# fmt: on
_CALM_MOODS = {"calm", "relaxed", "relaxing", "peaceful", "dreamy", "chill", "mellow", "sad", "melancholic"}
_ENERGETIC_MOODS = {"energetic", "upbeat", "aggressive", "angry", "driving", "happy", "playful"}

_ACCIDENTAL = r"(#|♯|b|♭|[\s-]?sharp|[\s-]?flat)?"
_KEY_WITH_MODE = re.compile(r"\b([a-g])" + _ACCIDENTAL + r"\s*-?(major|minor|maj|min)\b")
_KEY_AFTER_IN = re.compile(r"\b(in|key of|key)\s+([a-g])" + _ACCIDENTAL + r"(m\b)?(?![\w#♯♭])")
_TEMPO = (
    re.compile(r"(\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats per minute)\b"),
    re.compile(r"\b(?:tempo|bpm)\s*(?:of|at|=|:)?\s*(\d{2,3}(?:\.\d+)?)"),
)
_TEMPO_RANGE = (40.0, 240.0)


@dataclass(frozen=True)
class Arrangement:
    """What to play. ``instruments`` lists ``drums``/``bass`` when present, then the melodic
    instruments in role order: chords, lead, and an optional arpeggio."""

    tempo: float
    key: str
    mode: str
    genre: str
    mood: str
    instruments: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tempo) and _TEMPO_RANGE[0] <= self.tempo <= _TEMPO_RANGE[1]):
            raise ValueError(f"tempo must be between {_TEMPO_RANGE[0]:g} and {_TEMPO_RANGE[1]:g} bpm, got {self.tempo}")
        _pitch_class(self.key)
        if self.mode not in _SCALES:
            raise ValueError(f"unknown mode {self.mode!r}; expected major or minor")
        if self.genre not in _STYLES:
            raise ValueError(f"unknown genre {self.genre!r}; expected one of {', '.join(_STYLES)}")
        unknown = [name for name in self.instruments if name not in INSTRUMENTS]
        if unknown:
            raise ValueError(f"unknown instruments {unknown}; expected some of {', '.join(INSTRUMENTS)}")

    def describe(self) -> str:
        return (
            f"{self.tempo:g} bpm, {self.key} {self.mode}, genre={self.genre}, mood={self.mood}, "
            f"instruments={','.join(self.instruments)}"
        )


def parse_prompt(prompt: str | None) -> Arrangement:
    """Read tempo, key, mode, genre, mood and instruments from free text; fill gaps from the genre."""
    text = (prompt or "").lower()
    genre = _find_genre(text)
    style = _STYLES[genre]
    mood = _find_mood(text)
    tonic, mode = _find_key(text)
    if mode is None:
        mode = _MOODS.get(mood) or style.mode
    return Arrangement(
        tempo=_find_tempo(text) or float(style.tempo),
        key=tonic or style.tonic,
        mode=mode,
        genre=genre,
        mood=mood,
        instruments=("drums", "bass", *_assign_roles(_find_instruments(text), style)),
    )


def _find_genre(text: str) -> str:
    for table in (_GENRE_WORDS, _WEAK_GENRE_WORDS):
        found = [(match.start(), genre) for genre, pattern in table if (match := re.search(pattern, text))]
        if found:
            return min(found)[1]
    return _DEFAULT_GENRE


def _find_mood(text: str) -> str:
    found = [(match.start(), word) for word in _MOODS if (match := re.search(rf"\b{word}\b", text))]
    if not found:
        return "neutral"
    word = min(found)[1]
    return "melancholic" if word == "melancholy" else word


def _find_key(text: str) -> tuple[str | None, str | None]:
    """Tonic name and mode, each None when the prompt does not say."""
    if match := _KEY_WITH_MODE.search(text):
        letter, accidental, mode = match.groups()
        mode = "major" if mode.startswith("maj") else "minor"
        # "in a minor key" names a mode, not A minor.
        if letter == "a" and not accidental and re.match(r"\s*keys?\b", text[match.end() :]):
            return None, mode
        return _key_name(letter, accidental), mode
    for match in _KEY_AFTER_IN.finditer(text):
        word, letter, accidental, minor = match.groups()
        # "in a dreamy mood": a lone "a" after "in" followed by a word is the article, not A.
        article = word == "in" and letter == "a" and not accidental and not minor
        if article and re.match(r"\s+[a-z]", text[match.end() :]):
            continue
        return _key_name(letter, accidental), "minor" if minor else None
    return None, None


def _key_name(letter: str, accidental: str | None) -> str:
    accidental = (accidental or "").strip(" -")
    suffix = "#" if accidental in ("#", "♯", "sharp") else "b" if accidental in ("b", "♭", "flat") else ""
    return letter.upper() + suffix


def _find_tempo(text: str) -> float | None:
    for pattern in _TEMPO:
        if match := pattern.search(text):
            return float(min(max(float(match.group(1)), _TEMPO_RANGE[0]), _TEMPO_RANGE[1]))
    return None


def _find_instruments(text: str) -> list[str]:
    """Melodic instruments in the order the prompt mentions them."""
    found: list[tuple[int, str]] = []
    for name, pattern in _INSTRUMENT_WORDS:
        for match in re.finditer(pattern, text):
            found.append((match.start(), name))
        text = re.sub(pattern, lambda m: " " * len(m.group(0)), text)
    ordered = [name for _, name in sorted(found) if name in MELODIC_INSTRUMENTS]
    return list(dict.fromkeys(ordered))


def _assign_roles(mentioned: list[str], style: _Style) -> tuple[str, ...]:
    """Chords go to the most sustained mentioned instrument, the lead to the next one mentioned."""
    chordal = [name for name in _CHORD_INSTRUMENTS if name in mentioned]
    chords = chordal[0] if chordal else style.chords
    rest = [name for name in mentioned if name != chords]
    lead = next(name for name in (*rest, style.lead, style.chords, "lead") if name != chords)
    arp = [name for name in rest if name != lead][:1]
    return (chords, lead, *arp)


# ---------------------------------------------------------------------------------------------
# Composition: a score of events on the sixteenth grid
# ---------------------------------------------------------------------------------------------


class _Note(NamedTuple):
    step: int  # sixteenths from the start
    length: int  # sixteenths
    sound: int | str  # MIDI pitch, or drum voice
    velocity: float


_HIT_VELOCITY = {"X": 1.0, "x": 0.75, "o": 0.45}
_FORM = "AABA"


@dataclass(frozen=True)
class _Score:
    drums: list[_Note]
    bass: list[_Note]
    chords: list[_Note]
    lead: list[_Note]
    arp: list[_Note]


def _parse_pattern(pattern: str) -> list[tuple[int, int, str]]:
    """(onset, length, symbol) for each note in a pattern: symbols start notes, '-' holds, '.' rests."""
    notes: list[tuple[int, int, str]] = []
    for index, symbol in enumerate(pattern):
        if symbol == "-" and notes and notes[-1][0] + notes[-1][1] == index:
            onset, length, first = notes[-1]
            notes[-1] = (onset, length + 1, first)
        elif symbol not in ".-":
            notes.append((index, 1, symbol))
    return notes


def _compose(arrangement: Arrangement, n_bars: int, rng: np.random.Generator) -> _Score:
    """Write the whole piece up front so chunked rendering never has to draw random numbers."""
    style = _STYLES[arrangement.genre]
    mode = arrangement.mode
    tonic = _pitch_class(arrangement.key)
    options = _PROGRESSIONS[style.progressions][0 if mode == "major" else 1]
    picks = rng.choice(len(options), size=2, replace=False)
    sections = {name: [_chord(n, mode, style.sevenths) for n in options[i].split()] for name, i in zip("AB", picks)}
    chords = [sections[_FORM[(bar // _BARS_PER_PHRASE) % len(_FORM)]][bar % _BARS_PER_PHRASE] for bar in range(n_bars)]
    # End on the tonic so the piece resolves.
    chords[-1] = _chord("I" if mode == "major" else "i", mode, style.sevenths)

    density = _density(style.density, arrangement.mood)
    lead_base = 60 + tonic - (12 if tonic > 6 else 0)
    melodies = {name: _phrase_melody(rng, section, _CELLS[density]) for name, section in sections.items()}
    voicings = _voice_chords(chords, tonic)
    return _Score(
        drums=_drum_part(style, n_bars, rng),
        bass=_bass_part(style, chords, tonic, rng),
        chords=[
            _Note(bar * _STEPS_PER_BAR + onset, length, pitch, 0.8 / math.sqrt(len(voicing)))
            for bar, voicing in enumerate(voicings)
            for onset, length, _ in _parse_pattern(style.chord_pattern)
            for pitch in voicing
        ],
        lead=_lead_part(melodies, chords, n_bars, lead_base),
        arp=_arp_part(voicings),
    )


def _density(base: str, mood: str) -> str:
    index = _DENSITIES.index(base) + (mood in _ENERGETIC_MOODS) - (mood in _CALM_MOODS)
    return _DENSITIES[min(max(index, 0), len(_DENSITIES) - 1)]


def _drum_part(style: _Style, n_bars: int, rng: np.random.Generator) -> list[_Note]:
    notes: list[_Note] = []
    has_snare = any(voice in ("snare", "clap") for voice, _ in style.drums)
    for bar in range(n_bars):
        for voice, pattern in style.drums:
            for step, symbol in enumerate(pattern):
                if symbol in _HIT_VELOCITY:
                    # A little velocity life on the cymbals; kick and snare stay steady.
                    jitter = 1.0 + 0.2 * (rng.random() - 0.5) if voice in ("hat", "open", "ride", "shaker") else 1.0
                    notes.append(_Note(bar * _STEPS_PER_BAR + step, 1, voice, _HIT_VELOCITY[symbol] * jitter))
        if has_snare and bar % (2 * _BARS_PER_PHRASE) == 2 * _BARS_PER_PHRASE - 1:
            fill = ((13, 0.35), (14, 0.5), (15, 0.7))
            notes.extend(_Note(bar * _STEPS_PER_BAR + step, 1, "snare", velocity) for step, velocity in fill)
    return sorted(notes, key=lambda note: note.step)


def _bass_midi(interval: int, tonic: int) -> int:
    """Bass register: A1 (55 Hz) up to G#2."""
    return 33 + (tonic + interval - 9) % 12


def _bass_part(style: _Style, chords: list[_Chord], tonic: int, rng: np.random.Generator) -> list[_Note]:
    if style.bass_pattern == "walk":
        return _walking_bass(chords, tonic, rng)
    notes: list[_Note] = []
    for bar, chord in enumerate(chords):
        next_root = _bass_midi(chords[min(bar + 1, len(chords) - 1)].root, tonic)
        root = _bass_midi(chord.root, tonic)
        pitches = {"r": root, "o": root + 12, "f": _bass_midi(chord.tones[2], tonic), "a": next_root - 1}
        for onset, length, symbol in _parse_pattern(style.bass_pattern):
            velocity = 0.95 if onset % _STEPS_PER_BEAT == 0 else 0.8
            notes.append(_Note(bar * _STEPS_PER_BAR + onset, length, pitches[symbol], velocity))
    return notes


def _walking_bass(chords: list[_Chord], tonic: int, rng: np.random.Generator) -> list[_Note]:
    """Quarter notes: root, two chord tones, then a chromatic approach to the next root."""
    notes: list[_Note] = []
    for bar, chord in enumerate(chords):
        root = _bass_midi(chord.root, tonic)
        target = _bass_midi(chords[min(bar + 1, len(chords) - 1)].root, tonic)
        middle = [_nearest(root, _bass_midi(chord.tones[i], tonic)) for i in rng.permutation([1, 2])]
        approach = target + (1 if rng.random() < 0.5 else -1)
        for beat, pitch in enumerate((root, *middle, approach)):
            notes.append(_Note(bar * _STEPS_PER_BAR + beat * _STEPS_PER_BEAT, _STEPS_PER_BEAT, pitch, 0.9))
    return notes


def _nearest(reference: int, pitch: int) -> int:
    """The octave of ``pitch`` closest to ``reference``."""
    return pitch + 12 * round((reference - pitch) / 12)


def _voice_chords(chords: list[_Chord], tonic: int) -> list[tuple[int, ...]]:
    """Voice-lead: each chord takes the inversion closest to the previous voicing."""
    voicings: list[tuple[int, ...]] = []
    for chord in chords:
        pcs = [(tonic + tone) % 12 for tone in chord.tones]
        candidates = [_stack([*pcs[i:], *pcs[:i]]) for i in range(len(pcs))]
        if voicings:
            previous = voicings[-1]
            best = min(candidates, key=lambda c: sum(abs(a - b) for a, b in zip(sorted(c), sorted(previous))))
        else:
            best = min(candidates, key=lambda c: abs(sum(c) / len(c) - 62))
        voicings.append(best)
    return voicings


def _stack(pcs: list[int]) -> tuple[int, ...]:
    """Stack pitch classes upwards from the first, which lands between E3 and D#4."""
    notes = [52 + (pcs[0] - 4) % 12]
    for pc in pcs[1:]:
        notes.append(notes[-1] + (pc - notes[-1]) % 12)
    return tuple(notes)


def _rhythm(rng: np.random.Generator, cells: tuple[str, ...], steps: int) -> list[tuple[int, int]]:
    pattern = ""
    while len(pattern) < steps:
        pattern += cells[rng.integers(len(cells))]
    notes = [(onset, length) for onset, length, _ in _parse_pattern(pattern[:steps])]
    return notes or [(0, _STEPS_PER_BEAT)]


def _phrase_melody(
    rng: np.random.Generator, chords: list[_Chord], cells: tuple[str, ...]
) -> list[tuple[int, int, int]]:
    """A four-bar phrase as (step, length, scale degree): a two-bar call, then an answer with the
    same rhythm that comes to rest on the last chord's root. Strong beats land on chord tones."""
    half = _BARS_PER_PHRASE * _STEPS_PER_BAR // 2
    call = _rhythm(rng, cells, half)
    answer = [(onset + half, length) for onset, length in call[:-1]]
    last_onset = call[-1][0] + half
    answer.append((last_onset, 2 * half - last_onset))
    degree = int(rng.choice([2, 4, 7]))
    melody: list[tuple[int, int, int]] = []
    for index, (onset, length) in enumerate([*call, *answer]):
        chord = chords[onset // _STEPS_PER_BAR]
        degree = _reflect(degree + int(rng.choice(_MELODY_STEPS, p=_MELODY_STEP_ODDS)))
        if index == len(call) + len(answer) - 1:
            degree = _nearest_chord_degree(degree, chord, roots_only=True)
        elif onset % _STEPS_PER_BEAT == 0:
            degree = _nearest_chord_degree(degree, chord)
        melody.append((onset, length, degree))
    return melody


# Melodies move mostly by step, sometimes leap a third or fourth.
_MELODY_STEPS = (-3, -2, -1, 0, 1, 2, 3)
_MELODY_STEP_ODDS = (0.05, 0.15, 0.3, 0.05, 0.25, 0.15, 0.05)


def _reflect(degree: int, low: int = 0, high: int = 11) -> int:
    """Keep the melody within about an octave and a half by bouncing off the range ends."""
    if degree < low:
        return 2 * low - degree
    if degree > high:
        return 2 * high - degree
    return degree


def _nearest_chord_degree(degree: int, chord: _Chord, roots_only: bool = False) -> int:
    targets = (chord.root,) if roots_only else chord.tones
    candidates = [d for d in range(-2, 14) if chord.scale[d % 7] in targets]
    return min(candidates, key=lambda d: (abs(d - degree), d))


def _degree_midi(degree: int, chord: _Chord, base: int) -> int:
    return base + chord.scale[degree % 7] + 12 * (degree // 7)


def _lead_part(
    melodies: dict[str, list[tuple[int, int, int]]], chords: list[_Chord], n_bars: int, base: int
) -> list[_Note]:
    """Play each section's melody; rest in the first phrase of longer pieces, end on the tonic."""
    n_phrases = math.ceil(n_bars / _BARS_PER_PHRASE)
    notes: list[_Note] = []
    last_degree = 0
    for phrase in range(1 if n_phrases >= 4 else 0, n_phrases):
        start = phrase * _BARS_PER_PHRASE * _STEPS_PER_BAR
        for onset, length, degree in melodies[_FORM[phrase % len(_FORM)]]:
            step = start + onset
            if step // _STEPS_PER_BAR >= n_bars - 1:
                break
            velocity = 0.85 if onset % _STEPS_PER_BEAT == 0 else 0.7
            notes.append(_Note(step, length, _degree_midi(degree, chords[step // _STEPS_PER_BAR], base), velocity))
            last_degree = degree
    final = chords[-1]
    tonic = _degree_midi(_nearest_chord_degree(last_degree, final, roots_only=True), final, base)
    notes.append(_Note((n_bars - 1) * _STEPS_PER_BAR, _STEPS_PER_BAR, tonic, 0.8))
    return notes


def _arp_part(voicings: list[tuple[int, ...]]) -> list[_Note]:
    """Broken chords in eighths, an octave above the chord voicing, up then down."""
    notes: list[_Note] = []
    for bar, voicing in enumerate(voicings):
        up = [pitch + 12 for pitch in sorted(voicing)]
        sequence = up + up[-2:0:-1]
        for index, step in enumerate(range(0, _STEPS_PER_BAR, 2)):
            notes.append(_Note(bar * _STEPS_PER_BAR + step, 2, sequence[index % len(sequence)], 0.6))
    return notes


# ---------------------------------------------------------------------------------------------
# Sound: drum one-shots and instrument notes
# ---------------------------------------------------------------------------------------------

_TABLE_SIZE = 1 << 14
# Timbre noise is part of the instrument, not the piece: a fixed seed keeps it identical everywhere.
_NOISE_SEED = 0x5EED


def _noise(n: int, salt: int) -> np.ndarray:
    return np.random.default_rng([_NOISE_SEED, salt]).standard_normal(n)


def _filtered(x: np.ndarray, sample_rate: int, low: float | None, high: float | None) -> np.ndarray:
    """2nd-order Butterworth: band-pass between both edges, else high-pass or low-pass."""
    nyquist = sample_rate / 2
    edges = [min(edge / nyquist, 0.99) for edge in (low, high) if edge is not None]
    kind = "bandpass" if len(edges) == 2 else "highpass" if low is not None else "lowpass"
    sos = signal.butter(2, edges if len(edges) == 2 else edges[0], kind, output="sos")
    return signal.sosfilt(sos, x)


def _one_shot(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Peak-normalize, and fade the last 20 ms so a cut-off tail cannot click."""
    fade = min(len(x), int(0.02 * sample_rate))
    x = x.copy()
    x[len(x) - fade :] *= 0.5 * (1 + np.cos(np.pi * np.arange(fade) / fade))
    peak = np.max(np.abs(x))
    return (x / peak if peak > 0 else x).astype(np.float32)


@functools.lru_cache(maxsize=24)
def _drum_kit(sample_rate: int, tonic: int) -> dict[str, np.ndarray]:
    """One-shot samples, each peak-normalized. Kick and snare are tuned to the tonic, as
    producers do, so their pitch supports the key instead of blurring it. Cached (read-only):
    designing the filters costs more than rendering a short clip."""

    def t(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sample_rate)) / sample_rate

    tk = t(0.8)
    kick_hz = _midi_hz(28 + (tonic - 4) % 12)  # E1..D#2
    sweep = kick_hz + 110 * np.exp(-tk / 0.025)  # the pitch drop is what makes a kick punch
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sample_rate) * np.exp(-tk / 0.25)
    kick += 0.25 * np.sin(2 * np.pi * 1500 * tk) * np.exp(-tk / 0.003)

    ts = t(0.3)
    snare_hz = _midi_hz(50 + (tonic - 2) % 12)  # D3..C#4
    # The drum head's fundamental and a fifth above it, both tuned to the key.
    head = np.sin(2 * np.pi * snare_hz * ts) + 0.5 * np.sin(2 * np.pi * 1.5 * snare_hz * ts)
    snare = 0.6 * head * np.exp(-ts / 0.05)
    snare += _filtered(_noise(len(ts), 1), sample_rate, 1500, 9000) * np.exp(-ts / 0.11) * 2.5

    tc = t(0.35)
    bursts = sum(np.exp(-np.clip(tc - d, 0, None) / 0.004) * (tc >= d) for d in (0.0, 0.011, 0.022))
    tail = np.exp(-np.clip(tc - 0.03, 0, None) / 0.12) * (tc >= 0.03)
    clap = _filtered(_noise(len(tc), 2), sample_rate, 900, 3000) * (0.6 * bursts + tail)

    th = t(0.12)
    hat = _filtered(_noise(len(th), 3), sample_rate, 7000, None) * np.exp(-th / 0.025)
    to = t(0.5)
    open_hat = _filtered(_noise(len(to), 4), sample_rate, 6000, None) * np.exp(-to / 0.2)

    tr = t(1.2)
    # Square waves at inharmonic ratios: the classic metallic cymbal tone.
    bell = np.sign(np.sin(2 * np.pi * np.outer((3150, 4230, 5470, 6620), tr))).sum(axis=0)
    ride = _filtered(bell, sample_rate, 3000, None) * 0.15 * np.exp(-tr / 0.6)
    ride += _filtered(_noise(len(tr), 5), sample_rate, 5000, None) * 0.5 * np.exp(-tr / 0.45)
    ride *= np.minimum(tr / 0.002, 1)

    tsh = t(0.15)
    shaker = _filtered(_noise(len(tsh), 6), sample_rate, 4000, 11000) * np.minimum(tsh / 0.012, 1) * np.exp(-tsh / 0.05)

    kit = {"kick": kick, "snare": snare, "clap": clap, "hat": hat, "open": open_hat, "ride": ride, "shaker": shaker}
    samples = {name: _one_shot(sample, sample_rate) for name, sample in kit.items()}
    for sample in samples.values():
        sample.setflags(write=False)
    return samples


_DRUM_LEVELS = {"kick": 1.0, "snare": 0.55, "clap": 0.5, "hat": 0.22, "open": 0.2, "ride": 0.22, "shaker": 0.3}


def _table(harmonics: np.ndarray) -> np.ndarray:
    """One cycle with the given sine amplitudes for harmonics 1..K, via an inverse FFT."""
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=complex)
    spectrum[1 : len(harmonics) + 1] = -0.5j * _TABLE_SIZE * harmonics
    return np.fft.irfft(spectrum, _TABLE_SIZE).astype(np.float32)


def _harmonic_count(freq: float, sample_rate: int) -> int:
    """Harmonics that stay below Nyquist, so nothing aliases."""
    return max(1, min(80, int(0.45 * sample_rate / freq)))


def _harmonics(freq: float, sample_rate: int, slope: float, cutoff: float, odd_only: bool = False) -> np.ndarray:
    """A 1/k^slope spectrum through a 2-pole low-pass."""
    k = np.arange(1, _harmonic_count(freq, sample_rate) + 1)
    amps = (1.0 / k**slope) / np.sqrt(1.0 + (k * freq / cutoff) ** 4)
    if odd_only:
        amps[1::2] = 0.0
    return amps


def _play(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Read a wavetable at phases given in cycles; the table is fine enough to skip interpolation."""
    return table[(phase * _TABLE_SIZE).astype(np.int64) & (_TABLE_SIZE - 1)]


def _phase(
    freq: float,
    n: int,
    sample_rate: int,
    detune_cents: float = 0.0,
    start: float = 0.0,
    vibrato: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Oscillator phase in cycles; vibrato is (rate Hz, depth as a frequency ratio, fade-in seconds)."""
    f = freq * 2 ** (detune_cents / 1200)
    t = np.arange(n) / sample_rate
    if vibrato is None:
        return start + f * t
    rate, depth, fade = vibrato
    # Integrated frequency f * (1 + depth * sin); fading the depth in afterwards is close enough.
    ramp = np.minimum(t / fade, 1.0) if fade > 0 else 1.0
    return start + f * t - f * depth * ramp * np.cos(2 * np.pi * rate * t) / (2 * np.pi * rate)


def _envelope(gate: int, sample_rate: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    """ADSR over gate + release samples; the release ends exactly at zero so notes never click."""
    n_release = max(1, int(release * sample_rate))
    t = np.arange(gate + n_release) / sample_rate
    env = np.where(t < attack, t / attack, sustain + (1 - sustain) * np.exp(-(t - attack) / decay))
    level = env[gate - 1] if gate > 0 else 0.0
    tail = 1.0 - np.arange(n_release) / n_release
    env[gate:] = level * tail**3
    return env


def _midi_hz(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _crossfade(dark: np.ndarray, bright: np.ndarray, t: np.ndarray, tau: float) -> np.ndarray:
    """Start bright and darken, as a plucked string or a filter envelope would."""
    return dark + (bright - dark) * np.exp(-t / tau)


def _detuned(
    freq: float,
    n: int,
    sample_rate: int,
    table: np.ndarray,
    cents: tuple[float, ...],
    vibrato: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Several slightly detuned copies: the chorus that makes pads and strings wide and alive."""
    voices = [
        _play(table, _phase(freq, n, sample_rate, detune, start=0.37 * i, vibrato=vibrato))
        for i, detune in enumerate(cents)
    ]
    return np.mean(voices, axis=0)


def _pad(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.35, 0.6, 0.85, 0.9)
    return _detuned(freq, len(env), sr, _table(_harmonics(freq, sr, 1.0, 1500)), (-8, 0, 8)) * env


def _strings(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.18, 0.4, 0.9, 0.5)
    table = _table(_harmonics(freq, sr, 1.0, 2800))
    return _detuned(freq, len(env), sr, table, (-5, 0, 5), vibrato=(5.2, 0.003, 0.3)) * env


def _organ(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.008, 0.1, 1.0, 0.06)
    drawbars = np.array([1.0, 0.7, 0.45, 0.3, 0.0, 0.2, 0.0, 0.12])[: _harmonic_count(freq, sr)]
    t = np.arange(len(env)) / sr
    return _play(_table(drawbars), _phase(freq, len(env), sr)) * env * (1 + 0.08 * np.sin(2 * np.pi * 6.0 * t))


def _piano(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.004, 0.9 * (262 / freq) ** 0.3, 0.05, 0.3)
    t = np.arange(len(env)) / sr
    phase = _phase(freq, len(env), sr)
    bright = _play(_table(_harmonics(freq, sr, 1.3, 4500)), phase)
    dark = _play(_table(_harmonics(freq, sr, 1.3, 700)), phase)
    return _crossfade(dark, bright, t, 0.2) * env


def _guitar(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.002, 0.8, 0.0, 0.08)
    k = np.arange(1, _harmonic_count(freq, sr) + 1)
    # A string plucked a fifth of the way along lacks every fifth harmonic.
    pluck = np.abs(np.sin(np.pi * k * 0.2)) / k
    t = np.arange(len(env)) / sr
    phase = _phase(freq, len(env), sr)
    bright = _play(_table(pluck / np.sqrt(1 + (k * freq / 3500) ** 4)), phase)
    dark = _play(_table(pluck / np.sqrt(1 + (k * freq / 900) ** 4)), phase)
    return _crossfade(dark, bright, t, 0.08) * env


def _pluck(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.002, 0.3, 0.0, 0.1)
    t = np.arange(len(env)) / sr
    phase = _phase(freq, len(env), sr)
    bright = _play(_table(_harmonics(freq, sr, 1.0, 5000)), phase)
    dark = _play(_table(_harmonics(freq, sr, 1.0, 600)), phase)
    return _crossfade(dark, bright, t, 0.06) * env


def _lead(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.01, 0.2, 0.8, 0.12)
    saw = _harmonics(freq, sr, 1.0, 3500)
    table = _table(0.6 * saw + 0.4 * _harmonics(freq, sr, 1.0, 3500, odd_only=True))
    return _detuned(freq, len(env), sr, table, (-6, 6), vibrato=(5.5, 0.004, 0.25)) * env


def _brass(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.03, 0.3, 0.85, 0.12)
    t = np.arange(len(env)) / sr
    phase = _phase(freq, len(env), sr, vibrato=(5.0, 0.003, 0.4))
    bright = _play(_table(_harmonics(freq, sr, 1.0, 2500)), phase)
    dark = _play(_table(_harmonics(freq, sr, 1.0, 600)), phase)
    # Brass blooms: brightness swells with the breath, then settles.
    brightness = (1 - np.exp(-t / 0.05)) * (0.6 + 0.4 * np.exp(-t / 0.3))
    return (dark + (bright - dark) * brightness) * env


def _bells(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.002, 1.5, 0.0, 0.5)
    t = np.arange(len(env)) / sr
    # A struck bar's inharmonic modes (1 : 2.76 : 5.40 : 8.93); higher modes die away sooner.
    tone = sum(
        level * np.sin(2 * np.pi * ratio * freq * t) * np.exp(-t * ratio**0.7 / 0.8)
        for ratio, level in ((1.0, 1.0), (2.76, 0.35), (5.40, 0.15), (8.93, 0.06))
        if ratio * freq < 0.45 * sr
    )
    return tone * env / 1.2


def _flute(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.06, 0.2, 0.85, 0.12)
    tone = _play(
        _table(np.array([1.0, 0.25, 0.08, 0.03])[: _harmonic_count(freq, sr)]),
        _phase(freq, len(env), sr, vibrato=(5.0, 0.005, 0.3)),
    )
    # Seeded by pitch: breath noise differs between notes but never between renders.
    breath = _filtered(_noise(len(env), round(freq * 100)), sr, 2000, 8000)
    return (tone + 0.04 * breath) * env


def _bass_sub(freq: float, gate: int, sr: int) -> np.ndarray:
    env = _envelope(gate, sr, 0.005, 0.3, 0.8, 0.06)
    return _play(_table(np.array([1.0, 0.3, 0.1])), _phase(freq, len(env), sr)) * env


@dataclass(frozen=True)
class _BassVoice:
    envelope: tuple[float, float, float, float]  # attack, decay, sustain, release
    rolloff: float
    bright_hz: float
    dark_hz: float
    #: Seconds over which the pluck's brightness fades to the dark tone.
    fade: float

    def __call__(self, freq: float, gate: int, sr: int) -> np.ndarray:
        env = _envelope(gate, sr, *self.envelope)
        t = np.arange(len(env)) / sr
        phase = _phase(freq, len(env), sr)
        bright = _play(_table(_harmonics(freq, sr, self.rolloff, self.bright_hz)), phase)
        dark = _play(_table(_harmonics(freq, sr, self.rolloff, self.dark_hz)), phase)
        return _crossfade(dark, bright, t, self.fade) * env


# Evens out how loud the timbres sound: a decaying pluck needs more level than a sustained pad.
_TIMBRE_LEVELS = {
    "pad": 1.4,
    "strings": 1.4,
    "organ": 1.2,
    "piano": 1.5,
    "guitar": 1.8,
    "pluck": 2.4,
    "lead": 1.3,
    "brass": 1.1,
    "bells": 2.0,
    "flute": 1.9,
}

_TIMBRES: dict[str, Callable[[float, int, int], np.ndarray]] = {
    "pad": _pad,
    "strings": _strings,
    "organ": _organ,
    "piano": _piano,
    "guitar": _guitar,
    "pluck": _pluck,
    "lead": _lead,
    "brass": _brass,
    "bells": _bells,
    "flute": _flute,
    "sub": _bass_sub,
    "synth": _BassVoice((0.003, 0.25, 0.6, 0.05), 1.5, 1200, 250, 0.08),
    "electric": _BassVoice((0.004, 0.6, 0.4, 0.06), 1.8, 1000, 400, 0.1),
    "upright": _BassVoice((0.004, 0.5, 0.2, 0.08), 1.8, 900, 350, 0.06),
}


# ---------------------------------------------------------------------------------------------
# Effects. Each keeps its state between calls, so rendering in chunks equals rendering at once.
# ---------------------------------------------------------------------------------------------


class _Comb:
    """Feedback comb y[n] = x[n] + g*y[n-D] on an (n, channels) block.

    Computed D samples at a time: within a block every y[n-D] is already known.
    """

    def __init__(self, delay: int, gain: float, channels: int) -> None:
        self.delay = delay
        self.gain = np.float32(gain)
        self.history = np.zeros((delay, channels), dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        d = self.delay
        y = np.concatenate([self.history, x])
        for start in range(d, len(y), d):
            stop = min(start + d, len(y))
            y[start:stop] += self.gain * y[start - d : stop - d]
        self.history = y[-d:].copy()
        return y[d:]


class _Taps:
    """Sparse multi-tap delay from mono to (n, channels): the early reflections of a room."""

    def __init__(self, taps: tuple[tuple[tuple[int, float], ...], ...]) -> None:
        self.taps = taps
        self.span = max(delay for channel in taps for delay, _ in channel)
        self.history = np.zeros(self.span, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        extended = np.concatenate([self.history, x])
        out = np.zeros((len(self.taps), len(x)), dtype=np.float32)
        for channel, taps in zip(out, self.taps):
            for delay, gain in taps:
                channel += np.float32(gain) * extended[self.span - delay : self.span - delay + len(x)]
        self.history = extended[-self.span :].copy()
        return np.ascontiguousarray(out.T)


class _Reverb:
    """Small stereo room: low-passed send, decorrelated early reflections, then a comb-filter tail."""

    _REFLECTIONS_MS = (((7, 0.6), (19, 0.45), (29, 0.4), (43, 0.25)), ((11, 0.6), (23, 0.45), (31, 0.4), (47, 0.25)))
    _COMB_MS = (35.3, 40.6, 46.6, 52.4)
    _DECAY_S = 1.6

    def __init__(self, sample_rate: int) -> None:
        cutoff = min(5000 / (sample_rate / 2), 0.99)
        self.lowpass = tuple(c.astype(np.float32) for c in signal.butter(1, cutoff, output="ba"))
        self.lowpass_state = np.zeros(1, dtype=np.float32)
        ms = sample_rate / 1000
        self.reflections = _Taps(tuple(tuple((round(d * ms), g) for d, g in side) for side in self._REFLECTIONS_MS))
        self.combs = [_Comb(round(d * ms), 10 ** (-3 * d / 1000 / self._DECAY_S), 2) for d in self._COMB_MS]

    def __call__(self, send: np.ndarray) -> np.ndarray:
        b, a = self.lowpass
        damped, self.lowpass_state = signal.lfilter(b, a, send, zi=self.lowpass_state)
        early = self.reflections(damped) * np.float32(0.25)
        tail = np.zeros_like(early)
        for comb in self.combs:
            tail += comb(early)
        return early + tail * np.float32(0.2)


class _Echo:
    """Stereo feedback delay: quarters on the left, half notes on the right.

    On-beat delay times; dotted ones would add a 3-against-4 pulse that blurs the tempo.
    """

    def __init__(self, step_samples: float) -> None:
        self.left = _Comb(round(_STEPS_PER_BEAT * step_samples), 0.3, 1)
        self.right = _Comb(round(2 * _STEPS_PER_BEAT * step_samples), 0.3, 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        dry = x[:, np.newaxis]
        return np.concatenate([self.left(dry) - dry, self.right(dry) - dry], axis=1)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mix:
    """Where a track sits in the mix."""

    pan: float = 0.0  # -1 left .. 1 right
    gain: float = 1.0
    send: float = 0.0  # to the reverb
    ducked: bool = False  # pumped by the kick (sidechain)
    echoed: bool = False


@dataclass(frozen=True)
class _Track:
    """A mixer channel: note onsets in samples and how a note sounds."""

    starts: np.ndarray
    notes: list[_Note]
    sound: Callable[[_Note], np.ndarray]
    mix: _Mix


_DRUM_MIX = (
    (("kick",), _Mix()),
    (("snare", "clap"), _Mix(pan=0.05, send=0.2)),
    (("hat", "open", "ride", "shaker"), _Mix(pan=0.3, send=0.05)),
)
_BASS_MIX = _Mix(gain=0.5, ducked=True)
# Melodic roles in the order ``Arrangement.instruments`` lists them.
_MELODIC_MIX = (
    ("chords", _Mix(pan=-0.25, gain=0.35, send=0.35, ducked=True)),
    ("lead", _Mix(pan=0.1, gain=0.3, send=0.3, echoed=True)),
    ("arp", _Mix(pan=0.45, gain=0.2, send=0.35, ducked=True)),
)
_ECHO_LEVEL = 0.5
_DUCK_DEPTH = 0.55
_MASTER_GAIN = 0.5
_LIMIT_THRESHOLD = 0.85
_FADE_OUT_S = 2.0


class _Renderer:
    """Turns a score into audio chunk by chunk; notes ringing past a chunk carry into the next."""

    def __init__(self, arrangement: Arrangement, duration: float, seed: int, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.total = _total_samples(duration, sample_rate)
        self.step_samples = _step_samples(arrangement.tempo, sample_rate)
        self.style = _STYLES[arrangement.genre]
        n_bars = max(1, math.ceil(self.total / (self.step_samples * _STEPS_PER_BAR)))
        score = _compose(arrangement, n_bars, np.random.default_rng(seed))
        self.tracks = self._tracks(arrangement, score)
        self.duck = self._duck_track(score) if self.style.sidechain else None
        self.pending = np.zeros((len(self.tracks) + 1, 0), dtype=np.float32)
        self.reverb = _Reverb(sample_rate)
        self.echo = _Echo(self.step_samples)

    def _onset(self, step: int) -> int:
        grid, delay = self.style.swing
        swung = (grid == 16 and step % 2 == 1) or (grid == 8 and step % 4 == 2)
        return round((step + (delay if swung else 0.0)) * self.step_samples)

    def _track(self, notes: list[_Note], sound: Callable[[_Note], np.ndarray], mix: _Mix) -> _Track:
        starts = np.array([self._onset(note.step) for note in notes], dtype=np.int64)
        return _Track(starts, notes, sound, mix)

    def _instrument(self, timbre: str) -> Callable[[_Note], np.ndarray]:
        """Note renderer with a per-render cache: pieces repeat, so most notes are synthesized once."""
        cache: dict[tuple[int | str, int], np.ndarray] = {}
        synth = _TIMBRES[timbre]

        def sound(note: _Note) -> np.ndarray:
            key = (note.sound, note.length)
            if key not in cache:
                gate = round(note.length * self.step_samples)
                wave = synth(_midi_hz(int(note.sound)), gate, self.sample_rate) * _TIMBRE_LEVELS.get(timbre, 1.0)
                cache[key] = wave.astype(np.float32)
            return cache[key]

        return sound

    def _tracks(self, arrangement: Arrangement, score: _Score) -> list[_Track]:
        tracks: list[_Track] = []
        if "drums" in arrangement.instruments:
            kit = _drum_kit(self.sample_rate, _pitch_class(arrangement.key))

            def hit(note: _Note) -> np.ndarray:
                return kit[str(note.sound)]

            for voices, mix in _DRUM_MIX:
                notes = [
                    note._replace(velocity=note.velocity * _DRUM_LEVELS[str(note.sound)])
                    for note in score.drums
                    if note.sound in voices
                ]
                tracks.append(self._track(notes, hit, replace(mix, gain=self.style.drum_gain)))
        if "bass" in arrangement.instruments:
            tracks.append(self._track(score.bass, self._instrument(self.style.bass), _BASS_MIX))
        melodic = [name for name in arrangement.instruments if name in MELODIC_INSTRUMENTS]
        for timbre, (role, mix) in zip(melodic, _MELODIC_MIX):
            tracks.append(self._track(getattr(score, role), self._instrument(timbre), mix))
        return tracks

    def _duck_track(self, score: _Score) -> _Track:
        """The kick's shadow: how much the sidechained tracks dip after each kick."""
        t = np.arange(int(0.4 * self.sample_rate)) / self.sample_rate
        shape = _one_shot(np.minimum(t / 0.005, 1.0) * np.exp(-t / 0.08), self.sample_rate) * np.float32(_DUCK_DEPTH)
        kicks = [note._replace(velocity=1.0) for note in score.drums if note.sound == "kick"]
        return self._track(kicks, lambda note: shape, _Mix())

    def chunk(self, begin: int, end: int) -> np.ndarray:
        """Samples [begin, end) as float32 (n, 2)."""
        block = self._accumulate(begin, end)
        return self._mix(block, begin, end)

    def _accumulate(self, begin: int, end: int) -> np.ndarray:
        """Add every note starting in [begin, end); keep what rings past ``end`` for later."""
        tracks = [*self.tracks, self.duck] if self.duck else self.tracks
        placed: list[tuple[int, int, np.ndarray, float]] = []
        needed = max(end - begin, self.pending.shape[1])
        for row, track in enumerate(tracks):
            first, last = np.searchsorted(track.starts, [begin, end])
            for index in range(first, last):
                wave, offset = track.sound(track.notes[index]), int(track.starts[index]) - begin
                placed.append((row, offset, wave, track.notes[index].velocity))
                needed = max(needed, offset + len(wave))
        buffer = np.zeros((len(self.tracks) + 1, needed), dtype=np.float32)
        buffer[:, : self.pending.shape[1]] = self.pending
        for row, offset, wave, velocity in placed:
            buffer[row, offset : offset + len(wave)] += wave * np.float32(velocity)
        self.pending = buffer[:, end - begin :].copy()
        return buffer[:, : end - begin]

    def _mix(self, block: np.ndarray, begin: int, end: int) -> np.ndarray:
        n = end - begin
        duck = np.float32(1.0) - block[-1] if self.duck else None
        stereo = np.zeros((2, n), dtype=np.float32)
        reverb_send = np.zeros(n, dtype=np.float32)
        echo_send = np.zeros(n, dtype=np.float32)
        for row, track in zip(block, self.tracks):
            mix = track.mix
            if mix.ducked and duck is not None:
                row = row * duck
            angle = (mix.pan + 1) * math.pi / 4  # constant-power pan
            stereo[0] += np.float32(mix.gain * math.cos(angle)) * row
            stereo[1] += np.float32(mix.gain * math.sin(angle)) * row
            reverb_send += np.float32(mix.gain * mix.send) * row
            if mix.echoed:
                echo_send += np.float32(mix.gain * _ECHO_LEVEL) * row
        out = np.ascontiguousarray(stereo.T)
        out += self.reverb(reverb_send) * np.float32(self.style.reverb)
        out += self.echo(echo_send)
        out = _soft_limit(out * np.float32(_MASTER_GAIN))
        self._fade(out, begin)
        return out

    def _fade(self, out: np.ndarray, begin: int) -> None:
        """Fade out over the last seconds (a tenth of short pieces) instead of stopping dead."""
        length = max(1, min(int(_FADE_OUT_S * self.sample_rate), self.total // 10))
        first = max(self.total - length, begin)
        if first >= begin + len(out):
            return
        u = (np.arange(first, begin + len(out)) - (self.total - length)) / length
        out[first - begin :] *= (0.5 * (1.0 + np.cos(np.pi * u))).astype(np.float32)[:, np.newaxis]


def _soft_limit(x: np.ndarray) -> np.ndarray:
    """Identity below the threshold, then a tanh knee that never reaches full scale."""
    t = np.float32(_LIMIT_THRESHOLD)
    over = np.abs(x) > t
    if not over.any():
        return x
    knee = t + (1 - t) * np.tanh((np.abs(x) - t) / (1 - t))
    return np.where(over, np.sign(x) * knee, x).astype(np.float32)


def _step_samples(tempo: float, sample_rate: int) -> float:
    return 60.0 / tempo / _STEPS_PER_BEAT * sample_rate


def _total_samples(duration: float, sample_rate: int) -> int:
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    return round(duration * sample_rate)


def _chunk_samples(arrangement: Arrangement, sample_rate: int, chunk_bars: int) -> int:
    if chunk_bars < 1:
        raise ValueError(f"chunk_bars must be at least 1, got {chunk_bars}")
    return max(1, round(chunk_bars * _STEPS_PER_BAR * _step_samples(arrangement.tempo, sample_rate)))


def chunk_count(arrangement: Arrangement, duration: float, sample_rate: int = SAMPLE_RATE, chunk_bars: int = 4) -> int:
    """How many chunks ``render`` yields for these arguments."""
    return math.ceil(_total_samples(duration, sample_rate) / _chunk_samples(arrangement, sample_rate, chunk_bars))


def render(
    arrangement: Arrangement, duration: float, seed: int, sample_rate: int = SAMPLE_RATE, chunk_bars: int = 4
) -> Iterator[np.ndarray]:
    """The piece as consecutive float32 (n, 2) chunks of ``chunk_bars`` bars each.

    Together they hold exactly ``round(duration * sample_rate)`` samples, and the same arguments
    give the same samples whatever ``chunk_bars`` is.
    """
    step = _chunk_samples(arrangement, sample_rate, chunk_bars)
    # Built before the first chunk is asked for, so bad arguments fail at the call.
    renderer = _Renderer(arrangement, duration, seed, sample_rate)
    return (renderer.chunk(begin, min(begin + step, renderer.total)) for begin in range(0, renderer.total, step))
