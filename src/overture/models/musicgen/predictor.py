"""The ``meta/musicgen`` predictor: Replicate's inputs in, a WAV or MP3 file out.

A batch from the engine is split into groups that can share a decoding loop (same checkpoint,
duration and sampling settings); each prediction keeps its own seed, so its audio is the same
alone or batched. The heavy lifting (torch, transformers) is imported on the first prediction.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from overture.models.base import Context, Predictor
from overture.models.musicgen.request import Request
from overture.models.schema import Input


class MusicgenPredictor(Predictor):
    """Shared by every version; each version's subclass declares its inputs (see ``predictor_for``)."""

    max_batch_size = 4

    @classmethod
    def batch_key(cls, inputs: dict[str, Any]) -> Hashable:
        sampling = ("top_k", "top_p", "temperature", "classifier_free_guidance")
        return (inputs["model_version"], inputs["duration"], *(inputs[name] for name in sampling))

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

    def predict_batch(self, jobs: Sequence[tuple[Context, dict[str, Any]]]) -> list[Any]:
        from overture.models.musicgen.runner import run_group

        results: list[Any] = [None] * len(jobs)
        groups: dict[Hashable, list[int]] = {}
        requests: dict[int, Request] = {}
        for index, (_, inputs) in enumerate(jobs):
            try:
                requests[index] = Request.parse(inputs)
            except ValueError as exc:
                results[index] = exc
                continue
            groups.setdefault(requests[index].batch_key, []).append(index)
        for indices in groups.values():
            outputs = run_group(self.checkpoints, [(jobs[i][0], requests[i]) for i in indices])
            for index, output in zip(indices, outputs, strict=True):
                results[index] = output
        return results


def predictor_for(model_versions: tuple[str, ...]) -> type[MusicgenPredictor]:
    """A predictor whose ``model_version`` offers these choices; the rest of the inputs are
    Replicate's, word for word (the golden schema test holds them to it)."""

    class VersionPredictor(MusicgenPredictor):
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
