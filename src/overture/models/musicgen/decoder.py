"""MusicGen's decoder stepped for a batch whose rows sit at different positions.

transformers' decoder gives the whole batch one position (its cache length) and grows its cache by
concatenation every step, so a row can neither join late nor leave early. Continuous batching
needs both, so this runs the same modules (embeddings, layers, heads: nothing is copied) over a
preallocated key/value buffer in which each row owns a slot and its own length: a row's next token
goes in at its own position and attends to its own keys only. The math is the decoder's, op for
op, so greedy codes equal ``generate``'s.

Rows are slots ``0..n-1`` of the buffer; the caller keeps them contiguous (``move`` fills a hole
left by a row that ended).

A row's logits must not depend on what else is in the batch, or a seeded prediction would sound
different alone and batched. Two kernels break that bitwise when used plainly:

- A matrix product of fewer than ``MIN_GEMM_ROWS`` rows takes MKL's matrix-vector path, which
  rounds differently from its matrix path, so steps are padded to that many rows (above it,
  ``F.linear`` is row-invariant on one thread only; ``overture.runtime.linear`` picks kernels that
  are, and says so when it cannot).
- Attention sums over the keys in vector-wide chunks, so a row's sums change with the number of
  keys it is given. Every row therefore attends over its keys padded to a whole ``TIME_QUANTUM``
  and masked beyond its own: the padding adds exact zeros to whole chunks, so the batch's longest
  row, which sets how far all rows are padded, changes nothing. This makes one batched call per
  layer equal, bitwise, to the row alone (``tests/test_musicgen_batching.py`` holds it to that);
  torch's fused attention with the same mask is not, on two threads.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: Buffers grow, and attention pads keys, in steps of this many positions: a multiple of every
#: vector width, so that padding adds whole chunks of zeros (see the module docstring).
TIME_QUANTUM = 64
#: Fewest rows a step's matrix products run with (see the module docstring).
MIN_GEMM_ROWS = 4


def _quantized(positions: int) -> int:
    """``positions`` rounded up to a whole number of ``TIME_QUANTUM``."""
    return -(-positions // TIME_QUANTUM) * TIME_QUANTUM


class SlotCache:
    """Self-attention keys/values per layer, (slots, heads, time, head_dim); for text-conditioned
    models also the cross-attention keys/values of each slot's text.

    Each dimension grows only when asked for more of it (slots doubling up to ``max_slots``,
    positions by ``TIME_QUANTUM``), and ``fit`` gives memory back after a burst, so that the
    buffers stay close to what the rows in them need."""

    def __init__(
        self,
        layers: int,
        heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        max_slots: int | None = None,
    ):
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.dtype, self.device = dtype, device
        self.max_slots = max_slots
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.cross_keys: list[torch.Tensor] = []
        self.cross_values: list[torch.Tensor] = []
        #: Filled positions per slot.
        self.lengths: list[int] = []
        #: Text tokens per slot; 0 for a slot with no text (cross-attention over it adds nothing).
        self.text_lengths: list[int] = []

    @property
    def capacity(self) -> tuple[int, int, int]:
        """(slots, positions, text tokens) the buffers hold without growing."""
        if not self.keys:
            return 0, 0, 0
        return self.keys[0].shape[0], self.keys[0].shape[2], self.cross_keys[0].shape[2]

    def nbytes(self, slots: int, positions: int, text: int = 0) -> int:
        """Memory of buffers with that capacity."""
        return 2 * self.layers * self.heads * self.head_dim * slots * (positions + text) * self.dtype.itemsize

    def planned(self, slots: int, positions: int, text: int = 0) -> tuple[int, int, int]:
        """The capacity ``reserve(slots, positions, text)`` ends with."""
        have_slots, have_positions, have_text = self.capacity
        if slots > have_slots:
            doubled = 2 * have_slots if self.max_slots is None else min(2 * have_slots, self.max_slots)
            slots = max(slots, doubled)
        else:
            slots = have_slots
        if positions > have_positions:
            positions = _quantized(positions)
        else:
            positions = have_positions
        return slots, positions, _quantized(text) if text > have_text else have_text

    def peak_bytes(self, slots: int, positions: int, text: int = 0) -> int:
        """Memory while ``reserve(slots, positions, text)`` runs: a growth copies into new buffers
        while the old ones are still held."""
        planned = self.planned(slots, positions, text)
        if planned == self.capacity:
            return self.nbytes(*planned)
        return self.nbytes(*planned) + self.nbytes(*self.capacity)

    def reserve(self, slots: int, positions: int, text: int = 0) -> None:
        """Make room for ``slots`` rows of ``positions`` positions and ``text`` text tokens."""
        planned = self.planned(slots, positions, text)
        if planned != self.capacity:
            self._resize(*planned)

    def fit(self, positions: int) -> None:
        """Shrink buffers that hold more than four times what the slots in use need (``positions``
        each): a burst of rows or one long window should not keep its memory for good."""
        slots = len(self.lengths)
        needed = self.nbytes(slots, positions, self.capacity[2])
        if self.nbytes(*self.capacity) > 4 * needed:
            self._resize(slots, _quantized(positions), self.capacity[2])

    def _resize(self, slots: int, positions: int, text: int) -> None:
        """New buffers of exactly this capacity, holding what the slots in use have filled."""
        used = len(self.lengths)
        filled = max(self.lengths, default=0)
        self.keys = [self._copy(t, slots, positions, used, filled) for t in self._or_empty(self.keys)]
        self.values = [self._copy(t, slots, positions, used, filled) for t in self._or_empty(self.values)]
        self.cross_keys = [self._copy(t, slots, text, used, text) for t in self._or_empty(self.cross_keys)]
        self.cross_values = [self._copy(t, slots, text, used, text) for t in self._or_empty(self.cross_values)]

    def _or_empty(self, buffers: list[torch.Tensor]) -> list[torch.Tensor | None]:
        return list(buffers) or [None] * self.layers

    def _copy(self, tensor: torch.Tensor | None, slots: int, time: int, used: int, filled: int) -> torch.Tensor:
        new = torch.zeros(slots, self.heads, time, self.head_dim, dtype=self.dtype, device=self.device)
        if tensor is not None:
            used, filled = min(used, tensor.shape[0]), min(filled, time, tensor.shape[2])
            new[:used, :, :filled] = tensor[:used, :, :filled]
        return new

    def add_slot(self) -> int:
        self.lengths.append(0)
        self.text_lengths.append(0)
        return len(self.lengths) - 1

    def move(self, source: int, target: int) -> None:
        """Slot ``source`` becomes slot ``target`` (whose row has ended); the last slot is dropped."""
        if source != target:
            used = self.lengths[source]
            for buffers in (self.keys, self.values):
                for tensor in buffers:
                    tensor[target, :, :used] = tensor[source, :, :used]
            text = self.text_lengths[source]
            for buffers in (self.cross_keys, self.cross_values):
                for tensor in buffers:
                    tensor[target, :, :text] = tensor[source, :, :text]
            self.lengths[target] = used
            self.text_lengths[target] = text
        self.lengths.pop()
        self.text_lengths.pop()

    def clear(self) -> None:
        """Free the buffers (nothing is running)."""
        self.keys, self.values, self.cross_keys, self.cross_values = [], [], [], []
        self.lengths, self.text_lengths = [], []


class StepDecoder:
    """The decoder of a loaded ``MusicgenForConditionalGeneration`` (or its melody variant), with
    ``prefill`` for a joining row's known prefix and ``step`` for one token of every row."""

    def __init__(self, model: Any):
        causal_lm = model.decoder
        core = causal_lm.model.decoder
        self.embed_tokens = core.embed_tokens
        self.layers = core.layers
        self.final_norm = core.layer_norm
        self.heads = causal_lm.lm_heads
        self.embed_positions = core.embed_positions
        config = causal_lm.config
        self.hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.hidden // self.num_heads
        #: Melody models put text and chroma in front of the audio tokens instead.
        self.cross_attention = hasattr(self.layers[0], "encoder_attn")
        parameter = next(causal_lm.parameters())
        self.dtype, self.device = parameter.dtype, parameter.device
        self._positions = self.embed_positions.weights.to(self.dtype)

    def new_cache(self, max_slots: int | None = None) -> SlotCache:
        return SlotCache(len(self.layers), self.num_heads, self.head_dim, self.dtype, self.device, max_slots)

    def positions(self, index: torch.Tensor) -> torch.Tensor:
        """Sinusoidal embeddings at ``index``, grown on demand as the model's own table is."""
        needed = int(index.max()) + 1
        if needed > self._positions.shape[0]:
            table = self.embed_positions.get_embedding(needed, self.hidden)
            self._positions = table.to(self.dtype).to(self.device)
        return self._positions[index]

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes (rows, codebooks, length) → summed codebook embeddings (rows, length, hidden)."""
        return sum(embed(tokens[:, k]) for k, embed in enumerate(self.embed_tokens))

    @torch.inference_mode()
    def set_text(self, cache: SlotCache, slot: int, states: torch.Tensor | None, mask: torch.Tensor | None) -> None:
        """Store a slot's cross-attention keys/values for text ``states`` (tokens, hidden), keeping
        the tokens ``mask`` marks. None (guidance's unconditional row) or no tokens at all stores
        nothing: attention over a zero state, or over a fully masked text, adds exactly nothing
        (the projections have no biases), so the step skips it."""
        if not self.cross_attention:
            return
        if states is None or mask is None or not mask.any():
            cache.text_lengths[slot] = 0
            return
        states = states[mask.bool()]
        length = states.shape[0]
        cache.reserve(len(cache.lengths), cache.capacity[1], length)
        for index, layer in enumerate(self.layers):
            attention = layer.encoder_attn
            for projection, buffers in ((attention.k_proj, cache.cross_keys), (attention.v_proj, cache.cross_values)):
                projected = projection(states.to(self.dtype)).view(length, self.num_heads, self.head_dim)
                buffers[index][slot, :, :length] = projected.transpose(0, 1)
        cache.text_lengths[slot] = length

    @torch.inference_mode()
    def prefill(self, cache: SlotCache, slots: list[int], embeds: torch.Tensor) -> None:
        """Run ``slots``' known prefix, embeddings (rows, length, hidden) without positions, into the
        cache from position 0; the last known token is left for ``step``."""
        length = embeds.shape[1]
        if length == 0:
            for slot in slots:
                cache.lengths[slot] = 0
            return
        cache.reserve(len(cache.lengths), length + 1)
        index = torch.tensor(slots, device=self.device)
        hidden = embeds.to(self.dtype) + self.positions(torch.arange(length, device=self.device))
        text = self._text_mask(cache, slots)
        for number, layer in enumerate(self.layers):
            x = layer.self_attn_layer_norm(hidden)
            q, k, v = (
                self._heads(p(x)) for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
            )
            cache.keys[number][index, :, :length] = k
            cache.values[number][index, :, :length] = v
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            hidden = hidden + layer.self_attn.out_proj(self._merge(attended))
            if text is not None:
                keys, values = (t[number][index, :, : text.span] for t in (cache.cross_keys, cache.cross_values))
                hidden = hidden + self._cross(layer, hidden, keys, values, text)
            hidden = hidden + self._feed_forward(layer, hidden)
        for slot in slots:
            cache.lengths[slot] = length

    @torch.inference_mode()
    def step(self, cache: SlotCache, tokens: torch.Tensor) -> torch.Tensor:
        """One token for each of the ``n`` slots in use: codes (n, codebooks) at each slot's own
        position → logits (n, codebooks, vocabulary) in float32."""
        rows = tokens.shape[0]
        lengths = cache.lengths
        cache.reserve(rows, max(lengths) + 1)
        # Padding rows (start tokens at position 0) only keep the matrix products on one path.
        padded = max(rows, MIN_GEMM_ROWS)
        position = torch.tensor(lengths + [0] * (padded - rows), device=self.device)
        tokens = F.pad(tokens, (0, 0, 0, padded - rows))
        hidden = self.embed(tokens[:, :, None]).to(self.dtype) + self.positions(position)[:, None]
        real, filled = torch.arange(rows, device=self.device), position[:rows]
        own = KeyMask([length + 1 for length in lengths], self.num_heads, self.dtype, self.device)
        text = self._text_mask(cache, list(range(rows)))
        for number, layer in enumerate(self.layers):
            x = layer.self_attn_layer_norm(hidden)
            q, k, v = (
                self._heads(p(x)) for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
            )
            keys, values = cache.keys[number], cache.values[number]
            keys[real, :, filled] = k[:rows, :, 0]
            values[real, :, filled] = v[:rows, :, 0]
            attended = attend(q[:rows], keys[:rows], values[:rows], own)
            hidden = hidden + layer.self_attn.out_proj(self._merge(_pad_rows(attended, padded)))
            if text is not None:
                keys, values = cache.cross_keys[number][:rows], cache.cross_values[number][:rows]
                hidden = hidden + self._cross(layer, hidden, keys, values, text)
            hidden = hidden + self._feed_forward(layer, hidden)
        for slot in range(rows):
            lengths[slot] += 1
        hidden = self.final_norm(hidden)[:, 0]
        return torch.stack([head(hidden)[:rows] for head in self.heads], dim=1).float()

    def _text_mask(self, cache: SlotCache, slots: list[int]) -> KeyMask | None:
        """Cross-attention's mask over ``slots``' texts; None where the model has no cross-attention
        or none of the slots has text (there is nothing to add)."""
        if not self.cross_attention:
            return None
        spans = [cache.text_lengths[slot] for slot in slots]
        return KeyMask(spans, self.num_heads, self.dtype, self.device) if any(spans) else None

    def _cross(
        self, layer: Any, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, text: KeyMask
    ) -> torch.Tensor:
        """Cross-attention of the first ``len(keys)`` rows of ``hidden``; zero for the others and
        for rows without text."""
        attention = layer.encoder_attn
        q = self._heads(attention.q_proj(layer.encoder_attn_layer_norm(hidden)))
        attended = attend(q[: keys.shape[0]], keys, values, text)
        return attention.out_proj(self._merge(_pad_rows(attended, q.shape[0])))

    @staticmethod
    def _feed_forward(layer: Any, hidden: torch.Tensor) -> torch.Tensor:
        return layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, length, hidden) → (rows, heads, length, head_dim)."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


class KeyMask:
    """Which keys each row attends to: its first ``spans[i]``, out of ``span`` (the longest,
    rounded up to ``TIME_QUANTUM``; see the module docstring). Built once per step for all layers.
    A row with no keys (no text) attends to key 0 instead, so that its softmax stays finite, and
    ``attend`` then gives it zeros."""

    def __init__(self, spans: list[int], heads: int, dtype: torch.dtype, device: torch.device):
        self.span = _quantized(max(spans))
        lengths = torch.tensor(spans, device=device)
        keep = torch.arange(self.span, device=device) < lengths.clamp(min=1)[:, None]
        bias = torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill_(~keep, float("-inf"))
        #: Added to the scores, laid out as the batched products are: (rows * heads, 1, span).
        self.bias = bias.repeat_interleave(heads, dim=0)[:, None]
        self.empty = (lengths == 0)[:, None, None, None] if 0 in spans else None


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: KeyMask) -> torch.Tensor:
    """Attention of queries (rows, heads, queries, head_dim) over the keys and values (rows, heads,
    time, head_dim) that ``mask`` lets each row see. Plain batched matrix products: each (row,
    head) is a product of its own, with no split of the work that depends on the batch."""
    rows, heads, queries, head_dim = q.shape
    keys, values = keys[:, :, : mask.span].flatten(0, 1), values[:, :, : mask.span].flatten(0, 1)
    scores = torch.baddbmm(mask.bias, q.flatten(0, 1), keys.transpose(1, 2), alpha=head_dim**-0.5)
    # Half-precision models normalise in float32, as fused attention kernels do.
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
    attended = torch.bmm(weights, values).view(rows, heads, queries, head_dim)
    return attended if mask.empty is None else attended.masked_fill_(mask.empty, 0.0)


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` with zero rows appended up to ``rows``."""
    return x if x.shape[0] == rows else F.pad(x, (0, 0, 0, 0, 0, 0, 0, rows - x.shape[0]))
