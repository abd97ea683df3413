"""Row-count-dispatched linear kernels (``overture.runtime.linear``): same answers as F.linear.

Speed is never asserted here (benchmarks/linear_kernels.py measures it); these tests pin what
must hold whatever the machine measures: outputs within fp32 rounding of F.linear at every row
count (including those padded up to an MKL bucket), parameters and state_dict untouched, nothing
changed off CPU or without the MKL/oneDNN ops, and a report that matches what was installed.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from harness import require
from overture.runtime import linear as L


@pytest.fixture(autouse=True)
def kernels_available() -> None:
    """The ops come with the torch build, not the CPU: the x86 Linux wheels have both."""
    require(L.mkl_packed_available(), "this torch build has no MKL packed linear ops (torch.ops.mkl._mkl_linear)")
    require(L.onednn_available(), "this torch build has no oneDNN linear ops (torch.ops.mkldnn._linear_pointwise)")


# The reordered kernels and plain sgemm add in different orders; on O(1) outputs of 64-256 term
# sums the difference is fp32 rounding, ~1e-7. Anything wrong (a stale or misread weight) is O(1).
TOL: dict[str, Any] = {"rtol": 1e-5, "atol": 1e-5}


class OpLog(TorchDispatchMode):
    """Records the ops a forward dispatches, to see which kernel served a call."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def activations(*shape: int, seed: int = 0) -> torch.Tensor:
    """Layer-normed rows, like what a decoder feeds its projections."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return F.layer_norm(x, shape[-1:])


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 96), nn.GELU(), nn.Linear(96, 32, bias=False), nn.Linear(32, 32))


MKL = "mkl._mkl_linear.default"
ONEDNN = "mkldnn._linear_pointwise.default"
# MKL buckets 2, 4, 8 (3, 5, 6, 7 are padded up to theirs), oneDNN at 9 and 10 and padded from 1
# to 2 rows, F.linear above.
KERNEL = {
    1: L.Kernel("onednn", 2),
    2: L.Kernel("mkl", 2),
    3: L.Kernel("mkl", 4),
    4: L.Kernel("mkl", 4),
    **{m: L.Kernel("mkl", 8) for m in range(5, 9)},
    9: L.ONEDNN,
    10: L.ONEDNN,
}
BUFFERS = {"packed_onednn", "packed_mkl_2", "packed_mkl_4", "packed_mkl_8"}


def op_for(rows: int) -> str | None:
    kernel = KERNEL.get(rows)
    return None if kernel is None else MKL if kernel.kind == "mkl" else ONEDNN


@pytest.mark.parametrize("bias", [True, False])
def test_every_row_count_matches_f_linear(bias: bool) -> None:
    linear = nn.Linear(96, 160, bias=bias)
    dispatch = L.DispatchLinear(linear, KERNEL)
    assert {n for n, _ in dispatch.named_buffers()} == BUFFERS
    with torch.inference_mode():
        for m in range(1, 13):
            for x in (activations(m, 96, seed=m), activations(m, 1, 96, seed=m)):  # (M, d), (M, 1, d)
                with OpLog() as log:
                    out = dispatch(x)
                used = {op for op in log.ops if op in (MKL, ONEDNN)}
                assert used == ({op_for(m)} if op_for(m) else set()), (m, log.ops)
                assert out.shape == (*x.shape[:-1], 160)
                torch.testing.assert_close(out, F.linear(x, linear.weight, linear.bias), **TOL)


def test_model_forward_is_unchanged_after_replacement() -> None:
    from transformers import MusicgenDecoderConfig
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.models.musicgen.modeling_musicgen import MusicgenForCausalLM

    torch.manual_seed(0)
    config = MusicgenDecoderConfig(
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=64,
        num_codebooks=4,
        pad_token_id=64,
        bos_token_id=64,
        max_position_embeddings=64,
    )
    model = MusicgenForCausalLM(config).eval()

    def step(rows: int) -> torch.Tensor:
        """A decode step with a 5-token KV cache, as the batching loop runs it."""
        gen = torch.Generator().manual_seed(rows)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        encoder = torch.randn(rows, 3, 64, generator=gen)
        ids = torch.randint(0, 64, (rows * 4, 6), generator=gen)
        with torch.inference_mode():
            model(input_ids=ids[:, :5], encoder_hidden_states=encoder, past_key_values=cache, use_cache=True)
            out = model(input_ids=ids[:, 5:], encoder_hidden_states=encoder, past_key_values=cache, use_cache=True)
        return out.logits

    rows = [1, 2, 3, 6, 8, 11]
    before = {m: step(m) for m in rows}
    keys = list(model.state_dict())
    shapes = {(m.out_features, m.in_features) for m in model.modules() if isinstance(m, nn.Linear)}
    replaced = L.apply_linear_kernels(model, {shape: KERNEL for shape in shapes})
    assert len(replaced) == 2 * 10 + 4  # 10 projections per layer, 4 codebook heads
    assert list(model.state_dict()) == keys
    for m in rows:
        torch.testing.assert_close(step(m), before[m], **TOL)


def test_selection_report_describes_what_was_installed() -> None:
    model = mlp()
    x = activations(6, 32)
    with torch.inference_mode():
        expected = model(x)
    report = L.select_linear_kernels(model, range(2, 9, 2), repeats=1, sample_bytes=2**20, batch_invariant=False)

    assert report.enabled and report.rows == (2, 4, 6, 8)
    assert {(s.out_features, s.in_features, s.layers) for s in report.shapes} == {(96, 32, 1), (32, 96, 1), (32, 32, 1)}
    installed = {(m.out_features, m.in_features): m.kernels for m in model.modules() if isinstance(m, L.DispatchLinear)}
    mkl = L.Kernel("mkl", 2), L.Kernel("mkl", 4), L.Kernel("mkl", 8)
    for shape in report.shapes:
        assert set(shape.linear_ms) == {2, 4, 6, 8}
        # What each kernel serves: oneDNN every row count, MKL from the previous bucket up to its own.
        assert {k: set(ms) for k, ms in shape.kernel_ms.items()} == {
            L.ONEDNN: {2, 4, 6, 8},
            mkl[0]: {2},
            mkl[1]: {4},
            mkl[2]: {6, 8},
        }
        for m in shape.kernels:  # only where it measured faster
            plain, chosen = shape.ms(m)
            assert chosen < plain
        assert installed.get((shape.out_features, shape.in_features), {}) == dict(shape.kernels)
    assert report.copy_bytes <= report.budget_bytes
    summary = report.summary()
    assert all(text in summary for text in ("96x32 x1", "M=6", "F.linear", "onednn", "mkl packed@B", "chosen"))
    json.dumps(report.as_dict())
    with torch.inference_mode():
        torch.testing.assert_close(model(x), expected, **TOL)


def test_no_budget_no_copies() -> None:
    model = mlp()
    report = L.select_linear_kernels(model, 4, memory_budget=0, repeats=1, sample_bytes=2**20)
    assert report.enabled and report.copy_bytes == 0
    assert all(not s.kernels for s in report.shapes)
    assert not any(isinstance(m, L.DispatchLinear) for m in model.modules())


def any_way(kernel_ms: dict[Any, dict[L.Kernel, dict[int, float]]], rows: list[int]) -> dict[Any, list[L.Class]]:
    """The class without batch invariance: any way to serve each row count."""
    return {shape: [{m: L._ways(m, rows, list(copies)) for m in rows}] for shape, copies in kernel_ms.items()}


def test_choice_keeps_the_best_savings_per_byte_within_budget() -> None:
    small, big = (8, 8), (64, 64)
    layers = {small: 4, big: 2}
    mkl2, mkl4, mkl8, onednn = L.Kernel("mkl", 2), L.Kernel("mkl", 4), L.Kernel("mkl", 8), L.ONEDNN
    linear_ms = {small: {2: 1.0, 4: 2.0, 8: 2.0}, big: {2: 5.0, 4: 9.0, 8: 9.5}}
    kernel_ms = {  # as measured: an MKL bucket serves the counts above the previous one
        small: {onednn: {2: 0.9, 4: 1.5, 8: 1.5}, mkl2: {2: 0.5}, mkl4: {4: 1.0}, mkl8: {8: 2.5}},
        big: {onednn: {2: 4.9, 4: 5.0, 8: 9.4}, mkl4: {2: 6.0, 4: 6.0}},
    }
    classes = any_way(kernel_ms, [2, 4, 8])

    def choose(budget: int) -> dict[Any, dict[int, L.Kernel]]:
        return L._choose(layers, linear_ms, kernel_ms, classes, min_gain=0.05, budget_bytes=budget)

    # The fastest kernel per row count, if it beats F.linear by 5% (big's oneDNN does only at M=4).
    unlimited = choose(10**9)
    assert unlimited == {small: {2: mkl2, 4: mkl4, 8: onednn}, big: {4: onednn}}
    # Copies are kept by ms saved per byte: small's oneDNN (4.4 ms over 4 small layers), its MKL@4
    # (2 ms more), its MKL@2 (1.6 ms), then big's oneDNN (8 ms for 32x the bytes), as room allows.
    small_copy, big_copy = L.copy_bytes(small) * 4, L.copy_bytes(big) * 2
    assert choose(small_copy) == {small: {2: onednn, 4: onednn, 8: onednn}, big: {}}
    assert choose(2 * small_copy) == {small: {2: onednn, 4: mkl4, 8: onednn}, big: {}}
    assert choose(3 * small_copy + big_copy) == unlimited
    assert choose(0) == {small: {}, big: {}}


def test_onednn_pads_rows_up_when_more_rows_are_faster() -> None:
    shape = (16, 16)
    linear_ms = {shape: {2: 4.0, 4: 4.0}}

    def choose(onednn_ms: dict[int, float]) -> dict[Any, dict[int, L.Kernel]]:
        kernel_ms = {shape: {L.ONEDNN: onednn_ms}}
        return L._choose({shape: 1}, linear_ms, kernel_ms, any_way(kernel_ms, [2, 4]), 0.05, 10**9)

    assert choose({2: 3.0, 4: 2.0}) == {shape: {2: L.Kernel("onednn", 4), 4: L.ONEDNN}}
    # Padding must win by min_gain: 2.0 vs 1.95 is noise.
    assert choose({2: 2.0, 4: 1.95}) == {shape: {2: L.ONEDNN, 4: L.ONEDNN}}


def test_an_invariant_class_is_taken_whole_or_not_at_all() -> None:
    shape = (16, 16)
    linear_ms = {shape: {4: 4.0, 8: 4.0}}
    kernel_ms = {shape: {L.ONEDNN: {4: 2.0, 8: 5.0}}}
    # Only oneDNN gives the same rows at 4 to 8 (F.linear differs at some count in between).
    only_onednn = {shape: [{m: [L.ONEDNN] for m in range(4, 9)}]}
    chosen = L._choose({shape: 1}, linear_ms, kernel_ms, only_onednn, 0.05, 10**9)
    # oneDNN everywhere, the counts not timed included, though F.linear is faster at 8 (4 + 4 < 2 + 5
    # is false: 6 ms < 8 ms in all).
    assert chosen == {shape: {m: L.ONEDNN for m in range(4, 9)}}
    # Slower in all: F.linear as before (no invariant choice pays).
    slower = {shape: {L.ONEDNN: {4: 4.5, 8: 5.0}}}
    assert L._choose({shape: 1}, linear_ms, slower, only_onednn, 0.05, 10**9) == {shape: {}}


def test_batch_invariant_selection_gives_each_row_the_same_bits() -> None:
    model = mlp()
    report = L.select_linear_kernels(model, range(4, 13, 2), repeats=1, sample_bytes=2**20)
    by_shape = {(s.out_features, s.in_features): s for s in report.shapes}
    with torch.inference_mode():
        for layer in (model[0], model[2], model[3]):
            shape = by_shape[(layer.out_features, layer.in_features)]
            # On 2 threads F.linear itself is not invariant at 5-7 and 9-11 rows: a kernel is used
            # wherever needed, the odd counts (not timed) included.
            assert shape.invariant
            x = activations(12, layer.in_features, seed=5)
            full = layer(x)
            for m in range(4, 13):
                assert torch.equal(layer(x[:m]), full[:m]), (shape, m)
            assert torch.equal(layer(x.flip(0)).flip(0), full)


def test_without_the_ops_modules_stay_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "mkl_packed_available", lambda: False)
    monkeypatch.setattr(L, "onednn_available", lambda: False)
    model = mlp()
    children = list(model)
    report = L.select_linear_kernels(model, 8)
    assert not report.enabled and "neither MKL packed nor oneDNN" in report.reason
    assert list(model) == children
    assert "F.linear everywhere" in report.summary()
    # A DispatchLinear built anyway (e.g. a model unpickled elsewhere) runs F.linear.
    dispatch = L.DispatchLinear(nn.Linear(32, 32), KERNEL)
    assert not list(dispatch.named_buffers())
    with torch.inference_mode(), OpLog() as log:
        dispatch(activations(4, 32))
    assert not {MKL, ONEDNN} & set(log.ops)


def test_without_mkl_only_onednn_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "mkl_packed_available", lambda: False)
    report = L.select_linear_kernels(mlp(), 4, repeats=1, sample_bytes=2**20)
    assert report.enabled and all(set(s.kernel_ms) == {L.ONEDNN} for s in report.shapes)


def test_off_cpu_leaves_modules_as_they_were() -> None:
    # No GPU here: parameters on the meta device take the same "not on CPU" path as CUDA ones.
    with torch.device("meta"):
        model = mlp()
    children = list(model)
    report = L.select_linear_kernels(model, 8)
    assert not report.enabled and "meta" in report.reason
    assert list(model) == children


def test_weights_stay_in_sync_through_load_to_and_copy() -> None:
    model = mlp()
    L.apply_linear_kernels(model, {(96, 32): KERNEL, (32, 96): KERNEL, (32, 32): KERNEL})
    reference = mlp()  # same seed: the same weights as plain Linear modules
    x = activations(3, 32)

    def check(dtype: torch.dtype = torch.float32) -> None:
        with torch.inference_mode():
            torch.testing.assert_close(model(x.to(dtype)), reference(x.to(dtype)), **TOL)

    state = {k: v * 1.5 for k, v in reference.state_dict().items()}
    reference.load_state_dict(state)
    model.load_state_dict(state)  # the copies are rebuilt from the loaded weights
    assert not any(k.startswith("packed") for k in (n.rsplit(".", 1)[-1] for n in model.state_dict()))
    check()
    model.double()
    reference.double()
    assert not list(model[0].named_buffers())  # no fp64 kernels: F.linear
    check(torch.float64)
    model.float()
    reference.float()
    assert {n for n, _ in model[0].named_buffers()} == BUFFERS
    check()
    clone = copy.deepcopy(model)
    assert clone[0].weight is not model[0].weight
    with torch.inference_mode():
        torch.testing.assert_close(clone(x), reference(x), **TOL)


def test_gradients_flow_through_f_linear() -> None:
    dispatch = L.DispatchLinear(nn.Linear(32, 32), KERNEL)
    x = activations(4, 32).requires_grad_()
    with OpLog() as log:
        dispatch(x).sum().backward()
    assert not {MKL, ONEDNN} & set(log.ops)
    assert dispatch.weight.grad is not None and x.grad is not None


def test_switching_off_and_restoring() -> None:
    model = mlp()
    L.apply_linear_kernels(model, {(96, 32): KERNEL})
    assert L.set_packed_enabled(model, False) == 1
    with torch.inference_mode(), OpLog() as log:
        model(activations(4, 32))
    assert not {MKL, ONEDNN} & set(log.ops)
    weight = model[0].weight
    assert L.restore_linears(model) == 1
    assert type(model[0]) is nn.Linear and model[0].weight is weight
