"""Free text read into an ``Arrangement``: tempo, key, mode, genre, mood and instruments, each taken
from the prompt when it says (a mood can imply the mode), else from the genre's style.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from overture.models.synth.styles import DEFAULT_GENRE, STYLES, Style
from overture.models.synth.theory import SCALES, pitch_class

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
CALM_MOODS = {"calm", "relaxed", "relaxing", "peaceful", "dreamy", "chill", "mellow", "sad", "melancholic"}
ENERGETIC_MOODS = {"energetic", "upbeat", "aggressive", "angry", "driving", "happy", "playful"}

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
        pitch_class(self.key)
        if self.mode not in SCALES:
            raise ValueError(f"unknown mode {self.mode!r}; expected major or minor")
        if self.genre not in STYLES:
            raise ValueError(f"unknown genre {self.genre!r}; expected one of {', '.join(STYLES)}")
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
    style = STYLES[genre]
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
    return DEFAULT_GENRE


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


def _assign_roles(mentioned: list[str], style: Style) -> tuple[str, ...]:
    """Chords go to the most sustained mentioned instrument, the lead to the next one mentioned."""
    chordal = [name for name in _CHORD_INSTRUMENTS if name in mentioned]
    chords = chordal[0] if chordal else style.chords
    rest = [name for name in mentioned if name != chords]
    lead = next(name for name in (*rest, style.lead, style.chords, "lead") if name != chords)
    arp = [name for name in rest if name != lead][:1]
    return (chords, lead, *arp)
