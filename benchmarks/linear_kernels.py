"""MusicGen decoder step: plain ``F.linear`` against the linear kernels chosen at load time.

Random weights with the real ``facebook/musicgen-small`` decoder shape (1024 wide, ffn 4096,
24 layers, 16 heads, 4 codebook heads of 2048), built in-process: nothing is downloaded. One
decoder step is one token per row with a self-attention KV cache of ``--cache`` positions and a
cross-attention cache over ``--text`` encoder positions, as in a continuous-batching loop; M is
the number of rows (batch x 2 with classifier-free guidance).

Three variants run in one process on the same weights, alternating (ABCABC...) so that drift in
the machine's load hits all alike: (a) plain ``F.linear`` everywhere, (b) the kernels
``select_linear_kernels`` chose at load (oneDNN reordered weights, MKL packed weights or
F.linear, per weight shape and M), (c) every linear layer on MKL packed weights packed for exactly
M rows (the kernel inference.md section 3 proposed). Prints the selection report (per shape and
row count, ms per layer of each kernel, measured at load), the load-time cost and memory, then per
M the median step time of each variant, the ratios, and the largest logit difference from (a).

    .venv/bin/python benchmarks/linear_kernels.py [--rows 2,4,8,16,32] [--repeats 9]
        [--threads 2] [--cache 200] [--budget-gib G] [--shape small|smoke]
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import MusicgenDecoderConfig
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.musicgen.modeling_musicgen import MusicgenForCausalLM

from _machine import machine_line
from musicgen import SMALL_DECODER, SMOKE_DECODER
from overture.runtime.linear import DispatchLinear, Kernel, select_linear_kernels

# facebook/musicgen-small's decoder (config.json on the hub); the layer sizes are musicgen.py's.
DECODER = {
    "vocab_size": 2048,
    "num_codebooks": 4,
    "max_position_embeddings": 2048,
    "pad_token_id": 2048,
    "bos_token_id": 2048,
}
#: small: the real shape; smoke: narrow and shallow, for smoke runs (timings mean nothing).
SHAPES = {"small": {**DECODER, **SMALL_DECODER}, "smoke": {**DECODER, **SMOKE_DECODER}}
# Cross-attention k/v projections only ever see the text, once per request: not worth packing.
SKIP = ("*.encoder_attn.k_proj", "*.encoder_attn.v_proj")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Step:
    """One decoder step at M rows, repeatable: the self-attention cache is cut back each time."""

    def __init__(self, model: MusicgenForCausalLM, rows: int, cache_len: int, text_len: int) -> None:
        cfg = model.config
        self.model = model
        self.rows = rows
        gen = torch.Generator().manual_seed(rows)
        self.encoder = torch.randn(rows, text_len, cfg.hidden_size, generator=gen)
        self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        with torch.inference_mode():  # fills the cross-attention cache
            model(
                input_ids=torch.full((rows * cfg.num_codebooks, 1), cfg.bos_token_id),
                encoder_hidden_states=self.encoder,
                past_key_values=self.cache,
                use_cache=True,
            )
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        shape = (rows, cfg.num_attention_heads, cache_len, head_dim)
        self.kv = [
            (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
            for _ in self.cache.self_attention_cache.layers
        ]
        self.input_ids = torch.randint(0, cfg.vocab_size, (rows * cfg.num_codebooks, 1), generator=gen)
        self.mask = torch.ones(rows, cache_len + 1, dtype=torch.long)

    def __call__(self) -> torch.Tensor:
        for layer, (k, v) in zip(self.cache.self_attention_cache.layers, self.kv, strict=False):
            layer.keys, layer.values = k, v
        with torch.inference_mode():
            out = self.model(
                input_ids=self.input_ids,
                attention_mask=self.mask,
                encoder_hidden_states=self.encoder,
                past_key_values=self.cache,
                use_cache=True,
            )
        return out.logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="2,4,8,16,32", help="row counts M to time (comma-separated)")
    parser.add_argument("--select-rows", type=int, default=32, help="selection covers even M up to this")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=int, default=200, help="self-attention KV cache length")
    parser.add_argument("--text", type=int, default=16, help="text (cross-attention) length")
    parser.add_argument("--shape", choices=SHAPES, default="small", help="smoke: a small decoder, timings mean nothing")
    parser.add_argument(
        "--budget-gib", type=float, help="budget for reordered copies (default: one copy of each replaced weight)"
    )
    args = parser.parse_args()
    rows = [int(m) for m in args.rows.split(",")]
    torch.set_num_threads(args.threads)
    print(machine_line())

    torch.manual_seed(0)
    start = time.perf_counter()
    model = MusicgenForCausalLM(MusicgenDecoderConfig(**SHAPES[args.shape])).eval()
    print(
        f"model: musicgen-{args.shape} decoder shape, random init {time.perf_counter() - start:.1f} s, "
        f"RSS {rss_mib():.0f} MiB"
    )

    before = rss_mib()
    report = select_linear_kernels(
        model,
        range(2, args.select_rows + 1, 2),
        skip=SKIP,
        memory_budget=None if args.budget_gib is None else int(args.budget_gib * 2**30),
    )
    print(report.summary())
    print(
        f"load-time cost: measuring {report.measure_s:.1f} s + packing {report.pack_s:.1f} s; "
        f"RSS +{rss_mib() - before:.0f} MiB (estimated copies {report.copy_bytes / 2**20:.0f} MiB)"
    )

    selected = {name: model.get_submodule(name) for name in linear_names(model)}
    plain = {name: as_linear(module) for name, module in selected.items()}
    print(f"\ndecoder step (KV cache {args.cache}, text {args.text}), median of {args.repeats}, interleaved:")
    print(
        f"{'M':>3} {'F.linear ms':>12} {'selected ms':>12} {'MKL packed ms':>14} {'plain/sel':>10} "
        f"{'plain/MKL':>10} {'max |dlogit| sel':>17} {'MKL':>9} {'logit scale':>12}"
    )
    for m in rows:
        step = Step(model, m, args.cache, args.text)
        packed = {
            name: linear
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in SKIP)
            else DispatchLinear(linear, {m: Kernel("mkl", m)})
            for name, linear in plain.items()
        }
        variants = {"plain": plain, "selected": selected, "packed": packed}
        logits = {}
        for key, modules in variants.items():
            install(model, modules)
            logits[key] = step()
        times: dict[str, list[float]] = {key: [] for key in variants}
        for _ in range(args.repeats):
            for key, modules in variants.items():
                install(model, modules)
                t = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - t)
        ms = {key: statistics.median(ts) * 1e3 for key, ts in times.items()}
        diff = {key: (logits["plain"] - logits[key]).abs().max().item() for key in ("selected", "packed")}
        print(
            f"{m:>3} {ms['plain']:>12.1f} {ms['selected']:>12.1f} {ms['packed']:>14.1f} "
            f"{ms['plain'] / ms['selected']:>10.2f} {ms['plain'] / ms['packed']:>10.2f} "
            f"{diff['selected']:>17.2e} {diff['packed']:>9.2e} {logits['plain'].abs().max().item():>12.2f}"
        )
        del step, packed, variants
    install(model, selected)


def linear_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, DispatchLinear))]


def as_linear(module: torch.nn.Module) -> torch.nn.Module:
    return module.to_linear() if isinstance(module, DispatchLinear) else module


def install(model: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> None:
    """Put these modules in place (by name): switches variants without repacking."""
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)


if __name__ == "__main__":
    main()
