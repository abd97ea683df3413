"""``meta/musicgen`` in process, on tiny random checkpoints with the real architectures: the schema
Replicate publishes, every input and quirk, the audio that comes out, and batching.

The predictor runs exactly as the engine runs it (validated inputs in, a file out) with a
recording ``Context`` in place of the engine's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import soundfile
import torch

from harness import RecordingContext, inputs_for
from overture.errors import CheckpointMissing, InvalidInput
from overture.models.base import Canceled, Predictor
from overture.models.musicgen import MUSICGEN, OVERTURE_VERSION, REPLICATE_VERSION, write_tiny_stereo_melody_checkpoint
from overture.models.musicgen.batching import ContinuousBatch, Generation, Window, plan_windows, sample_tokens
from overture.models.musicgen.checkpoint import MusicgenCheckpoint, load_checkpoint
from overture.models.musicgen.request import Sampling
from overture.models.registry import Registry
from overture.runtime.checkpoints import Checkpoints, CheckpointSettings
from overture.testing import tiny_checkpoint

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_thread")]

#: The openapi_schema Replicate stores for version 671ac6…, regenerated from its Cog predictor.
GOLDEN = Path(__file__).parent / "golden" / "musicgen.openapi.json"
SAMPLE_RATE = 32000
REPLICATE, OVERTURE = MUSICGEN.versions
#: model_version → the tiny family that stands in for its checkpoint, and its channel count.
FAMILIES = {"large": ("musicgen", 1), "stereo-large": ("musicgen-stereo", 2), "melody-large": ("musicgen-melody", 1)}


@pytest.fixture(scope="module")
def checkpoint_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    dirs = {family: tiny_checkpoint(family, root / family) for family, _ in FAMILIES.values()}
    dirs["musicgen-stereo-melody"] = root / "musicgen-stereo-melody"
    dirs["musicgen-stereo-melody"].mkdir()
    write_tiny_stereo_melody_checkpoint(dirs["musicgen-stereo-melody"])
    return dirs


@pytest.fixture(scope="module")
def checkpoints(checkpoint_dirs: dict[str, Path]) -> Checkpoints:
    """Every model_version the tests use, mapped to a tiny checkpoint as an operator would."""
    local = {f"facebook/musicgen-{version}": checkpoint_dirs[family] for version, (family, _) in FAMILIES.items()}
    local["facebook/musicgen-stereo-melody-large"] = checkpoint_dirs["musicgen-stereo-melody"]
    local["facebook/musicgen-small"] = checkpoint_dirs["musicgen"]
    return Checkpoints(CheckpointSettings(local_dirs=local))


@pytest.fixture(scope="module")
def predictor(checkpoints: Checkpoints) -> Predictor:
    return REPLICATE.predictor(checkpoints)


@pytest.fixture
def scratch(tmp_path: Path) -> Callable[..., RecordingContext]:
    """A fresh context per prediction (each needs its own scratch directory, as in the engine)."""
    count = iter(range(1000))
    return lambda **kwargs: RecordingContext(tmp_path / f"prediction-{next(count)}", **kwargs)


def run(predictor: Predictor, ctx: RecordingContext, **inputs: Any) -> tuple[np.ndarray, int]:
    path = predictor.predict(ctx, **inputs_for(REPLICATE, **inputs))
    assert path.name == "out." + inputs.get("output_format", "wav")
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return audio, rate


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    soundfile.write(path, audio, rate, subtype="FLOAT")
    return path


def tone(frequency: float, seconds: float, rate: int = SAMPLE_RATE, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


# --- the schema Replicate publishes ---------------------------------------------------------


def test_replicate_version_schema_matches_the_golden_file() -> None:
    golden = json.loads(GOLDEN.read_text())["components"]["schemas"]
    ours = MUSICGEN.versions[0].openapi_schema["components"]["schemas"]
    assert REPLICATE.id == REPLICATE_VERSION
    for name in ("Input", "Output", "model_version", "normalization_strategy", "output_format"):
        assert ours[name] == golden[name], name


def test_newer_version_adds_checkpoints_that_fit_modest_hardware() -> None:
    replicate_input = REPLICATE.openapi_schema["components"]["schemas"]
    newer = OVERTURE.openapi_schema["components"]["schemas"]
    assert MUSICGEN.latest_version.id == OVERTURE_VERSION
    assert newer["Input"] == replicate_input["Input"]
    choices = newer["model_version"]["enum"]
    assert choices[:4] == replicate_input["model_version"]["enum"]
    assert {"small", "medium", "melody", "stereo-small", "stereo-medium"} <= set(choices)


def test_melody_alias_names_replicates_version() -> None:
    registry = Registry([MUSICGEN])
    assert registry.version("meta/musicgen:melody")[1] is REPLICATE
    assert registry.version(REPLICATE_VERSION)[1] is REPLICATE


def test_schema_rejects_a_negative_continuation_end_as_replicate_does() -> None:
    with pytest.raises(InvalidInput, match="continuation_end"):
        REPLICATE.inputs.validate({"prompt": "jazz", "continuation_end": -1})


# --- every model_version family: rate, channels, length ---------------------------------------


@pytest.mark.parametrize("duration", [8, 30, 45])
@pytest.mark.parametrize("model_version", list(FAMILIES))
def test_output_has_the_family_rate_channels_and_length(predictor, scratch, model_version: str, duration: int) -> None:
    ctx = scratch()
    audio, rate = run(predictor, ctx, prompt="upbeat synth pop", model_version=model_version, duration=duration, seed=3)
    assert rate == SAMPLE_RATE
    assert audio.shape == (duration * SAMPLE_RATE, FAMILIES[model_version][1])
    assert np.abs(audio).max() > 0.01
    assert f"Checkpoint: facebook/musicgen-{model_version} (cpu, float32)" in ctx.logs
    assert ("in windows of 30 s, each 18 s after the last" in "\n".join(ctx.logs)) == (duration > 30)
    done = [d for d, _ in ctx.progress_reports]
    assert done == sorted(done) and ctx.progress_reports[-1][0] == ctx.progress_reports[-1][1]


def test_wav_is_16_bit_pcm(predictor, scratch) -> None:
    path = predictor.predict(scratch(), **inputs_for(REPLICATE, prompt="jazz", model_version="large", duration=1))
    assert soundfile.info(path).subtype == "PCM_16"


def test_mp3_output_decodes(predictor, scratch) -> None:
    audio, rate = run(
        predictor, scratch(), prompt="jazz", model_version="stereo-large", duration=5, output_format="mp3"
    )
    assert rate == SAMPLE_RATE and audio.shape[1] == 2
    assert audio.shape[0] / rate == pytest.approx(5, abs=0.1)
    assert np.abs(audio).max() > 0.01


def test_windows_move_18_s_at_a_time_like_audiocraft() -> None:
    fifty = 50  # frames per second
    assert plan_windows(30 * fifty, 0, 1500, 900) == [Window(0, 0, 1500)]
    assert plan_windows(45 * fifty, 0, 1500, 900) == [Window(0, 0, 1500), Window(900, 600, 1350)]
    sixty = plan_windows(60 * fifty, 0, 1500, 900)
    assert sixty == [Window(0, 0, 1500), Window(900, 600, 1500), Window(1800, 600, 1200)]
    # Each window ends where the clip needs it to, and the new frames add up to the clip.
    assert sum(w.frames - w.prompt for w in sixty) == 3000
    # A continuation's own prompt leads the first window.
    assert plan_windows(40 * fifty, 250, 1500, 900)[0] == Window(0, 250, 1500)


# --- our decoding loop is transformers' model, token for token -----------------------------


def hf_generate_codes(checkpoint: MusicgenCheckpoint, frames: int, **inputs: Any) -> torch.Tensor:
    """The codes plain ``generate`` hands to EnCodec, greedy, guidance 3."""
    seen: list[torch.Tensor] = []
    decode = checkpoint.model.audio_encoder.decode
    checkpoint.model.audio_encoder.decode = lambda codes, *a, **k: seen.append(codes) or decode(codes, *a, **k)
    try:
        checkpoint.model.generate(
            **inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=frames + checkpoint.max_delay
        )
    finally:
        checkpoint.model.audio_encoder.decode = decode
    # Stereo decodes left (even codebooks) then right (odd ones).
    return torch.stack([codes[0, 0] for codes in seen], dim=1).reshape(checkpoint.num_codebooks, -1)


GREEDY = Sampling(top_k=250, top_p=0.0, temperature=0.0, guidance=3.0)


def greedy_alone(checkpoint: MusicgenCheckpoint, text: str, **extra: Any) -> torch.Tensor:
    """60 frames of greedy codes for ``text``, generated alone in our loop."""
    batch = ContinuousBatch(checkpoint)
    batch.join(
        Generation(
            text=checkpoint.encode_text(text),
            sampling=GREEDY,
            generator=torch.Generator(),
            watcher=RecordingContext(checkpoint.source.parent / "unused"),
            frames=60,
            **extra,
        )
    )
    while not (ended := batch.step()):
        pass
    ((_, codes),) = ended
    return codes


@pytest.mark.parametrize("family", ["musicgen", "musicgen-stereo", "musicgen-melody", "musicgen-stereo-melody"])
def test_greedy_decoding_equals_transformers_generate(checkpoint_dirs, family: str) -> None:
    checkpoint = load_checkpoint(checkpoint_dirs[family], "cpu", torch.float32)
    tokens = dict(checkpoint.tokenizer(["lofi hip hop beat"], return_tensors="pt"))
    melody = torch.from_numpy(tone(440, 3))
    extra = {"input_features": checkpoint.chroma(melody)[None]} if checkpoint.melody else {}
    expected = hf_generate_codes(checkpoint, 60, **tokens, **extra)
    melody = melody if checkpoint.melody else None
    assert torch.equal(greedy_alone(checkpoint, "lofi hip hop beat", melody=melody), expected)


@pytest.mark.parametrize("family", ["musicgen", "musicgen-stereo"])
def test_continuation_decoding_equals_transformers_generate(checkpoint_dirs, family: str) -> None:
    checkpoint = load_checkpoint(checkpoint_dirs[family], "cpu", torch.float32)
    prompt_audio = torch.from_numpy(tone(330, 0.5)).repeat(checkpoint.channels, 1)
    prompt = checkpoint.encode_audio(prompt_audio)
    tokens = dict(checkpoint.tokenizer(["jazz"], return_tensors="pt"))
    expected = hf_generate_codes(checkpoint, 60 - prompt.shape[-1], **tokens, input_values=prompt_audio[None])
    assert torch.equal(greedy_alone(checkpoint, "jazz", prompt=prompt), expected)


def test_sampling_follows_audiocraft_rules() -> None:
    logits = torch.randn(3, 4, 2048)
    greedy = logits.argmax(-1)
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    assert torch.equal(sample_tokens(logits, Sampling(250, 0.0, 0.0, 3.0), generators), greedy)  # temperature 0
    assert torch.equal(sample_tokens(logits, Sampling(1, 0.0, 1.0, 3.0), generators), greedy)  # top-k 1
    # top-p wins over top-k when set: a tiny p keeps only the most likely token.
    assert torch.equal(sample_tokens(logits, Sampling(250, 1e-6, 1.0, 3.0), generators), greedy)
    sampled = sample_tokens(logits, Sampling(5, 0.0, 1.0, 3.0), generators)
    assert (logits.gather(-1, sampled[..., None]) >= logits.topk(5).values[..., -1:]).all()


# --- melody conditioning ----------------------------------------------------------------------


@pytest.mark.parametrize(("frequency", "pitch_class"), [(261.63, 0), (392.0, 7), (440.0, 9)])
def test_chroma_hears_the_pitch_class(checkpoint_dirs, frequency: float, pitch_class: int) -> None:
    checkpoint = load_checkpoint(checkpoint_dirs["musicgen-melody"], "cpu", torch.float32)
    chroma = checkpoint.chroma(torch.from_numpy(tone(frequency, 4)))
    assert chroma.shape == (4 * SAMPLE_RATE // 4096 + 1, 12)
    assert (chroma.argmax(-1) == pitch_class).all()


def test_input_audio_melody_conditions_the_output(predictor, scratch, tmp_path: Path) -> None:
    a = write_wav(tmp_path / "a.wav", tone(440, 4))
    c = write_wav(tmp_path / "c.wav", np.stack([tone(261.63, 4, 44100)] * 2, axis=1), 44100)  # stereo, 44.1 kHz
    common = {"prompt": "orchestral arrangement", "model_version": "melody-large", "duration": 4, "seed": 9}
    plain, _ = run(predictor, scratch(), **common)
    on_a, rate = run(predictor, scratch(), input_audio=a, **common)
    on_c, _ = run(predictor, scratch(), input_audio=c, **common)
    assert rate == SAMPLE_RATE and on_a.shape == plain.shape == on_c.shape
    assert not np.array_equal(on_a, plain) and not np.array_equal(on_a, on_c)
    # The melody alone is enough: no prompt needed.
    alone, _ = run(predictor, scratch(), input_audio=a, model_version="melody-large", duration=2)
    assert alone.shape == (2 * SAMPLE_RATE, 1)


# --- continuation -----------------------------------------------------------------------------


@pytest.mark.parametrize("model_version", ["large", "stereo-large"])
def test_continuation_starts_with_the_input_audio_and_lasts_duration(
    predictor, scratch, tmp_path, model_version: str
) -> None:
    channels = FAMILIES[model_version][1]
    source = np.stack([tone(330, 5, amplitude=0.2), tone(495, 5, amplitude=0.1)], axis=1)[:, :channels]
    path = write_wav(tmp_path / "source.wav", source)
    audio, rate = run(
        predictor,
        scratch(),
        prompt="jazz",
        model_version=model_version,
        input_audio=path,
        continuation=True,
        continuation_start=1,
        continuation_end=3,
        duration=6,
        # "clip" leaves quiet audio as it is, so the start can be compared sample by sample.
        normalization_strategy="clip",
    )
    assert rate == SAMPLE_RATE and audio.shape == (6 * SAMPLE_RATE, channels)
    kept = 2 * SAMPLE_RATE - SAMPLE_RATE // 100  # the slice, less the 10 ms crossfade into the new audio
    np.testing.assert_allclose(audio[:kept], source[SAMPLE_RATE : SAMPLE_RATE + kept], atol=2 / 32768)
    assert not np.allclose(audio[2 * SAMPLE_RATE :], 0)


# --- loudness ---------------------------------------------------------------------------------


def level_db(value: float) -> float:
    return 20 * np.log10(value)


@pytest.mark.parametrize(
    ("strategy", "measure", "expected_db"),
    [
        ("loudness", lambda a: pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(a.astype(np.float64)), -14.0),
        ("peak", lambda a: level_db(np.abs(a).max()), -1.0),
        ("rms", lambda a: level_db(np.sqrt(np.mean(a.mean(axis=1) ** 2))), -18.0),
    ],
)
def test_normalization_strategy_sets_the_level(predictor, scratch, strategy: str, measure, expected_db: float) -> None:
    audio, _ = run(
        predictor,
        scratch(),
        prompt="dark ambient drone",
        model_version="stereo-large",
        duration=4,
        normalization_strategy=strategy,
    )
    assert measure(audio) == pytest.approx(expected_db, abs=0.5)


def test_clip_strategy_caps_peaks_at_minus_1_db(predictor, scratch, tmp_path: Path) -> None:
    loud = write_wav(tmp_path / "loud.wav", tone(220, 3, amplitude=0.99))
    audio, _ = run(
        predictor,
        scratch(),
        model_version="large",
        input_audio=loud,
        continuation=True,
        duration=4,
        normalization_strategy="clip",
    )
    assert level_db(np.abs(audio).max()) == pytest.approx(-1.0, abs=0.01)


# --- error cases ------------------------------------------------------------------------------


@pytest.fixture
def audio_file(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "input.wav", tone(440, 3))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "Must provide either prompt or input_audio"),
        ({"prompt": "jazz", "continuation": True}, "Must provide `input_audio` if continuation is `True`."),
        ({"model_version": "large", "input_audio": "AUDIO"}, "Melody conditioning needs a melody model"),
        (
            {"model_version": "stereo-large", "prompt": "jazz", "multi_band_diffusion": True},
            "Multi-band Diffusion only works with non-stereo models.",
        ),
        (
            {"model_version": "large", "prompt": "jazz", "multi_band_diffusion": True},
            "multi_band_diffusion is not available on this server: it needs audiocraft's MultiBandDiffusion",
        ),
        (
            {"input_audio": "AUDIO", "continuation_start": 2, "continuation_end": 1},
            "`continuation_start` must be less than or equal to `continuation_end`",
        ),
        (
            {"input_audio": "AUDIO", "continuation_start": 5},
            "`continuation_start` (5 s) is past the end of input_audio (3.00 s long).",
        ),
        ({"prompt": "jazz", "duration": 0}, "`duration` must be at least 1 second"),
        ({"prompt": "jazz", "seed": -2}, "`seed` must be between 0 and 4294967295, or -1"),
        (
            {"input_audio": "AUDIO", "continuation": True, "duration": 2},
            "The input_audio slice to continue (3.00 s) must be shorter than `duration` (2 s)",
        ),
        ({"input_audio": "NOT_AUDIO", "model_version": "melody-large"}, "is not a readable audio file"),
    ],
)
def test_invalid_requests_fail_with_a_readable_message(
    predictor, scratch, audio_file: Path, inputs: dict[str, Any], message: str
) -> None:
    not_audio = audio_file.with_name("notes.wav")
    not_audio.write_text("not audio")
    files = {"AUDIO": audio_file, "NOT_AUDIO": not_audio}
    if "input_audio" in inputs:
        inputs = {**inputs, "input_audio": files[inputs["input_audio"]]}
    with pytest.raises(ValueError) as error:
        predictor.predict(scratch(), **inputs_for(REPLICATE, **inputs))
    assert message in str(error.value)


# --- seeds ------------------------------------------------------------------------------------


def test_a_seed_reproduces_the_audio_and_a_random_seed_is_logged(predictor, scratch) -> None:
    common = {"prompt": "epic orchestral", "model_version": "large", "duration": 3}
    first, second = scratch(), scratch()
    assert np.array_equal(run(predictor, first, seed=42, **common)[0], run(predictor, second, seed=42, **common)[0])
    assert "Using seed: 42" in first.logs
    drawn = scratch()
    random_audio, _ = run(predictor, drawn, **common)
    again, _ = run(predictor, scratch(), seed=drawn.seed(), **common)
    assert np.array_equal(random_audio, again)


@pytest.mark.parametrize("seed", [0, -1])
def test_seed_0_and_minus_1_are_random_like_replicate(predictor, scratch, seed: int) -> None:
    common = {"prompt": "jazz", "model_version": "large", "duration": 2, "seed": seed}
    first, second = scratch(), scratch()
    assert not np.array_equal(run(predictor, first, **common)[0], run(predictor, second, **common)[0])
    assert 0 < first.seed() != second.seed()
    assert not REPLICATE.predictor.is_deterministic(inputs_for(REPLICATE, **common))


# --- batches ----------------------------------------------------------------------------------


def batch(predictor: Predictor, contexts: list[RecordingContext], requests: list[dict[str, Any]]) -> list[Any]:
    jobs = [(ctx, inputs_for(REPLICATE, **r)) for ctx, r in zip(contexts, requests, strict=True)]
    return predictor.predict_batch(jobs)


def read(path: Path) -> np.ndarray:
    return soundfile.read(path, dtype="float32")[0]


def test_a_batch_gives_each_prediction_the_audio_it_gets_alone(predictor, scratch) -> None:
    # Prompts of different lengths: the text is padded in the batch and masked.
    requests = [
        {"prompt": "jazz", "seed": 1},
        {"prompt": "energetic rock riff with loud guitars and heavy drums", "seed": 2},
        {"prompt": "lofi hip hop", "seed": 3, "output_format": "mp3"},
    ]
    requests = [{**r, "model_version": "stereo-large", "duration": 3} for r in requests]
    contexts = [scratch() for _ in requests]
    batched = batch(predictor, contexts, requests)
    assert "Generating 3 s, joining 2 running generation(s)" in contexts[2].logs
    for request, output in zip(requests, batched, strict=True):
        alone = predictor.predict(scratch(), **inputs_for(REPLICATE, **request))
        assert np.array_equal(read(output), read(alone))


def test_melody_rows_with_different_prefixes_share_the_batch(predictor, scratch, tmp_path: Path) -> None:
    melody = write_wav(tmp_path / "melody.wav", tone(392, 3))
    requests = [
        {"prompt": "jazz", "seed": 1, "input_audio": melody},
        {"prompt": "rock", "seed": 2},
        {"prompt": "epic orchestral music with choir", "seed": 3, "input_audio": melody},
    ]
    requests = [{**r, "model_version": "melody-large", "duration": 2} for r in requests]
    contexts = [scratch() for _ in requests]
    batched = batch(predictor, contexts, requests)
    assert "Generating 2 s, joining 2 running generation(s)" in contexts[2].logs
    for request, output in zip(requests, batched, strict=True):
        assert np.array_equal(read(output), read(predictor.predict(scratch(), **inputs_for(REPLICATE, **request))))


def test_a_canceled_prediction_leaves_the_batch_and_the_others_finish(predictor, scratch) -> None:
    requests = [
        {"prompt": p, "seed": s, "model_version": "large", "duration": 3} for p, s in [("a", 1), ("b", 2), ("c", 3)]
    ]
    contexts = [scratch(), scratch(cancel_after=20), scratch()]
    results = batch(predictor, contexts, requests)
    assert isinstance(results[1], Canceled)
    assert contexts[1].checks == 21
    for request, output in (requests[0], results[0]), (requests[2], results[2]):
        assert np.array_equal(read(output), read(predictor.predict(scratch(), **inputs_for(REPLICATE, **request))))


def test_an_invalid_request_fails_alone_in_its_batch(predictor, scratch) -> None:
    contexts = [scratch(), scratch()]
    results = batch(
        predictor,
        contexts,
        [{"model_version": "large", "duration": 1}, {"prompt": "jazz", "model_version": "large", "duration": 1}],
    )
    assert isinstance(results[0], ValueError) and isinstance(results[1], Path)


# --- checkpoints ------------------------------------------------------------------------------


def test_a_substituted_checkpoint_is_named_in_the_logs(checkpoint_dirs, scratch) -> None:
    checkpoints = Checkpoints(
        CheckpointSettings(
            local_dirs={"facebook/musicgen-small": checkpoint_dirs["musicgen"]},
            substitutes={"facebook/musicgen-large": "facebook/musicgen-small"},
        )
    )
    predictor = REPLICATE.predictor(checkpoints)
    first, second = scratch(), scratch()
    for ctx in first, second:
        run(predictor, ctx, prompt="jazz", model_version="large", duration=1)
        assert "Checkpoint: facebook/musicgen-small, serving facebook/musicgen-large (cpu, float32)" in ctx.logs
    # Loaded once, on first use, then kept.
    assert any(line.startswith("Loading checkpoint facebook/musicgen-small from ") for line in first.logs)
    assert not any(line.startswith("Loading checkpoint") for line in second.logs)
    assert checkpoints.loaded() == ["facebook/musicgen-small"]


def test_a_missing_checkpoint_fails_at_once_saying_how_to_provide_it(scratch) -> None:
    predictor = REPLICATE.predictor(Checkpoints(CheckpointSettings()))
    started = time.monotonic()
    with pytest.raises(CheckpointMissing) as error:
        run(predictor, scratch(), prompt="jazz", model_version="large", duration=1)
    assert time.monotonic() - started < 10
    assert "overture serve --checkpoint facebook/musicgen-large=/path/to/dir" in str(error.value)
    assert "Download it with `overture pull`" in str(error.value)


def test_an_operator_can_refuse_a_checkpoint(checkpoint_dirs, scratch) -> None:
    settings = CheckpointSettings(
        local_dirs={"facebook/musicgen-large": checkpoint_dirs["musicgen"]},
        allowed=frozenset({"facebook/musicgen-small"}),
    )
    with pytest.raises(CheckpointMissing, match="facebook/musicgen-large is not served by this server"):
        run(REPLICATE.predictor(Checkpoints(settings)), scratch(), prompt="jazz", model_version="large", duration=1)
