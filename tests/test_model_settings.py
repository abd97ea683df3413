"""Each model package's settings: plain dataclasses that reach the predictor, and survive pickling
(a worker process receives them over a pipe)."""

from __future__ import annotations

import pickle
from pathlib import Path

from overture.config import Settings
from overture.models.base import Predictor
from overture.models.musicgen.settings import MusicGenSettings
from overture.models.riffusion.settings import RiffusionSettings


def test_model_settings_survive_pickling() -> None:
    settings = Settings(
        model_settings={
            MusicGenSettings: MusicGenSettings(batch_memory_bytes=2**30, batch_slots=4),
            RiffusionSettings: RiffusionSettings(seed_images=Path("/srv/seeds")),
        }
    )
    assert pickle.loads(pickle.dumps(settings.model_settings)) == settings.model_settings
    assert pickle.loads(pickle.dumps(settings.checkpoints)) == settings.checkpoints


def test_a_predictor_reads_its_own_settings_or_their_defaults() -> None:
    given = MusicGenSettings(batch_slots=4)
    predictor = Predictor(model_settings={MusicGenSettings: given})
    assert predictor.own_settings(MusicGenSettings) is given
    assert predictor.own_settings(RiffusionSettings) == RiffusionSettings()
