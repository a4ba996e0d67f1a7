"""Batched, seeded sampling with a KV cache: the corpus generator's engine.

``sample_batch`` is a plain decode loop over the Hugging Face model (``transformers.generate`` spends most
of its time in per-step bookkeeping on a small model). What makes it fast on a CPU:

- one prefill over the left-padded prompts, then one token per step with a ``DynamicCache``;
- rows that have finished are dropped from the batch (and from the cache) once they are a quarter of it, so
  short stories stop costing without a copy of the whole cache at every finished row;
- it runs on the plain transformers model (``load_model(..., bridge=False)``): the TransformerBridge's own
  attention expands grouped key/value heads at every step and made decoding about 3x slower;
- sampling is top-k (``top_k``, default 100) followed by top-p (nucleus) *within* those k tokens, so no
  step sorts the whole vocabulary (the probability mass beyond the 100th token at temperature 0.8 is
  negligible; the rule is recorded in every corpus's provenance);
- only the last position's logits are computed during prefill (``logits_to_keep=1``).

Randomness comes from one ``torch.Generator`` per batch seeded with ``seed``: the same prompts and seed give
the same texts, whatever ran before (which is what makes an interrupted corpus resumable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of a corpus (recorded in its provenance)."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 100
    max_new_tokens: int = 320
    batch_size: int = 64
    seed: int = 0
    # Base models do not stop on their own: they can be stopped at a paragraph break ("\n\n", one token in
    # the tokenizers we use), not before ``min_new_tokens`` (a stop token is masked out until then).
    min_new_tokens: int = 0
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("top_k, max_new_tokens and batch_size must be >= 1")
        if not 0 <= self.min_new_tokens < self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens), got {self.min_new_tokens}")
        if isinstance(self.stop_strings, str) or not all(isinstance(x, str) and x for x in self.stop_strings):
            raise ValueError(f"stop_strings must be a tuple of non-empty strings, got {self.stop_strings!r}")
        # a JSON list (a provenance file read back) becomes a tuple
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))

    def record(self) -> dict[str, Any]:
        """The settings as JSON holds them (provenance files)."""
        d = asdict(self)
        d["stop_strings"] = list(self.stop_strings)
        return d

    def stop_ids(self, tokenizer: Any) -> list[int]:
        """The tokenizer's end-of-sequence id and the id of each of ``stop_strings``; a stop string must be
        a single token (it is matched token by token)."""
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for text in self.stop_strings:
            enc = tokenizer.encode(text, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(
                    f"stop string {text!r} is {len(enc)} tokens in this tokenizer; it must be one"
                )
            ids.append(enc[0])
        return ids


def next_tokens(logits: torch.Tensor, s: Sampling, gen: torch.Generator) -> torch.Tensor:
    """One sampled token per row of ``logits`` [b, vocab] (greedy when temperature is 0)."""
    if s.temperature == 0:
        return logits.argmax(-1)
    vals, idx = torch.topk(logits.float(), min(s.top_k, logits.shape[-1]), dim=-1)  # sorted, descending
    probs = torch.softmax(vals / s.temperature, dim=-1)
    if s.top_p < 1:
        before = probs.cumsum(-1) - probs  # mass of the better tokens; the best token is always kept
        probs = probs.masked_fill(before >= s.top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=gen)
    return idx.gather(-1, choice)[:, 0]


def _buffered_cache() -> Any:
    """A ``DynamicCache`` whose layers write into preallocated buffers (capacity doubles when full) instead
    of concatenating a new key/value tensor at every step, which copies the whole cache each token: on a
    small model that copy, not the matrix products, dominated decoding time."""
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    class BufferedLayer(DynamicLayer):
        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._n, self._k, self._v = 0, None, None
            need = self._n + key_states.shape[-2]
            if self._k is None or need > self._k.shape[-2]:
                cap = max(need + 64, 2 * need)
                k = key_states.new_empty((*key_states.shape[:-2], cap, key_states.shape[-1]))
                v = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
                if self._k is not None:
                    k[..., : self._n, :] = self._k[..., : self._n, :]
                    v[..., : self._n, :] = self._v[..., : self._n, :]
                self._k, self._v = k, v
            self._k[..., self._n : need, :] = key_states
            self._v[..., self._n : need, :] = value_states
            self._n = need
            self.keys, self.values = self._k[..., :need, :], self._v[..., :need, :]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized and self._n:
                self._k, self._v = self._k[indices], self._v[indices]
                self.keys, self.values = self._k[..., : self._n, :], self._v[..., : self._n, :]

    cache = DynamicCache()
    Cache.__init__(cache, layer_class_to_replicate=BufferedLayer)
    return cache


@torch.no_grad()
def sample_batch(
    hf_model: Any,
    prompt_ids: Sequence[Sequence[int]],
    sampling: Sampling,
    seed: int,
    *,
    stop_ids: Sequence[int],
    pad_id: int,
) -> list[tuple[list[int], bool]]:
    """Sample a continuation of each prompt. Returns, per prompt, (new token ids without the stop token,
    whether a stop token ended it)."""
    from transformers import DynamicCache

    if not prompt_ids:
        return []
    device = next(hf_model.parameters()).device
    from .extract import pad_batch

    B, width = len(prompt_ids), max(len(p) for p in prompt_ids)
    inp, att = pad_batch(prompt_ids, pad_id, side="left")  # every prompt ends at the last column
    inp, att = inp.to(device), att.to(device)
    pos = (att.cumsum(1) - 1).clamp_min(0)
    gen = torch.Generator().manual_seed(int(seed))
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
    window = getattr(hf_model.config.get_text_config(), "sliding_window", None)
    # the buffered layers are full-attention layers: use them only where no sliding window can bite
    fits = window is None or width + sampling.max_new_tokens <= window
    cache = _buffered_cache() if fits else DynamicCache()
    out = hf_model(
        input_ids=inp,
        attention_mask=att,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1].cpu()
    next_pos = pos[:, -1] + 1
    rows = torch.arange(B)  # which prompt each batch row belongs to
    # rows still sampling; finished rows stay in the batch until the next compaction
    alive = torch.ones(B, dtype=torch.bool)
    new: list[list[int]] = [[] for _ in range(B)]
    ended = [False] * B
    for step in range(sampling.max_new_tokens):
        if step < sampling.min_new_tokens and len(stops):
            logits[:, stops] = float("-inf")
        tok = next_tokens(logits, sampling, gen)
        done = torch.isin(tok, stops) & alive
        for r, t, d, a in zip(rows.tolist(), tok.tolist(), done.tolist(), alive.tolist()):
            if not a:
                continue
            if d:
                ended[r] = True
            else:
                new[r].append(t)
        alive &= ~done
        if step == sampling.max_new_tokens - 1 or not bool(alive.any()):
            break
        # Drop finished rows once they are a quarter of the batch: each compaction copies the whole cache, so
        # compacting at every finished row (up to B copies) cost more than carrying a few idle rows.
        if 4 * int((~alive).sum()) >= alive.numel():
            keep = alive.nonzero()[:, 0]
            cache.batch_select_indices(keep.to(device))
            rows, tok, alive = rows[keep], tok[keep], alive[keep]
            att, next_pos = att[keep.to(device)], next_pos[keep.to(device)]
        att = torch.cat([att, att.new_ones((att.shape[0], 1))], dim=1)
        out = hf_model(
            input_ids=tok[:, None].to(device),
            attention_mask=att,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        next_pos = next_pos + 1
        logits = out.logits[:, -1].cpu()
    return [(new[r], ended[r]) for r in range(B)]
