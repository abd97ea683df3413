"""Audio post-processing shared by every music model: normalization, encoding, decoding.

Normalization mirrors audiocraft's ``audio_write`` defaults so that outputs match what the
hosted MusicGen models return for the same ``normalization_strategy``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyloudnorm
import soundfile

CONTENT_TYPES: dict[str, str] = {"wav": "audio/wav", "mp3": "audio/mpeg"}

# audiocraft's normalize_audio defaults.
PEAK_CLIP_HEADROOM_DB = 1.0
RMS_HEADROOM_DB = 18.0
LOUDNESS_HEADROOM_DB = 14.0
# audiocraft leaves audio below this RMS untouched rather than amplifying noise by huge gains.
LOUDNESS_ENERGY_FLOOR = 2e-3

STRATEGIES = ("loudness", "peak", "clip", "rms")


def normalize(audio: np.ndarray, sample_rate: int, strategy: str) -> np.ndarray:
    """Normalize float audio of shape (samples, channels) like audiocraft's ``normalize_audio``.

    Silent input comes back unchanged instead of turning into NaN or inf.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown normalization strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    audio = np.asarray(audio, dtype=np.float32)
    if strategy == "clip":
        limit = _db_to_gain(-PEAK_CLIP_HEADROOM_DB)
        return np.clip(audio, -limit, limit)
    if strategy == "peak":
        return _scale(audio, _db_to_gain(-PEAK_CLIP_HEADROOM_DB), _peak(audio))
    if strategy == "rms":
        # audiocraft measures RMS on the mono downmix.
        mono = audio.mean(axis=1) if audio.ndim == 2 else audio
        rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) if mono.size else 0.0
        return np.clip(_scale(audio, _db_to_gain(-RMS_HEADROOM_DB), rms), -1.0, 1.0)
    return np.clip(_normalize_loudness(audio, sample_rate), -1.0, 1.0)


def _normalize_loudness(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Scale to -14 LUFS integrated loudness (ITU-R BS.1770-4), as audiocraft does, without compressor."""
    energy = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    meter = pyloudnorm.Meter(sample_rate)
    if energy < LOUDNESS_ENERGY_FLOOR or audio.shape[0] < meter.block_size * sample_rate:
        # Too quiet to be worth amplifying, or shorter than one 400 ms gating block: unmeasurable.
        return audio
    loudness = float(meter.integrated_loudness(audio.astype(np.float64)))
    if not np.isfinite(loudness):
        return audio
    gain = _db_to_gain(-LOUDNESS_HEADROOM_DB - loudness)
    return (audio * np.float32(gain)).astype(np.float32)


def _scale(audio: np.ndarray, target: float, level: float) -> np.ndarray:
    """Scale so that ``level`` becomes ``target``; leaves silence alone."""
    if not np.isfinite(level) or level <= 0.0:
        return audio
    return (audio * np.float32(target / level)).astype(np.float32)


def _peak(audio: np.ndarray) -> float:
    return float(np.max(np.abs(audio))) if audio.size else 0.0


def _db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode float audio (samples, channels) as 16-bit PCM WAV or constant-bitrate ~320 kbps MP3."""
    buffer = io.BytesIO()
    if fmt == "wav":
        soundfile.write(buffer, audio, sample_rate, format="WAV", subtype="PCM_16")
    elif fmt == "mp3":
        # compression_level 0 is libsndfile's highest MP3 bitrate (320 kbps when constant).
        soundfile.write(buffer, audio, sample_rate, format="MP3", compression_level=0.0, bitrate_mode="CONSTANT")
    else:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(CONTENT_TYPES)}")
    return buffer.getvalue()


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file to float32 (samples, channels) and its sample rate."""
    try:
        audio, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"{Path(path).name} is not a readable audio file: {exc}") from exc
    return audio, int(sample_rate)
