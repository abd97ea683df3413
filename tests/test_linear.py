"""Row-count-dispatched linear kernels (``overture.models.linear``): same answers as F.linear.

Speed is never asserted here (benchmarks/linear_kernels.py measures it); these tests pin what
must hold whatever the machine measures: outputs within fp32 rounding of F.linear at every row
count, parameters and state_dict untouched, nothing changed off CPU or without MKL, and a report
that matches what was installed.
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

from overture.models import linear as L

pytestmark = pytest.mark.skipif(not L.mkl_packed_available(), reason="torch build without MKL packed ops")

# Packed and plain sgemm add in different orders; on O(1) outputs of 64-256 term sums the
# difference is fp32 rounding, ~1e-7. Anything wrong (a stale or misread weight) is O(1).
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


# Buckets 2, 4, 8: M=1 and M>8 stay on F.linear; 3, 5, 6, 7 are padded up to their bucket.
KERNEL = {2: 2, 3: 4, 4: 4, 5: 8, 6: 8, 7: 8, 8: 8}


@pytest.mark.parametrize("bias", [True, False])
def test_every_row_count_matches_f_linear(bias: bool) -> None:
    linear = nn.Linear(96, 160, bias=bias)
    bucketed = L.BucketedLinear(linear, KERNEL)
    assert sorted(n for n, _ in bucketed.named_buffers()) == [
        "packed_2",
        "packed_4",
        "packed_8",
    ]
    with torch.inference_mode():
        for m in range(1, 13):
            for x in (
                activations(m, 96, seed=m),
                activations(m, 1, 96, seed=m),
            ):  # (M, d), (M, 1, d)
                with OpLog() as log:
                    out = bucketed(x)
                assert ("mkl._mkl_linear.default" in log.ops) == (m in KERNEL), (
                    m,
                    log.ops,
                )
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
            model(
                input_ids=ids[:, :5],
                encoder_hidden_states=encoder,
                past_key_values=cache,
                use_cache=True,
            )
            return model(
                input_ids=ids[:, 5:],
                encoder_hidden_states=encoder,
                past_key_values=cache,
                use_cache=True,
            ).logits

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
    report = L.select_linear_kernels(model, range(2, 9, 2), repeats=1, sample_bytes=2**20)

    assert report.enabled and report.rows == (2, 4, 6, 8)
    assert {(s.out_features, s.in_features, s.layers) for s in report.shapes} == {
        (96, 32, 1),
        (32, 96, 1),
        (32, 32, 1),
    }
    installed = {(m.out_features, m.in_features): m.kernel for m in model.modules() if isinstance(m, L.BucketedLinear)}
    for shape in report.shapes:
        assert set(shape.linear_ms) == {2, 4, 6, 8} and set(shape.packed_ms) == {
            2,
            4,
            8,
        }
        assert all(m <= b for m, b in shape.kernel.items())
        for (
            m,
            b,
        ) in shape.kernel.items():  # a packed kernel is only chosen where it measured faster
            assert shape.packed_ms[b] < shape.linear_ms[m]
        assert installed.get((shape.out_features, shape.in_features), {}) == dict(shape.kernel)
    assert report.packed_bytes <= report.budget_bytes
    summary = report.summary()
    assert "96x32 x1" in summary and "M=6" in summary and "F.linear" in summary
    json.dumps(report.as_dict())
    with torch.inference_mode():
        torch.testing.assert_close(model(x), expected, **TOL)


def test_no_budget_no_packed_copies() -> None:
    model = mlp()
    report = L.select_linear_kernels(model, 4, memory_budget=0, repeats=1, sample_bytes=2**20)
    assert report.enabled and report.packed_bytes == 0
    assert all(not s.kernel for s in report.shapes)
    assert not any(isinstance(m, L.BucketedLinear) for m in model.modules())


def test_choice_keeps_the_best_savings_per_byte_within_budget() -> None:
    small, big = (8, 8), (64, 64)
    layers = {small: 4, big: 2}
    linear_ms = {small: {2: 1.0, 4: 2.0, 8: 2.0}, big: {2: 5.0, 4: 9.0, 8: 9.5}}
    packed_ms = {small: {2: 0.5, 4: 1.0, 8: 2.5}, big: {2: 5.0, 4: 5.0, 8: 9.4}}
    unlimited = L._choose(layers, linear_ms, packed_ms, min_gain=0.05, budget_bytes=10**9)
    # big: only its 4-row copy pays (at M=2 it ties F.linear, at M=8 it saves 1% < min_gain).
    assert unlimited == {small: {2: 2, 4: 4}, big: {4: 4}}
    # Copies are kept by ms saved per byte: small's 4-row copy first (4 ms x 4 layers for a few
    # bytes), then small's 2-row copy, then big's (8 ms for many more bytes), as the budget allows.
    small_copy, big_copy = L.packed_bytes(small) * 4, L.packed_bytes(big) * 2
    assert L._choose(layers, linear_ms, packed_ms, 0.05, small_copy) == {small: {4: 4}, big: {}}
    assert L._choose(layers, linear_ms, packed_ms, 0.05, 2 * small_copy) == {small: {2: 2, 4: 4}, big: {}}
    assert L._choose(layers, linear_ms, packed_ms, 0.05, 2 * small_copy + big_copy) == unlimited


def test_no_mkl_leaves_modules_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "mkl_packed_available", lambda: False)
    model = mlp()
    children = list(model)
    report = L.select_linear_kernels(model, 8)
    assert not report.enabled and "MKL" in report.reason
    assert list(model) == children
    assert "F.linear everywhere" in report.summary()
    # A BucketedLinear built anyway (e.g. a model loaded elsewhere) runs F.linear.
    bucketed = L.BucketedLinear(nn.Linear(32, 32), KERNEL)
    assert not list(bucketed.named_buffers())
    with torch.inference_mode(), OpLog() as log:
        bucketed(activations(4, 32))
    assert "mkl._mkl_linear.default" not in log.ops


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
    model.load_state_dict(state)  # packed copies rebuilt from the loaded weights
    assert not any(k.startswith("packed") for k in (n.rsplit(".", 1)[-1] for n in model.state_dict()))
    check()
    model.double()
    reference.double()
    assert not list(model[0].named_buffers())  # no fp64 packed kernel: F.linear
    check(torch.float64)
    model.float()
    reference.float()
    assert {n for n, _ in model[0].named_buffers()} == {
        "packed_2",
        "packed_4",
        "packed_8",
    }
    check()
    clone = copy.deepcopy(model)
    assert clone[0].weight is not model[0].weight
    with torch.inference_mode():
        torch.testing.assert_close(clone(x), reference(x), **TOL)


def test_gradients_flow_through_f_linear() -> None:
    bucketed = L.BucketedLinear(nn.Linear(32, 32), KERNEL)
    x = activations(4, 32).requires_grad_()
    with OpLog() as log:
        bucketed(x).sum().backward()
    assert "mkl._mkl_linear.default" not in log.ops
    assert bucketed.weight.grad is not None and x.grad is not None


def test_switching_off_and_restoring() -> None:
    model = mlp()
    L.apply_linear_kernels(model, {(96, 32): KERNEL})
    assert L.set_packed_enabled(model, False) == 1
    with torch.inference_mode(), OpLog() as log:
        model(activations(4, 32))
    assert "mkl._mkl_linear.default" not in log.ops
    weight = model[0].weight
    assert L.restore_linears(model) == 1
    assert type(model[0]) is nn.Linear and model[0].weight is weight
