"""The fastest CPU kernel for each linear layer of a decoding loop, chosen per row count.

Why: a batched decode step multiplies a few rows (batch rows, doubled by classifier-free guidance)
by every weight of the model. MKL's ordinary sgemm is poor at some of these small row counts
(4 rows can cost twice as much as 2), while MKL's packed-weight GEMM (``cblas_sgemm_compute``,
reached through ``torch.ops.mkl._mkl_linear``) is faster at some and slower at others; the winner
depends on the CPU, the weight's shape and the row count. So :func:`select_linear_kernels`
measures both once at load time, per distinct weight shape (all q/k/v/out projections share one)
and row bucket, and swaps each ``nn.Linear`` for a :class:`BucketedLinear` that picks the winner
on every call from the row count alone.

What the MKL ops do (torch 2.13 with MKL 2024.2; read in ``aten/src/ATen/native/mkldnn/Linear.cpp``
and checked here):

* ``_mkl_linear(x, packed, w, b, batch_size)`` takes the packed path only when ``x`` has exactly
  ``batch_size`` rows, and silently falls back to ``F.linear`` otherwise. A weight packed for
  ``B`` rows therefore serves ``M < B`` rows by zero-padding the input up to ``B``; the padded
  rows cost what ``B`` rows cost, which is what is measured. (Calling it with ``batch_size=M`` on a
  weight packed for another ``B`` gave right answers here, but MKL documents packing and computing
  with the same sizes, so this module never does that.)
* A packed copy is resident at 1.04-1.15x the fp32 weight (``cblas_sgemm_pack_get_size`` asks for
  more, up to 2.3x for 1024x1024, but the tail is never touched) and does not depend on ``B``;
  each bucket costs one such copy, so a memory budget bounds how many are kept.
* Packed results differ from ``F.linear`` only by summation order (fp32 rounding, ~1e-6 relative).
* Only fp32 on CPU, and no autograd: anything else goes through ``F.linear``.
"""

from __future__ import annotations

import fnmatch
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: Resident size of a packed copy relative to its fp32 weight (measured 1.04-1.13x on the
#: musicgen-small shapes), used to bound the packed copies by a memory budget.
PACKED_SIZE_FACTOR = 1.15
#: Weights streamed per timing pass: at least twice a large L3 cache, so that each weight is cold
#: when it is read again, as it is in a real decoder step.
DEFAULT_SAMPLE_BYTES = 96 * 2**20

ShapeKey = tuple[int, int]  # (out_features, in_features)


def mkl_packed_available() -> bool:
    """Whether this torch build has MKL's packed linear ops (an MKL + oneDNN CPU build)."""
    try:
        return bool(torch.backends.mkl.is_available()) and callable(torch.ops.mkl._mkl_linear)
    except (AttributeError, RuntimeError):
        return False


def _pack(weight: Tensor, rows: int) -> Tensor:
    return torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), rows)


def packed_bytes(shape: ShapeKey) -> int:
    """Estimated resident bytes of one packed copy of an fp32 weight of ``shape``."""
    return int(shape[0] * shape[1] * 4 * PACKED_SIZE_FACTOR)


class BucketedLinear(nn.Module):
    """``nn.Linear`` whose forward picks, by row count, ``F.linear`` or an MKL packed weight.

    ``weight`` and ``bias`` are the original parameters (state_dict keys unchanged). The packed
    copies are non-persistent buffers ``packed_<B>``; they are rebuilt after ``load_state_dict``
    and after ``.to()``/``.float()``..., and dropped (plain ``F.linear``) when the weight leaves
    CPU fp32. Call :meth:`repack` after editing the weight in place by other means.
    """

    def __init__(self, linear: nn.Linear, kernel: Mapping[int, int]) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        #: Row count M -> bucket B whose packed weight serves it (M <= B); absent: F.linear.
        self.kernel: dict[int, int] = {m: b for m, b in kernel.items() if 0 < m <= b}
        #: False routes every call through F.linear while keeping the packed copies (A/B runs).
        self.packed_enabled = True
        # Index = row count; entry = (bucket, packed weight) or None. Rebuilt by repack().
        self._table: list[tuple[int, Tensor] | None] = []
        self.repack()

    def _packable(self) -> bool:
        w = self.weight
        return w.device.type == "cpu" and w.dtype == torch.float32 and mkl_packed_available()

    def repack(self) -> None:
        """(Re)build the packed copies from the current weight, or drop them if unusable."""
        for name in [n for n in self._buffers if n.startswith("packed_")]:
            del self._buffers[name]
        self._table = []
        if not self.kernel or not self._packable():
            return
        packed = {}
        with torch.no_grad():
            for bucket in sorted(set(self.kernel.values())):
                packed[bucket] = _pack(self.weight, bucket)
                self.register_buffer(f"packed_{bucket}", packed[bucket], persistent=False)
        table: list[tuple[int, Tensor] | None] = [None] * (max(self.kernel) + 1)
        for m, bucket in self.kernel.items():
            table[m] = (bucket, packed[bucket])
        self._table = table

    def forward(self, input: Tensor) -> Tensor:
        table = self._table
        k = input.shape[-1]
        rows = input.numel() // k if k else 0
        if rows < len(table) and self.packed_enabled:
            slot = table[rows]
            if (
                slot is not None
                and input.dtype == torch.float32
                and not (torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad))
            ):
                bucket, packed = slot
                if rows == bucket:
                    return torch.ops.mkl._mkl_linear(input, packed, self.weight, self.bias, bucket)
                padded = F.pad(input.reshape(rows, k), (0, 0, 0, bucket - rows))
                out = torch.ops.mkl._mkl_linear(padded, packed, self.weight, self.bias, bucket)
                return out[:rows].reshape(*input.shape[:-1], self.out_features)
        return F.linear(input, self.weight, self.bias)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> BucketedLinear:
        # Packed (mkldnn) buffers cannot follow .to()/.half()/...: move the weights, then repack,
        # unless the weight was left where it was (e.g. .to("cpu") on a CPU model).
        saved = {n: self._buffers.pop(n) for n in [n for n in self._buffers if n.startswith("packed_")]}
        before = (self.weight.data_ptr(), self.weight.device, self.weight.dtype)
        super()._apply(fn, recurse)
        if (self.weight.data_ptr(), self.weight.device, self.weight.dtype) == before:
            self._buffers.update(saved)
        else:
            self.repack()
        return self

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.repack()  # the weight was overwritten in place: the packed copies are stale

    def __getstate__(self) -> dict[str, Any]:
        # mkldnn tensors cannot be copied or pickled: deepcopy/pickle without them, repack after.
        state = self.__dict__.copy()
        state["_buffers"] = {n: b for n, b in self._buffers.items() if not n.startswith("packed_")}
        state["_table"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.repack()

    def extra_repr(self) -> str:
        kernel = ", ".join(f"{m}->{b}" for m, b in sorted(self.kernel.items()))
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, packed={{{kernel}}}"
        )

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` sharing this module's parameters."""
        with torch.device("meta"):
            linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight = self.weight
        linear.bias = self.bias
        return linear


@dataclass(frozen=True)
class ShapeReport:
    """What was measured and chosen for all linear layers of one weight shape."""

    out_features: int
    in_features: int
    layers: int
    #: Row count M -> ms per layer with F.linear.
    linear_ms: Mapping[int, float]
    #: Bucket B -> ms per layer with the weight packed for B (B rows; M < B pads up to B).
    packed_ms: Mapping[int, float]
    #: Row count M -> bucket used (absent: F.linear).
    kernel: Mapping[int, int]
    #: Estimated resident bytes of the packed copies kept for these layers.
    packed_bytes: int

    def ms(self, rows: int) -> tuple[float, float]:
        """(F.linear, chosen kernel) ms per layer at ``rows`` rows."""
        plain = self.linear_ms[rows]
        bucket = self.kernel.get(rows)
        return plain, (self.packed_ms[bucket] if bucket else plain)


@dataclass(frozen=True)
class KernelReport:
    """The choice made by :func:`select_linear_kernels`, for logs and benchmarks."""

    enabled: bool
    reason: str
    rows: tuple[int, ...] = ()
    shapes: tuple[ShapeReport, ...] = ()
    threads: int = 0
    budget_bytes: int = 0
    packed_bytes: int = 0
    measure_s: float = 0.0
    pack_s: float = 0.0
    skipped: tuple[str, ...] = field(default=())

    def step_ms(self, rows: int) -> tuple[float, float]:
        """Estimated linear-layer ms for one call of every replaced layer: (F.linear, chosen)."""
        plain = chosen = 0.0
        for shape in self.shapes:
            a, b = shape.ms(rows)
            plain += a * shape.layers
            chosen += b * shape.layers
        return plain, chosen

    def summary(self) -> str:
        """A few lines: per row count, which kernel each shape uses and the measured ms."""
        if not self.enabled:
            return f"linear kernels: F.linear everywhere ({self.reason})"
        head = (
            f"linear kernels: {self.reason}; {self.threads} threads, measured in "
            f"{self.measure_s:.1f} s, packed in {self.pack_s:.1f} s, packed copies "
            f"{self.packed_bytes / 2**20:.0f} MiB of a {self.budget_bytes / 2**20:.0f} MiB budget"
        )
        lines = [head]
        for shape in self.shapes:
            lines.append(f"  {shape.out_features}x{shape.in_features} x{shape.layers}, ms per layer:")
            plain, packed, chosen = ["    F.linear"], ["    packed@B"], ["    chosen"]
            for m in self.rows:
                bucket = next((b for b in sorted(shape.packed_ms) if b >= m), None)
                plain.append(f"M={m} {shape.linear_ms[m]:.2f}")
                packed.append(f"M={m} {shape.packed_ms[bucket]:.2f}@{bucket}" if bucket else f"M={m} -")
                chosen.append(f"M={m} packed@{shape.kernel[m]}" if m in shape.kernel else f"M={m} F.linear")
            lines += ["  ".join(plain), "  ".join(packed), "  ".join(chosen)]
        steps = []
        for m in self.rows:
            plain, chosen = self.step_ms(m)
            steps.append(f"M={m} {chosen:.1f}/{plain:.1f}")
        lines.append("  all layers, ms chosen/F.linear: " + "; ".join(steps))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "reason": self.reason,
            "rows": list(self.rows),
            "threads": self.threads,
            "budget_bytes": self.budget_bytes,
            "packed_bytes": self.packed_bytes,
            "measure_s": round(self.measure_s, 3),
            "pack_s": round(self.pack_s, 3),
            "skipped": list(self.skipped),
            "shapes": [
                {
                    "shape": [s.out_features, s.in_features],
                    "layers": s.layers,
                    "linear_ms": {str(m): round(v, 4) for m, v in s.linear_ms.items()},
                    "packed_ms": {str(b): round(v, 4) for b, v in s.packed_ms.items()},
                    "kernel": {str(m): b for m, b in s.kernel.items()},
                    "packed_bytes": s.packed_bytes,
                }
                for s in self.shapes
            ],
        }


def _row_counts(rows: int | Iterable[int]) -> tuple[int, ...]:
    counts = range(1, rows + 1) if isinstance(rows, int) else rows
    out = tuple(sorted({int(m) for m in counts if int(m) > 0}))
    if not out:
        raise ValueError("rows: expected a positive maximum or some positive row counts")
    return out


def _default_buckets(rows: Sequence[int]) -> tuple[int, ...]:
    """Powers of two covering the row counts: few packed copies, padding at most 2x the rows."""
    return tuple(sorted({1 << (m - 1).bit_length() for m in rows}))


def _linears(module: nn.Module, skip: Sequence[str]) -> tuple[dict[str, nn.Linear], list[str]]:
    chosen: dict[str, nn.Linear] = {}
    skipped: list[str] = []
    for name, child in module.named_modules():
        if type(child) is not nn.Linear:  # subclasses may change forward: leave them alone
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in skip):
            skipped.append(name)
        else:
            chosen[name] = child
    return chosen, skipped


def _weights_for_timing(weights: Sequence[Tensor], sample_bytes: int) -> list[Tensor]:
    """Enough distinct weights of one shape to stream ``sample_bytes`` (copies if too few)."""
    out: list[Tensor] = []
    total = 0
    while total < sample_bytes or not out:
        w = weights[len(out) % len(weights)]
        out.append(w.detach() if len(out) < len(weights) else w.detach().clone())
        total += w.numel() * w.element_size()
    return out


def _time_variants(variants: Mapping[Any, Callable[[], object]], repeats: int) -> dict[Any, float]:
    """Median seconds per variant; repeats are interleaved so that drift in load hits all alike."""
    times: dict[Any, list[float]] = {key: [] for key in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(repeats):
        for key, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(ts) for key, ts in times.items()}


def _measure_shape(
    weights: Sequence[Tensor],
    rows: Sequence[int],
    buckets: Sequence[int],
    repeats: int,
    sample_bytes: int,
) -> tuple[dict[int, float], dict[int, float]]:
    """ms per layer: F.linear at each row count, packed at each bucket (B rows)."""
    sample = _weights_for_timing(weights, sample_bytes)
    n = len(sample)
    in_features = sample[0].shape[1]
    linear_ms: dict[int, float] = {}
    packed_ms: dict[int, float] = {}
    for i, bucket in enumerate(buckets):
        low = buckets[i - 1] if i else 0
        covered = [m for m in rows if low < m <= bucket]
        if not covered:
            continue
        packed = [_pack(w, bucket) for w in sample]
        x_bucket = torch.randn(bucket, in_features)
        variants: dict[Any, Callable[[], object]] = {
            ("packed", bucket): lambda x=x_bucket, b=bucket, ps=packed: [
                torch.ops.mkl._mkl_linear(x, p, w, None, b) for p, w in zip(ps, sample)
            ]
        }
        for m in covered:
            x = torch.randn(m, in_features)
            variants[("linear", m)] = lambda x=x: [F.linear(x, w) for w in sample]
        for (kind, size), seconds in _time_variants(variants, repeats).items():
            (packed_ms if kind == "packed" else linear_ms)[size] = seconds * 1e3 / n
        del packed
    return linear_ms, packed_ms


def _choose(
    shapes: Mapping[ShapeKey, int],
    linear_ms: Mapping[ShapeKey, Mapping[int, float]],
    packed_ms: Mapping[ShapeKey, Mapping[int, float]],
    min_gain: float,
    budget_bytes: int,
) -> dict[ShapeKey, dict[int, int]]:
    """Row count -> bucket per shape, keeping the packed copies with the best gain per byte."""

    def assign(shape: ShapeKey, kept: set[int]) -> dict[int, int]:
        kernel = {}
        for m, plain in linear_ms[shape].items():
            options = [(packed_ms[shape][b], b) for b in kept if b >= m]
            if options:
                ms, b = min(options)
                if ms < plain * (1 - min_gain):
                    kernel[m] = b
        return kernel

    def gain(shape: ShapeKey, bucket: int, kept: set[int]) -> float:
        """ms saved over all row counts (each weighted alike) by also keeping ``bucket``."""

        def total(kernel: Mapping[int, int]) -> float:
            return sum(packed_ms[shape][kernel[m]] if m in kernel else t for m, t in linear_ms[shape].items())

        return (total(assign(shape, kept)) - total(assign(shape, kept | {bucket}))) * shapes[shape]

    kept: dict[ShapeKey, set[int]] = {shape: set() for shape in shapes}
    spent = 0
    while True:  # greedy: add the (shape, bucket) that saves the most ms per byte and still fits
        best: tuple[float, ShapeKey, int] | None = None
        for shape, layers in shapes.items():
            cost = packed_bytes(shape) * layers
            if spent + cost > budget_bytes:
                continue
            for bucket in packed_ms[shape]:
                if bucket in kept[shape]:
                    continue
                saved = gain(shape, bucket, kept[shape])
                if saved > 0 and (best is None or saved / cost > best[0]):
                    best = (saved / cost, shape, bucket)
        if best is None:
            break
        _, shape, bucket = best
        kept[shape].add(bucket)
        spent += packed_bytes(shape) * shapes[shape]
    # A bucket kept early can lose all its rows to one kept later: drop what is no longer used.
    return {shape: assign(shape, kept[shape]) for shape in shapes}


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)


def apply_linear_kernels(
    module: nn.Module,
    kernels: Mapping[ShapeKey, Mapping[int, int]],
    skip: Sequence[str] = (),
) -> dict[str, BucketedLinear]:
    """Replace each ``nn.Linear`` whose (out, in) shape has a kernel table by a BucketedLinear.

    ``kernels[shape][M] = B`` sends calls with M rows to the weight packed for B rows (M <= B).
    Returns the new modules by name. No measurement: :func:`select_linear_kernels` decides.
    """
    linears, _ = _linears(module, skip)
    replaced: dict[str, BucketedLinear] = {}
    for name, linear in linears.items():
        kernel = kernels.get((linear.out_features, linear.in_features))
        if kernel:
            replaced[name] = BucketedLinear(linear, kernel)
            _replace(module, name, replaced[name])
    return replaced


def restore_linears(module: nn.Module) -> int:
    """Put plain ``nn.Linear`` modules (same parameters) back; returns how many."""
    names = [name for name, child in module.named_modules() if isinstance(child, BucketedLinear)]
    for name in names:
        bucketed = module.get_submodule(name)
        assert isinstance(bucketed, BucketedLinear)
        _replace(module, name, bucketed.to_linear())
    return len(names)


def set_packed_enabled(module: nn.Module, enabled: bool) -> int:
    """Switch every BucketedLinear in ``module`` between its choice and plain F.linear."""
    count = 0
    for child in module.modules():
        if isinstance(child, BucketedLinear):
            child.packed_enabled = enabled
            count += 1
    return count


def _disabled(reason: str) -> KernelReport:
    log.info("linear kernels: F.linear everywhere (%s)", reason)
    return KernelReport(enabled=False, reason=reason)


def select_linear_kernels(
    module: nn.Module,
    rows: int | Iterable[int],
    *,
    buckets: Sequence[int] | None = None,
    memory_budget: int | None = None,
    skip: Sequence[str] = (),
    repeats: int = 5,
    min_gain: float = 0.05,
    sample_bytes: int = DEFAULT_SAMPLE_BYTES,
) -> KernelReport:
    """Measure F.linear against MKL packed weights and give each linear layer the faster one.

    ``rows``: the row counts the loop will use (rows of one call: batch rows, x2 with CFG), or
    their maximum (all of 1..rows). Rows above the largest bucket always use F.linear.
    ``buckets``: the row counts to pack for (default: powers of two covering ``rows``); a call
    with M rows uses the smallest chosen bucket >= M, zero-padded. ``memory_budget``: bytes the
    packed copies may take (default: as much as the replaced weights themselves); copies are kept
    in order of ms saved per byte. ``skip``: fnmatch patterns of module names to leave alone
    (e.g. ``"*.encoder_attn.k_proj"``, which only see the text once). A packed kernel must beat
    F.linear by ``min_gain`` (5%) to be used: a copy of the weights is not worth noise.

    On CUDA, for non-fp32 weights, or without MKL's packed ops, nothing changes; the report says
    why. Call it once after loading, under the thread count the loop will use.
    """
    row_counts = _row_counts(rows)
    if not mkl_packed_available():
        return _disabled("this torch build has no MKL packed linear ops")
    linears, skipped = _linears(module, skip)
    devices = {p.device.type for p in module.parameters()}
    if devices - {"cpu"}:
        return _disabled(f"module is on {', '.join(sorted(devices - {'cpu'}))}: packed MKL kernels are CPU-only")
    linears = {n: m for n, m in linears.items() if m.weight.dtype == torch.float32}
    if not linears:
        return _disabled("no fp32 nn.Linear layers")
    bucket_sizes = tuple(sorted(set(buckets))) if buckets else _default_buckets(row_counts)
    if bucket_sizes[-1] < row_counts[-1]:
        row_counts = tuple(m for m in row_counts if m <= bucket_sizes[-1])

    by_shape: dict[ShapeKey, list[Tensor]] = {}
    for linear in linears.values():
        by_shape.setdefault((linear.out_features, linear.in_features), []).append(linear.weight)
    layers = {shape: len(ws) for shape, ws in by_shape.items()}
    weight_bytes = sum(s[0] * s[1] * 4 * n for s, n in layers.items())
    budget = weight_bytes if memory_budget is None else int(memory_budget)

    start = time.perf_counter()
    linear_ms: dict[ShapeKey, dict[int, float]] = {}
    packed_ms: dict[ShapeKey, dict[int, float]] = {}
    with torch.inference_mode():
        for shape, weights in by_shape.items():
            linear_ms[shape], packed_ms[shape] = _measure_shape(
                weights, row_counts, bucket_sizes, repeats, sample_bytes
            )
    measure_s = time.perf_counter() - start
    kernels = _choose(layers, linear_ms, packed_ms, min_gain, budget)

    start = time.perf_counter()
    apply_linear_kernels(module, kernels, skip=skip)
    pack_s = time.perf_counter() - start

    shapes = tuple(
        ShapeReport(
            out_features=shape[0],
            in_features=shape[1],
            layers=layers[shape],
            linear_ms=linear_ms[shape],
            packed_ms=packed_ms[shape],
            kernel=kernels[shape],
            packed_bytes=packed_bytes(shape) * layers[shape] * len(set(kernels[shape].values())),
        )
        for shape in by_shape
    )
    used = sum(s.packed_bytes for s in shapes)
    report = KernelReport(
        enabled=True,
        reason=(
            f"MKL packed for {sum(1 for s in shapes if s.kernel)} of {len(shapes)} weight shapes"
            if used
            else "F.linear won at every row count"
        ),
        rows=row_counts,
        shapes=shapes,
        threads=torch.get_num_threads(),
        budget_bytes=budget,
        packed_bytes=used,
        measure_s=measure_s,
        pack_s=pack_s,
        skipped=tuple(skipped),
    )
    log.info("%s", report.summary())
    return report
