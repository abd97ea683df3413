"""The ``meta/musicgen`` predictor: Replicate's inputs in, a WAV or MP3 file out.

Predictions join the running batch of their checkpoint as soon as they are admitted, and leave it
when done (see ``batching``); each keeps its own seed, so its audio is the same alone or batched.
The heavy lifting (torch, transformers) is imported on the first prediction, not with the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overture.errors import CheckpointMissing
from overture.models.base import Context, ContinuousPredictor
from overture.models.musicgen.request import MAX_WINDOW_SECONDS, WINDOW_STRIDE_SECONDS, Request, hub_id
from overture.models.musicgen.settings import MusicGenSettings
from overture.models.musicgen.weights import weights_by_model_version
from overture.models.schema import Input
from overture.runtime.checkpoints import Checkpoints

if TYPE_CHECKING:
    from overture.models.musicgen.batching import ContinuousBatch, Generation
    from overture.models.musicgen.runner import Prepared

log = logging.getLogger("overture")

#: Room kept for a melody model's text in its decoder prefix before the prompt is tokenized.
TEXT_TOKENS_ESTIMATE = 64


class MusicgenPredictor(ContinuousPredictor):
    """Shared by every version (one pool, one running batch per checkpoint); each version's
    subclass declares its inputs (see ``predictor_for``)."""

    pool = "meta/musicgen"

    def __init__(self, checkpoints: Checkpoints | None = None, model_settings: Mapping[type, Any] | None = None):
        super().__init__(checkpoints, model_settings)
        self.settings = self.own_settings(MusicGenSettings)
        #: The running batch of each served checkpoint, while it has generations.
        self._batches: dict[str, ContinuousBatch] = {}
        self._running: dict[Generation, tuple[Prepared, Callable[[Any], None]]] = {}

    @classmethod
    def jobs_at_once(cls, model_settings: Mapping[type, Any]) -> int:
        # Classifier-free guidance, on by default, takes two rows per prediction.
        found = model_settings.get(MusicGenSettings)
        slots = found.batch_slots if isinstance(found, MusicGenSettings) else MusicGenSettings().batch_slots
        return max(1, slots // 2)

    @classmethod
    def prepare_machine(cls, checkpoints: Checkpoints, model_version: str, model_settings: Mapping[type, Any]) -> str:
        from overture.models.musicgen.runner import prepare_kernels

        found = model_settings.get(MusicGenSettings)
        settings = found if isinstance(found, MusicGenSettings) else MusicGenSettings()
        return prepare_kernels(checkpoints, hub_id(model_version), settings.batch_slots).summary()

    @classmethod
    def model_key(cls, inputs: dict[str, Any], checkpoints: Checkpoints) -> str | None:
        # As ``runner.load`` keys the LRU: by the checkpoint served after the operator's substitutions.
        try:
            return checkpoints.served(hub_id(inputs["model_version"]))
        except CheckpointMissing:
            return None  # admit fails it at once, wherever it goes

    @classmethod
    def is_deterministic(cls, inputs: dict[str, Any]) -> bool:
        # Seed 0 is random too (Replicate's quirk), so only positive seeds fix the output.
        seed = inputs.get("seed")
        return seed is not None and seed > 0

    def predict_one(self, ctx: Context, inputs: dict[str, Any]) -> Path:
        result = self.predict_batch([(ctx, inputs)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # -- ContinuousPredictor -------------------------------------------------------------------

    def has_room(self, inputs: dict[str, Any]) -> bool:
        try:
            batch = self._batches.get(self.checkpoints.served(hub_id(inputs["model_version"])))
        except CheckpointMissing:
            return True  # admit fails it at once
        if batch is None:
            return True
        checkpoint = batch.checkpoint
        slots = 1 if inputs["classifier_free_guidance"] == 1 else 2
        prefix = checkpoint.chroma_length + TEXT_TOKENS_ESTIMATE if checkpoint.melody else 0
        return batch.has_room(slots, batch.positions_needed(checkpoint.frames(inputs["duration"]), prefix))

    def admit(self, ctx: Context, inputs: dict[str, Any], done: Callable[[Any], None]) -> None:
        from overture.models.musicgen.batching import ContinuousBatch
        from overture.models.musicgen.runner import load, prepare

        request = Request.parse(inputs)
        checkpoint = load(self.checkpoints, request.hub_id, ctx, self.settings.batch_slots)
        prepared = prepare(checkpoint, ctx, request)
        served = self.checkpoints.served(request.hub_id)
        batch = self._batches.get(served)
        if batch is None or batch.checkpoint is not checkpoint:
            batch = self._batches[served] = ContinuousBatch(
                checkpoint, self.settings.batch_memory_bytes, self.settings.batch_slots
            )
        windows = ""
        if request.duration > MAX_WINDOW_SECONDS:
            windows = f" in windows of {MAX_WINDOW_SECONDS} s, each {WINDOW_STRIDE_SECONDS} s after the last"
        company = f", joining {len(batch.rows)} running generation(s)" if batch.rows else ""
        ctx.log(f"Generating {request.duration} s{windows}{company}")
        if prepared.stream is not None:
            prepared.generation.on_frames = prepared.publish
        batch.join(prepared.generation)
        self._running[prepared.generation] = (prepared, done)

    def busy(self) -> bool:
        return bool(self._running)

    def step(self) -> None:
        # Audio is decoded and written here, between steps, not on a thread beside the loop: a
        # second thread running torch gets its own OpenMP team, and while two teams exist libgomp
        # stops spinning between parallel regions, which made every step ~1.8x slower on CPU.
        for batch in [batch for batch in self._batches.values() if batch.rows]:
            try:
                ended = batch.step()
            except Exception as exc:  # the shared step failed (e.g. out of memory): its rows fail
                ended = batch.abort(exc)
            for generation, result in ended:
                prepared, done = self._running.pop(generation)
                self._finish(prepared, result, done)
        # An idle batch holds no buffers, but it holds its checkpoint: let the LRU decide about that.
        self._batches = {served: batch for served, batch in self._batches.items() if batch.rows}

    def _finish(self, prepared: Prepared, result: Any, done: Callable[[Any], None]) -> None:
        try:
            if not isinstance(result, BaseException):
                try:
                    result = prepared.write_output(result)
                except Exception as exc:  # this prediction's output failed, not its neighbours'
                    result = exc
            done(result)
        except Exception:
            pid = prepared.ctx.prediction_id
            log.exception("could not record the result of prediction %s", pid, extra={"prediction_id": pid})


def predictor_for(model_versions: tuple[str, ...]) -> type[MusicgenPredictor]:
    """A predictor whose ``model_version`` offers these choices; the rest of the inputs are
    Replicate's, word for word (the golden schema test holds them to it)."""

    class VersionPredictor(MusicgenPredictor):
        weights = weights_by_model_version(model_versions)

        def predict(
            self,
            ctx: Context,
            model_version: str = Input(
                description="Model to use for generation", default="stereo-melody-large", choices=list(model_versions)
            ),
            prompt: str = Input(description="A description of the music you want to generate.", default=None),
            input_audio: Path = Input(
                description="An audio file that will influence the generated music. If `continuation` is `True`, the "
                "generated music will be a continuation of the audio file. Otherwise, the generated music will mimic "
                "the audio file's melody.",
                default=None,
            ),
            duration: int = Input(description="Duration of the generated audio in seconds.", default=8),
            continuation: bool = Input(
                description="If `True`, generated music will continue from `input_audio`. Otherwise, generated music "
                "will mimic `input_audio`'s melody.",
                default=False,
            ),
            continuation_start: int = Input(
                description="Start time of the audio file to use for continuation.", default=0, ge=0
            ),
            continuation_end: int = Input(
                description="End time of the audio file to use for continuation. If -1 or None, will default to the "
                "end of the audio clip.",
                default=None,
                ge=0,
            ),
            multi_band_diffusion: bool = Input(
                description="If `True`, the EnCodec tokens will be decoded with MultiBand Diffusion. Only works with "
                "non-stereo models.",
                default=False,
            ),
            normalization_strategy: str = Input(
                description="Strategy for normalizing audio.",
                default="loudness",
                choices=["loudness", "clip", "peak", "rms"],
            ),
            top_k: int = Input(description="Reduces sampling to the k most likely tokens.", default=250),
            top_p: float = Input(
                description="Reduces sampling to tokens with cumulative probability of p. When set to  `0` (default), "
                "top_k sampling is used.",
                default=0.0,
            ),
            temperature: float = Input(
                description="Controls the 'conservativeness' of the sampling process. Higher temperature means more "
                "diversity.",
                default=1.0,
            ),
            classifier_free_guidance: int = Input(
                description="Increases the influence of inputs on the output. Higher values produce lower-varience "
                "outputs that adhere more closely to inputs.",
                default=3,
            ),
            output_format: str = Input(
                description="Output format for generated audio.", default="wav", choices=["wav", "mp3"]
            ),
            seed: int = Input(
                description="Seed for random number generator. If None or -1, a random seed will be used.", default=None
            ),
        ) -> Path:
            return self.predict_one(
                ctx,
                {
                    "model_version": model_version,
                    "prompt": prompt,
                    "input_audio": input_audio,
                    "duration": duration,
                    "continuation": continuation,
                    "continuation_start": continuation_start,
                    "continuation_end": continuation_end,
                    "multi_band_diffusion": multi_band_diffusion,
                    "normalization_strategy": normalization_strategy,
                    "top_k": top_k,
                    "top_p": top_p,
                    "temperature": temperature,
                    "classifier_free_guidance": classifier_free_guidance,
                    "output_format": output_format,
                    "seed": seed,
                },
            )

    return VersionPredictor
