"""Reverb and echo. Each keeps its state between calls, so rendering in chunks equals rendering at once."""

from __future__ import annotations

import numpy as np
from scipy import signal

from overture.models.synth.theory import STEPS_PER_BEAT


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
        for channel, taps in zip(out, self.taps, strict=False):
            for delay, gain in taps:
                channel += np.float32(gain) * extended[self.span - delay : self.span - delay + len(x)]
        self.history = extended[-self.span :].copy()
        return np.ascontiguousarray(out.T)


class Reverb:
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


class Echo:
    """Stereo feedback delay: quarters on the left, half notes on the right.

    On-beat delay times; dotted ones would add a 3-against-4 pulse that blurs the tempo.
    """

    def __init__(self, step_samples: float) -> None:
        self.left = _Comb(round(STEPS_PER_BEAT * step_samples), 0.3, 1)
        self.right = _Comb(round(2 * STEPS_PER_BEAT * step_samples), 0.3, 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        dry = x[:, np.newaxis]
        return np.concatenate([self.left(dry) - dry, self.right(dry) - dry], axis=1)
