"""The built-in composer and the shared audio post-processing, judged by what a listener hears:
tempo and key measured from the audio, loudness, exact length, and repeatable output."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile

from audio_analysis import band_energy_fractions, estimate_key, estimate_tempo, pitch_class
from overture.models.audio import CONTENT_TYPES, encode, normalize, read_audio
from overture.models.synth.prompt import Arrangement, parse_prompt
from overture.models.synth.render import SAMPLE_RATE, chunk_count, render


def play(arrangement: Arrangement, duration: float, seed: int = 7, **kwargs: int) -> np.ndarray:
    return np.concatenate(list(render(arrangement, duration, seed, **kwargs)))


@pytest.fixture(scope="module")
def techno() -> np.ndarray:
    return play(parse_prompt("techno at 128 bpm in A minor"), 10.0)


# --- what a listener hears --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "bpm"),
    [
        ("techno at 128 bpm in A minor", 128),
        ("ambient pads 72 bpm in E major", 72),
        ("lofi hip hop 85 bpm", 85),
        ("rock 140 bpm in G major", 140),
        ("deep house groove", 124),  # no tempo given: the genre's
        ("jazz", 120),
        ("reggae", 80),
    ],
)
def test_tempo_is_heard(prompt: str, bpm: float) -> None:
    arrangement = parse_prompt(prompt)
    assert arrangement.tempo == bpm
    assert estimate_tempo(play(arrangement, 10.0), SAMPLE_RATE) == pytest.approx(bpm, abs=2)


@pytest.mark.parametrize(
    ("prompt", "key", "mode"),
    [
        ("pop in C major", "C", "major"),
        ("techno in F# minor", "F#", "minor"),
        ("ambient in Eb major", "Eb", "major"),
        ("rock in A minor", "A", "minor"),
        ("orchestral in D minor", "D", "minor"),
        ("lofi in E major", "E", "major"),
        ("house in G minor", "G", "minor"),
        ("funk in Bb minor", "Bb", "minor"),
        ("reggae in Ab major", "Ab", "major"),
        ("jazz in F major", "F", "major"),
    ],
)
def test_key_is_heard(prompt: str, key: str, mode: str) -> None:
    arrangement = parse_prompt(prompt)
    heard_key, heard_mode = estimate_key(play(arrangement, 16.0, seed=3), SAMPLE_RATE)
    assert (pitch_class(heard_key), heard_mode) == (pitch_class(key), mode)


@pytest.mark.parametrize("genre", ["techno", "ambient", "lofi", "rock", "jazz", "orchestral", "funk", "dnb"])
def test_output_is_clean_full_range_stereo(genre: str) -> None:
    audio = play(parse_prompt(genre), 8.0)
    assert audio.dtype == np.float32 and audio.shape[1] == 2
    assert np.isfinite(audio).all()
    assert np.abs(audio).max() < 1.0  # no clipping before normalization
    assert np.sqrt(np.mean(audio**2)) > 10 ** (-35 / 20)
    assert np.abs(audio[: SAMPLE_RATE // 2]).max() > 0.05  # the beat starts at once
    assert not np.allclose(audio[:, 0], audio[:, 1])  # panning and reverb make it stereo
    low, mid, high = band_energy_fractions(audio, SAMPLE_RATE, (20, 250, 4000, 16000))
    assert low > 0.1 and mid > 0.05 and high > 1e-4
    assert low + mid + high > 0.99  # nothing above 16 kHz to speak of: no aliasing hiss


# --- length, chunking, determinism ----------------------------------------------------------


@pytest.mark.parametrize("duration", [7.3, 0.5, 1.0, 12.345])
def test_length_is_exact_in_samples(duration: float) -> None:
    arrangement = parse_prompt("house 124 bpm")
    chunks = list(render(arrangement, duration, 1))
    assert len(chunks) == chunk_count(arrangement, duration)
    assert all(chunk.dtype == np.float32 and chunk.ndim == 2 and chunk.shape[1] == 2 for chunk in chunks)
    assert sum(len(chunk) for chunk in chunks) == round(duration * SAMPLE_RATE)


def test_chunks_come_every_four_bars() -> None:
    arrangement = parse_prompt("pop 120 bpm")  # 4 bars = 8 s
    assert [len(chunk) for chunk in render(arrangement, 20.0, 1)] == [8 * SAMPLE_RATE, 8 * SAMPLE_RATE, 4 * SAMPLE_RATE]
    assert chunk_count(arrangement, 20.0) == 3


@pytest.mark.parametrize("prompt", ["ambient with pads, bells and strings", "techno 130 bpm", "jazz with organ"])
def test_chunked_render_equals_one_shot(prompt: str) -> None:
    """Notes and reverb ringing across chunk boundaries continue exactly."""
    arrangement = parse_prompt(prompt)
    one_shot = play(arrangement, 21.0, chunk_bars=1000)
    assert np.array_equal(play(arrangement, 21.0), one_shot)
    assert np.array_equal(play(arrangement, 21.0, chunk_bars=1), one_shot)


def test_same_seed_gives_identical_bytes(techno: np.ndarray) -> None:
    again = play(parse_prompt("techno at 128 bpm in A minor"), 10.0)
    assert encode(again, SAMPLE_RATE, "wav") == encode(techno, SAMPLE_RATE, "wav")


def test_different_seeds_give_different_music() -> None:
    # Chords and lead only: any difference is in the harmony or the melody, not drum humanizing.
    arrangement = Arrangement(100, "D", "minor", "pop", "neutral", instruments=("pad", "lead"))
    takes = [play(arrangement, 12.0, seed) for seed in (1, 2, 3)]
    assert not np.array_equal(takes[0], takes[1])
    assert not np.array_equal(takes[1], takes[2])


def test_bad_render_arguments_are_rejected() -> None:
    arrangement = parse_prompt("pop")
    with pytest.raises(ValueError, match="duration"):
        render(arrangement, 0.0, 1)
    with pytest.raises(ValueError, match="duration"):
        chunk_count(arrangement, float("nan"))


# --- prompt parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "tempo"),
    [
        ("120 bpm", 120),
        ("house 120bpm", 120),
        ("tempo 90 rock", 90),
        ("Tempo: 97.5", 97.5),
        ("ambient", 70),
        ("dnb", 174),
        ("edm at 300 bpm", 240),  # clamped to what the synth plays
    ],
)
def test_tempo_is_read(prompt: str, tempo: float) -> None:
    assert parse_prompt(prompt).tempo == tempo


@pytest.mark.parametrize(
    ("prompt", "key", "mode"),
    [
        ("something in D minor", "D", "minor"),
        ("C# major pop", "C#", "major"),
        ("jazz in the key of Eb", "Eb", "major"),
        ("A minor", "A", "minor"),
        ("F sharp minor trance", "F#", "minor"),
        ("house in Bb", "Bb", "minor"),  # mode from the genre
        ("dark pop", "C", "minor"),  # mode from the mood
        ("happy house", "F", "major"),
        ("IN G MAJOR", "G", "major"),
        ("pop in a dreamy mood", "C", "major"),  # "a" is an article here
        ("a song in a minor key", "C", "minor"),
    ],
)
def test_key_and_mode_are_read(prompt: str, key: str, mode: str) -> None:
    arrangement = parse_prompt(prompt)
    assert (arrangement.key, arrangement.mode) == (key, mode)


@pytest.mark.parametrize(
    ("prompt", "genre"),
    [
        ("techno", "techno"),
        ("deep house", "house"),
        ("EDM banger", "edm"),
        ("dance track", "edm"),
        ("electronic", "edm"),
        ("ambient drone", "ambient"),
        ("lo-fi beats", "lofi"),
        ("lofi", "lofi"),
        ("chill vibes", "lofi"),
        ("hip-hop", "hiphop"),
        ("trap", "hiphop"),
        ("hard rock", "rock"),
        ("pop", "pop"),
        ("smooth jazz", "jazz"),
        ("cinematic", "orchestral"),
        ("epic", "orchestral"),
        ("funky", "funk"),
        ("reggae", "reggae"),
        ("drum and bass", "dnb"),
        ("dnb", "dnb"),
        ("chill house", "house"),
        ("electronic ambient", "ambient"),
    ],
)
def test_genre_is_read(prompt: str, genre: str) -> None:
    assert parse_prompt(prompt).genre == genre


@pytest.mark.parametrize(
    ("prompt", "melodic"),
    [
        ("techno with synth pads", ("pad", "pluck")),  # "synth pads" is no synth lead
        ("pop with piano and strings", ("strings", "piano")),  # sustained instruments take the chords
        ("rock with a synth lead", ("guitar", "lead")),
        ("ambient with bells, organ and flute", ("organ", "bells", "flute")),
        ("lofi with rhodes and guitar", ("piano", "guitar")),
        ("jazz with saxophone", ("piano", "brass")),
    ],
)
def test_instruments_are_read(prompt: str, melodic: tuple[str, ...]) -> None:
    assert parse_prompt(prompt).instruments == ("drums", "bass", *melodic)


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_empty_prompt_gives_a_default_arrangement(prompt: str | None) -> None:
    arrangement = parse_prompt(prompt)
    assert arrangement == Arrangement(110, "C", "major", "pop", "neutral", ("drums", "bass", "piano", "lead"))
    assert arrangement.describe() == "110 bpm, C major, genre=pop, mood=neutral, instruments=drums,bass,piano,lead"


@pytest.mark.parametrize(
    "changes",
    [{"key": "H"}, {"mode": "dorian"}, {"genre": "polka"}, {"instruments": ("kazoo",)}, {"tempo": 0.0}],
)
def test_invalid_arrangements_are_rejected(changes: dict[str, object]) -> None:
    fields = {"tempo": 120.0, "key": "C", "mode": "major", "genre": "pop", "mood": "neutral", "instruments": ("drums",)}
    with pytest.raises(ValueError):
        Arrangement(**{**fields, **changes})  # type: ignore[arg-type]


# --- normalization --------------------------------------------------------------------------


def test_loudness_normalizes_to_minus_14_lufs(techno: np.ndarray) -> None:
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    for gain in (1.0, 0.05):  # louder and much quieter than the target
        normalized = normalize(techno * np.float32(gain), SAMPLE_RATE, "loudness")
        assert normalized.dtype == np.float32 and normalized.shape == techno.shape
        assert meter.integrated_loudness(normalized.astype(np.float64)) == pytest.approx(-14.0, abs=0.5)
        assert np.abs(normalized).max() <= 1.0


def test_loudness_clips_what_the_gain_pushes_over_full_scale() -> None:
    t = np.arange(SAMPLE_RATE * 2) / SAMPLE_RATE
    spiky = np.zeros((len(t), 2), dtype=np.float32)
    spiky[::4410] = 0.5  # quiet overall, so the gain is large, but with tall clicks
    spiky += (0.001 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]
    assert np.abs(normalize(spiky, SAMPLE_RATE, "loudness")).max() == 1.0


def test_peak_normalizes_to_minus_1_dbfs(techno: np.ndarray) -> None:
    for gain in (0.1, 3.0):
        normalized = normalize(techno * np.float32(gain), SAMPLE_RATE, "peak")
        assert np.abs(normalized).max() == pytest.approx(10 ** (-1 / 20), rel=1e-5)


def test_rms_normalizes_mono_downmix_to_minus_18_dbfs(techno: np.ndarray) -> None:
    normalized = normalize(techno, SAMPLE_RATE, "rms")
    rms = np.sqrt(np.mean(normalized.mean(axis=1).astype(np.float64) ** 2))
    assert rms == pytest.approx(10 ** (-18 / 20), rel=1e-3)
    assert np.abs(normalized).max() <= 1.0


def test_clip_only_clamps_at_minus_1_dbfs() -> None:
    limit = 10 ** (-1 / 20)
    audio = np.array([[0.2, -0.5], [1.5, -3.0], [0.88, -0.95]], dtype=np.float32)
    expected = np.array([[0.2, -0.5], [limit, -limit], [0.88, -limit]], dtype=np.float32)
    np.testing.assert_allclose(normalize(audio, SAMPLE_RATE, "clip"), expected, rtol=1e-6)


@pytest.mark.parametrize("strategy", ["loudness", "peak", "rms", "clip"])
@pytest.mark.parametrize("samples", [SAMPLE_RATE * 2, 1000])
def test_silence_stays_silent(strategy: str, samples: int) -> None:
    silence = np.zeros((samples, 2), dtype=np.float32)
    normalized = normalize(silence, SAMPLE_RATE, strategy)
    assert np.isfinite(normalized).all() and not normalized.any()


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="normalization strategy 'loud'"):
        normalize(np.zeros((10, 2), dtype=np.float32), SAMPLE_RATE, "loud")


# --- encoding and decoding ----------------------------------------------------------------


def test_wav_is_16_bit_stereo(techno: np.ndarray) -> None:
    data = encode(techno, SAMPLE_RATE, "wav")
    info = soundfile.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 2)
    assert (info.samplerate, info.frames) == (SAMPLE_RATE, len(techno))
    decoded, _ = soundfile.read(io.BytesIO(data), dtype="float32")
    assert np.abs(decoded - techno).max() < 2 / 2**15


def test_mp3_decodes_to_about_the_same_duration(techno: np.ndarray) -> None:
    data = encode(techno, SAMPLE_RATE, "mp3")
    decoded, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE and decoded.shape[1] == 2
    assert len(decoded) / rate == pytest.approx(len(techno) / SAMPLE_RATE, abs=0.1)
    assert len(data) * 8 / (len(techno) / SAMPLE_RATE) > 250_000  # about 320 kbps, constant


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="audio format 'ogg'"):
        encode(np.zeros((10, 2), dtype=np.float32), SAMPLE_RATE, "ogg")
    assert CONTENT_TYPES == {"wav": "audio/wav", "mp3": "audio/mpeg"}


def test_read_audio_round_trips(tmp_path: Path, techno: np.ndarray) -> None:
    path = tmp_path / "take.wav"
    path.write_bytes(encode(techno, SAMPLE_RATE, "wav"))
    audio, rate = read_audio(path)
    assert rate == SAMPLE_RATE and audio.dtype == np.float32 and audio.shape == techno.shape


def test_read_audio_rejects_what_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not audio")
    with pytest.raises(ValueError, match="notes.txt is not a readable audio file"):
        read_audio(path)
