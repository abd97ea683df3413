"""Composition: an arrangement and a random generator become a score of notes on the sixteenth grid.

The whole piece is written before any audio, so chunked rendering never draws random numbers and
a seed gives the same piece whatever the chunk size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from overture.models.synth.prompt import CALM_MOODS, ENERGETIC_MOODS, Arrangement
from overture.models.synth.styles import CELLS, DENSITIES, PROGRESSIONS, STYLES, Style
from overture.models.synth.theory import (
    BARS_PER_PHRASE,
    STEPS_PER_BAR,
    STEPS_PER_BEAT,
    Chord,
    chord_from_numeral,
    pitch_class,
)


class Note(NamedTuple):
    step: int  # sixteenths from the start
    length: int  # sixteenths
    sound: int | str  # MIDI pitch, or drum voice
    velocity: float


_HIT_VELOCITY = {"X": 1.0, "x": 0.75, "o": 0.45}
_FORM = "AABA"


@dataclass(frozen=True)
class Score:
    drums: list[Note]
    bass: list[Note]
    chords: list[Note]
    lead: list[Note]
    arp: list[Note]


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


def compose(arrangement: Arrangement, n_bars: int, rng: np.random.Generator) -> Score:
    """Write the whole piece up front so chunked rendering never has to draw random numbers."""
    style = STYLES[arrangement.genre]
    mode = arrangement.mode
    tonic = pitch_class(arrangement.key)
    options = PROGRESSIONS[style.progressions][0 if mode == "major" else 1]
    picks = rng.choice(len(options), size=2, replace=False)
    sections = {
        name: [chord_from_numeral(n, mode, style.sevenths) for n in options[i].split()]
        for name, i in zip("AB", picks, strict=False)
    }
    chords = [sections[_FORM[(bar // BARS_PER_PHRASE) % len(_FORM)]][bar % BARS_PER_PHRASE] for bar in range(n_bars)]
    # End on the tonic so the piece resolves.
    chords[-1] = chord_from_numeral("I" if mode == "major" else "i", mode, style.sevenths)

    density = _density(style.density, arrangement.mood)
    lead_base = 60 + tonic - (12 if tonic > 6 else 0)
    melodies = {name: _phrase_melody(rng, section, CELLS[density]) for name, section in sections.items()}
    voicings = _voice_chords(chords, tonic)
    return Score(
        drums=_drum_part(style, n_bars, rng),
        bass=_bass_part(style, chords, tonic, rng),
        chords=[
            Note(bar * STEPS_PER_BAR + onset, length, pitch, 0.8 / math.sqrt(len(voicing)))
            for bar, voicing in enumerate(voicings)
            for onset, length, _ in _parse_pattern(style.chord_pattern)
            for pitch in voicing
        ],
        lead=_lead_part(melodies, chords, n_bars, lead_base),
        arp=_arp_part(voicings),
    )


def _density(base: str, mood: str) -> str:
    index = DENSITIES.index(base) + (mood in ENERGETIC_MOODS) - (mood in CALM_MOODS)
    return DENSITIES[min(max(index, 0), len(DENSITIES) - 1)]


def _drum_part(style: Style, n_bars: int, rng: np.random.Generator) -> list[Note]:
    notes: list[Note] = []
    has_snare = any(voice in ("snare", "clap") for voice, _ in style.drums)
    for bar in range(n_bars):
        for voice, pattern in style.drums:
            for step, symbol in enumerate(pattern):
                if symbol in _HIT_VELOCITY:
                    # A little velocity life on the cymbals; kick and snare stay steady.
                    jitter = 1.0 + 0.2 * (rng.random() - 0.5) if voice in ("hat", "open", "ride", "shaker") else 1.0
                    notes.append(Note(bar * STEPS_PER_BAR + step, 1, voice, _HIT_VELOCITY[symbol] * jitter))
        if has_snare and bar % (2 * BARS_PER_PHRASE) == 2 * BARS_PER_PHRASE - 1:
            fill = ((13, 0.35), (14, 0.5), (15, 0.7))
            notes.extend(Note(bar * STEPS_PER_BAR + step, 1, "snare", velocity) for step, velocity in fill)
    return sorted(notes, key=lambda note: note.step)


def _bass_midi(interval: int, tonic: int) -> int:
    """Bass register: A1 (55 Hz) up to G#2."""
    return 33 + (tonic + interval - 9) % 12


def _bass_part(style: Style, chords: list[Chord], tonic: int, rng: np.random.Generator) -> list[Note]:
    if style.bass_pattern == "walk":
        return _walking_bass(chords, tonic, rng)
    notes: list[Note] = []
    for bar, chord in enumerate(chords):
        next_root = _bass_midi(chords[min(bar + 1, len(chords) - 1)].root, tonic)
        root = _bass_midi(chord.root, tonic)
        pitches = {"r": root, "o": root + 12, "f": _bass_midi(chord.tones[2], tonic), "a": next_root - 1}
        for onset, length, symbol in _parse_pattern(style.bass_pattern):
            velocity = 0.95 if onset % STEPS_PER_BEAT == 0 else 0.8
            notes.append(Note(bar * STEPS_PER_BAR + onset, length, pitches[symbol], velocity))
    return notes


def _walking_bass(chords: list[Chord], tonic: int, rng: np.random.Generator) -> list[Note]:
    """Quarter notes: root, two chord tones, then a chromatic approach to the next root."""
    notes: list[Note] = []
    for bar, chord in enumerate(chords):
        root = _bass_midi(chord.root, tonic)
        target = _bass_midi(chords[min(bar + 1, len(chords) - 1)].root, tonic)
        middle = [_nearest(root, _bass_midi(chord.tones[i], tonic)) for i in rng.permutation([1, 2])]
        approach = target + (1 if rng.random() < 0.5 else -1)
        for beat, pitch in enumerate((root, *middle, approach)):
            notes.append(Note(bar * STEPS_PER_BAR + beat * STEPS_PER_BEAT, STEPS_PER_BEAT, pitch, 0.9))
    return notes


def _nearest(reference: int, pitch: int) -> int:
    """The octave of ``pitch`` closest to ``reference``."""
    return pitch + 12 * round((reference - pitch) / 12)


def _voice_chords(chords: list[Chord], tonic: int) -> list[tuple[int, ...]]:
    """Voice-lead: each chord takes the inversion closest to the previous voicing."""
    voicings: list[tuple[int, ...]] = []
    for chord in chords:
        pcs = [(tonic + tone) % 12 for tone in chord.tones]
        candidates = [_stack([*pcs[i:], *pcs[:i]]) for i in range(len(pcs))]
        if voicings:
            previous = voicings[-1]
            best = min(
                candidates, key=lambda c: sum(abs(a - b) for a, b in zip(sorted(c), sorted(previous), strict=False))
            )
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
    return notes or [(0, STEPS_PER_BEAT)]


def _phrase_melody(rng: np.random.Generator, chords: list[Chord], cells: tuple[str, ...]) -> list[tuple[int, int, int]]:
    """A four-bar phrase as (step, length, scale degree): a two-bar call, then an answer with the
    same rhythm that comes to rest on the last chord's root. Strong beats land on chord tones."""
    half = BARS_PER_PHRASE * STEPS_PER_BAR // 2
    call = _rhythm(rng, cells, half)
    answer = [(onset + half, length) for onset, length in call[:-1]]
    last_onset = call[-1][0] + half
    answer.append((last_onset, 2 * half - last_onset))
    degree = int(rng.choice([2, 4, 7]))
    melody: list[tuple[int, int, int]] = []
    for index, (onset, length) in enumerate([*call, *answer]):
        chord = chords[onset // STEPS_PER_BAR]
        degree = _reflect(degree + int(rng.choice(_MELODY_STEPS, p=_MELODY_STEP_ODDS)))
        if index == len(call) + len(answer) - 1:
            degree = _nearest_chord_degree(degree, chord, roots_only=True)
        elif onset % STEPS_PER_BEAT == 0:
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


def _nearest_chord_degree(degree: int, chord: Chord, roots_only: bool = False) -> int:
    targets = (chord.root,) if roots_only else chord.tones
    candidates = [d for d in range(-2, 14) if chord.scale[d % 7] in targets]
    return min(candidates, key=lambda d: (abs(d - degree), d))


def _degree_midi(degree: int, chord: Chord, base: int) -> int:
    return base + chord.scale[degree % 7] + 12 * (degree // 7)


def _lead_part(
    melodies: dict[str, list[tuple[int, int, int]]], chords: list[Chord], n_bars: int, base: int
) -> list[Note]:
    """Play each section's melody; rest in the first phrase of longer pieces, end on the tonic."""
    n_phrases = math.ceil(n_bars / BARS_PER_PHRASE)
    notes: list[Note] = []
    last_degree = 0
    for phrase in range(1 if n_phrases >= 4 else 0, n_phrases):
        start = phrase * BARS_PER_PHRASE * STEPS_PER_BAR
        for onset, length, degree in melodies[_FORM[phrase % len(_FORM)]]:
            step = start + onset
            if step // STEPS_PER_BAR >= n_bars - 1:
                break
            velocity = 0.85 if onset % STEPS_PER_BEAT == 0 else 0.7
            notes.append(Note(step, length, _degree_midi(degree, chords[step // STEPS_PER_BAR], base), velocity))
            last_degree = degree
    final = chords[-1]
    tonic = _degree_midi(_nearest_chord_degree(last_degree, final, roots_only=True), final, base)
    notes.append(Note((n_bars - 1) * STEPS_PER_BAR, STEPS_PER_BAR, tonic, 0.8))
    return notes


def _arp_part(voicings: list[tuple[int, ...]]) -> list[Note]:
    """Broken chords in eighths, an octave above the chord voicing, up then down."""
    notes: list[Note] = []
    for bar, voicing in enumerate(voicings):
        up = [pitch + 12 for pitch in sorted(voicing)]
        sequence = up + up[-2:0:-1]
        for index, step in enumerate(range(0, STEPS_PER_BAR, 2)):
            notes.append(Note(bar * STEPS_PER_BAR + step, 2, sequence[index % len(sequence)], 0.6))
    return notes
