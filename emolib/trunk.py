"""Steered scoring that runs the layers below the steering layer once.

Adding a vector to the residual stream after layer ``L`` leaves layers ``0..L`` untouched, so every steering
condition of one prompt shares them: :func:`capture` runs the prompt once, unsteered, at batch 1 and keeps
the residual after layer ``L``; :func:`replaying` then stands in for layers ``0..L`` while a batch of
conditions runs, handing layer ``L+1`` the captured residual plus each row's steering vector. Only layers
``L+1..`` (and the unembedding) run per condition: at two-thirds depth, about a third of the model.

The stand-ins keep the KV cache consistent (they store zeros of the right shape for their layers, which are
never read again), so the model's own code still computes positions, masks and cache lengths; the cache can
be extended and cropped as usual. Works for decoder stacks found at ``model.layers`` (Llama, Gemma, Qwen,
Mistral and their kin, wrapped by the TransformerLens bridge or plain); :func:`decoder_layers` returns None
for other layouts, and callers then fall back to the hook-based path (``emolib.behaviour.row_steering``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def decoder_layers(hf: Any) -> torch.nn.ModuleList | None:
    """The model's list of decoder layers (``hf.model.layers``), or None when the layout is another."""
    inner = getattr(hf, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
        return layers
    return None


def _kv_shape(hf: Any) -> tuple[int, int]:
    cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return int(n_kv), int(head_dim)


@contextmanager
def capture(hf: Any, layer: int) -> Iterator[dict[str, torch.Tensor]]:
    """Within the context, every forward stores the residual after decoder layer ``layer`` in ``out["h"]``."""
    layers = decoder_layers(hf)
    if layers is None:
        raise ValueError("this model's decoder layers are not at model.layers")
    out: dict[str, torch.Tensor] = {}

    def hook(module: Any, args: Any, output: Any) -> None:
        out["h"] = (output[0] if isinstance(output, tuple) else output).detach()

    handle = layers[layer].register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


class _StandIn(torch.nn.Module):
    """Takes the place of decoder layer ``idx`` (``idx <= L``): stores zeros in the KV cache so its length
    stays in step, and returns its input, or, for layer ``L``, the residual in ``state["h"]``."""

    def __init__(self, idx: int, kv: tuple[int, int], state: dict[str, Any], last: bool) -> None:
        super().__init__()
        self.idx, self.kv, self.state, self.last = idx, kv, state, last

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
        b, t = hidden_states.shape[:2]
        if cache is not None:
            z = hidden_states.new_zeros(b, self.kv[0], t, self.kv[1])
            cache.update(z, z, self.idx)
        if not self.last:
            return hidden_states
        h = self.state.get("h")
        if h is None or h.shape[0] != b or h.shape[1] != t:
            got = None if h is None else tuple(h.shape)
            raise RuntimeError(f"replay: the stored residual is {got}, the forward is batch {b} x {t} tokens")
        return h.to(hidden_states.dtype)


@contextmanager
def replaying(hf: Any, layer: int) -> Iterator[dict[str, Any]]:
    """Within the context, decoder layers ``0..layer`` are replaced by stand-ins; set ``state["h"]`` to the
    ``[batch, tokens, d_model]`` residual after ``layer`` before each forward. The original layers are put
    back on exit, also after an exception."""
    layers = decoder_layers(hf)
    if layers is None:
        raise ValueError("this model's decoder layers are not at model.layers")
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} out of range 0..{len(layers) - 1}")
    kv = _kv_shape(hf)
    state: dict[str, Any] = {}
    saved = [layers[i] for i in range(layer + 1)]
    try:
        for i in range(layer + 1):
            layers[i] = _StandIn(i, kv, state, last=i == layer)
        yield state
    finally:
        for i, m in enumerate(saved):
            layers[i] = m


# ------------------------------------------------------------------------ memoized trunk (hook-based steering)
def _key(hidden: torch.Tensor, kwargs: dict[str, Any]) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for t in (hidden, kwargs.get("attention_mask"), kwargs.get("position_ids")):
        if isinstance(t, torch.Tensor):
            h.update(str((tuple(t.shape), t.dtype)).encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
        else:
            h.update(repr(t).encode())
    return h.hexdigest()


class _Memo(torch.nn.Module):
    """Takes the place of decoder layer ``idx < L``. The first decides, from the embedded input, its masks and
    positions, whether layers ``0..L-1`` already ran on this input (a hit: the last returns their stored
    output, the others pass through) or not (each runs its own layer, and the last stores the output)."""

    def __init__(self, idx: int, original: torch.nn.Module, state: dict[str, Any], last: bool) -> None:
        super().__init__()
        self.idx, self.original, self.state, self.last = idx, original, state, last

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        st = self.state
        if self.idx == 0:
            cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
            # a KV cache must see every layer's keys, so cached forwards run in full
            st["key"] = None if cache is not None else _key(hidden_states, kwargs)
            st["hit"] = st["key"] is not None and st["key"] in st["store"]
        if not st["hit"]:
            out = self.original(hidden_states, *args, **kwargs)
            if self.last and st["key"] is not None:
                t = out[0] if isinstance(out, tuple) else out
                if st["bytes"] + t.numel() * t.element_size() <= st["max_bytes"]:
                    st["store"][st["key"]] = out
                    st["bytes"] += t.numel() * t.element_size()
            return out
        if self.last:
            st["hits"] += 1
            return st["store"][st["key"]]
        return hidden_states


@contextmanager
def memoized(hf: Any, layer: int, *, max_bytes: int = 1 << 30) -> Iterator[dict[str, Any]]:
    """Within the context, the output of decoder layers ``0..layer-1`` is stored per distinct input (token
    embeddings, attention mask, positions; forwards with a KV cache run in full) and reused when the same
    input comes again, as it does when one batch is scored under many steering directions at ``layer``:
    hooks at ``layer`` and above still fire on every forward, and the layers below cannot be affected by
    them. **Steering below ``layer`` inside the context would be skipped on a hit**: pass the lowest steered
    layer. Stores up to ``max_bytes`` of activations. Yields a dict whose ``"hits"`` counts the reuses. The
    original layers are put back on exit, also after an exception. A model whose layers are not at
    ``model.layers`` runs unchanged."""
    layers = decoder_layers(hf)
    state: dict[str, Any] = {
        "store": {},
        "bytes": 0,
        "max_bytes": max_bytes,
        "hits": 0,
        "key": None,
        "hit": False,
    }
    if layers is None or layer <= 0:
        yield state
        return
    if layer >= len(layers):
        raise ValueError(f"layer {layer} out of range 0..{len(layers) - 1}")
    saved = [layers[i] for i in range(layer)]
    try:
        for i in range(layer):
            layers[i] = _Memo(i, saved[i], state, last=i == layer - 1)
        yield state
    finally:
        for i, m in enumerate(saved):
            layers[i] = m
        state["store"].clear()
