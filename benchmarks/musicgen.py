"""MusicGen prediction time: Overture's predictor against plain ``transformers`` ``generate``.

Random weights with the real ``facebook/musicgen-small`` shape (t5-base text encoder, the 32 kHz
EnCodec, a 1024-wide 24-layer decoder: 587 M parameters), built once and cached on disk. Both
sides run the same loaded model on the same input (5 s clip, batch 1, top-k 250, guidance 3);
runs alternate (ABBA) so that drift in the machine's load hits both alike.

  (a) plain: ``model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0,
      max_new_tokens=253)`` on the model object Overture loaded, audio left as a tensor;
  (b) Overture: the ``meta/musicgen`` predictor's ``predict`` as the engine calls it, text to
      WAV file (own decoding loop, normalization, encoding included).

Prints each run's wall and CPU time, then the best and the median of each side and their ratios.

    .venv/bin/python benchmarks/musicgen.py [--seconds 5] [--rounds 2] [--threads N]
        [--shape small|large|stereo-large|smoke|stereo-smoke] [--dir DIR]

DIR caches the weights (default ~/.cache/overture/musicgen-SHAPE-random); ``--shape smoke`` is a
small model for smoke runs, whose timings mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from _machine import machine_line  # noqa: E402
from overture.models.musicgen import MUSICGEN  # noqa: E402
from overture.models.musicgen.tiny import _TINY_ENCODEC, _TINY_T5  # noqa: E402
from overture.models.tokenizers import t5_tokenizer  # noqa: E402
from overture.runtime.checkpoints import Checkpoints, CheckpointSettings  # noqa: E402
from overture.runtime.linear import set_packed_enabled  # noqa: E402

PROMPT = "80s pop track with bassy drums and synth"

# Shapes from the hub's config.json files (facebook/musicgen-small, t5-base, facebook/encodec_32khz).
T5_BASE = {"vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12}
ENCODEC_32KHZ = {
    "sampling_rate": 32000,
    "audio_channels": 1,
    "upsampling_ratios": [8, 5, 4, 4],
    "target_bandwidths": [2.2],
    "codebook_size": 2048,
    "chunk_length_s": None,
    "normalize": False,
    "use_causal_conv": False,
    "pad_mode": "reflect",
    "norm_type": "weight_norm",
    "num_filters": 64,
    "hidden_size": 128,
    "codebook_dim": 128,
    "num_lstm_layers": 2,
    "use_conv_shortcut": False,
}
SMALL_DECODER = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "ffn_dim": 4096}
LARGE_DECODER = {"hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32, "ffn_dim": 8192}
#: The stereo checkpoints: 8 codebooks, even ones left, odd ones right, through the same mono codec.
STEREO = {"num_codebooks": 8, "audio_channels": 2}
#: Smoke runs: the tiny test checkpoint's text encoder and codec, and a decoder wide enough that
#: the kernel choice at load needs no thousands of weight copies (each timing streams 64 MiB: the
#: tiny checkpoint's 4 KiB weights took over 2 minutes to choose for).
SMOKE_DECODER = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 1024}
SHAPES = {
    "small": (T5_BASE, ENCODEC_32KHZ, SMALL_DECODER),
    "large": (T5_BASE, ENCODEC_32KHZ, LARGE_DECODER),
    "stereo-large": (T5_BASE, ENCODEC_32KHZ, {**LARGE_DECODER, **STEREO}),
    "smoke": (_TINY_T5, _TINY_ENCODEC, SMOKE_DECODER),
    "stereo-smoke": (_TINY_T5, _TINY_ENCODEC, {**SMOKE_DECODER, **STEREO}),
}
#: The ``model_version`` each shape is served as (smoke shapes: the hub model of their layout).
MODEL_VERSIONS = {
    "small": "small",
    "large": "large",
    "stereo-large": "stereo-large",
    "smoke": "small",
    "stereo-smoke": "stereo-small",
}


def hub_id(shape: str) -> str:
    """The hub id the benchmarks map a shape's directory to, and the server serves it as."""
    return f"facebook/musicgen-{MODEL_VERSIONS[shape]}"


def build(directory: Path, shape: str = "small", device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    """Write random weights of ``shape`` (musicgen-small's: about 2.4 GB in float32) and a tokenizer
    built offline. ``device``: where the weights are drawn (on a GPU, musicgen-large's 3.4 G take
    a moment instead of a minute); ``dtype``: what they are saved as (the hub's are float32)."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    text, codec, layers = SHAPES[shape]
    layers = {"num_codebooks": 4, **layers}
    decoder = MusicgenDecoderConfig(
        vocab_size=2048, max_position_embeddings=2048, pad_token_id=2048, bos_token_id=2048, **layers
    )
    config = MusicgenConfig(
        text_encoder=T5Config(**{"feed_forward_proj": "relu", **text}).to_dict(),
        audio_encoder=EncodecConfig(**codec).to_dict(),
        decoder=decoder.to_dict(),
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = MusicgenForConditionalGeneration(config).eval()
    generation = model.generation_config
    generation.decoder_start_token_id = generation.pad_token_id = generation.bos_token_id = 2048
    model.to(dtype).save_pretrained(directory)
    t5_tokenizer().save_pretrained(directory)
    del model
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class Context:
    """The least a predictor needs from the engine."""

    streaming = False
    prediction_id = "benchmark"

    def __init__(self, scratch: Path):
        self.scratch = scratch

    def log(self, message: str) -> None:
        pass

    def progress(self, done: int, total: int) -> None:
        pass

    def check_canceled(self) -> None:
        pass

    def scratch_path(self, filename: str) -> Path:
        return self.scratch / filename

    def partial(self, value: Any) -> None:
        pass


def overture_runner(directory: Path, seconds: int, scratch: Path, shape: str) -> tuple[Any, Checkpoints]:
    """A prediction as the engine makes it, and the ``Checkpoints`` that holds its model once loaded."""
    version = MUSICGEN.latest_version
    checkpoints = Checkpoints(CheckpointSettings(local_dirs={hub_id(shape): directory}))
    predictor = version.predictor(checkpoints)
    model_version = MODEL_VERSIONS[shape]

    def run(duration: int = seconds) -> None:
        inputs = {"prompt": PROMPT, "model_version": model_version, "duration": duration, "seed": 1}
        inputs = version.inputs.validate(inputs)
        predictor.predict(Context(scratch), **inputs)

    return run, checkpoints


def plain_runner(checkpoints: Checkpoints, seconds: int, shape: str) -> Any:
    """Plain ``generate`` on the very model object Overture loaded: same weights, same memory."""
    loaded = checkpoints.load(hub_id(shape), _loaded_already, lambda _: 0)
    model = loaded.model
    tokens = loaded.tokenizer([PROMPT], return_tensors="pt").to(model.device)
    steps = round(seconds * model.config.audio_encoder.frame_rate) + model.decoder.num_codebooks - 1

    def run(new_tokens: int = steps) -> None:
        # Overture swapped the decoder's linear kernels at load: plain generate gets F.linear back.
        set_packed_enabled(model.decoder, False)
        try:
            with torch.inference_mode():
                model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=new_tokens)
        finally:
            set_packed_enabled(model.decoder, True)

    return run


def _loaded_already() -> Any:
    raise AssertionError("Overture's warm-up prediction loads the checkpoint")


def timed(run: Any) -> tuple[float, float]:
    """Wall and CPU seconds: on a machine shared with other work the CPU time is the steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--shape", choices=SHAPES, default="small", help="smoke: a small model, timings mean nothing")
    parser.add_argument("--dir", type=Path, help="caches the weights (default ~/.cache/overture/musicgen-SHAPE-random)")
    args = parser.parse_args()
    args.dir = args.dir or Path.home() / ".cache" / "overture" / f"musicgen-{args.shape}-random"
    if args.threads:
        # On a machine shared with other work, one thread each keeps OpenMP from stalling.
        torch.set_num_threads(args.threads)
    if not (args.dir / "model.safetensors").exists():
        args.dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build(args.dir, args.shape)
        print(f"built random musicgen-{args.shape} weights in {time.perf_counter() - started:.0f} s: {args.dir}")
    scratch = Path(tempfile.mkdtemp(prefix="musicgen-bench-"))
    overture, checkpoints = overture_runner(args.dir, args.seconds, scratch, args.shape)
    overture(1)  # loads the checkpoint, as a server's first prediction does
    plain = plain_runner(checkpoints, args.seconds, args.shape)
    plain(10)
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "overture": []}
    print(machine_line())
    print(f"musicgen-{args.shape} shape, random weights; {args.seconds} s clip, batch 1, top-k 250, guidance 3")
    for round_ in range(1, args.rounds + 1):
        # Plain first in odd rounds, Overture first in even ones: neither always follows the other.
        order = (("plain", plain), ("overture", overture))
        for name, run in order if round_ % 2 else order[::-1]:
            times[name].append(timed(run))
            wall, cpu = times[name][-1]
            print(f"round {round_}: {name:8s} {wall:6.1f} s wall, {cpu:6.1f} s CPU")
    # The best run is the one other work disturbed least; the median shows the spread's middle.
    for statistic, summary in (("best", min), ("median", statistics.median)):
        for i, clock in enumerate(("wall", "CPU")):
            plain_s = summary(t[i] for t in times["plain"])
            overture_s = summary(t[i] for t in times["overture"])
            print(
                f"{statistic:6s} {clock:4s}: plain generate {plain_s:6.1f} s, overture prediction {overture_s:6.1f} s, "
                f"ratio {overture_s / plain_s:.3f} ({100 * (overture_s / plain_s - 1):+.1f}%)"
            )


if __name__ == "__main__":
    main()
