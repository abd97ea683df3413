"""Riffusion's spectrogram images ⇄ audio in torch alone: the same transforms as riffusion's
torchaudio code, and a fast Griffin-Lim that reconstructs as well as the straightforward one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from overture.models.riffusion.spectrogram import (
    SpectrogramParams,
    _GriffinLim,
    audio_from_image,
    converter,
    image_from_audio,
    image_from_mel,
    mel_filterbank,
    mel_from_image,
    reference_audio_from_mel,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PARAMS = SpectrogramParams()
SR = PARAMS.sample_rate


def tone_mix(frames: int = 512, seed: int = 0) -> torch.Tensor:
    """A few partials with a tremolo plus noise below 9 kHz: something with structure to rebuild."""
    n = torch.arange(PARAMS.samples_for(frames), dtype=torch.float64) / SR
    audio = sum(
        torch.sin(2 * math.pi * f * n + i) * (1 + 0.5 * torch.sin(2 * math.pi * (i + 1) * n))
        for i, f in enumerate((110.0, 440.0, 1234.5, 5000.0))
    )
    noise = torch.fft.rfft(torch.randn(len(n), generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    noise[int(9000 / SR * len(n)) :] = 0
    return (audio + torch.fft.irfft(noise, n=len(n))).float() / 5


def spectral_convergence(reference: torch.Tensor, rebuilt: torch.Tensor) -> float:
    """‖M(ref) − M(rebuilt)‖ / ‖M(ref)‖ over peak-normalized mel magnitudes (0 is perfect)."""
    a, b = converter().mel_from_audio(reference), converter().mel_from_audio(rebuilt)
    a, b = a / a.max(), b / b.max()
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(a))


def test_riffusion_parameters() -> None:
    assert (PARAMS.hop_length, PARAMS.win_length, PARAMS.n_fft) == (441, 4410, 17640)
    # 512 frames of 10 ms: the 5.11 s clips riffusion returns.
    assert PARAMS.samples_for(512) == 225351


def test_mel_filterbank_is_htk_triangles_up_to_10_khz() -> None:
    bank = mel_filterbank(PARAMS)
    assert bank.shape == (PARAMS.n_fft // 2 + 1, PARAMS.num_frequencies)
    assert float(bank.max()) <= 1.0 and float(bank.min()) == 0.0
    bin_hz = SR / PARAMS.n_fft
    assert float(bank[int(10000 / bin_hz) + 1 :].abs().sum()) == 0.0
    # Each filter peaks at its HTK centre: 2595 log10(1 + f/700), evenly spaced in mel.
    top_mel = 2595 * math.log10(1 + 10000 / 700)
    centre_hz = 700 * (10 ** (top_mel * 256 / 513 / 2595) - 1)
    assert abs(int(bank[:, 255].argmax()) * bin_hz - centre_hz) <= bin_hz


def test_inverse_mel_is_torchaudios_least_squares_solution() -> None:
    mel = torch.rand(PARAMS.num_frequencies, 8, dtype=torch.float64)
    conv = converter()
    system = mel_filterbank(PARAMS).T
    expected = torch.relu(torch.linalg.lstsq(system[None], mel[None], driver="gelsd").solution[0])
    ours = conv.magnitudes_from_mel(mel).double()
    assert torch.allclose(ours, expected[: conv.bins], atol=1e-4 * float(expected.max()))
    assert float(expected[conv.bins :].abs().max()) < 1e-9


def test_half_rate_stft_is_riffusions_stft_below_10_khz() -> None:
    audio = tone_mix()
    conv = converter()
    fast = _GriffinLim(PARAMS, conv.window, 512, conv.bins)
    spectrum = torch.stft(
        audio, PARAMS.n_fft, PARAMS.hop_length, PARAMS.win_length, conv.window, center=True, pad_mode="reflect",
        return_complex=True,
    )[: conv.bins]  # fmt: skip
    ours = fast.stft(audio[::2].contiguous())
    assert float((ours.abs().T - spectrum.abs()).norm() / spectrum.norm()) < 0.005
    # Back to every sample through torch.istft: exact.
    back = fast.full_rate_istft(ours)
    assert float((back - audio).norm() / audio.norm()) < 0.01


def test_fast_griffin_lim_matches_the_reference_from_the_same_random_start() -> None:
    # 128 frames (1.28 s) keep the full-rate reference quick.
    audio = tone_mix(frames=128)
    mel = converter().mel_from_audio(audio)
    fast = converter().audio_from_mel(mel, torch.Generator().manual_seed(0))
    reference = reference_audio_from_mel(mel, generator=torch.Generator().manual_seed(0))
    assert fast.shape == reference.shape == audio.shape
    assert float((fast - reference).norm() / reference.norm()) < 0.05
    assert abs(spectral_convergence(audio, fast) - spectral_convergence(audio, reference)) < 0.005


def test_round_trip_audio_image_audio(record_property: pytest.RecordProperty) -> None:
    audio = tone_mix()
    image = image_from_audio(audio.numpy())
    assert image.size == (512, 512) and image.mode == "RGB"
    rebuilt = audio_from_image(image, generator=torch.Generator().manual_seed(0))
    assert rebuilt.shape == (225351,) and rebuilt.dtype == np.float32
    assert abs(float(np.abs(rebuilt).max()) - 10 ** (-0.1 / 20)) < 1e-4  # riffusion's -0.1 dBFS peak
    sc = spectral_convergence(audio, torch.from_numpy(rebuilt))
    record_property("spectral_convergence", sc)
    print(f"audio → image → audio: mel spectral convergence {sc:.3f}")
    assert sc < 0.2


def test_loud_is_dark_silence_is_white_and_low_notes_at_the_bottom() -> None:
    n = np.arange(PARAMS.samples_for(64)) / SR
    image = np.asarray(image_from_audio(np.sin(2 * np.pi * 100 * n).astype(np.float32)))
    darkest_row = int(image[:, 32, 0].argmin())
    assert darkest_row > 480 and image[darkest_row, 32, 0] == 0
    assert image[:100].min() > 200
    assert (np.asarray(image_from_mel(torch.zeros(512, 4))) == 255).all()


def test_image_decoding_inverts_the_encoding_up_to_its_scale() -> None:
    mel = torch.rand(512, 16) ** 4
    decoded = mel_from_image(image_from_mel(mel))
    # 8-bit pixels of mel^0.25: the error of one grey level, relative to the brightest bin.
    assert torch.allclose(decoded / decoded.max(), mel / mel.max(), atol=0.02)


def test_images_must_have_one_row_per_mel_bin() -> None:
    with pytest.raises(ValueError, match="512 pixels high"):
        mel_from_image(image_from_mel(torch.rand(256, 8)))
