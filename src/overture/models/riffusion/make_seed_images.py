"""Draw Overture's seed spectrograms for riffusion's 11 ``seed_image_id`` values.

    python -m overture.models.riffusion.make_seed_images [DIR]

Writes ``<id>.png`` (512×512, greyscale) into DIR, by default the package's ``images`` folder,
shipped as package data. Run it again after changing the synth only if the seeds should change
with it: the shipped files are what requests use.

The five musical ids are 5.11 s of the built-in synth playing a prompt that fits the name, turned
into riffusion's image by the forward transform. The ``mask_*`` ids are riffusion's inpainting
masks, which its Cog predictor also accepts as seeds; here they are drawn geometrically on white
(silence), and the number in the name is the shape's lightness in percent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from overture.models.riffusion.spectrogram import SpectrogramParams, image_from_audio
from overture.models.synth.prompt import parse_prompt
from overture.models.synth.render import SAMPLE_RATE, render

#: id → (synth prompt, seed) for the musical seeds.
PROMPTS = {
    "agile": ("energetic drum and bass, 174 bpm, synth lead", 1),
    "marim": ("playful marimba melody, 100 bpm", 2),
    "motorway": ("driving techno, 128 bpm, synth pads", 3),
    "og_beat": ("boom bap hip hop beat, 90 bpm, piano", 4),
    "vibes": ("chill lofi vibes with electric piano and bells", 5),
}
WIDTH = HEIGHT = 512


def musical_seed(prompt: str, seed: int) -> Image.Image:
    params = SpectrogramParams()
    samples = params.samples_for(WIDTH)
    stereo = np.concatenate(list(render(parse_prompt(prompt), samples / SAMPLE_RATE, seed)))
    return image_from_audio(stereo.mean(axis=1), params).convert("L")


def _lightness(percent: float) -> float:
    return 255 * percent / 100


def _grey(rows: np.ndarray) -> Image.Image:
    """An image from one lightness per row (top first), or a full (HEIGHT, WIDTH) array."""
    pixels = rows if rows.ndim == 2 else np.repeat(rows[:, None], WIDTH, axis=1)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), mode="L")


def _gradient(top: float, height: int) -> np.ndarray:
    """Rows fading from lightness ``top`` at the top edge to white after ``height`` rows."""
    rows = np.full(HEIGHT, 255.0)
    rows[:height] = np.linspace(top, 255.0, height)
    return rows


def _top_band(lightness: float, height: int) -> np.ndarray:
    rows = np.full(HEIGHT, 255.0)
    rows[:height] = lightness
    return rows


def _beat_lines(lightness: float, every: int = 50, width: int = 4) -> np.ndarray:
    """Vertical lines (broadband hits) every ``every`` frames: 120 bpm at 10 ms per frame."""
    pixels = np.full((HEIGHT, WIDTH), 255.0)
    for start in range(0, WIDTH, every):
        pixels[:, start : start + width] = lightness
    return pixels


def mask_seeds() -> dict[str, Image.Image]:
    return {
        "mask_beat_lines_80": _grey(_beat_lines(_lightness(80))),
        "mask_gradient_dark": _grey(_gradient(_lightness(20), HEIGHT)[::-1]),
        "mask_gradient_top_70": _grey(_gradient(_lightness(70), HEIGHT)),
        "mask_gradient_top_fifth_75": _grey(_gradient(_lightness(75), HEIGHT // 5)),
        "mask_top_third_75": _grey(_top_band(_lightness(75), HEIGHT // 3)),
        "mask_top_third_95": _grey(_top_band(_lightness(95), HEIGHT // 3)),
    }


def write_seed_images(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    images = {name: musical_seed(prompt, seed) for name, (prompt, seed) in PROMPTS.items()} | mask_seeds()
    paths = []
    for name, image in sorted(images.items()):
        path = directory / f"{name}.png"
        image.save(path, optimize=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images"
    for written in write_seed_images(target):
        print(written)
