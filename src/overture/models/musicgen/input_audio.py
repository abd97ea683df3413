"""The ``input_audio`` side of a prediction: the slice to use, at the model's rate and channels,
and, for a continuation, how the output starts with it."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
from scipy.signal import resample_poly

from overture.models.audio import read_audio
from overture.models.musicgen.request import Request


def input_slice(request: Request) -> tuple[np.ndarray, int]:
    """``input_audio`` from ``continuation_start`` to ``continuation_end``: float32
    (samples, channels) and its sample rate. Melody conditioning uses the same slice."""
    assert request.input_audio is not None
    audio, rate = read_audio(request.input_audio)
    length = audio.shape[0] / rate
    if request.continuation_start >= length:
        start = request.continuation_start
        raise ValueError(f"`continuation_start` ({start} s) is past the end of input_audio ({length:.2f} s long).")
    end = request.continuation_end
    part = audio[int(rate * request.continuation_start) : None if end is None else int(rate * end)]
    if part.shape[0] == 0:
        raise ValueError("The slice of input_audio between `continuation_start` and `continuation_end` is empty.")
    return part, rate


def to_model_audio(audio: np.ndarray, rate: int, sample_rate: int, channels: int) -> torch.Tensor:
    """(samples, channels) at any rate → (channels, samples) at ``sample_rate``, with audiocraft's
    channel rules: a mono model hears the average, a stereo model hears mono input twice."""
    if channels == 1:
        audio = audio.mean(axis=1, keepdims=True)
    elif audio.shape[1] == 1:
        audio = np.repeat(audio, channels, axis=1)
    else:
        audio = audio[:, :channels]
    if rate != sample_rate:
        ratio = Fraction(sample_rate, rate)
        audio = resample_poly(audio, ratio.numerator, ratio.denominator, axis=0)
    return torch.from_numpy(np.ascontiguousarray(audio.T, dtype=np.float32))


def continuation_prompt(
    audio: torch.Tensor, sample_rate: int, hop_length: int, room: int, duration: int
) -> torch.Tensor:
    """The audio to continue, cut to whole codec frames so that the output splices in at a frame
    edge. It must be shorter than ``room`` frames, leaving something to generate (audiocraft:
    "Prompt is longer than audio to generate")."""
    frames = audio.shape[-1] // hop_length
    seconds = audio.shape[-1] / sample_rate
    if frames == 0:
        raise ValueError("The input_audio slice to continue is shorter than one codec frame.")
    if frames >= room:
        raise ValueError(
            f"The input_audio slice to continue ({seconds:.2f} s) must be shorter than `duration` ({duration} s) "
            "and than 30 s: trim it with `continuation_start` and `continuation_end`."
        )
    return audio[:, : frames * hop_length]


def splice(prompt: torch.Tensor, generated: torch.Tensor, fade: int) -> torch.Tensor:
    """The input audio verbatim, then the generated continuation, crossfaded over the prompt's
    last ``fade`` samples. (audiocraft returns EnCodec's re-synthesis of the prompt instead.)"""
    length = prompt.shape[-1]
    fade = min(fade, length)
    ramp = torch.linspace(0.0, 1.0, fade)
    out = generated.clone()
    out[:, : length - fade] = prompt[:, : length - fade]
    out[:, length - fade : length] = (
        prompt[:, length - fade :] * (1 - ramp) + generated[:, length - fade : length] * ramp
    )
    return out
