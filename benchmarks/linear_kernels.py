"""MusicGen decoder step: plain ``F.linear`` against the kernels ``select_linear_kernels`` picks.

Random weights with the real ``facebook/musicgen-small`` decoder shape (1024 wide, ffn 4096,
24 layers, 16 heads, 4 codebook heads of 2048), built in-process: nothing is downloaded. One
decoder step is one token per row with a self-attention KV cache of ``--cache`` positions and a
cross-attention cache over ``--text`` encoder positions, as in a continuous-batching loop; M is
the number of rows (batch x 2 with classifier-free guidance).

Both sides run in one process on the same model: ``set_packed_enabled`` switches every replaced
layer between its chosen kernel and plain ``F.linear``, and the runs alternate (ABAB...) so that
drift in the machine's load hits both alike. Prints the selection report (per shape and row
count, F.linear ms vs packed ms per layer, measured at load), the load-time cost and memory,
then per M the median step time of each side, their ratio, and the largest logit difference.

    .venv/bin/python benchmarks/linear_kernels.py [--rows 2,4,8,16,32] [--repeats 9]
        [--threads 2] [--cache 200] [--budget-gib G]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import MusicgenDecoderConfig  # noqa: E402
from transformers.cache_utils import DynamicCache, EncoderDecoderCache  # noqa: E402
from transformers.models.musicgen.modeling_musicgen import MusicgenForCausalLM  # noqa: E402

from overture.models.linear import select_linear_kernels, set_packed_enabled  # noqa: E402

# facebook/musicgen-small's decoder (config.json on the hub).
SMALL = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "ffn_dim": 4096,
    "vocab_size": 2048,
    "num_codebooks": 4,
    "max_position_embeddings": 2048,
    "pad_token_id": 2048,
    "bos_token_id": 2048,
}
# Cross-attention k/v projections only ever see the text, once per request: not worth packing.
SKIP = ("*.encoder_attn.k_proj", "*.encoder_attn.v_proj")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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
        for layer, (k, v) in zip(self.cache.self_attention_cache.layers, self.kv):
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
    parser.add_argument(
        "--budget-gib",
        type=float,
        default=None,
        help="packed-copy budget (default: 1x weights)",
    )
    args = parser.parse_args()
    rows = [int(m) for m in args.rows.split(",")]
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads")

    torch.manual_seed(0)
    start = time.perf_counter()
    model = MusicgenForCausalLM(MusicgenDecoderConfig(**SMALL)).eval()
    print(
        f"model: musicgen-small decoder shape, random init {time.perf_counter() - start:.1f} s, RSS {rss_mib():.0f} MiB"
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
        f"RSS +{rss_mib() - before:.0f} MiB (estimated packed {report.packed_bytes / 2**20:.0f} MiB)"
    )

    print(f"\ndecoder step (KV cache {args.cache}, text {args.text}), median of {args.repeats}, ABAB:")
    print(f"{'M':>3} {'F.linear ms':>12} {'selected ms':>12} {'ratio':>6} {'max |dlogit|':>13} {'logit scale':>12}")
    for m in rows:
        step = Step(model, m, args.cache, args.text)
        set_packed_enabled(model, False)
        plain_logits = step()
        set_packed_enabled(model, True)
        chosen_logits = step()
        diff = (plain_logits - chosen_logits).abs().max().item()
        scale = plain_logits.abs().max().item()
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for enabled in (False, True):
                set_packed_enabled(model, enabled)
                t = time.perf_counter()
                step()
                times[enabled].append(time.perf_counter() - t)
        plain, chosen = (statistics.median(times[e]) * 1e3 for e in (False, True))
        print(f"{m:>3} {plain:>12.1f} {chosen:>12.1f} {plain / chosen:>6.2f} {diff:>13.2e} {scale:>12.2f}")
        del step
    set_packed_enabled(model, True)


if __name__ == "__main__":
    main()
