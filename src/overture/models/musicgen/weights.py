"""What a ``facebook/musicgen-*`` checkpoint loads from its hub repo.

``load_checkpoint`` reads the config, the weights as safetensors (one file, or shards and their
index), the generation config ``from_pretrained`` reads beside them, and the T5 tokenizer. The repos
also hold the same weights as ``pytorch_model*.bin`` and audiocraft's ``state_dict.bin`` and
``compression_state_dict.bin``, and a processor config that Overture's own chroma extractor does
not need: fetching the whole repo would download the weights two or three times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from overture.runtime.weights import HubWeights

FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
)


#: Parameters of each published checkpoint (text encoder, decoder and codec), in millions. small,
#: medium, large, melody and stereo-small were counted from their configs (reference inference.md);
#: the others follow from those by construction: a stereo variant has four more codebooks (an
#: embedding of 2049 and a head of 2048 rows of ``hidden`` each), and melody-large is large without
#: the decoder's cross-attention (48 layers of four ``hidden``² projections).
PARAMETERS_M = {
    "small": 586.9,
    "medium": 2005.0,
    "large": 3424.0,
    "melody": 1552.0,
    "melody-large": 2618.7,
    "stereo-small": 603.7,
    "stereo-medium": 2030.2,
    "stereo-large": 3457.6,
    "stereo-melody": 1577.2,
    "stereo-melody-large": 2652.3,
}


def hub_id(model_version: str) -> str:
    return f"facebook/musicgen-{model_version}"


def musicgen_weights(repo: str) -> HubWeights:
    published = PARAMETERS_M.get(repo.removeprefix("facebook/musicgen-"))
    return HubWeights(repo, FILES, parameters=round(published * 1e6) if published is not None else None)


def weights_by_model_version(model_versions: Iterable[str]) -> Mapping[str, HubWeights]:
    return {model_version: musicgen_weights(hub_id(model_version)) for model_version in model_versions}
