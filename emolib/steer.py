"""Steering: add a direction to the residual stream inside a context manager that always removes its hooks.

``with steer(model, Steering(...)) as h:`` registers one forward hook per steered layer on
``blocks.{L}.hook_resid_post`` through ``model.bridge.hooks(fwd_hooks=...)``; TransformerLens removes them
when the block exits, also when it exits by an exception. The bridge wraps the Hugging Face modules, so the
hooks fire for ``model.bridge(...)`` and for ``model.hf_model(...)`` / ``model.hf_model.generate(...)``.

Unit of strength
    ``strength`` is a fraction of the mean L2 norm of the residual stream at the layer (:func:`residual_norm`,
    measured on ordinary text with position 0 excluded: the attention sink's norm is ~100x the others'). Not
    the per-dimension RMS, which is 1/sqrt(d_model) of it. A ``Steering`` adds
    ``strength_per_layer * norm * unit_direction`` at each of its layers.

Bands of layers (``band_rule``)
    ``"split"`` (the default): ``strength / len(layers)`` at each layer, so the band adds ``strength * norm``
    in total, as one layer at ``strength`` would. ``"each"``: ``strength`` at every layer (a band of 5 then
    adds about 5x as much).

Which positions (``positions``), decided from each hook call's shape so that it holds under KV-cache decoding
    The first call a hook sees is the *prefill* (a scoring pass, or the prompt of a generation): its
    positions ``p < P`` are the prompt, where ``P`` is ``prompt_lengths`` (per row) or, by default, the
    call's whole length. A later call of length 1 is a *decode step* (one generated token, KV cache on). A
    later call longer than the prefill is a *no-cache step* (generation without KV cache re-reads the whole
    sequence): positions ``p >= P`` are generated tokens. A later call of length ``1 < S <= P`` starts a new
    prefill.

    - ``"all"``: every position of every call.
    - ``"prompt"``: prompt positions of full calls, except each row's first real token (position 0, the
      attention sink, is never steered); decode steps and generated positions are left alone.
    - ``"generated"``: decode steps, generated positions of no-cache steps, *and the last prompt position*
      ``P - 1`` of the prefill: that position's output is the first generated token, so steering starts
      there (leaving it out is the CAA off-by-one that leaves the first generated token unsteered). In a
      scoring pass with ``prompt_lengths``, ``"generated"`` therefore steers exactly the positions that would
      have been steered had the continuation been generated.

    ``attention_mask`` (of the prefill, left or right padded) marks the real tokens: padding is never steered
    and a left-padded row's first real token is its attention sink. ``token_mask`` (bool ``[batch, seq]``,
    e.g. an activity's tokens in a scoring pass) further restricts full calls of that shape; decode steps
    ignore it. The same hook rules apply to every forward in the context: for several unrelated batches in
    one context, call :meth:`SteeringHandle.reset` between them (or use one context per batch, as
    :func:`generate` and :func:`score_continuations` do).

Residual basis: steer in the mode vectors were extracted in (``enable_compatibility_mode()`` folds layer
norms and changes the basis).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Bool, Float

from . import store
from .chat import continuation_ids, encode
from .constants import resid_post
from .extract import EXTRACT_VERSION, _forward_until, pad_batch, tokenize
from .models import LoadedModel, check_layers

Positions = Literal["all", "prompt", "generated"]
BandRule = Literal["split", "each"]
POSITIONS: tuple[str, ...] = get_args(Positions)
BAND_RULES: tuple[str, ...] = get_args(BandRule)


@dataclass(frozen=True, eq=False)
class Steering:
    """One intervention: add ``strength_per_layer * norm * direction`` at each of ``layers``.

    direction: [d_model], stored as a unit vector (float32, CPU). layers: block indices (>= 0) whose
    ``hook_resid_post`` is steered. strength: fraction of ``norm`` (any finite sign; 0 is a no-op).
    norm: the unit of strength, the mean residual norm at the layer (:func:`residual_norm`). positions,
    band_rule: see the module docstring (band_rule "split", the default, spreads ``strength`` over the band).
    d_model: if given, the direction's length is checked against it.
    """

    direction: Float[torch.Tensor, " d_model"]  # noqa: F722 (jaxtyping shape, not a forward reference)
    layers: tuple[int, ...]
    strength: float
    norm: float
    positions: Positions = "all"
    band_rule: BandRule = "split"
    label: str = ""
    d_model: int | None = None

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.direction).detach()
        if v.ndim != 1 or v.numel() == 0:
            raise ValueError(f"direction must be a 1-D vector, got shape {tuple(v.shape)}")
        if self.d_model is not None and v.numel() != self.d_model:
            raise ValueError(f"direction has {v.numel()} dimensions, the model has d_model={self.d_model}")
        v = v.to(device="cpu", dtype=torch.float64)
        n = float(v.norm())
        if not math.isfinite(n) or n == 0:
            raise ValueError(f"direction must be finite and non-zero (norm {n})")
        object.__setattr__(self, "direction", (v / n).float())
        layers = (self.layers,) if isinstance(self.layers, int) else tuple(self.layers)
        if not layers:
            raise ValueError("layers must not be empty")
        if any(not isinstance(L, int) or isinstance(L, bool) or L < 0 for L in layers):
            raise ValueError(f"layers must be non-negative ints, got {layers!r}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"duplicate layers in {layers!r}")
        object.__setattr__(self, "layers", layers)
        if not isinstance(self.strength, (int, float)) or not math.isfinite(self.strength):
            raise ValueError(f"strength must be a finite number, got {self.strength!r}")
        if not isinstance(self.norm, (int, float)) or not math.isfinite(self.norm) or self.norm <= 0:
            raise ValueError(f"norm must be a finite number > 0, got {self.norm!r}")
        object.__setattr__(self, "strength", float(self.strength))
        object.__setattr__(self, "norm", float(self.norm))
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.band_rule not in BAND_RULES:
            raise ValueError(f"band_rule must be one of {BAND_RULES}, got {self.band_rule!r}")

    @classmethod
    def from_vectors(
        cls,
        vectors: Any,
        emotion: str,
        *,
        strength: float,
        norm: float,
        layers: int | Sequence[int] | None = None,
        positions: Positions = "all",
        band_rule: BandRule = "split",
    ) -> Steering:
        """Steer along ``vectors[emotion]`` (an :class:`emolib.vectors.EmotionVectors`), by default at the
        layer the vectors were extracted from; the label is the emotion."""
        if layers is None:
            layers = (vectors.layer,)
        return cls(
            vectors[emotion],
            (layers,) if isinstance(layers, int) else tuple(layers),
            strength,
            norm,
            positions,
            band_rule,
            label=emotion.strip().lower(),
            d_model=vectors.d_model,
        )

    @property
    def strength_per_layer(self) -> float:
        """Fraction of ``norm`` added at each layer (``strength / len(layers)`` under "split")."""
        return self.strength / len(self.layers) if self.band_rule == "split" else self.strength

    @property
    def added_norm_per_layer(self) -> float:
        """L2 norm of the vector added at each layer (absolute value; the sign is in ``strength``)."""
        return abs(self.strength_per_layer) * self.norm

    @property
    def total_added_norm(self) -> float:
        """Sum over the band of the added norms (``abs(strength) * norm`` under "split")."""
        return self.added_norm_per_layer * len(self.layers)

    def scaled(self, strength: float) -> Steering:
        """The same intervention at another strength."""
        return Steering(
            self.direction,
            self.layers,
            strength,
            self.norm,
            self.positions,
            self.band_rule,
            self.label,
            self.d_model,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (the direction as a list of floats)."""
        return {
            "label": self.label,
            "layers": list(self.layers),
            "strength": self.strength,
            "norm": self.norm,
            "positions": self.positions,
            "band_rule": self.band_rule,
            "strength_per_layer": self.strength_per_layer,
            "added_norm_per_layer": self.added_norm_per_layer,
            "unit": "fraction of the mean resid_post L2 norm at the layer (position 0 excluded)",
            "direction": [float(x) for x in self.direction],
        }


@dataclass
class SteeringHandle:
    """Yielded by :func:`steer`. ``calls``: hook invocations so far (one per steered layer per forward);
    ``kinds``: how many of them were "prefill", "decode" or "no-cache" calls."""

    steerings: tuple[Steering, ...]
    calls: int = 0
    kinds: Counter = field(default_factory=Counter)
    _state: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)  # hook -> prefill length

    def reset(self) -> None:
        """Forget the prefill: the next call of every hook starts a new sequence."""
        self._state.clear()


def _per_row(value: Any, batch: int, what: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{what} has {t.numel()} entries for a batch of {batch}")
    return t


def _select(
    s: Steering,
    kind: str,
    shape: tuple[int, int],
    prefill_len: int,
    device: torch.device,
    prompt_lengths: Any,
    attention_mask: torch.Tensor | None,
    token_mask: torch.Tensor | None,
) -> torch.Tensor | None:
    """Bool [batch, seq] of the positions to steer in this call, or None for all of them."""
    B, S = shape
    if kind == "decode":  # one generated token per row ("prompt" steerings never get here)
        return None
    P = _per_row(prompt_lengths if prompt_lengths is not None else prefill_len, B, "prompt_lengths", device)
    pos = torch.arange(S, device=device)[None, :]
    real = torch.ones(B, S, dtype=torch.bool, device=device)
    first = torch.zeros(B, 1, dtype=torch.long, device=device)
    if attention_mask is not None:
        am = attention_mask.to(device).bool()
        if am.shape[0] != B or am.shape[1] > S:
            raise ValueError(f"attention_mask {tuple(am.shape)} does not fit a call of shape {(B, S)}")
        real[:, : am.shape[1]] = am
        first = am.long().argmax(1, keepdim=True)  # each row's first real token: its attention sink
    if s.positions == "all":
        sel = real
    elif s.positions == "prompt":
        sel = real & (pos > first) & (pos < P[:, None])
    else:
        sel = real & (pos >= P[:, None] - 1)
    if token_mask is not None:
        tm = token_mask.to(device).bool()
        if tm.shape[0] != B or tm.shape[1] > S:
            raise ValueError(f"token_mask {tuple(tm.shape)} does not match a call of shape {(B, S)}")
        sel = sel.clone()
        sel[:, : tm.shape[1]] &= tm
    return sel


@contextmanager
def steer(
    model: LoadedModel,
    steering: Steering | Sequence[Steering],
    *,
    prompt_lengths: int | Sequence[int] | torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    token_mask: Bool[torch.Tensor, "batch seq"] | None = None,  # noqa: F722
) -> Iterator[SteeringHandle]:
    """Steer every forward run inside the block; yields a :class:`SteeringHandle`.

    prompt_lengths: prompt positions per row of the prefill (an int for all rows), counted from the
        tensor's position 0 (for a left-padded batch: its width); default: the prefill's whole length.
    attention_mask: the prefill's [batch, seq] 0/1 mask, so padding is not steered and a left-padded
        row's attention sink is found. token_mask: bool [batch, seq]: only these positions of full calls.
    See the module docstring for the position rules. Hooks are removed on exit, also on an exception.
    """
    items = (steering,) if isinstance(steering, Steering) else tuple(steering)
    if not items or not all(isinstance(s, Steering) for s in items):
        raise ValueError("steering must be a Steering or a non-empty sequence of Steering")
    for s in items:
        if s.direction.numel() != model.info.d_model:
            raise ValueError(
                f"Steering {s.label!r}: direction has {s.direction.numel()} dimensions, "
                f"{model.info.name} has d_model={model.info.d_model}"
            )
        check_layers(model.info, list(s.layers))
    if token_mask is not None and token_mask.ndim != 2:
        raise ValueError(f"token_mask must be [batch, seq], got shape {tuple(token_mask.shape)}")
    if attention_mask is not None and attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be [batch, seq], got shape {tuple(attention_mask.shape)}")
    handle = SteeringHandle(items)

    def make_hook(s: Steering, key: tuple[int, int]):
        unit = s.direction
        coef = s.strength_per_layer * s.norm
        cast: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

        def hook(t: torch.Tensor, hook: Any) -> torch.Tensor:
            if t.ndim != 3:
                raise RuntimeError(f"Steering hook expected [batch, seq, d], got {tuple(t.shape)}")
            B, S = t.shape[0], t.shape[1]
            prefill = handle._state.get(key)
            if prefill is not None and S == 1:
                kind = "decode"
            elif prefill is not None and S > prefill:
                kind = "no-cache"
            else:
                kind, prefill = "prefill", S
                handle._state[key] = S
            handle.calls += 1
            handle.kinds[kind] += 1
            if coef == 0 or (kind == "decode" and s.positions == "prompt"):
                return t
            k = (t.dtype, t.device)
            if k not in cast:
                cast[k] = (unit.to(t.device, torch.float32) * coef).to(t.dtype)
            add = cast[k]
            sel = _select(s, kind, (B, S), prefill, t.device, prompt_lengths, attention_mask, token_mask)
            if sel is None:
                return t + add
            return t + sel[..., None].to(t.dtype) * add

        return hook

    fwd_hooks = []
    for i, s in enumerate(items):
        for j, L in enumerate(s.layers):
            fwd_hooks.append((resid_post(L), make_hook(s, (i, j))))
    with model.bridge.hooks(fwd_hooks=fwd_hooks):
        yield handle


# --- the unit of strength ------------------------------------------------------------------------


@torch.no_grad()
def norms_by_layer(
    model: LoadedModel,
    texts: Sequence[str],
    layers: int | Sequence[int],
    *,
    batch_size: int = 16,
    max_tokens: int | None = 512,
) -> dict[int, float]:
    """Mean L2 norm of ``resid_post`` at each layer over every real token of ``texts`` except position 0
    (token-weighted: each token counts once). Same tokenisation, truncation and forward as
    :func:`emolib.extract.extract`, so it equals the mean norm of ``extract(..., pooling="token")``."""
    texts = list(texts)
    if not texts or any(not isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty list of strings")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    layer_list = check_layers(model.info, layers)
    names = [resid_post(L) for L in layer_list]
    ids, _ = tokenize(model.tokenizer, texts)
    if max_tokens is not None:
        ids = [x[:max_tokens] for x in ids]
    if all(len(x) < 2 for x in ids):
        raise ValueError("Every text has a single token: no position after the first to measure")
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(ids)), key=lambda k: len(ids[k]))
    sums = dict.fromkeys(layer_list, 0.0)
    count = 0
    for i in range(0, len(order), batch_size):
        batch = [ids[k] for k in order[i : i + batch_size]]
        inp, att = pad_batch(batch, pad)
        keep = att.bool().clone()
        keep[:, 0] = False  # the attention sink
        got = _forward_until(model, inp.to(model.info.device), att.to(model.info.device), names)
        for L, n in zip(layer_list, names):
            norms = got[n].float().norm(dim=-1).cpu()
            sums[L] += float(norms[keep].double().sum())
        count += int(keep.sum())
    return {L: sums[L] / count for L in layer_list}


def residual_norm(
    model: LoadedModel,
    texts: Sequence[str],
    layer: int,
    *,
    batch_size: int = 16,
    max_tokens: int | None = 512,
) -> float:
    """Mean L2 norm of ``blocks.{layer}.hook_resid_post`` over the real tokens of ``texts``, position 0
    excluded: the unit of steering strength (:func:`norms_by_layer` for one layer)."""
    (L,) = check_layers(model.info, layer)
    return float(_stored_norms(model, list(texts), [L], batch_size=batch_size, max_tokens=max_tokens)[0])


@store.memo("residual_norms", version=1, depends=(EXTRACT_VERSION,))
def _stored_norms(
    model: LoadedModel, texts: list[str], layers: list[int], *, batch_size: int, max_tokens: int | None
) -> np.ndarray:
    """:func:`norms_by_layer` through the result store. The norm sets the unit of every steering strength,
    and its last bits differ between machines (fp32 kernels): read from the committed store, it is the same
    everywhere, so the scoring passes keyed on the steering it scales are found there too."""
    got = norms_by_layer(model, texts, layers, batch_size=batch_size, max_tokens=max_tokens)
    return np.array([got[L] for L in layers], dtype=np.float64)


# --- generation and scoring under steering -------------------------------------------------------


def _as_list(steering: Steering | Sequence[Steering] | None) -> list[Steering]:
    if steering is None:
        return []
    return [steering] if isinstance(steering, Steering) else list(steering)


@torch.no_grad()
def generate(
    model: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    steering: Steering | Sequence[Steering] | None = None,
    do_sample: bool = False,
    seed: int = 0,
    use_cache: bool = True,
    batch_size: int = 8,
    temperature: float = 1.0,
) -> list[str]:
    """Continue each prompt (exact text, tokenised by :func:`emolib.chat.encode`: BOS added unless present)
    and return only the new text (special tokens dropped).

    Left-padded batches with an attention mask through ``model.hf_model.generate``, whose modules are the
    bridge's, so the steering hooks fire at the prefill and at every decode step (one ``steer`` context per
    batch, ``prompt_lengths`` = the batch width). Greedy unless ``do_sample``; sampling draws from the global
    torch RNG seeded with ``seed`` inside ``torch.random.fork_rng`` (the caller's RNG state is untouched;
    the texts depend on ``seed`` and on ``batch_size``). Generation stops at the model's EOS.
    """
    prompts = list(prompts)
    if any(not isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be strings")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be >= 1")
    steerings = _as_list(steering)
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = model.info.device
    out: list[str] = []
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            ids = [encode(tok, p) for p in prompts[i : i + batch_size]]
            if any(not x for x in ids):
                raise ValueError("A prompt encodes to no token (empty prompt and no BOS)")
            inp, att = pad_batch(ids, pad, side="left")  # every prompt ends at the last column
            width = inp.shape[1]
            inp, att = inp.to(device), att.to(device)
            kwargs: dict[str, Any] = dict(
                input_ids=inp,
                attention_mask=att,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                use_cache=use_cache,
                pad_token_id=pad,
            )
            if do_sample:  # plain sampling at ``temperature``: no top-k / top-p from the model's config
                kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
            if steerings:
                with steer(model, steerings, prompt_lengths=width, attention_mask=att):
                    seq = model.hf_model.generate(**kwargs)
            else:
                seq = model.hf_model.generate(**kwargs)
            out += tok.batch_decode(seq[:, width:].cpu(), skip_special_tokens=True)
    return out


@torch.no_grad()
def score_continuations(
    model: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    steering: Steering | Sequence[Steering] | None = None,
    batch_size: int = 8,
    token_mask: Sequence[Sequence[bool]] | None = None,
) -> np.ndarray:
    """Mean per-token log-probability [n] of ``continuations[i]`` after ``prompts[i]`` (the continuation-
    likelihood readout), float64.

    ``prompt + continuation`` is tokenised jointly and split by :func:`emolib.chat.continuation_ids` (a
    token straddling the boundary belongs to the continuation). Right-padded batches with an attention
    mask; each row's ``prompt_lengths`` is its prompt token count, so ``positions="generated"`` steers the
    last prompt token and the continuation (as generation would) and ``"prompt"`` the prompt only.
    token_mask: optional, per pair, one bool per joint token (prompt + continuation): where to steer.
    """
    prompts, continuations = list(prompts), list(continuations)
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
    if not prompts:
        raise ValueError("Nothing to score (empty lists)")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if token_mask is not None and len(token_mask) != len(prompts):
        raise ValueError(f"token_mask has {len(token_mask)} rows for {len(prompts)} pairs")
    steerings = _as_list(steering)
    pairs = [continuation_ids(model.tokenizer, p, c) for p, c in zip(prompts, continuations)]
    joint = [a + b for a, b in pairs]
    if token_mask is not None:
        for k, (m, x) in enumerate(zip(token_mask, joint)):
            if len(m) != len(x):
                raise ValueError(f"token_mask row {k} has {len(m)} entries for {len(x)} tokens")
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = model.info.device
    scores = np.zeros(len(prompts), dtype=np.float64)
    order = sorted(range(len(joint)), key=lambda k: len(joint[k]))
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        inp, att = pad_batch([joint[k] for k in rows], pad)  # real tokens keep positions 0..n-1
        tm = torch.zeros(inp.shape, dtype=torch.bool) if token_mask is not None else None
        for j, k in enumerate(rows):
            if tm is not None:
                tm[j, : len(joint[k])] = torch.tensor([bool(b) for b in token_mask[k]])
        inp, att = inp.to(device), att.to(device)
        if steerings:
            P = [len(pairs[k][0]) for k in rows]
            with steer(model, steerings, prompt_lengths=P, attention_mask=att, token_mask=tm):
                logits = model.bridge(inp, attention_mask=att, use_cache=False)
        else:
            logits = model.bridge(inp, attention_mask=att, use_cache=False)
        logp = torch.log_softmax(logits.float(), dim=-1)
        for j, k in enumerate(rows):
            n_p, cont = len(pairs[k][0]), pairs[k][1]
            target = torch.tensor(cont, device=logp.device)
            # logits at position p predict the token at p + 1
            lp = logp[j, n_p - 1 : n_p - 1 + len(cont)].gather(-1, target[:, None])[:, 0]
            scores[k] = float(lp.double().mean())
    return scores
