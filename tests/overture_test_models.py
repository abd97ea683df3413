"""Small models with one behaviour each, served next to the built-in ones through ``--model-module``.

Like Cog's fixture predictors: they make slow steps, failures, batching and file inputs easy to
trigger from a test through the real HTTP API.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from overture.models.audio import read_audio
from overture.models.base import Context, Model, Predictor, Version
from overture.models.schema import Input
from overture_unloadable import Unloadable


class Steps(Predictor):
    output_schema = {"type": "string", "title": "Output"}

    def predict(
        self,
        ctx: Context,
        steps: int = Input(default=3, ge=0, le=10_000),
        step_seconds: float = Input(default=0.05, ge=0, le=60),
        fail: bool = Input(default=False),
        label: str = Input(default="done"),
        seed: int = Input(default=None),
    ) -> str:
        for step in range(steps):
            ctx.check_canceled()
            time.sleep(step_seconds)
            ctx.progress(step + 1, steps)
        if fail:
            raise ValueError("the model was asked to fail")
        ctx.log(f"finished {steps} steps")
        return f"{label}:{seed}"


class Batched(Predictor):
    """Records how many jobs shared each call, so tests can see batching happen."""

    output_schema = {"type": "object", "title": "Output"}
    max_batch_size = 4

    def predict(
        self,
        ctx: Context,
        text: str = Input(),
        delay: float = Input(default=0.3),
        lose_one: bool = Input(default=False),
    ) -> Any:
        return self.predict_batch([(ctx, {"text": text, "delay": delay, "lose_one": False})])[0]

    def predict_batch(self, jobs: Any) -> list[Any]:
        time.sleep(max(inputs["delay"] for _, inputs in jobs))
        results = [{"text": inputs["text"], "batch_size": len(jobs)} for _, inputs in jobs]
        # A bug in a model's batch bookkeeping: one result short.
        return results[1:] if any(inputs["lose_one"] for _, inputs in jobs) else results


class FileEcho(Predictor):
    """Returns what it received: the input file's digest, and the file itself as an output."""

    output_schema = {"type": "object", "title": "Output"}

    def predict(self, ctx: Context, audio: Path = Input(description="Any file")) -> Any:
        data = audio.read_bytes()
        copy = ctx.scratch_path("echo" + audio.suffix)
        copy.write_bytes(data)
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "file": copy}


class GatedCopy(Predictor):
    """Copies a file into its output file, stopping halfway until the path ``gate`` exists: a test
    can kill the server while the output is half written, then let the copy through."""

    def predict(
        self,
        ctx: Context,
        source: Path = Input(description="The file to copy"),
        gate: str = Input(description="A path on the server's machine; the copy waits for it halfway"),
    ) -> Path:
        data = source.read_bytes()
        output = ctx.scratch_path("output.bin")
        with open(output, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            while not Path(gate).exists():
                ctx.check_canceled()
                time.sleep(0.01)
            out.write(data[len(data) // 2 :])
        return output


class Weights(Predictor):
    """Loads a checkpoint the operator mapped (``--checkpoint ID=DIR``, its ``weights.bin``) into its
    worker's loaded models, which count against the server's one memory budget, or with no
    ``hub_id`` only looks. Returns what its worker holds, least recently used first."""

    output_schema = {"type": "array", "items": {"type": "string"}, "title": "Output"}

    def predict(self, ctx: Context, hub_id: str = Input(default="", description="A mapped checkpoint")) -> list[str]:
        if hub_id:
            self.checkpoints.load(hub_id, lambda: (self.checkpoints.path(hub_id) / "weights.bin").read_bytes(), len)
        return self.checkpoints.loaded()


class BrokenSetup(Predictor):
    def setup(self) -> None:
        raise RuntimeError("weights are missing")

    def predict(self, ctx: Context, prompt: str = Input(default="")) -> str:
        return prompt


class AudioLength(Predictor):
    """Decodes its input as audio, as the music models do with a melody or init audio."""

    output_schema = {"type": "number", "title": "Output"}

    def predict(self, ctx: Context, audio: Path = Input(description="An audio file")) -> float:
        samples, sample_rate = read_audio(audio)
        return len(samples) / sample_rate


class Faulty(Predictor):
    """Fails the way real models do: an unexpected exception, running out of memory, or hanging
    (``check_canceled`` between steps, or blocked in one call that cannot be interrupted)."""

    output_schema = {"type": "string", "title": "Output"}
    # A second worker keeps serving while one is stuck in a blocked call.
    concurrency = 2

    def predict(
        self,
        ctx: Context,
        fault: str = Input(choices=["none", "raise", "memory", "hang", "block"]),
        seconds: float = Input(default=30, ge=0, le=600),
        memory_limit_mb: int = Input(default=64, ge=1, le=1024),
    ) -> str:
        if fault == "raise":
            raise RuntimeError("the model broke")
        if fault == "memory":
            # Allocate up to a limit, then fail as the allocator (or CUDA) would past it.
            held = [bytearray(1 << 20) for _ in range(memory_limit_mb)]
            raise MemoryError(f"cannot allocate more than {len(held)} MiB")
        if fault == "hang":
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                ctx.check_canceled()
                time.sleep(0.05)
        if fault == "block":
            time.sleep(seconds)
        return fault


class WhichThread(Predictor):
    """Says which thread ran it, so tests can see workers retire and come back."""

    output_schema = {"type": "integer", "title": "Output"}

    def predict(self, ctx: Context, seconds: float = Input(default=0, ge=0, le=10)) -> int:
        time.sleep(seconds)
        return threading.get_native_id()


class Crash(Predictor):
    """Takes its worker process down as native code does: ``abort()`` (a failed assertion in a C
    library), a segfault, or an exit; ``after_steps`` steps first, each logged."""

    output_schema = {"type": "string", "title": "Output"}

    def predict(
        self,
        ctx: Context,
        how: str = Input(choices=["none", "abort", "segfault", "exit", "unreadable"]),
        after_steps: int = Input(default=0, ge=0, le=1000),
        step_seconds: float = Input(default=0.05, ge=0, le=10),
    ) -> str:
        for step in range(after_steps):
            ctx.check_canceled()
            time.sleep(step_seconds)
            ctx.progress(step + 1, after_steps)
        if how == "abort":
            os.abort()
        if how == "segfault":
            ctypes.string_at(0)
        if how == "exit":
            os._exit(3)
        if how == "unreadable":
            return Unreadable()  # type: ignore[return-value]
        return f"survived {after_steps} steps"


class LibraryLog(Predictor):
    """Logs through Python's ``logging`` while it predicts, as the libraries under a model do (a
    deprecation warning from transformers, say): the line belongs to its prediction."""

    output_schema = {"type": "string", "title": "Output"}

    def predict(self, ctx: Context, message: str = Input(default="this argument is deprecated")) -> str:
        logging.getLogger("some_library").warning(message)
        return message


class Unreadable:
    """An output that pickles in the worker but does not unpickle in the server, as an object of
    a class only the worker's environment has."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _refuse_to_unpickle, ()


def _refuse_to_unpickle() -> None:
    raise ModuleNotFoundError("No module named 'only_in_the_worker'")


MODELS = [
    Model("tests", "steps", "Sleeps in steps.", (Version("tests-steps-v1", Steps),)),
    Model("tests", "batched", "Shares one call between queued jobs.", (Version("tests-batched-v1", Batched),)),
    Model("tests", "file-echo", "Echoes a file input.", (Version("tests-file-echo-v1", FileEcho),)),
    Model("tests", "gated-copy", "Copies a file, halfway held.", (Version("tests-gated-copy-v1", GatedCopy),)),
    Model("tests", "weights", "Loads mapped weights; lists the loaded.", (Version("tests-weights-v1", Weights),)),
    Model("tests", "broken", "Fails in setup.", (Version("tests-broken-v1", BrokenSetup),)),
    Model("tests", "audio-length", "Decodes an audio input.", (Version("tests-audio-length-v1", AudioLength),)),
    Model("tests", "faulty", "Raises, runs out of memory or hangs.", (Version("tests-faulty-v1", Faulty),)),
    Model("tests", "which-thread", "Returns its worker thread.", (Version("tests-which-thread-v1", WhichThread),)),
    Model("tests", "crash", "Aborts, segfaults or exits.", (Version("tests-crash-v1", Crash),)),
    Model("tests", "unloadable", "Its code fails to load in a worker.", (Version("tests-unloadable-v1", Unloadable),)),
    Model("tests", "library-log", "Logs as a library would.", (Version("tests-library-log-v1", LibraryLog),)),
]
