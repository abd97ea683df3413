"""Sound: drum one-shots and instrument notes, synthesized from wavetables, FM and filtered noise
rather than sampled, so the composer needs no files and every render sounds the same.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import signal

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


def one_shot(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Peak-normalize, and fade the last 20 ms so a cut-off tail cannot click."""
    fade = min(len(x), int(0.02 * sample_rate))
    x = x.copy()
    x[len(x) - fade :] *= 0.5 * (1 + np.cos(np.pi * np.arange(fade) / fade))
    peak = np.max(np.abs(x))
    return (x / peak if peak > 0 else x).astype(np.float32)


@functools.lru_cache(maxsize=24)
def drum_kit(sample_rate: int, tonic: int) -> dict[str, np.ndarray]:
    """One-shot samples, each peak-normalized. Kick and snare are tuned to the tonic, as
    producers do, so their pitch supports the key instead of blurring it. Cached (read-only):
    designing the filters costs more than rendering a short clip."""

    def t(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sample_rate)) / sample_rate

    tk = t(0.8)
    kick_hz = midi_hz(28 + (tonic - 4) % 12)  # E1..D#2
    sweep = kick_hz + 110 * np.exp(-tk / 0.025)  # the pitch drop is what makes a kick punch
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sample_rate) * np.exp(-tk / 0.25)
    kick += 0.25 * np.sin(2 * np.pi * 1500 * tk) * np.exp(-tk / 0.003)

    ts = t(0.3)
    snare_hz = midi_hz(50 + (tonic - 2) % 12)  # D3..C#4
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
    samples = {name: one_shot(sample, sample_rate) for name, sample in kit.items()}
    for sample in samples.values():
        sample.setflags(write=False)
    return samples


DRUM_LEVELS = {"kick": 1.0, "snare": 0.55, "clap": 0.5, "hat": 0.22, "open": 0.2, "ride": 0.22, "shaker": 0.3}


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


def midi_hz(midi: int) -> float:
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
    return _darkening(freq, sr, env, rolloff=1.3, bright_hz=4500, dark_hz=700, seconds=0.2)


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
    return _darkening(freq, sr, env, rolloff=1.0, bright_hz=5000, dark_hz=600, seconds=0.06)


def _darkening(
    freq: float, sr: int, env: np.ndarray, rolloff: float, bright_hz: float, dark_hz: float, seconds: float
) -> np.ndarray:
    """A struck tone whose high harmonics die first: bright at the attack, dark after ``seconds``."""
    t = np.arange(len(env)) / sr
    phase = _phase(freq, len(env), sr)
    bright = _play(_table(_harmonics(freq, sr, rolloff, bright_hz)), phase)
    dark = _play(_table(_harmonics(freq, sr, rolloff, dark_hz)), phase)
    return _crossfade(dark, bright, t, seconds) * env


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
TIMBRE_LEVELS = {
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

TIMBRES: dict[str, Callable[[float, int, int], np.ndarray]] = {
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
