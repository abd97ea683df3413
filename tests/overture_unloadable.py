"""A model whose code loads in the server but not in its own worker process, as when a library the
model needs is missing where its worker runs (a CUDA library, a wheel built for another machine).
The workers of other models import this module too, and load it fine."""

from __future__ import annotations

import multiprocessing

from overture.models.base import Context, Predictor
from overture.models.schema import Input

if multiprocessing.current_process().name.endswith(" tests-unloadable-v1"):
    raise ImportError("libsynthesis.so.3: cannot open shared object file: No such file or directory")


class Unloadable(Predictor):
    output_schema = {"type": "string", "title": "Output"}

    def predict(self, ctx: Context, prompt: str = Input(default="")) -> str:
        return prompt
