"""The fastest CPU kernel for each linear layer of a decoding loop, chosen per row count.

Why: a batched decode step multiplies a few rows (batch rows, doubled by classifier-free guidance)
by every weight of the model, so its speed is the speed of small-M GEMM, and which kernel is
fastest there depends on the CPU, the weight's shape and the row count. :func:`select_linear_kernels`
measures the candidates once at load time, per distinct weight shape (all q/k/v/out projections
share one) and row count, and swaps each ``nn.Linear`` for a :class:`DispatchLinear` that picks the
winner on every call from the row count alone. Measuring takes seconds (11 s for musicgen-small on
2 cores, three times its checkpoint's load): with a :class:`~overture.runtime.kernel_cache.KernelCache`
the choice is measured once per machine, torch build, thread count and model shape, and read back
on later loads. The candidates:

* ``F.linear``: MKL's ordinary sgemm on the original weight; no extra memory.
* ``onednn``: oneDNN's inner product on a weight reordered once into its blocked layout
  (``torch.ops.mkldnn._reorder_linear_weight`` + ``_linear_pointwise``, what inductor uses for
  bf16). One copy serves every row count; as oneDNN is slower at some small counts than at a few
  more (2 rows vs 4 here), a call may be zero-padded up to a faster measured count. oneDNN
  generates its code for the CPU it runs on, MKL picks slower paths on non-Intel CPUs: on the
  project's AMD EPYC machine this is 2-3x faster per layer than F.linear at every row count.
* ``mkl@B``: MKL's packed-weight GEMM (``_mkl_reorder_linear_weight`` + ``_mkl_linear``, what
  inductor uses for fp32), one copy per row bucket ``B``.

What the MKL packed ops do (torch 2.13, MKL 2024.2; read in ``aten/src/ATen/native/mkldnn/Linear.cpp``
and checked here): ``_mkl_linear(x, packed, w, b, batch_size)`` takes the packed path only when
``x`` has exactly ``batch_size`` rows and silently falls back to ``F.linear`` otherwise, so a weight
packed for ``B`` rows serves ``M < B`` rows by zero-padding them up to ``B`` (costing what ``B`` rows
cost, which is what is measured). Passing ``batch_size=M`` for a weight packed for another ``B``
gave right answers here, but MKL documents packing and computing with the same sizes, so this
module never does it. A packed copy is resident at 1.04-1.15x the fp32 weight
(``cblas_sgemm_pack_get_size`` asks for up to 2.3x, but the tail is never touched) whatever ``B``.

Both reordered kernels differ from ``F.linear`` by summation order only (fp32 rounding, ~1e-6
relative); both are fp32, CPU and inference only: anything else goes through ``F.linear``.

Batch invariance: a continuous-batching loop needs a row's output not to depend on how many rows
share the call, or a seeded request would sound different alone and batched. MKL's sgemm breaks
that on 2 threads: with 5-7 or 9-11 rows its row split leaves the last rows to a matrix-vector
tail that rounds differently (and below 4 rows it takes that path for all). oneDNN's rows, and
MKL's packed ones padded to a bucket, are the same bits at every count measured here. So by
default the choice is made among the sets of ways that are checked, at load, to give a row the
same bits at every row count in the range and wherever it sits (see :func:`_classes`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from overture.runtime.kernel_cache import KernelCache, Key, machine_fingerprint

log = logging.getLogger(__name__)

#: This module's source, hashed: a stored choice is measured again after any change to how
#: kernels are measured, chosen or run.
CODE_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

#: Resident size of a reordered copy relative to its fp32 weight (measured 1.01-1.13x on the
#: musicgen-small shapes), used to bound the copies by a memory budget.
COPY_SIZE_FACTOR = 1.15


#: Weights streamed per timing pass: twice a 32 MiB L3 cache, so that each weight is cold when it
#: is read again, as it is in a real decoder step (a model smaller than this streams only itself).
#: ``OVERTURE_KERNEL_SAMPLE_MIB`` changes it, for the benchmarks' smoke runs only.
def _sample_bytes() -> int:
    raw = os.environ.get("OVERTURE_KERNEL_SAMPLE_MIB", "64")
    try:
        mib = float(raw)
    except ValueError:
        mib = 0
    if not 0 < mib < 2**20:
        # Read when the module is imported: a typo must not stop a server from importing its models.
        log.warning("OVERTURE_KERNEL_SAMPLE_MIB=%r is not a positive size in MiB; using 64", raw)
        mib = 64
    return int(mib * 2**20)


DEFAULT_SAMPLE_BYTES = _sample_bytes()

ShapeKey = tuple[int, int]  # (out_features, in_features)


class Kernel(NamedTuple):
    """A reordered-weight kernel run with ``rows`` rows, fewer being zero-padded up to it.

    ``("mkl", B)``: MKL packed for B rows (one copy per B). ``("onednn", R)``: oneDNN (one copy
    for all row counts), R = 0 for no padding.
    """

    kind: str
    rows: int = 0

    @property
    def copy(self) -> Kernel:
        """The reordered copy this kernel runs on (kernels with the same copy share it)."""
        return ONEDNN if self.kind == "onednn" else self

    def __str__(self) -> str:
        return f"{self.kind}@{self.rows}" if self.rows else self.kind

    @classmethod
    def parse(cls, text: str) -> Kernel:
        """The kernel ``str(kernel)`` wrote; ValueError for anything else."""
        kind, _, rows = text.partition("@")
        kernel = cls(kind, int(rows) if rows else 0)
        if kind not in ("onednn", "mkl") or kernel.rows < 0 or (kind == "mkl" and kernel.rows == 0):
            raise ValueError(f"not a kernel: {text!r}")
        return kernel


ONEDNN = Kernel("onednn")


def mkl_packed_available() -> bool:
    """Whether this torch build has MKL's packed linear ops (an MKL + oneDNN CPU build)."""
    try:
        return bool(torch.backends.mkl.is_available()) and callable(torch.ops.mkl._mkl_linear)
    except (AttributeError, RuntimeError):
        return False


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's reordered-weight linear ops."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and callable(torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False


def _available(kind: str) -> bool:
    return mkl_packed_available() if kind == "mkl" else onednn_available()


def _reorder(weight: Tensor, kernel: Kernel) -> Tensor:
    if kernel.kind == "mkl":
        return torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), kernel.rows)
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach())


def _run(kernel: Kernel, x: Tensor, copy: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """One call of a reordered kernel; ``x`` must have ``kernel.rows`` rows for MKL."""
    if kernel.kind == "mkl":
        return torch.ops.mkl._mkl_linear(x, copy, weight, bias, kernel.rows)
    return torch.ops.mkldnn._linear_pointwise(x, copy, bias, "none", [], "")


def copy_bytes(shape: ShapeKey) -> int:
    """Estimated resident bytes of one reordered copy of an fp32 weight of ``shape``."""
    return int(shape[0] * shape[1] * 4 * COPY_SIZE_FACTOR)


class DispatchLinear(nn.Module):
    """``nn.Linear`` whose forward picks, by row count, ``F.linear`` or a reordered-weight kernel.

    ``weight`` and ``bias`` are the original parameters (state_dict keys unchanged). Reordered
    copies are non-persistent buffers (``packed_onednn``, ``packed_mkl_<B>``), rebuilt after
    ``load_state_dict`` and ``.to()``/``.float()``... and dropped (plain ``F.linear``) when the
    weight leaves CPU fp32. Call :meth:`repack` after editing the weight in place by other means.
    """

    def __init__(self, linear: nn.Linear, kernels: Mapping[int, Kernel]) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        #: Row count M -> kernel serving it (MKL: M <= B, zero-padded); absent: F.linear.
        self.kernels: dict[int, Kernel] = {m: k for m, k in kernels.items() if m > 0 and (m <= k.rows or k == ONEDNN)}
        #: False routes every call through F.linear while keeping the copies (A/B runs).
        self.packed_enabled = True
        # Index = row count; entry = (kernel, reordered weight) or None. Rebuilt by repack().
        self._table: list[tuple[Kernel, Tensor] | None] = []
        self.repack()

    def repack(self) -> None:
        """(Re)build the reordered copies from the current weight, or drop them if unusable."""
        for name in [n for n in self._buffers if n.startswith("packed_")]:
            del self._buffers[name]
        self._table = []
        w = self.weight
        if w.device.type != "cpu" or w.dtype != torch.float32:
            return
        usable = {m: k for m, k in self.kernels.items() if _available(k.kind)}
        if not usable:
            return
        copies = {}
        with torch.no_grad():
            for copy in sorted({k.copy for k in usable.values()}):
                copies[copy] = _reorder(w, copy)
                name = f"packed_mkl_{copy.rows}" if copy.kind == "mkl" else "packed_onednn"
                self.register_buffer(name, copies[copy], persistent=False)
        table: list[tuple[Kernel, Tensor] | None] = [None] * (max(usable) + 1)
        for m, kernel in usable.items():
            table[m] = (kernel, copies[kernel.copy])
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
                kernel, copy = slot
                if rows >= kernel.rows:  # oneDNN unpadded (rows 0) or exactly the packed rows
                    return _run(kernel, input, copy, self.weight, self.bias)
                padded = F.pad(input.reshape(rows, k), (0, 0, 0, kernel.rows - rows))
                out = _run(kernel, padded, copy, self.weight, self.bias)
                return out[:rows].reshape(*input.shape[:-1], self.out_features)
        return F.linear(input, self.weight, self.bias)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> DispatchLinear:
        # Reordered (mkldnn) buffers cannot follow .to()/.half()/...: move the weights, then
        # repack, unless the weight was left where it was (e.g. .to("cpu") on a CPU model).
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
        self.repack()  # the weight was overwritten in place: the copies are stale

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
        kernels = ", ".join(f"{m}: {k}" for m, k in sorted(self.kernels.items()))
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, kernels={{{kernels}}}"
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
    #: Kernel -> row count M -> ms per layer (MKL: measured with B rows, M <= B pads up to B).
    kernel_ms: Mapping[Kernel, Mapping[int, float]]
    #: Row count M -> kernel used (absent: F.linear).
    kernels: Mapping[int, Kernel]
    #: Estimated resident bytes of the reordered copies kept for these layers.
    copy_bytes: int
    #: Whether a row's output was checked to be bitwise the same at every row count in the
    #: range (None: not asked for).
    invariant: bool | None = None

    def ms(self, rows: int) -> tuple[float, float]:
        """(F.linear, chosen kernel) ms per layer at ``rows`` rows."""
        plain = self.linear_ms[rows]
        kernel = self.kernels.get(rows)
        return plain, (_kernel_ms(self.kernel_ms, kernel, rows) if kernel else plain)


@dataclass(frozen=True)
class KernelReport:
    """The choice made by :func:`select_linear_kernels`, for logs and benchmarks."""

    enabled: bool
    reason: str
    rows: tuple[int, ...] = ()
    shapes: tuple[ShapeReport, ...] = ()
    threads: int = 0
    budget_bytes: int = 0
    copy_bytes: int = 0
    measure_s: float = 0.0
    pack_s: float = 0.0
    skipped: tuple[str, ...] = field(default=())
    #: The kernel cache's file this choice was read from (``cached``) or stored in; None: not kept.
    cache_file: Path | None = None
    cached: bool = False

    def step_ms(self, rows: int) -> tuple[float, float]:
        """Measured ms for one call of every replaced layer at ``rows`` rows: (F.linear, chosen)."""
        plain = chosen = 0.0
        for shape in self.shapes:
            a, b = shape.ms(rows)
            plain += a * shape.layers
            chosen += b * shape.layers
        return plain, chosen

    def summary(self) -> str:
        """A table per shape: ms per layer of each kernel at each row count, and the choice."""
        if not self.enabled:
            return f"linear kernels: F.linear everywhere ({self.reason})"
        if self.cached:
            source = f"read from the kernel cache {self.cache_file} (measured in {self.measure_s:.1f} s when stored)"
        else:
            kept = f", stored in {self.cache_file}" if self.cache_file else ""
            source = f"measured in {self.measure_s:.1f} s{kept}"
        lines = [
            (
                f"linear kernels: {self.reason}; {self.threads} threads, {source}, "
                f"packed in {self.pack_s:.1f} s, copies {self.copy_bytes / 2**20:.0f} MiB "
                f"of a {self.budget_bytes / 2**20:.0f} MiB budget"
            )
        ]

        def row(label: str, cells: Iterable[str], indent: int = 4) -> str:
            return " " * indent + f"{label:<{30 - indent}}" + "".join(f"{c:>10}" for c in cells)

        header = [f"M={m}" for m in self.rows]
        for shape in self.shapes:
            label = f"{shape.out_features}x{shape.in_features} x{shape.layers}, ms/layer"
            lines.append(row(label, header, 2))
            lines.append(row("F.linear", (f"{shape.linear_ms[m]:.3g}" for m in self.rows)))
            mkl = {m: f"{ms[m]:.3g}@{k.rows}" for k, ms in shape.kernel_ms.items() if k.kind == "mkl" for m in ms}
            if ONEDNN in shape.kernel_ms:
                ms = shape.kernel_ms[ONEDNN]
                lines.append(row("onednn", (f"{ms[m]:.3g}" if m in ms else "-" for m in self.rows)))
            if mkl:  # each row count's own bucket: the smallest B >= M
                lines.append(row("mkl packed@B", (mkl.get(m, "-") for m in self.rows)))
            lines.append(row("chosen", (str(shape.kernels.get(m, "F.linear")) for m in self.rows)))
            if shape.invariant is not None:
                span = f"{min(self.rows)}-{max(self.rows)}"
                verdict = "bitwise the same" if shape.invariant else "NOT the same (no invariant choice fit)"
                lines.append(f"    a row's output at {span} rows: {verdict}")
        lines.append(row("all layers, ms", header, 2))
        lines.append(row("F.linear", (f"{self.step_ms(m)[0]:.4g}" for m in self.rows)))
        lines.append(row("chosen", (f"{self.step_ms(m)[1]:.4g}" for m in self.rows)))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "reason": self.reason,
            "rows": list(self.rows),
            "threads": self.threads,
            "budget_bytes": self.budget_bytes,
            "copy_bytes": self.copy_bytes,
            "measure_s": round(self.measure_s, 3),
            "pack_s": round(self.pack_s, 3),
            "skipped": list(self.skipped),
            "shapes": [
                {
                    "shape": [s.out_features, s.in_features],
                    "layers": s.layers,
                    "linear_ms": {str(m): round(v, 4) for m, v in s.linear_ms.items()},
                    "kernel_ms": {
                        str(k): {str(m): round(v, 4) for m, v in ms.items()} for k, ms in s.kernel_ms.items()
                    },
                    "kernels": {str(m): str(k) for m, k in s.kernels.items()},
                    "copy_bytes": s.copy_bytes,
                    "invariant": s.invariant,
                }
                for s in self.shapes
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelReport:
        """The report :meth:`as_dict` gave, read back from JSON (its ms rounded as there).

        Raises KeyError, TypeError, ValueError or AttributeError for anything else.
        """

        def ms(values: Mapping[str, Any]) -> dict[int, float]:
            return {int(m): float(v) for m, v in values.items()}

        shapes = tuple(
            ShapeReport(
                out_features=int(s["shape"][0]),
                in_features=int(s["shape"][1]),
                layers=int(s["layers"]),
                linear_ms=ms(s["linear_ms"]),
                kernel_ms={Kernel.parse(k): ms(v) for k, v in s["kernel_ms"].items()},
                kernels={int(m): Kernel.parse(k) for m, k in s["kernels"].items()},
                copy_bytes=int(s["copy_bytes"]),
                invariant=None if s["invariant"] is None else bool(s["invariant"]),
            )
            for s in data["shapes"]
        )
        return cls(
            enabled=bool(data["enabled"]),
            reason=str(data["reason"]),
            rows=tuple(int(m) for m in data["rows"]),
            shapes=shapes,
            threads=int(data["threads"]),
            budget_bytes=int(data["budget_bytes"]),
            copy_bytes=int(data["copy_bytes"]),
            measure_s=float(data["measure_s"]),
            pack_s=float(data["pack_s"]),
            skipped=tuple(str(n) for n in data["skipped"]),
        )


def _row_counts(rows: int | Iterable[int]) -> tuple[int, ...]:
    counts = range(1, rows + 1) if isinstance(rows, int) else rows
    out = tuple(sorted({int(m) for m in counts if int(m) > 0}))
    if not out:
        raise ValueError("rows: expected a positive maximum or some positive row counts")
    return out


def _default_buckets(rows: Sequence[int]) -> tuple[int, ...]:
    """Powers of two covering the row counts: few MKL copies, padding at most 2x the rows."""
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


def _run_each(kernel: Kernel, x: Tensor, copies: Sequence[Tensor], weights: Sequence[Tensor]) -> list[Tensor]:
    return [_run(kernel, x, c, w, None) for c, w in zip(copies, weights, strict=True)]


def _linear_each(x: Tensor, weights: Sequence[Tensor]) -> list[Tensor]:
    return [F.linear(x, w) for w in weights]


def _measure_shape(
    weights: Sequence[Tensor], rows: Sequence[int], kernels: Sequence[Kernel], repeats: int, sample_bytes: int
) -> tuple[dict[int, float], dict[Kernel, dict[int, float]]]:
    """ms per layer: F.linear at each row count, and each kernel at the row counts it serves.

    Each kernel is timed interleaved with F.linear (at every row count for the first kernel, at
    the kernel's own row count for MKL ones; F.linear's figure is the mean over those runs). An MKL
    kernel packed for B rows is timed once, with B rows, and serves the row counts above the
    previous bucket up to B.
    """
    sample = _weights_for_timing(weights, sample_bytes)
    n = len(sample)
    in_features = sample[0].shape[1]
    inputs = {m: torch.randn(m, in_features) for m in rows}
    buckets = sorted(k.rows for k in kernels if k.kind == "mkl")
    linear_runs: dict[int, list[float]] = {m: [] for m in rows}
    kernel_ms: dict[Kernel, dict[int, float]] = {}
    for kernel in sorted(kernels, key=lambda k: k.kind != "onednn"):  # oneDNN (all row counts) first
        if kernel.kind == "mkl":
            low = max((b for b in buckets if b < kernel.rows), default=0)
            served = [m for m in rows if low < m <= kernel.rows]
            timed = [kernel.rows] if served else []
        else:
            served = timed = list(rows)
        if not served:
            continue
        copies = [_reorder(w, kernel) for w in sample]
        variants: dict[Any, Callable[[], object]] = {}
        for m in timed:
            x = inputs[m] if m in inputs else torch.randn(m, in_features)
            variants[("kernel", m)] = partial(_run_each, kernel, x, copies, sample)
        # F.linear alongside: at every row count the first time, then at the kernel's own.
        for m in [m for m in timed if m in inputs] if any(linear_runs.values()) else rows:
            variants[("linear", m)] = partial(_linear_each, inputs[m], sample)
        ms = {key: seconds * 1e3 / n for key, seconds in _time_variants(variants, repeats).items()}
        for (kind, m), value in ms.items():
            if kind == "linear":
                linear_runs[m].append(value)
        kernel_ms[kernel] = {m: ms[("kernel", kernel.rows if kernel.kind == "mkl" else m)] for m in served}
        del copies
    for m, runs in linear_runs.items():
        if not runs:  # no kernel serves it: F.linear alone
            runs.append(_time_variants({m: partial(_linear_each, inputs[m], sample)}, repeats)[m] * 1e3 / n)
    return {m: statistics.fmean(runs) for m, runs in linear_runs.items()}, kernel_ms


Option = Kernel | None  # None: F.linear on the original weight
Class = dict[int, list[Option]]  # row count -> interchangeable ways to serve it, preferred first


def _kernel_ms(kernel_ms: Mapping[Kernel, Mapping[int, float]], kernel: Kernel, rows: int) -> float:
    """Measured ms of ``kernel`` serving ``rows`` rows (a padded call costs its padded rows)."""
    return kernel_ms[kernel.copy][kernel.rows if kernel.kind == "onednn" and kernel.rows else rows]


def _ways(rows: int, listed: Sequence[int], candidates: Sequence[Kernel]) -> list[Option]:
    """Every way to serve ``rows`` rows: F.linear, oneDNN as is or zero-padded to a larger listed
    count (oneDNN is slower at some small counts than at a few more), MKL at the bucket for it."""
    ways: list[Option] = [None]
    if ONEDNN in candidates:
        ways += [ONEDNN] + [Kernel("onednn", r) for r in listed if r > rows]
    bucket = min((k.rows for k in candidates if k.kind == "mkl" and k.rows >= rows), default=None)
    if bucket is not None:
        ways.append(Kernel("mkl", bucket))
    return ways


def _output(option: Option, x: Tensor, weight: Tensor, copies: Mapping[Kernel, Tensor]) -> Tensor:
    if option is None:
        return F.linear(x, weight)
    rows = x.shape[0]
    padded = F.pad(x, (0, 0, 0, option.rows - rows)) if option.rows > rows else x
    return _run(option, padded, copies[option.copy], weight, None)[:rows]


def _classes(weight: Tensor, listed: Sequence[int], candidates: Sequence[Kernel], invariant: bool) -> list[Class]:
    """The sets of choices under which a row's output is the same bitwise at every row count.

    Without ``invariant``, one set: any way for each listed row count. With it, one set per base
    kernel (F.linear, oneDNN) whose rows do not depend on their position: for every row count from
    the least to the most listed, the ways that give exactly the base kernel's rows at the most.
    MKL's sgemm, for one, gives the last rows of 5, 6, 7, 9, 10 and 11 differently on 2 threads
    (its row split leaves them a matrix-vector tail); padding them to a bucket avoids that. Checked
    on one weight of the shape and a fixed input, under the current thread count.
    """
    if not invariant:
        return [{m: _ways(m, listed, candidates) for m in listed}]
    hi = max(listed)
    x = torch.randn(hi, weight.shape[1], generator=torch.Generator().manual_seed(0))
    copies = {k.copy: _reorder(weight, k.copy) for m in range(1, hi + 1) for k in _ways(m, listed, candidates) if k}
    classes = []
    for base in [None, ONEDNN] if ONEDNN in candidates else [None]:
        full = _output(base, x, weight, copies)
        if not torch.equal(_output(base, x.flip(0), weight, copies).flip(0), full):
            continue  # a row's output depends on where it sits in the batch
        cls: Class = {}
        for m in range(min(listed), hi + 1):
            ways = [o for o in _ways(m, listed, candidates) if torch.equal(_output(o, x[:m], weight, copies), full[:m])]
            if not ways:
                break
            cls[m] = sorted(ways, key=lambda o: o != base)
        else:
            classes.append(cls)
    return classes


#: What a shape that cannot be made batch-invariant costs the choice, in ms: more than any speed.
NOT_INVARIANT_MS = 1e6


def _choose(
    layers: Mapping[ShapeKey, int],
    linear_ms: Mapping[ShapeKey, Mapping[int, float]],
    kernel_ms: Mapping[ShapeKey, Mapping[Kernel, Mapping[int, float]]],
    classes: Mapping[ShapeKey, Sequence[Class]],
    min_gain: float,
    budget_bytes: int,
    invariant: bool = False,
) -> dict[ShapeKey, dict[int, Kernel]]:
    """Row count -> kernel per shape, keeping the copies that save the most ms per byte.

    ``linear_ms[shape]``: F.linear ms at the listed (timed) row counts; ``kernel_ms[shape][copy]``:
    the kernel's ms at the listed counts it serves unpadded. Each shape takes, among its
    ``classes`` that its kept copies make possible, the fastest assignment; none possible: F.linear
    everywhere, which with ``invariant`` (the classes being the batch-invariant ones) costs
    NOT_INVARIANT_MS, so that an invariant choice that fits the budget wins over any speed. At a
    timed count every count weighs alike, a kernel must beat F.linear (where allowed) by
    ``min_gain`` and a padded call competes at ms / (1 - min_gain): noise is not worth a copy of the
    weights. Counts not timed take their class's first way. Each kept copy costs one copy of the
    shape's weights; a step of the greedy adds one copy, or all the copies a class lacks.
    """

    def ms(shape: ShapeKey, option: Option, m: int) -> float:
        return linear_ms[shape][m] if option is None else _kernel_ms(kernel_ms[shape], option, m)

    def fill(shape: ShapeKey, cls: Class, kept: set[Kernel]) -> dict[int, Kernel] | None:
        choice: dict[int, Kernel] = {}
        for m, ways in cls.items():
            usable = [o for o in ways if o is None or o.copy in kept]
            if not usable:
                return None
            option = usable[0]
            kernels = [o for o in usable if o is not None]
            if m in linear_ms[shape] and kernels:
                option = min(kernels, key=lambda o: (ms(shape, o, m) / (1 - min_gain if o.rows > m else 1), o))
                if None in usable and ms(shape, option, m) >= (1 - min_gain) * linear_ms[shape][m]:
                    option = None
            if option is not None:
                choice[m] = option
        return choice

    def assign(shape: ShapeKey, kept: set[Kernel]) -> tuple[float, dict[int, Kernel]]:
        best: tuple[float, dict[int, Kernel]] = ((NOT_INVARIANT_MS if invariant else 0.0) + total(shape, {}), {})
        for cls in classes[shape]:
            choice = fill(shape, cls, kept)
            if choice is not None and total(shape, choice) < best[0]:
                best = (total(shape, choice), choice)
        return best

    def total(shape: ShapeKey, choice: Mapping[int, Kernel]) -> float:
        return sum(ms(shape, choice.get(m), m) for m in linear_ms[shape])

    def lacking(cls: Class, kept: set[Kernel]) -> frozenset[Kernel]:
        """The copies a class needs beyond ``kept``: its first way wherever nothing kept serves."""
        return frozenset(
            next(o for o in ways if o is not None).copy
            for ways in cls.values()
            if not any(o is None or o.copy in kept for o in ways)
        )

    kept: dict[ShapeKey, set[Kernel]] = {shape: set() for shape in layers}
    spent = 0
    while True:  # greedy: the step that saves the most ms per byte and still fits
        best: tuple[float, ShapeKey, frozenset[Kernel]] | None = None
        for shape, count in layers.items():
            now = assign(shape, kept[shape])[0]
            steps = {frozenset({copy}) for copy in kernel_ms[shape] if copy not in kept[shape]}
            steps |= {lacking(cls, kept[shape]) for cls in classes[shape]} - {frozenset()}
            for step in steps:
                cost = copy_bytes(shape) * count * len(step)
                if spent + cost > budget_bytes:
                    continue
                saved = (now - assign(shape, kept[shape] | step)[0]) * count
                if saved > 0 and (best is None or saved / cost > best[0]):
                    best = (saved / cost, shape, step)
        if best is None:
            break
        _, shape, step = best
        kept[shape] |= step
        spent += copy_bytes(shape) * layers[shape] * len(step)
    # A copy kept early can lose all its rows to one kept later: assign() keeps only used ones.
    return {shape: assign(shape, kept[shape])[1] for shape in layers}


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)


def apply_linear_kernels(
    module: nn.Module, kernels: Mapping[ShapeKey, Mapping[int, Kernel]], skip: Sequence[str] = ()
) -> dict[str, DispatchLinear]:
    """Replace each ``nn.Linear`` whose (out, in) shape has a kernel table by a DispatchLinear.

    ``kernels[shape][M]`` is the kernel for calls with M rows. Returns the new modules by name.
    No measurement: :func:`select_linear_kernels` decides.
    """
    linears, _ = _linears(module, skip)
    replaced: dict[str, DispatchLinear] = {}
    for name, linear in linears.items():
        table = kernels.get((linear.out_features, linear.in_features))
        if table:
            replaced[name] = DispatchLinear(linear, table)
            _replace(module, name, replaced[name])
    return replaced


def restore_linears(module: nn.Module) -> int:
    """Put plain ``nn.Linear`` modules (same parameters) back; returns how many."""
    names = [name for name, child in module.named_modules() if isinstance(child, DispatchLinear)]
    for name in names:
        dispatch = module.get_submodule(name)
        assert isinstance(dispatch, DispatchLinear)
        _replace(module, name, dispatch.to_linear())
    return len(names)


def set_packed_enabled(module: nn.Module, enabled: bool) -> int:
    """Switch every DispatchLinear in ``module`` between its choice and plain F.linear."""
    count = 0
    for child in module.modules():
        if isinstance(child, DispatchLinear):
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
    batch_invariant: bool = True,
    cache: KernelCache | None = None,
) -> KernelReport:
    """Measure F.linear against the reordered-weight kernels; give each layer the fastest.

    ``rows``: the row counts the loop will use (rows of one call: batch rows, x2 with CFG), or
    their maximum (all of 1..rows); calls with more rows, or (without ``batch_invariant``) with a
    count not listed, use F.linear. ``buckets``: the row counts MKL packs for (default: powers of
    two covering ``rows``); a call with M rows uses the bucket B >= M it was measured with,
    zero-padded. ``memory_budget``: bytes the copies may take (default: one copy of every replaced
    weight, ~1.15x their size); copies are kept in order of ms saved per byte. ``skip``: fnmatch
    patterns of module names to leave alone (e.g. ``"*.encoder_attn.k_proj"``, which only see the
    text once). ``batch_invariant``: only choices under which a row's output is bitwise the same at
    every row count from the least to the most in ``rows``, wherever it sits in the batch (checked
    at load; counts in that range that were not timed take the base kernel), so that what shares
    the batch cannot change a seeded result; such a choice, if one fits the budget, is taken even
    where slower than F.linear (which is not invariant on 2 threads); if none fits, F.linear as
    before, and the report says so. ``cache``: where a choice is looked up before measuring and
    stored after, under a key of everything it depends on (:func:`choice_key`); a cached choice
    is installed without measuring anything.

    On CUDA, for non-fp32 weights, or without the MKL/oneDNN ops, nothing changes; the report
    says why. Call it once after loading, under the thread count the loop will use, on an idle
    machine if possible (the choice is only as good as the timings); a second call measures
    again from plain layers.
    """
    row_counts = _row_counts(rows)
    candidates: list[Kernel] = [ONEDNN] if onednn_available() else []
    if mkl_packed_available():
        candidates += [Kernel("mkl", b) for b in (sorted(set(buckets)) if buckets else _default_buckets(row_counts))]
    if not candidates:
        return _disabled("this torch build has neither MKL packed nor oneDNN linear ops")
    devices = {p.device.type for p in module.parameters()}
    if devices - {"cpu"}:
        return _disabled(f"module is on {', '.join(sorted(devices - {'cpu'}))}: these kernels are CPU-only")
    restore_linears(module)
    linears, skipped = _linears(module, skip)
    linears = {n: m for n, m in linears.items() if m.weight.dtype == torch.float32}
    if not linears:
        return _disabled("no fp32 nn.Linear layers")

    by_shape: dict[ShapeKey, list[Tensor]] = {}
    for linear in linears.values():
        by_shape.setdefault((linear.out_features, linear.in_features), []).append(linear.weight)
    layers = {shape: len(ws) for shape, ws in by_shape.items()}
    budget = sum(copy_bytes(s) * n for s, n in layers.items()) if memory_budget is None else int(memory_budget)
    # A step re-reads a weight after all the others: a model whose weights fit in the cache reads
    # them warm there, so streaming more than the model itself would time a case that never runs.
    sample_bytes = min(sample_bytes, sum(w.numel() * w.element_size() for ws in by_shape.values() for w in ws))

    key: Key = {}
    if cache is not None:
        key = choice_key(
            layers,
            row_counts,
            candidates,
            budget_bytes=budget,
            min_gain=min_gain,
            repeats=repeats,
            sample_bytes=sample_bytes,
            batch_invariant=batch_invariant,
        )
        stored = _cached_report(cache, key)
        if stored is not None:
            start = time.perf_counter()
            apply_linear_kernels(module, {(s.out_features, s.in_features): s.kernels for s in stored.shapes}, skip=skip)
            report = replace(stored, pack_s=time.perf_counter() - start, skipped=tuple(skipped))
            log.info("%s", report.summary())
            return report

    start = time.perf_counter()
    linear_ms: dict[ShapeKey, dict[int, float]] = {}
    kernel_ms: dict[ShapeKey, dict[Kernel, dict[int, float]]] = {}
    classes: dict[ShapeKey, list[Class]] = {}
    with torch.inference_mode():
        for shape, weights in by_shape.items():
            classes[shape] = _classes(weights[0].detach(), row_counts, candidates, batch_invariant)
            linear_ms[shape], kernel_ms[shape] = _measure_shape(weights, row_counts, candidates, repeats, sample_bytes)
    measure_s = time.perf_counter() - start
    chosen = _choose(layers, linear_ms, kernel_ms, classes, min_gain, budget, invariant=batch_invariant)

    start = time.perf_counter()
    apply_linear_kernels(module, chosen, skip=skip)
    pack_s = time.perf_counter() - start

    shapes = tuple(
        ShapeReport(
            out_features=shape[0],
            in_features=shape[1],
            layers=layers[shape],
            linear_ms=linear_ms[shape],
            kernel_ms=kernel_ms[shape],
            kernels=chosen[shape],
            copy_bytes=copy_bytes(shape) * layers[shape] * len({k.copy for k in chosen[shape].values()}),
            invariant=(
                any(all(chosen[shape].get(m) in ways for m, ways in cls.items()) for cls in classes[shape])
                if batch_invariant
                else None
            ),
        )
        for shape in by_shape
    )
    used = sum(s.copy_bytes for s in shapes)
    kinds = sorted({k.kind for s in shapes for k in s.kernels.values()})
    report = KernelReport(
        enabled=True,
        reason=(
            f"{', '.join(kinds)} for {sum(1 for s in shapes if s.kernels)} of {len(shapes)} weight shapes"
            if used
            else "F.linear everywhere, no kernel was worth its copy within the budget"
        ),
        rows=row_counts,
        shapes=shapes,
        threads=torch.get_num_threads(),
        budget_bytes=budget,
        copy_bytes=used,
        measure_s=measure_s,
        pack_s=pack_s,
        skipped=tuple(skipped),
    )
    if cache is not None:
        report = replace(report, cache_file=cache.put(key, report.as_dict()))
    log.info("%s", report.summary())
    return report


def choice_key(
    layers: Mapping[ShapeKey, int],
    rows: Sequence[int],
    candidates: Sequence[Kernel],
    *,
    budget_bytes: int,
    min_gain: float,
    repeats: int,
    sample_bytes: int,
    batch_invariant: bool,
) -> Key:
    """Everything a choice depends on: the machine and torch build, the thread count, this code,
    the fp32 weight shapes (with how many layers share each: the budget and the timing sample
    depend on it) and the selection's options. Not the weights' values: timings do not depend on
    them, nor does whether a kernel's rows are batch-invariant."""
    return {
        "code": CODE_VERSION,
        "machine": machine_fingerprint(),
        "threads": torch.get_num_threads(),
        "layers": sorted([out, inp, count] for (out, inp), count in layers.items()),
        "rows": list(rows),
        "candidates": sorted(str(k) for k in candidates),
        "budget_bytes": budget_bytes,
        "min_gain": min_gain,
        "repeats": repeats,
        "sample_bytes": sample_bytes,
        "batch_invariant": batch_invariant,
    }


def _cached_report(cache: KernelCache, key: Key) -> KernelReport | None:
    """The choice stored under ``key``, if there is one that fits the key's layers."""
    value = cache.get(key)
    if value is None:
        return None
    path = cache.path(key)
    try:
        report = KernelReport.from_dict(value)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("kernel cache: %s is not a kernel choice (%r); measuring again", path, exc)
        return None
    if sorted([s.out_features, s.in_features, s.layers] for s in report.shapes) != key["layers"]:
        log.warning("kernel cache: %s is for other layers; measuring again", path)
        return None
    return replace(report, cache_file=path, cached=True)
