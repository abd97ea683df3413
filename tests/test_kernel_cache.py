"""The linear-kernel choice kept on disk (``overture.runtime.kernel_cache``): measured once per
machine, torch build, thread count and model shape, then read back by every later load.

Measurements are counted, never timed: a load with a warm cache must not time a single kernel,
whatever the machine. The cache is a real directory, written by real processes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from harness import SUBPROCESS_PYTHONPATH, RecordingContext, Server, require
from overture.models.musicgen import runner
from overture.runtime import kernel_cache
from overture.runtime import linear as L
from overture.runtime.checkpoints import Checkpoints, CheckpointSettings
from overture.runtime.kernel_cache import KernelCache
from overture.testing import tiny_checkpoint
from test_linear import TOL, activations, mlp

pytestmark = pytest.mark.timeout(180)

ROWS = (2, 4, 8)


@pytest.fixture(autouse=True)
def kernels_available() -> None:
    require(L.mkl_packed_available() and L.onednn_available(), "this torch build lacks MKL packed or oneDNN linear ops")


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The weight shapes timed so far, one entry per shape per measurement."""
    shapes: list[tuple[int, int]] = []
    measure = L._measure_shape

    def counting(weights: Any, *args: Any) -> Any:
        shapes.append(tuple(weights[0].shape))
        return measure(weights, *args)

    monkeypatch.setattr(L, "_measure_shape", counting)
    return shapes


@pytest.fixture
def cache(tmp_path: Path) -> KernelCache:
    return KernelCache(tmp_path / "kernels")


def select(model: nn.Module, cache: KernelCache | None, rows: tuple[int, ...] = ROWS, **options: Any) -> L.KernelReport:
    return L.select_linear_kernels(model, rows, repeats=1, sample_bytes=2**20, cache=cache, **options)


def installed(model: nn.Module) -> dict[str, dict[int, L.Kernel]]:
    return {name: m.kernels for name, m in model.named_modules() if isinstance(m, L.DispatchLinear)}


def test_a_second_load_with_a_warm_cache_measures_nothing(cache: KernelCache, measured: list) -> None:
    first_model = mlp()
    first = select(first_model, cache)
    assert len(measured) == 3 and not first.cached  # three weight shapes, each timed once
    assert first.cache_file is not None and first.cache_file.parent == cache.directory
    assert f"stored in {first.cache_file}" in first.summary()

    second_model = mlp()  # the same weights: mlp() seeds them
    second = select(second_model, cache)
    assert len(measured) == 3, "a warm cache timed kernels again"
    assert second.cached and second.cache_file == first.cache_file
    assert f"read from the kernel cache {first.cache_file}" in second.summary()
    assert installed(second_model) == installed(first_model)
    assert {s.out_features: s.kernels for s in second.shapes} == {s.out_features: s.kernels for s in first.shapes}

    # The kernels read back are the ones measured: the same bits, and F.linear's answers.
    with torch.inference_mode():
        for rows in range(1, 9):
            x = activations(rows, 32, seed=rows)
            assert torch.equal(second_model(x), first_model(x))
            L.set_packed_enabled(second_model, False)
            torch.testing.assert_close(second_model(x), first_model(x), **TOL)
            L.set_packed_enabled(second_model, True)


def other_threads(mp: pytest.MonkeyPatch) -> dict[str, Any]:
    torch.set_num_threads(1 if torch.get_num_threads() > 1 else 2)  # the test puts it back
    return {}


#: Each changes one thing the choice depends on (returning options for the selection, if any).
CHANGES: dict[str, Callable[[pytest.MonkeyPatch], dict[str, Any]]] = {
    "another CPU": lambda mp: (
        mp.setattr(kernel_cache, "_cpuinfo", lambda: {"model name": "Other", "flags": "sse2"}) or {}
    ),
    "an instruction-set cap": lambda mp: mp.setenv("ONEDNN_MAX_CPU_ISA", "AVX2") or {},
    "another torch build": lambda mp: mp.setattr(torch, "__version__", "0.0.0+other") or {},
    "another thread count": other_threads,
    "changed selection code": lambda mp: mp.setattr(L, "CODE_VERSION", "0" * 16) or {},
    "other row counts": lambda mp: {"rows": (2, 4)},
    "another memory budget": lambda mp: {"memory_budget": 10**6},
    "no batch invariance": lambda mp: {"batch_invariant": False},
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_key_measures_again(
    change: str, cache: KernelCache, measured: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = select(mlp(), cache)
    assert len(measured) == 3
    threads = torch.get_num_threads()
    try:
        with monkeypatch.context() as patch:
            options = CHANGES[change](patch)
            changed = select(mlp(), cache, **options)
    finally:
        torch.set_num_threads(threads)
    assert len(measured) == 6 and not changed.cached, f"{change}: the earlier choice was reused"
    assert changed.cache_file not in (None, first.cache_file)
    # Both choices are kept: back to the first key, nothing is measured.
    assert select(mlp(), cache).cached and len(measured) == 6


def corrupt_garbage(entry: dict) -> bytes:
    return b"\x00\xffnot json at all"


def corrupt_truncated(entry: dict) -> bytes:
    return json.dumps(entry).encode()[:100]


def corrupt_foreign_key(entry: dict) -> bytes:
    entry["key"]["threads"] += 1  # another machine's file under this name
    return json.dumps(entry).encode()


def corrupt_kernel_name(entry: dict) -> bytes:
    entry["value"]["shapes"][0]["kernels"] = {"4": "mkl@four"}
    return json.dumps(entry).encode()


def corrupt_layers(entry: dict) -> bytes:
    entry["value"]["shapes"][0]["layers"] += 1
    return json.dumps(entry).encode()


def corrupt_no_value(entry: dict) -> bytes:
    entry["value"] = [1, 2, 3]
    return json.dumps(entry).encode()


@pytest.mark.parametrize(
    "corrupt",
    [corrupt_garbage, corrupt_truncated, corrupt_foreign_key, corrupt_kernel_name, corrupt_layers, corrupt_no_value],
)
def test_a_corrupt_or_foreign_file_is_ignored_and_replaced(
    corrupt: Callable[[dict], bytes], cache: KernelCache, measured: list, caplog: pytest.LogCaptureFixture
) -> None:
    path = select(mlp(), cache).cache_file
    assert path is not None
    path.write_bytes(corrupt(json.loads(path.read_text())))

    with caplog.at_level(logging.WARNING, logger="overture.runtime"):
        again = select(mlp(), cache)
    assert len(measured) == 6 and not again.cached
    assert any(str(path) in r.getMessage() and "measuring again" in r.getMessage() for r in caplog.records)
    assert again.cache_file == path  # rewritten whole
    assert select(mlp(), cache).cached and len(measured) == 6


def test_an_unwritable_cache_costs_only_time(tmp_path: Path, measured: list, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a-file").write_text("")  # a directory under a file cannot be made, even by root
    cache = KernelCache(tmp_path / "a-file" / "kernels")
    model = mlp()
    with caplog.at_level(logging.WARNING, logger="overture.runtime"):
        report = select(model, cache)
    assert report.enabled and report.cache_file is None and installed(model)
    assert "cannot write" in caplog.text
    assert not select(mlp(), cache).cached and len(measured) == 6


def test_the_environment_relocates_or_turns_off_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERTURE_KERNEL_CACHE", str(tmp_path / "elsewhere"))
    assert KernelCache.from_env() == KernelCache(tmp_path / "elsewhere")
    monkeypatch.setenv("OVERTURE_KERNEL_CACHE", "off")
    assert KernelCache.from_env() is None
    monkeypatch.delenv("OVERTURE_KERNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert KernelCache.from_env() == KernelCache(tmp_path / "xdg" / "overture" / "kernels")


#: A process that writes one large entry under one key, again and again.
WRITER = """
import sys
from pathlib import Path
from overture.runtime.kernel_cache import KernelCache
cache = KernelCache(Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    assert cache.put({"model": "same"}, {"writer": sys.argv[2], "i": i, "padding": "x" * 200_000}) is not None
"""


def test_concurrent_writers_leave_a_whole_file(cache: KernelCache, caplog: pytest.LogCaptureFixture) -> None:
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(cache.directory), str(n), "60"], env=env) for n in range(4)
    ]
    reads = []
    with caplog.at_level(logging.WARNING, logger="overture.runtime"):
        deadline = time.monotonic() + 120
        while any(w.poll() is None for w in writers):
            assert time.monotonic() < deadline
            value = cache.get({"model": "same"})
            if value is not None:
                reads.append(value)
    assert [w.returncode for w in writers] == [0, 0, 0, 0]
    assert not caplog.records, caplog.text  # no read ever saw half a file
    final = cache.get({"model": "same"})
    assert final is not None and final["i"] == 59 and len(final["padding"]) == 200_000
    assert all(len(value["padding"]) == 200_000 for value in reads)
    assert [p.name for p in cache.directory.iterdir()] == [cache.path({"model": "same"}).name]  # no temporaries


# -- MusicGen: the loader, and the function ``overture pull`` calls ------------------------------


@pytest.fixture(scope="module")
def tiny_musicgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint("musicgen", tmp_path_factory.mktemp("musicgen") / "small")


def loaded_log(directory: Path, scratch: Path) -> str:
    """What a fresh server's first MusicGen prediction logs about its load."""
    checkpoints = Checkpoints(CheckpointSettings(local_dirs={"facebook/musicgen-small": directory}, device="cpu"))
    ctx = RecordingContext(scratch)
    runner.load(checkpoints, "facebook/musicgen-small", ctx)  # type: ignore[arg-type]
    return "\n".join(ctx.logs)


@pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only waits for the first
def test_musicgen_loads_measure_once(
    tiny_musicgen: Path, tmp_path: Path, measured: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERTURE_KERNEL_CACHE", str(tmp_path / "kernels"))
    assert "measured in" in loaded_log(tiny_musicgen, tmp_path / "a") and measured
    count = len(measured)
    assert "read from the kernel cache" in loaded_log(tiny_musicgen, tmp_path / "b")
    assert len(measured) == count
    monkeypatch.setenv("OVERTURE_KERNEL_CACHE", "off")
    log = loaded_log(tiny_musicgen, tmp_path / "c")
    assert "measured in" in log and "stored in" not in log and len(measured) == 2 * count


@pytest.fixture
def pulled_server(tiny_musicgen: Path, tmp_path: Path, one_thread: None) -> Iterator[Server]:
    """A server whose kernel cache was filled by ``prepare_kernels`` beforehand, as by ``overture
    pull``, under the thread count its worker runs (one, as ``one_thread`` gives both)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OVERTURE_KERNEL_CACHE", str(tmp_path / "kernels"))
        checkpoints = Checkpoints(CheckpointSettings(local_dirs={"facebook/musicgen-small": tiny_musicgen}))
        report = runner.prepare_kernels(checkpoints, "facebook/musicgen-small")
        assert report.enabled and not report.cached and report.cache_file is not None
        server = Server(tmp_path / "data", "--checkpoint", f"facebook/musicgen-small={tiny_musicgen}").start()
    yield server
    server.stop()


def test_a_server_reads_the_choice_prepare_kernels_stored(pulled_server: Server) -> None:
    client = pulled_server.client()
    prediction = client.predictions.create(
        version="meta/musicgen", input={"prompt": "a drum loop", "duration": 1, "model_version": "small"}
    )
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    assert "read from the kernel cache" in prediction.logs, prediction.logs
