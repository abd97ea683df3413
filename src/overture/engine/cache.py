"""The result cache: a seeded prediction whose version and input were seen before gets the stored
output again, instead of paying for the model twice."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from overture.engine.inputs import content_digest, file_values
from overture.models.base import Version
from overture.outputs import map_files
from overture.store.db import PredictionRow
from overture.store.store import Store


class ResultCache:
    def __init__(self, store: Store, enabled: bool):
        self.store = store
        self.enabled = enabled

    def key(self, version: Version, values: dict[str, Any], inputs: dict[str, Any]) -> str | None:
        """The key of these resolved ``inputs`` (``values`` as the client sent them tell which are
        files), or None when the output is not fixed by them and must not be reused."""
        if not (self.enabled and version.predictor.is_deterministic(inputs)):
            return None
        files = {name for name, _ in file_values(version.inputs, values)}
        # Same version and same input, with files compared by content, give the same key.
        canonical = {k: (f"sha256:{content_digest(v)}" if k in files else v) for k, v in inputs.items()}
        payload = json.dumps({"version": version.id, "input": canonical}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def replay(self, key: str, prediction_id: str) -> tuple[PredictionRow, Any] | None:
        """The earlier prediction with this key, and its output copied for ``prediction_id``."""
        hit = self.store.cached_result(key)
        if hit is None:
            return None
        return hit, map_files(hit.output, lambda ref: self.store.share_output(ref, prediction_id))
