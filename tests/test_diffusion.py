"""Where the diffusers models' weights come from: what a download fetches of a hub repo, and what a
missing checkpoint tells the operator.

The hub is out of reach in tests, so ``snapshot_download`` is stood in for by a copy of a local
"repo" that keeps only the files huggingface_hub's own pattern filter selects, which is what a
download with those patterns does. The repo is a tiny checkpoint plus stand-ins for the files the
real repos hold beside the pipeline's.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import huggingface_hub
import pytest
from huggingface_hub.utils import filter_repo_objects

from overture.errors import CheckpointMissing
from overture.models import riffusion, stable_audio
from overture.runtime.checkpoints import Checkpoints
from overture.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

#: family → (model module, files of the real repo that the pipeline does not load).
REPOS: dict[str, tuple[ModuleType, tuple[str, ...]]] = {
    # Stable Audio Open keeps its weights twice more at the top, for stable-audio-tools.
    "stable-audio": (stable_audio, ("model.ckpt", "model.safetensors", "model_config.json", "LICENSE.md")),
    "riffusion": (
        riffusion,
        (
            "riffusion-model-v1.ckpt",
            "safety_checker/pytorch_model.bin",
            "feature_extractor/preprocessor_config.json",
            "unet_traced/unet_traced.pt",
            "unet/diffusion_flax_model.msgpack",
        ),
    ),
}


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("family", REPOS)
def test_a_download_fetches_only_what_the_pipeline_loads(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, unused = REPOS[family]
    repo = tiny_checkpoint(family, tmp_path / "repo")
    pipeline_files = files_under(repo)
    for name in unused:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(b"not loaded")
    downloaded = tmp_path / "download"

    def snapshot_download(
        repo_id: str,
        *,
        revision: str = "main",
        local_files_only: bool = False,
        allow_patterns: Sequence[str] | None = None,
        ignore_patterns: Sequence[str] | None = None,
    ) -> str:
        assert repo_id == module.HUB_ID
        for name in filter_repo_objects(
            files_under(repo), allow_patterns=allow_patterns, ignore_patterns=ignore_patterns
        ):
            (downloaded / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(repo / name, downloaded / name)
        return str(downloaded)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    pipe = module.load(Checkpoints())
    assert files_under(downloaded) == pipeline_files
    assert set(pipe.components) >= set(module.COMPONENTS)


@pytest.mark.parametrize("family", REPOS)
def test_a_missing_checkpoint_says_how_to_provide_it(family: str) -> None:
    module, _ = REPOS[family]
    with pytest.raises(CheckpointMissing) as missing:
        module.load(Checkpoints())
    message = str(missing.value)
    assert f"--checkpoint {module.HUB_ID}=/path/to/dir" in message
    # Stable Audio Open is gated on the hub: the message says how to get access.
    assert ("HF_TOKEN" in message) == (module is stable_audio)
