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


def hub_id(model_version: str) -> str:
    return f"facebook/musicgen-{model_version}"


def musicgen_weights(repo: str) -> HubWeights:
    return HubWeights(repo, FILES)


def weights_by_model_version(model_versions: Iterable[str]) -> Mapping[str, HubWeights]:
    return {model_version: musicgen_weights(hub_id(model_version)) for model_version in model_versions}
