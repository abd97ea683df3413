"""Rendering: a score mixed into stereo audio chunk by chunk, as the predictor streams it; notes
ringing past a chunk carry into the next, so the chunks together equal one render at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from overture.models.synth.effects import Echo, Reverb
from overture.models.synth.instruments import DRUM_LEVELS, TIMBRE_LEVELS, TIMBRES, drum_kit, midi_hz, one_shot
from overture.models.synth.prompt import MELODIC_INSTRUMENTS, Arrangement
from overture.models.synth.score import Note, Score, compose
from overture.models.synth.styles import STYLES
from overture.models.synth.theory import STEPS_PER_BAR, STEPS_PER_BEAT, pitch_class

SAMPLE_RATE = 44100


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
    notes: list[Note]
    sound: Callable[[Note], np.ndarray]
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
        self.style = STYLES[arrangement.genre]
        n_bars = max(1, math.ceil(self.total / (self.step_samples * STEPS_PER_BAR)))
        score = compose(arrangement, n_bars, np.random.default_rng(seed))
        self.tracks = self._tracks(arrangement, score)
        self.duck = self._duck_track(score) if self.style.sidechain else None
        self.pending = np.zeros((len(self.tracks) + 1, 0), dtype=np.float32)
        self.reverb = Reverb(sample_rate)
        self.echo = Echo(self.step_samples)

    def _onset(self, step: int) -> int:
        grid, delay = self.style.swing
        swung = (grid == 16 and step % 2 == 1) or (grid == 8 and step % 4 == 2)
        return round((step + (delay if swung else 0.0)) * self.step_samples)

    def _track(self, notes: list[Note], sound: Callable[[Note], np.ndarray], mix: _Mix) -> _Track:
        starts = np.array([self._onset(note.step) for note in notes], dtype=np.int64)
        return _Track(starts, notes, sound, mix)

    def _instrument(self, timbre: str) -> Callable[[Note], np.ndarray]:
        """Note renderer with a per-render cache: pieces repeat, so most notes are synthesized once."""
        cache: dict[tuple[int | str, int], np.ndarray] = {}
        synth = TIMBRES[timbre]

        def sound(note: Note) -> np.ndarray:
            key = (note.sound, note.length)
            if key not in cache:
                gate = round(note.length * self.step_samples)
                wave = synth(midi_hz(int(note.sound)), gate, self.sample_rate) * TIMBRE_LEVELS.get(timbre, 1.0)
                cache[key] = wave.astype(np.float32)
            return cache[key]

        return sound

    def _tracks(self, arrangement: Arrangement, score: Score) -> list[_Track]:
        tracks: list[_Track] = []
        if "drums" in arrangement.instruments:
            kit = drum_kit(self.sample_rate, pitch_class(arrangement.key))

            def hit(note: Note) -> np.ndarray:
                return kit[str(note.sound)]

            for voices, mix in _DRUM_MIX:
                notes = [
                    note._replace(velocity=note.velocity * DRUM_LEVELS[str(note.sound)])
                    for note in score.drums
                    if note.sound in voices
                ]
                tracks.append(self._track(notes, hit, replace(mix, gain=self.style.drum_gain)))
        if "bass" in arrangement.instruments:
            tracks.append(self._track(score.bass, self._instrument(self.style.bass), _BASS_MIX))
        melodic = [name for name in arrangement.instruments if name in MELODIC_INSTRUMENTS]
        for timbre, (role, mix) in zip(melodic, _MELODIC_MIX, strict=False):
            tracks.append(self._track(getattr(score, role), self._instrument(timbre), mix))
        return tracks

    def _duck_track(self, score: Score) -> _Track:
        """The kick's shadow: how much the sidechained tracks dip after each kick."""
        t = np.arange(int(0.4 * self.sample_rate)) / self.sample_rate
        shape = one_shot(np.minimum(t / 0.005, 1.0) * np.exp(-t / 0.08), self.sample_rate) * np.float32(_DUCK_DEPTH)
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
        for row, track in zip(block, self.tracks, strict=False):
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
    return 60.0 / tempo / STEPS_PER_BEAT * sample_rate


def _total_samples(duration: float, sample_rate: int) -> int:
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    return round(duration * sample_rate)


def _chunk_samples(arrangement: Arrangement, sample_rate: int, chunk_bars: int) -> int:
    if chunk_bars < 1:
        raise ValueError(f"chunk_bars must be at least 1, got {chunk_bars}")
    return max(1, round(chunk_bars * STEPS_PER_BAR * _step_samples(arrangement.tempo, sample_rate)))


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
