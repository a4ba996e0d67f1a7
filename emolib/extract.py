"""Residual-stream activations: batched, masked, pooled and cached on disk.

``extract(model, texts, layers, mask=TokenMask(), pooling="mean")`` runs the TransformerBridge over
``texts`` in right-padded batches (sorted by length to waste little padding), stops after the last
requested layer, keeps ``blocks.{L}.hook_resid_post`` and pools the positions the mask selects.

Position 0 is never used: it carries an attention-sink norm about 100x the others.

Each finished batch is written as a safetensors file (with a checksum of its tensors) under
``cache_dir()/activations/<key>/``, the key hashing (model, weights, layers, texts, mask, exclusions,
pooling, batch size). A rerun reads the finished batches and computes only the missing ones, so an
interrupted run resumes; a corrupt batch file is detected, deleted and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import __version__, store
from .constants import cache_dir, resid_post
from .models import LoadedModel, check_layers

Pooling = Literal["mean", "last", "token"]
EXTRACT_VERSION = "1"  # bump when the maths of extraction changes: old caches stop matching
MAX_TOKENS = 512  # texts are truncated to this many tokens; the story-length filter uses the same limit


@dataclass(frozen=True)
class TokenMask:
    """Which token positions of a text are pooled.

    start: first position used, counted from the text's first token (BOS included); position 0 is always
        excluded, so ``start`` < 1 behaves as 1.
    after: if set, only tokens that begin after the *last* occurrence of this marker string in the text
        (e.g. the assistant header of a chat transcript: see :func:`emolib.chat.assistant_marker`); the marker's own
        tokens are excluded. A text without the marker is an error.
    """

    start: int = 1
    after: str | None = None

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Activations:
    """Pooled activations. ``data[L]`` is [n_texts, d_model] for mean/last pooling and
    [n_selected_tokens, d_model] for token pooling, where text i owns the next ``n_tokens[i]`` rows."""

    layers: tuple[int, ...]
    pooling: str
    data: dict[int, torch.Tensor]
    n_tokens: torch.Tensor  # [n_texts] number of positions selected per text
    provenance: dict[str, Any]

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.data:
            raise KeyError(f"Layer {layer} not extracted (have {list(self.layers)})")
        return self.data[layer]


def texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_batch(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(tmp), metadata={"sha256": _tensor_digest(tensors)})
    tmp.replace(path)  # atomic: a killed run never leaves a half-written batch under the final name


def _load_batch(path: Path) -> dict[str, torch.Tensor] | None:
    """The batch's tensors, or None (and the file removed) if it is corrupt."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("sha256") != _tensor_digest(tensors):
            raise ValueError("checksum mismatch")
        return tensors
    except Exception as e:  # noqa: BLE001 - any failure to read means: rebuild
        warnings.warn(f"Corrupt activation cache file {path} ({e}); rebuilding it", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def select_positions(
    offsets: list[tuple[int, int]],
    n_real: int,
    text: str,
    mask: TokenMask,
    exclude: Sequence[str],
    index: int,
) -> list[int]:
    """Positions of one text selected by the mask (offsets are the tokenizer's char spans)."""
    from .corpus import leak_pattern

    lo_char = 0
    if mask.after is not None:
        at = text.rfind(mask.after)
        if at < 0:
            raise ValueError(f"Text {index} does not contain the marker {mask.after!r}")
        lo_char = at + len(mask.after)
    bad_spans = [m.span() for w in exclude for m in leak_pattern(w).finditer(text)]
    keep = []
    for pos in range(max(mask.start, 1), n_real):
        s, e = offsets[pos]
        if mask.after is not None and (s < lo_char or e <= s):
            continue  # before the marker, or a special token with no text span
        if any(s < be and bs < e for bs, be in bad_spans):
            continue
        keep.append(pos)
    return keep


def tokenize(tokenizer: Any, texts: Sequence[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids and char offsets per text (:func:`emolib.chat.encode_with_offsets`: the tokenizer's BOS
    is added unless a text already starts with it)."""
    from .chat import encode_with_offsets

    pairs = [encode_with_offsets(tokenizer, t) for t in texts]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def extract(
    model: LoadedModel,
    texts: Sequence[str],
    layers: int | Sequence[int],
    *,
    mask: TokenMask = TokenMask(),
    pooling: Pooling = "mean",
    exclude: Sequence[Sequence[str]] | None = None,
    batch_size: int = 16,
    max_tokens: int | None = MAX_TOKENS,
    use_cache: bool = True,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> Activations:
    """Residual-stream activations of ``texts`` at ``layers``.

    exclude: per text, words whose tokens (and inflections') are left out of the pool.
    max_tokens: texts are truncated to this many tokens (None: no truncation).
    """
    from tqdm.auto import tqdm

    texts = list(texts)
    if not texts:
        raise ValueError("No texts to extract activations from (empty list)")
    if any(not isinstance(t, str) for t in texts):
        raise ValueError("Every text must be a string")
    if pooling not in ("mean", "last", "token"):
        raise ValueError(f"pooling must be 'mean', 'last' or 'token', got {pooling!r}")
    if exclude is not None and len(exclude) != len(texts):
        raise ValueError(f"exclude has {len(exclude)} entries for {len(texts)} texts")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    layer_list = check_layers(model.info, list(layers) if not isinstance(layers, int) else layers)
    excl = [tuple(x) for x in exclude] if exclude is not None else [()] * len(texts)

    ids, offs = tokenize(model.tokenizer, texts)
    if max_tokens is not None:
        ids = [x[:max_tokens] for x in ids]
    selections = [
        select_positions(o, len(i), t, mask, e, k)
        for k, (i, o, t, e) in enumerate(zip(ids, offs, texts, excl))
    ]
    empty = [k for k, s in enumerate(selections) if not s]
    if empty:
        raise ValueError(
            f"The mask selects no token in {len(empty)} text(s), e.g. text {empty[0]} "
            f"({len(ids[empty[0]])} tokens, mask {mask}); shorten start or drop these texts"
        )

    key_src = {
        "model": model.info.name,
        "weights": model.info.weights_hash,
        "dtype": model.info.dtype,
        "layers": layer_list,
        "texts": texts_hash(texts),
        "mask": mask.key(),
        "exclude": hashlib.sha256(json.dumps(excl).encode()).hexdigest(),
        "pooling": pooling,
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "version": EXTRACT_VERSION,
    }
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_root or cache_dir() / "activations") / key
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "key.json").write_text(json.dumps(key_src, indent=1))

    order = sorted(range(len(texts)), key=lambda k: (len(ids[k]), k))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    names = [resid_post(L) for L in layer_list]
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    device = model.info.device

    per_text: dict[int, dict[int, torch.Tensor]] = {}
    bar = tqdm(batches, desc="extract", disable=not progress, unit="batch")
    for b, batch in enumerate(bar):
        path = folder / f"batch_{b:05d}.safetensors"
        got = _load_batch(path) if use_cache and path.exists() else None
        if got is None:
            got = _run_batch(
                model,
                [ids[k] for k in batch],
                [selections[k] for k in batch],
                names,
                layer_list,
                pad_id,
                device,
                pooling,
            )
            if use_cache:
                _save_batch(path, got)
        for j, k in enumerate(batch):
            per_text[k] = {L: got[f"{L}.{j}"] for L in layer_list}

    data = {}
    for L in layer_list:
        rows = [per_text[k][L] for k in range(len(texts))]
        data[L] = torch.cat(rows) if pooling == "token" else torch.stack(rows)
    # positions pooled per text (token pooling: rows owned by each text)
    n_tok = torch.tensor([1 if pooling == "last" else len(s) for s in selections])
    prov = {
        "model": model.info.name,
        "weights_hash": model.info.weights_hash,
        "layers": layer_list,
        "hooks": names,
        "texts_sha256": key_src["texts"],
        "n_texts": len(texts),
        "mask": asdict(mask),
        "pooling": pooling,
        "max_tokens": max_tokens,
        "cache_key": key,
        "emolib_version": __version__,
    }
    return Activations(tuple(layer_list), pooling, data, n_tok, prov)


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, side: Literal["right", "left"] = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[n, width]`` and attention mask of a batch. Right padding (real tokens keep positions
    0..len-1; read a row at ``mask.sum(1) - 1``) for scoring and extraction; left padding (every row ends
    at the last column) for generation."""
    width = max(len(x) for x in seqs)
    inp = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, x in enumerate(seqs):
        span = slice(0, len(x)) if side == "right" else slice(width - len(x), width)
        inp[j, span] = torch.tensor(list(x), dtype=torch.long)
        att[j, span] = 1
    return inp, att


class _Stop(Exception):
    """Raised by the hook on the last requested layer: nothing after it is computed (no logits)."""


def _forward_until(
    model: LoadedModel, inp: torch.Tensor, att: torch.Tensor, names: list[str]
) -> dict[str, torch.Tensor]:
    """Run the bridge and keep the activations at ``names`` (in layer order), stopping right after the last
    one. The hooks live only inside ``bridge.hooks``, which removes them even when the forward raises."""
    got: dict[str, torch.Tensor] = {}

    def keeper(name: str):  # by closure: the bridge reports aliases (resid_post) under canonical names
        def keep(t: torch.Tensor, hook: Any) -> torch.Tensor:
            got[name] = t.detach()
            if name == names[-1]:
                raise _Stop
            return t

        return keep

    with model.bridge.hooks(fwd_hooks=[(n, keeper(n)) for n in names]):
        try:
            model.bridge(inp, attention_mask=att)
        except _Stop:
            pass
    missing = [n for n in names if n not in got]
    if missing:
        raise RuntimeError(f"Hooks {missing} did not fire")
    return got


@torch.no_grad()
def _run_batch(
    model: LoadedModel,
    ids: list[list[int]],
    sels: list[list[int]],
    names: list[str],
    layers: list[int],
    pad_id: int,
    device: str,
    pooling: str,
) -> dict[str, torch.Tensor]:
    inp, att = pad_batch(ids, pad_id)  # right padding: real tokens keep positions 0..n-1
    cache = _forward_until(model, inp.to(device), att.to(device), names)
    out: dict[str, torch.Tensor] = {}
    for L, name in zip(layers, names):
        acts = cache[name].float().cpu()
        for j, sel in enumerate(sels):
            rows = acts[j, sel]
            if pooling == "mean":
                out[f"{L}.{j}"] = rows.mean(0)
            elif pooling == "last":
                out[f"{L}.{j}"] = rows[-1]
            else:
                out[f"{L}.{j}"] = rows
    return out


@torch.no_grad()
def norm_profile(model: LoadedModel, texts: Sequence[str]) -> Any:
    """Mean residual norm per layer at position 0 (the attention sink) and at every later position.

    Returns a long DataFrame with columns layer, position ("first" | "rest"), norm.
    """
    import pandas as pd

    if not texts:
        raise ValueError("No texts given")
    ids, _ = tokenize(model.tokenizer, texts)
    names = [resid_post(L) for L in range(model.info.n_layers)]
    rows = []
    for x in ids:
        _, cache = model.bridge.run_with_cache(torch.tensor([x]).to(model.info.device), names_filter=names)
        for L, n in enumerate(names):
            norms = cache[n][0].float().norm(dim=-1).cpu()
            rows.append({"layer": L, "position": "first", "norm": float(norms[0])})
            rows.append({"layer": L, "position": "rest", "norm": float(norms[1:].mean())})
    return pd.DataFrame(rows).groupby(["layer", "position"], as_index=False)["norm"].mean()


def stored_means(
    model: LoadedModel, texts: Sequence[str], layers: Sequence[int], *, mask: TokenMask = TokenMask()
) -> dict[int, np.ndarray]:
    """Per-text mean activations (float64) at ``layers``, as :func:`extract` computes them, through the
    result store (kind ``text_means``). For the small text sets whose means feed other stored passes (the
    steering chapter's neutral centres and concept direction): their last bits differ between machines, and
    read from the committed store they are the same everywhere, so the passes keyed on them are found too."""
    layers = [int(L) for L in check_layers(model.info, list(layers))]
    got = _stored_means(model, list(texts), layers, mask=mask)
    return {L: got.arrays[str(L)] for L in layers}


@store.memo("text_means", version=1, depends=(EXTRACT_VERSION,))
def _stored_means(
    model: LoadedModel, texts: list[str], layers: list[int], *, mask: TokenMask
) -> store.Bundle:
    acts = extract(model, texts, layers, mask=mask, progress=False)
    return store.Bundle({str(L): acts[L].double().numpy() for L in layers})
