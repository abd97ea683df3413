"""``overture/synth``: the built-in composer, served like any other model. Needs no weights.

A prompt becomes an ``Arrangement`` (``prompt``, with the genre defaults of ``styles``), an
arrangement plus a seed becomes a score (``score``, on the harmony of ``theory``), and the score
becomes a deterministic stereo track of drums, bass, chords and a melody (``render``, playing
``instruments`` through ``effects``). Pure numpy/scipy and no weights, so it runs anywhere and fast:
one-shot drum samples and note waveforms are synthesized once per render (wavetables, FM, filtered
noise) and placed with slice-adds on a strict sixteenth-note grid.
"""

from __future__ import annotations

from overture.models.base import Model, Version
from overture.models.synth.predictor import SynthPredictor

SYNTH_VERSION = "5a7e0c3f1b9d48e2a6c4f0b8d2e6a1c3f5b7d9e0a2c4e6f8b1d3f5a7c9e1b3d5"

SYNTH = Model(
    owner="overture",
    name="synth",
    description="Built-in algorithmic composer: drums, bass, chords and a lead line from a text prompt. "
    "Needs no weights; the default for demos, tests and load tests.",
    versions=(Version(id=SYNTH_VERSION, predictor=SynthPredictor, created_at="2026-11-23T00:00:00.000000Z"),),
)

MODELS = [SYNTH]
