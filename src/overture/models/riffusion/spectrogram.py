"""Riffusion's spectrogram images ⇄ audio, in torch alone (torchaudio has no build for our torch).

The parameters are riffusion-hobby's (``spectrogram_params.py``): 44.1 kHz mono, 10 ms hop, 100 ms
Hann window zero-padded to 400 ms (n_fft 17640), 512 HTK mel bins from 0 to 10 kHz, Griffin-Lim
with 32 iterations and momentum 0.99, and images that store ``(mel / max) ** 0.25`` inverted and
flipped so that loud is dark and low notes are at the bottom.

Image → audio is the slow direction: Griffin-Lim runs 32 STFT/ISTFT pairs of 512 frames of 17640
points (about 9 s per clip on two cores, done the straightforward way). Two facts make it several
times faster here with the same result:

* the mel bank stops at 10 kHz, so the inverse mel leaves every bin above it at zero, and
* a signal with nothing above 10 kHz is fully described by its even samples (22.05 kHz).

So the iterations run on the even samples with half-size FFTs: a frame's spectrum below 10 kHz is
twice the 8820-point FFT of its even-sample half (the odd half adds the same sum again, as the
frame has no content near 22.05 kHz), and the inverse FFT of a spectrum confined below 10 kHz,
read at every other sample, is exactly half an 8820-point inverse FFT. Frames whose window starts
on an odd sample use the window's odd taps instead. The rest of the gain comes from inverting the
mel bank once, touching only the 4000 bins below 10 kHz, and reusing buffers (fresh tensors cost
page faults). The last synthesis runs at the full rate with ``torch.istft``. Started from the same
random phases, the output stays within 2 % (0.3 % on a full clip) of the straightforward path's,
``reference_audio_from_mel``, kept as the oracle.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class SpectrogramParams:
    """riffusion-hobby's defaults; images made with other values would not decode the same."""

    sample_rate: int = 44100
    step_size_ms: int = 10
    window_duration_ms: int = 100
    padded_duration_ms: int = 400
    num_frequencies: int = 512
    min_frequency: int = 0
    max_frequency: int = 10000
    num_griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99
    power_for_image: float = 0.25
    #: The mel amplitude a black pixel stands for when decoding; the audio is normalized after.
    max_value: float = 30e6

    @property
    def hop_length(self) -> int:
        return int(self.step_size_ms / 1000 * self.sample_rate)

    @property
    def win_length(self) -> int:
        return int(self.window_duration_ms / 1000 * self.sample_rate)

    @property
    def n_fft(self) -> int:
        return int(self.padded_duration_ms / 1000 * self.sample_rate)

    def samples_for(self, frames: int) -> int:
        """Length of the audio a spectrogram of ``frames`` columns decodes to (centered STFT)."""
        return self.hop_length * (frames - 1)


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(params: SpectrogramParams) -> torch.Tensor:
    """Triangular HTK mel filters without normalization, (n_fft // 2 + 1, n_mels), as
    ``torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk")`` builds them."""
    n_freqs = params.n_fft // 2 + 1
    freqs = torch.linspace(0, params.sample_rate // 2, n_freqs, dtype=torch.float64)
    mels = torch.linspace(
        _hz_to_mel(params.min_frequency),
        _hz_to_mel(params.max_frequency),
        params.num_frequencies + 2,
        dtype=torch.float64,
    )
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    widths = edges[1:] - edges[:-1]
    slopes = edges.unsqueeze(0) - freqs.unsqueeze(1)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class SpectrogramConverter:
    """Mel amplitudes ⇄ mono audio for one set of parameters; build once (``converter()``) and reuse."""

    def __init__(self, params: SpectrogramParams = SpectrogramParams()):
        if params.n_fft % 4 or params.win_length % 2:
            raise ValueError("the half-rate Griffin-Lim needs n_fft divisible by 4 and an even window length")
        self.params = params
        self.window = torch.hann_window(params.win_length, dtype=torch.float32)
        filterbank = mel_filterbank(params)
        #: Bins below this one carry every mel filter; the ones above are silent after the inverse mel.
        self.bins = int(torch.nonzero(filterbank.sum(dim=1)).max()) + 1
        if self.bins > params.n_fft // 4:
            raise ValueError("the mel range must end below a quarter of the sample rate for the half-rate Griffin-Lim")
        self.filterbank = filterbank.float()
        # torchaudio >= 2.1 inverts the mel scale by a least-squares solve per call; for this
        # underdetermined, full-rank system that is the minimum-norm solution A^T (A A^T)^-1 mel,
        # whose matrix is computed once here (A A^T is well conditioned: about 43).
        bank = filterbank[: self.bins].T
        gram = torch.linalg.cholesky(bank @ bank.T)
        self.inverse_filterbank = (bank.T @ torch.cholesky_inverse(gram)).float()
        # The last Griffin-Lim and its buffers (about 150 MB for 512 frames), reused by the next
        # image of the same width; the lock lets one thread use them at a time.
        self._griffin_lim: _GriffinLim | None = None
        self._lock = threading.Lock()

    def mel_from_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Mel amplitudes (n_mels, frames) of mono float audio (samples,)."""
        p = self.params
        spectrum = torch.stft(
            audio.float(),
            p.n_fft,
            hop_length=p.hop_length,
            win_length=p.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return self.filterbank.T @ spectrum.abs()

    def magnitudes_from_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Linear magnitudes (bins, frames) below the mel range's top: ``relu`` of the least-squares inverse."""
        return torch.relu(self.inverse_filterbank @ mel.float())

    def audio_from_mel(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mono audio (samples,) whose mel amplitudes approximate ``mel``, by fast Griffin-Lim."""
        magnitudes = self.magnitudes_from_mel(mel)
        frames = magnitudes.shape[1]
        with self._lock:
            if self._griffin_lim is None or self._griffin_lim.frames != frames:
                self._griffin_lim = _GriffinLim(self.params, self.window, frames, self.bins)
            return self._griffin_lim.run(magnitudes, generator)


@cache
def converter(params: SpectrogramParams = SpectrogramParams()) -> SpectrogramConverter:
    """A shared converter, as building one inverts the filterbank."""
    return SpectrogramConverter(params)


class _GriffinLim:
    """``torchaudio.functional.griffinlim`` (power 1, random initial phase, momentum) on the even
    samples of the signal (see the module docstring).

    Spectra are (frames, bins) in a phase convention of their own. Every iteration works in the
    buffers made here: a fresh tensor per operation costs more in page faults than in arithmetic
    on a small machine.
    """

    def __init__(self, params: SpectrogramParams, window: torch.Tensor, frames: int, bins: int):
        self.params = params
        self.window = window
        self.frames = frames
        self.bins = bins
        self.length = params.samples_for(frames)
        half_fft = params.n_fft // 2
        half_win = params.win_length // 2
        # Frame j's window starts at j * hop - win / 2; ``parity`` says whether that is odd, and
        # ``first`` is the first even sample under it, counted in even samples.
        starts = torch.arange(frames) * params.hop_length - params.win_length // 2
        self.parity = starts % 2
        first = (starts + self.parity) // 2
        positions = first.unsqueeze(1) + torch.arange(half_win)
        taps = window[(2 * torch.arange(half_win)).unsqueeze(0) + self.parity.unsqueeze(1)]
        # The factor 2 stands for the odd samples' equal share of each frame's sum; the 1/2 is the
        # full-size inverse FFT's normalization against the half-size one.
        self.analysis = 2 * taps
        self.synthesis = 0.5 * taps
        # Reading past the ends reflects the signal ("reflect" padding); an even full-rate index
        # reflects to an even one, so the even samples suffice.
        self.even_count = (self.length + 1) // 2
        self.sources = self._reflect(positions).reshape(-1)
        # Overlap-add writes into a margin on both sides, so no frame needs clipping.
        self.margin = int(-positions.min())
        self.targets = (positions + self.margin).reshape(-1)
        self._overlapped = torch.zeros(int(self.targets.max()) + 1)
        envelope = self._overlap_add(taps**2).clone()
        self.envelope = torch.where(envelope > 1e-11, envelope, torch.ones(()))
        # The inverse FFT's input: bins above ``bins`` stay zero.
        self._spectrum = torch.zeros(frames, half_fft // 2 + 1, dtype=torch.complex64)
        self._band = self._spectrum[:, :bins]
        self._segments = torch.empty(frames, half_fft)
        self._gathered = torch.empty(frames, half_win)
        # The forward FFT's input, zero-padded once so the FFT makes no padded copy.
        self._padded = torch.zeros(frames, half_fft)
        # Two outputs in turn: momentum needs the previous one.
        self._rebuilt = [torch.zeros_like(self._spectrum), torch.zeros_like(self._spectrum)]
        self._to_torch = self._phase_to_torch()
        self._start = torch.empty(params.n_fft // 2 + 1, frames, dtype=torch.complex64)
        self._angles = torch.empty(frames, bins, dtype=torch.complex64)
        self._norms = torch.empty(frames, bins)
        self._magnitudes = torch.empty(frames, bins, 1)

    def _phase_to_torch(self) -> torch.Tensor:
        """(frames, bins) factors from our spectra to ``torch.stft``'s: frame j's true spectrum is
        ours times exp(-2πik(parity_j + (n_fft - win) / 2) / n_fft). The product is reduced modulo
        n_fft in integers so the angle keeps its precision."""
        p = self.params
        shift = self.parity.unsqueeze(1) + (p.n_fft - p.win_length) // 2
        turns = (shift * torch.arange(self.bins).unsqueeze(0)) % p.n_fft
        angle = (-2 * math.pi / p.n_fft * turns.double()).float()
        return torch.polar(torch.ones_like(angle), angle)

    def _reflect(self, positions: torch.Tensor) -> torch.Tensor:
        full = 2 * positions
        last = self.length - 1
        full = torch.where(full < 0, -full, full)
        full = torch.where(full > last, 2 * last - full, full)
        return full // 2

    def _overlap_add(self, segments: torch.Tensor) -> torch.Tensor:
        self._overlapped.zero_().index_add_(0, self.targets, segments.reshape(-1))
        return self._overlapped[self.margin : self.margin + self.even_count]

    def run(self, magnitudes: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Audio (samples,) for linear magnitudes (bins, frames)."""
        # (frames, bins, 1): one magnitude against each (re, im) pair of the angles.
        magnitudes = self._magnitudes.copy_(magnitudes.T.unsqueeze(-1))
        # torchaudio's random start, drawn the same way and moved into our convention: with the
        # same generator, both start from the same signal.
        torch.rand(self._start.shape, dtype=torch.complex64, generator=generator, out=self._start)
        angles = torch.mul(self._start[: self.bins].T, self._to_torch.conj(), out=self._angles)
        previous = self._rebuilt[0][:, : self.bins].zero_()
        beta = self.params.griffin_lim_momentum / (1 + self.params.griffin_lim_momentum)
        for _ in range(self.params.num_griffin_lim_iters):
            rebuilt = self.stft(self.istft(self._apply(magnitudes, angles)))
            torch.sub(rebuilt, previous, alpha=beta, out=angles)
            torch.abs(angles, out=self._norms)
            torch.view_as_real(angles).div_(self._norms.add_(1e-16).unsqueeze(-1))
            previous = rebuilt
        return self.full_rate_istft(self._apply(magnitudes, angles))

    def _apply(self, magnitudes: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """``magnitudes * angles``, written straight into the inverse FFT's input."""
        torch.mul(torch.view_as_real(angles), magnitudes, out=torch.view_as_real(self._band))
        return self._band

    def istft(self, spectrum: torch.Tensor) -> torch.Tensor:
        """The even samples of the ISTFT of ``spectrum`` (frames, bins); valid until the next call."""
        if spectrum is not self._band:
            self._band.copy_(spectrum)
        torch.fft.irfft(self._spectrum, n=self._segments.shape[1], out=self._segments)
        windowed = self._segments[:, : self.synthesis.shape[1]].mul_(self.synthesis)
        return self._overlap_add(windowed).div_(self.envelope)

    def stft(self, even: torch.Tensor) -> torch.Tensor:
        """The spectrum (frames, bins) of the signal whose even samples are ``even``; valid until the
        call after next."""
        torch.index_select(even, 0, self.sources, out=self._gathered.view(-1))
        torch.mul(self._gathered, self.analysis, out=self._padded[:, : self._gathered.shape[1]])
        self._rebuilt.reverse()
        torch.fft.rfft(self._padded, out=self._rebuilt[0])
        return self._rebuilt[0][:, : self.bins]

    def full_rate_istft(self, spectrum: torch.Tensor) -> torch.Tensor:
        """``torch.istft`` of ``spectrum`` (frames, bins) moved into its convention: every sample, exactly."""
        p = self.params
        full = torch.zeros(p.n_fft // 2 + 1, self.frames, dtype=torch.complex64)
        full[: self.bins] = (spectrum * self._to_torch).T
        return torch.istft(
            full,
            p.n_fft,
            hop_length=p.hop_length,
            win_length=p.win_length,
            window=self.window,
            center=True,
            length=self.length,
        )


def reference_audio_from_mel(
    mel: torch.Tensor, params: SpectrogramParams = SpectrogramParams(), generator: torch.Generator | None = None
) -> torch.Tensor:
    """The straightforward path riffusion takes through torchaudio (>= 2.1): a least-squares
    inverse mel per call, then Griffin-Lim on full-rate ``torch.stft``/``torch.istft``.

    Several times slower than ``SpectrogramConverter.audio_from_mel``; it is the oracle that the
    fast path is tested and benchmarked against, and from the same generator both start from the
    same random phases.
    """
    p = params
    system = mel_filterbank(p).T.float()
    magnitudes = torch.relu(torch.linalg.lstsq(system[None], mel.float()[None], driver="gelsd").solution[0])
    window = torch.hann_window(p.win_length)
    stft = dict(n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.win_length, window=window, center=True)
    length = p.samples_for(mel.shape[1])
    angles = torch.rand(magnitudes.shape, dtype=torch.complex64, generator=generator)
    previous = torch.zeros((), dtype=torch.complex64)
    beta = p.griffin_lim_momentum / (1 + p.griffin_lim_momentum)
    for _ in range(p.num_griffin_lim_iters):
        rebuilt = torch.stft(
            torch.istft(magnitudes * angles, length=length, **stft), pad_mode="reflect", return_complex=True, **stft
        )
        angles = rebuilt - previous * beta
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return torch.istft(magnitudes * angles, length=length, **stft)


# -- images ------------------------------------------------------------------------------------------


def image_from_mel(mel: torch.Tensor, params: SpectrogramParams = SpectrogramParams()) -> Image.Image:
    """riffusion's image of mel amplitudes (n_mels, frames): ``255 - 255 * (mel / max) ** power`` as
    grey RGB, low frequencies at the bottom. Silence gives a white image."""
    mel = mel.double().clamp(min=0)
    peak = float(mel.max())
    scaled = (mel / peak) ** params.power_for_image * 255 if peak > 0 else torch.zeros_like(mel)
    pixels = (255 - scaled).numpy().astype(np.uint8)
    return Image.fromarray(pixels[::-1].copy(), mode="L").convert("RGB")


def mel_from_image(image: Image.Image, params: SpectrogramParams = SpectrogramParams()) -> torch.Tensor:
    """Mel amplitudes (n_mels, frames) from an image's red channel, the inverse of ``image_from_mel``
    up to ``max_value`` (riffusion's fixed scale for the darkest pixel)."""
    if image.height != params.num_frequencies:
        raise ValueError(f"a spectrogram image must be {params.num_frequencies} pixels high, got {image.height}")
    red = np.asarray(image.convert("RGB"))[::-1, :, 0].astype(np.float32)
    return torch.from_numpy((255 - red) / 255).pow(1 / params.power_for_image) * params.max_value


def image_from_audio(audio: np.ndarray, params: SpectrogramParams = SpectrogramParams()) -> Image.Image:
    """The spectrogram image of mono float audio (samples,)."""
    return image_from_mel(
        converter(params).mel_from_audio(torch.from_numpy(np.asarray(audio, dtype=np.float32))), params
    )


def audio_from_image(
    image: Image.Image, params: SpectrogramParams = SpectrogramParams(), generator: torch.Generator | None = None
) -> np.ndarray:
    """Mono float32 audio (samples,) from a spectrogram image, peak-normalized to -0.1 dBFS as
    riffusion-hobby's output filters leave it."""
    audio = converter(params).audio_from_mel(mel_from_image(image, params), generator).numpy()
    peak = float(np.abs(audio).max())
    return (audio * (10 ** (-0.1 / 20) / peak)).astype(np.float32) if peak > 0 else audio
