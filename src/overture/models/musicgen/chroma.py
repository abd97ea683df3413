"""Melody conditioning features without torchaudio.

transformers' ``MusicgenMelodyFeatureExtractor`` needs torchaudio, which has no build for this
torch. This computes the same thing with ``torch.stft``: a power spectrogram normalized by the
window (torchaudio's ``Spectrogram(normalized=True)``), librosa's chroma filter bank, and for each
frame a one-hot vector of its strongest pitch class (C first).
"""

from __future__ import annotations

import torch


class ChromaExtractor:
    def __init__(self, sample_rate: int, num_chroma: int = 12, n_fft: int = 16384, hop_length: int = 4096):
        from transformers.audio_utils import chroma_filter_bank

        self.n_fft = n_fft
        self.hop_length = hop_length
        #: Longer melodies are cut here: the model was trained on 30 s of chroma.
        self.max_samples = 30 * sample_rate
        filters = chroma_filter_bank(
            num_frequency_bins=n_fft, num_chroma=num_chroma, sampling_rate=sample_rate, tuning=0
        )
        self.filters = torch.from_numpy(filters).float()
        self.window = torch.hann_window(n_fft)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        """Mono float audio (samples,) at the model's rate → one-hot chroma (frames, num_chroma)."""
        wav = wav.float().cpu()[: self.max_samples]
        if wav.shape[-1] < self.n_fft:
            missing = self.n_fft - wav.shape[-1]
            wav = torch.nn.functional.pad(wav, (missing // 2, missing - missing // 2))
        spectrum = torch.stft(
            wav,
            self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = (spectrum / self.window.pow(2).sum().sqrt()).abs().pow(2)
        chroma = (self.filters @ power).T
        strongest = chroma.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(chroma).scatter_(-1, strongest, 1.0)
