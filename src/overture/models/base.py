"""How a model declares itself and what a predictor sees of the engine.

The worker interface is deliberately narrow: a predictor gets validated inputs (files already
local) and a ``Context`` for logs, progress, cancel checks and scratch space; it returns JSON-able
output in which ``pathlib.Path`` values are output files. Nothing here knows about HTTP or the
database, so a later worker can run in another process or on another machine.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from overture.models.schema import InputSchema, openapi_document
from overture.runtime.checkpoints import Checkpoints
from overture.runtime.weights import HubWeights

S = TypeVar("S")


#: The variant name of a model whose versions load one set of weights.
DEFAULT_WEIGHTS = "default"


class Canceled(BaseException):
    """Raised by ``Context.check_canceled``; a BaseException so ``except Exception`` can't swallow it."""


class Context(Protocol):
    prediction_id: str
    #: Whether partial outputs are wanted; models skip the work of making them otherwise.
    streaming: bool

    def log(self, message: str) -> None:
        """Append a line to the prediction's logs while it runs."""

    def progress(self, done: int, total: int) -> None:
        """Report progress as a tqdm-style line, which the client parses into ``prediction.progress``."""

    def check_canceled(self) -> None:
        """Raise ``Canceled`` when the prediction was canceled; call it between steps."""

    def scratch_path(self, filename: str) -> Path:
        """A writable path for an output file; return it (as a Path) in the output to publish it."""

    def partial(self, value: Any) -> None:
        """Publish output ready before the end (e.g. a finished section's audio file, as a Path);
        it reaches stream subscribers and ``output`` webhooks at once."""


class Predictor:
    """Base class for a model version's code; ``predict`` declares the inputs Cog-style.

    Subclasses define ``predict(self, ctx, <name>: <type> = Input(...), ...)``. A predictor that can
    share a forward pass across predictions sets ``max_batch_size`` above 1 and overrides
    ``predict_batch``; the engine then hands it every compatible queued job at once.
    """

    output_schema: ClassVar[dict[str, Any]] = {"type": "string", "format": "uri", "title": "Output"}
    max_batch_size: ClassVar[int] = 1
    #: Worker threads sharing one instance; >1 only for thread-safe predictors.
    concurrency: ClassVar[int] = 1
    #: Versions whose predictors name the same pool share one queue, its workers and one instance
    #: (the first version's), so that their predictions can batch together.
    pool: ClassVar[str | None] = None
    #: The weights each variant loads, by ``model_version`` (``DEFAULT_WEIGHTS`` for a model with
    #: one set): the declaration that its loading code and ``overture pull`` both read.
    weights: ClassVar[Mapping[str, HubWeights]] = {}
    #: Whether the model runs faster on a GPU: on a Ray cluster with GPUs its actors reserve one.
    uses_gpu: ClassVar[bool] = True

    def __init__(self, checkpoints: Checkpoints | None = None, model_settings: Mapping[type, Any] | None = None):
        #: Where weights come from and which loaded models stay in memory.
        self.checkpoints = checkpoints or Checkpoints()
        #: Each model package's settings dataclass by its class (``Settings.model_settings``): plain
        #: data, so that a worker process can receive it pickled. Read yours with ``own_settings``.
        self.model_settings = dict(model_settings or {})

    def own_settings(self, kind: type[S]) -> S:
        """This model's settings as the operator gave them, else its dataclass's defaults."""
        found = self.model_settings.get(kind)
        return found if isinstance(found, kind) else kind()

    @classmethod
    def jobs_at_once(cls, model_settings: Mapping[type, Any]) -> int:
        """How many predictions one instance runs side by side: a router fills one instance up to
        this before it sends work to another, so that batches stay on one device."""
        return cls.max_batch_size * cls.concurrency

    @classmethod
    def prepare_machine(cls, checkpoints: Checkpoints, model_version: str, model_settings: Mapping[type, Any]) -> str:
        """Work that depends only on this machine and a variant's weights, done once when they are
        pulled so that the server's first load skips it (MusicGen measures its CPU kernels); says
        what it did, or "" for nothing."""
        return ""

    def setup(self) -> None:
        """Load weights once, before the first prediction."""

    # ``*args: Any, **inputs: Any`` is how a type checker reads "any signature", so that each
    # subclass may declare its own ``Input(...)`` parameters; the engine passes inputs by keyword.
    def predict(self, ctx: Context, *args: Any, **inputs: Any) -> Any:
        raise NotImplementedError

    def predict_batch(self, jobs: Sequence[tuple[Context, dict[str, Any]]]) -> list[Any]:
        """Run several predictions; an item may be an exception, which fails only that prediction."""
        results: list[Any] = []
        for ctx, inputs in jobs:
            try:
                results.append(self.predict(ctx, **inputs))
            except (Exception, Canceled) as exc:  # one prediction's end must not end the others
                results.append(exc)
        return results

    @classmethod
    def batch_key(cls, inputs: dict[str, Any]) -> Hashable:
        """Jobs with equal keys may share a batch."""
        return None

    @classmethod
    def model_key(cls, inputs: dict[str, Any], checkpoints: Checkpoints) -> str | None:
        """The key these inputs' weights are loaded under (the one ``ModelLoaded`` reports), so
        that a router can send the job where they are loaded already; None for a predictor with
        one set of weights, where any loaded model is its own."""
        return None

    @classmethod
    def check_inputs(cls, raw: Mapping[str, Any], values: dict[str, Any]) -> list[tuple[str, str]]:
        """``(field, message)`` for each rule that spans fields, checked at create time so that the
        client gets a 422 rather than a failed prediction; ``raw`` tells what the client gave."""
        return []

    @classmethod
    def is_deterministic(cls, inputs: dict[str, Any]) -> bool:
        """True when these inputs fix the output, so a stored result may be reused."""
        seed = inputs.get("seed")
        return seed is not None and seed >= 0


class ContinuousPredictor(Predictor):
    """A predictor with a running loop that predictions join and leave at any step (continuous
    batching), instead of waiting for a whole batch to finish.

    The engine's worker admits the oldest queued job whenever ``has_room`` says it fits and calls
    ``step`` in between; each prediction's result comes back once through its ``done`` callback.
    Keep the work on the worker's thread: a second thread running torch gets its own OpenMP team,
    and while two exist every parallel region of the loop waits for its threads to wake.
    """

    def has_room(self, inputs: dict[str, Any]) -> bool:
        """Whether the loop can take this prediction now (e.g. within its memory budget)."""
        return True

    def admit(self, ctx: Context, inputs: dict[str, Any], done: Callable[[Any], None]) -> None:
        """Join the loop; raising fails this prediction alone."""
        raise NotImplementedError

    def busy(self) -> bool:
        """Whether some admitted prediction has not been handed to ``done`` yet."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance the loop; never raises (a failure ends the predictions it touched)."""
        raise NotImplementedError

    def predict_batch(self, jobs: Sequence[tuple[Context, dict[str, Any]]]) -> list[Any]:
        """The loop run to completion over these jobs, for callers without a worker."""
        results: list[Any] = [None] * len(jobs)

        def done_at(index: int) -> Callable[[Any], None]:
            return lambda result: results.__setitem__(index, result)

        for index, (ctx, inputs) in enumerate(jobs):
            try:
                self.admit(ctx, inputs, done_at(index))
            except Exception as exc:  # a bad input fails its own prediction, not the batch
                results[index] = exc
        while self.busy():
            self.step()
        return results


@dataclass(frozen=True)
class Version:
    id: str
    predictor: type[Predictor]
    created_at: str = "2025-01-01T00:00:00.000000Z"
    #: Other ids this version answers to, e.g. ``melody`` beside a 64-hex id.
    aliases: tuple[str, ...] = ()

    @cached_property
    def inputs(self) -> InputSchema:
        return InputSchema.from_function(self.predictor.predict)

    @cached_property
    def openapi_schema(self) -> dict[str, Any]:
        return openapi_document(self.inputs, self.predictor.output_schema)


@dataclass(frozen=True)
class Model:
    owner: str
    name: str
    description: str
    #: Oldest first; the last one is ``latest_version``.
    versions: tuple[Version, ...]
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    created_at: str = "2025-01-01T00:00:00.000000Z"

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def latest_version(self) -> Version:
        return self.versions[-1]
