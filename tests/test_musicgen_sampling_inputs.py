"""Sampling inputs too extreme to sample with fail their own MusicGen generation, never the batch.

Every MusicGen prediction of a checkpoint runs in one continuous batch. The schema takes any
finite ``temperature`` and any integer ``classifier_free_guidance``, as Replicate's does; but at a
temperature of 1e-300 the logits overflow and the probabilities are NaN, and a guidance of 10**400
fits no float. Such a row cannot be sampled: it ends with its own error, and the generations beside
it, other clients' included, go on. (Before, the error left the batch's step, and the server
failed every prediction in the batch with it.)
"""

from __future__ import annotations

import pytest
import torch

from harness import SAMPLED, generation
from overture.models.musicgen.batching import ContinuousBatch
from overture.models.musicgen.checkpoint import MusicgenCheckpoint, load_checkpoint
from overture.models.musicgen.request import Sampling
from overture.testing import tiny_checkpoint

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> MusicgenCheckpoint:
    return load_checkpoint(tiny_checkpoint("musicgen", tmp_path_factory.mktemp("musicgen")), "cpu", torch.float32)


@pytest.mark.parametrize(
    ("extreme", "error"),
    [
        (
            Sampling(top_k=250, top_p=0.0, temperature=1e-300, guidance=3),
            "Could not sample with temperature=1e-300 and classifier_free_guidance=3",
        ),
        (
            Sampling(top_k=250, top_p=0.0, temperature=1.0, guidance=10**400),
            "Could not sample with temperature=1.0 and classifier_free_guidance=an integer of 401 digits",
        ),
    ],
    ids=["temperature", "guidance"],
)
def test_a_row_that_cannot_be_sampled_ends_alone(checkpoint: MusicgenCheckpoint, extreme: Sampling, error: str) -> None:
    frames = checkpoint.frames(1)
    alone = ContinuousBatch(checkpoint)
    alone.join(generation(checkpoint, 0, frames, SAMPLED))
    ((_, expected),) = _run_to_the_end(alone)

    batch = ContinuousBatch(checkpoint)
    neighbour, broken = generation(checkpoint, 0, frames, SAMPLED), generation(checkpoint, 1, frames, extreme)
    batch.join(neighbour)
    batch.join(broken)
    results = dict(_run_to_the_end(batch))
    assert isinstance(results[broken], ValueError) and str(results[broken]).startswith(error), results[broken]
    # The neighbour's codes are those it gets alone: the broken row took nothing from it.
    assert torch.equal(results[neighbour], expected)


def _run_to_the_end(batch: ContinuousBatch) -> list[tuple[object, object]]:
    ended = []
    while batch.rows:
        ended += batch.step()
    return ended
