"""Tokenizers for the tiny checkpoints, built in code: the real vocabularies ship with the real
checkpoints, and building them offline needs files that no installed package carries.

They keep the real formats (T5's Unigram pieces ending in ``</s>``, CLIP's byte-level BPE framed by
start and end tokens) with small vocabularies, so that a tiny checkpoint saves and loads them
through the same ``from_pretrained`` path as a hub snapshot. Their ids differ from the real ones,
which only matters with real weights, and those bring their own tokenizer.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, T5Tokenizer

# Words a test prompt is likely to use get their own piece; anything else spells out in characters.
_WORDS = (
    "music beat drums bass guitar piano synth strings choir lead leads pad ambient chill lofi hip hop rock jazz pop "
    "electronic dance techno house orchestral epic arrangement melody upbeat happy sad dark energetic slow fast with "
    "and a the of in riff song drone"
)


def t5_tokenizer(model_max_length: int = 512) -> T5Tokenizer:
    """A T5-format tokenizer (Unigram pieces, ``</s>`` appended, 100 extra ids, as t5-base has).

    ``model_max_length`` is what pipelines pad and truncate prompts to: 512 for t5-base, 128 in
    Stable Audio Open's copy of it.
    """
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + word, -5.0) for word in _WORDS.split()]
    vocab += [(char, -8.0) for char in string.ascii_letters + string.digits + string.punctuation]
    vocab += [("\u2581" + char, -9.0) for char in string.ascii_lowercase]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    return T5Tokenizer(vocab=vocab, extra_ids=100, model_max_length=model_max_length)


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP's byte-level BPE format with single characters only (the real vocabulary has 49408
    merged pieces), padding and truncating to CLIP's 77 tokens."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    characters = list(bytes_to_unicode().values())
    pieces = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={piece: i for i, piece in enumerate(pieces)}, merges=[], model_max_length=77)
