"""The seed spectrograms that ``seed_image_id`` names.

The ids are Replicate's (riffusion's ``seed_images/*.png`` stems), but the images are Overture's
own: riffusion's files are not part of this project. ``make_seed_images.py`` draws them; an
operator can serve others under the same ids from a directory of ``<id>.png`` files
(``overture serve --riffusion-seed-images DIR``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from PIL import Image

#: Sorted, as riffusion lists its files; the ``mask_*`` ones are masks it also accepts as seeds.
SEED_IMAGE_IDS = (
    "agile",
    "marim",
    "mask_beat_lines_80",
    "mask_gradient_dark",
    "mask_gradient_top_70",
    "mask_gradient_top_fifth_75",
    "mask_top_third_75",
    "mask_top_third_95",
    "motorway",
    "og_beat",
    "vibes",
)
#: Riffusion's image size: 512 mel bins high, 512 10-ms frames wide.
SIZE = (512, 512)


def seed_image_path(image_id: str, directory: Path | None = None) -> Path:
    """The ``<id>.png`` of the operator's ``directory`` when it has one, else Overture's own."""
    if image_id not in SEED_IMAGE_IDS:
        raise ValueError(f"unknown seed image {image_id!r}; expected one of {', '.join(SEED_IMAGE_IDS)}")
    if directory is not None:
        candidate = directory / f"{image_id}.png"
        if candidate.is_file():
            return candidate
    return Path(str(resources.files(__package__) / "images" / f"{image_id}.png"))


def load_seed_image(image_id: str, directory: Path | None = None) -> Image.Image:
    """The seed as 512×512 RGB; other sizes are scaled, as riffusion's images all have this one."""
    with Image.open(seed_image_path(image_id, directory)) as image:
        rgb = image.convert("RGB")
    return rgb if rgb.size == SIZE else rgb.resize(SIZE, Image.Resampling.BICUBIC)
