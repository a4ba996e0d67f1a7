"""Emotion vectors: the paper's recipe, a frozen typed result, and scoring.

Recipe (per layer): mean activation of each story over its tokens from ``token_offset`` on; mean per
emotion minus the mean over all emotions (:func:`emolib.geometry.emotion_means`); then project out the top
principal components of neutral dialogues' activations that together explain ``denoise_variance`` of
their variance (0 disables).

Saved as ``<dir>/layer_<L>.safetensors`` (one tensor ``vectors`` [n_emotions, d_model], rows in the order
of ``emotions_171.json``) with a JSON sidecar ``layer_<L>.json`` holding the provenance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import __version__
from .geometry import emotion_means


def neutral_components(neutral_acts: Any, variance: float) -> torch.Tensor:
    """Top principal directions [k, d] of neutral activations explaining at least ``variance`` of their
    variance (k = 0 when ``variance`` is 0)."""
    if not 0 <= variance < 1:
        raise ValueError(f"denoise variance must be in [0, 1), got {variance}")
    X = torch.as_tensor(np.asarray(neutral_acts), dtype=torch.float64)
    if variance == 0:
        return torch.zeros((0, X.shape[1]), dtype=torch.float64)
    if X.shape[0] < 2:
        raise ValueError("Need at least two neutral texts to denoise")
    Xc = X - X.mean(0, keepdim=True)
    _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    ratio = (S**2) / (S**2).sum()
    k = int(torch.searchsorted(ratio.cumsum(0), torch.tensor(variance, dtype=torch.float64)).item()) + 1
    return Vh[:k]


def project_out(vectors: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Remove from each row its projection on the (orthonormal) ``components``."""
    if components.shape[0] == 0:
        return vectors
    C = components.to(vectors.dtype)
    return vectors - (vectors @ C.T) @ C


def compute_vectors(
    story_acts: Any,
    labels: Sequence[int],
    n_emotions: int,
    neutral_acts: Any | None = None,
    denoise_variance: float = 0.5,
) -> tuple[torch.Tensor, int]:
    """Emotion vectors [n_emotions, d] (float32) and the number of neutral PCs projected out."""
    V = torch.as_tensor(emotion_means(np.asarray(story_acts), np.asarray(labels), n_emotions))
    if neutral_acts is None or denoise_variance == 0:
        return V.float(), 0
    C = neutral_components(neutral_acts, denoise_variance)
    return project_out(V, C).float(), int(C.shape[0])


@dataclass(frozen=True)
class EmotionVectors:
    """Emotion vectors of one layer, with provenance. ``vectors[i]`` belongs to ``emotions[i]``."""

    vectors: torch.Tensor
    emotions: tuple[str, ...]
    layer: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.emotions):
            raise ValueError(f"vectors {tuple(self.vectors.shape)} do not match {len(self.emotions)} emotions")
        if len(set(self.emotions)) != len(self.emotions):
            raise ValueError("Duplicate emotion names")

    # -- access and arithmetic -------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    def index(self, emotion: str) -> int:
        try:
            return self.emotions.index(emotion.strip().lower())
        except ValueError:
            raise ValueError(f"Unknown emotion {emotion!r}; these vectors hold {len(self.emotions)} emotions "
                             f"({', '.join(self.emotions[:5])}, ...)") from None

    def __getitem__(self, emotion: str) -> torch.Tensor:
        return self.vectors[self.index(emotion)]

    def unit(self) -> EmotionVectors:
        return replace(self, vectors=self.vectors / self.vectors.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def __neg__(self) -> EmotionVectors:
        return replace(self, vectors=-self.vectors)

    def __mul__(self, k: float) -> EmotionVectors:
        return replace(self, vectors=self.vectors * k)

    __rmul__ = __mul__

    def subset(self, emotions: Sequence[str]) -> EmotionVectors:
        idx = [self.index(e) for e in emotions]
        return replace(self, vectors=self.vectors[idx], emotions=tuple(self.emotions[i] for i in idx))

    def to(self, device: str) -> EmotionVectors:
        return replace(self, vectors=self.vectors.to(device))

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, acts: Any, kind: Literal["cosine", "projection"] = "cosine",
              center: Any | None = None) -> torch.Tensor:
        """Scores [n, n_emotions] of activations [n, d] (or [d]): cosine with each vector, or projection on
        its unit direction. ``center`` (a [d] vector, e.g. a baseline activation) is subtracted first."""
        A = torch.as_tensor(np.asarray(acts), dtype=torch.float32)
        if A.ndim == 1:
            A = A[None]
        if A.shape[-1] != self.d_model:
            raise ValueError(f"Activations have width {A.shape[-1]}, vectors {self.d_model}")
        if center is not None:
            A = A - torch.as_tensor(np.asarray(center), dtype=torch.float32)
        U = self.unit().vectors.float()
        proj = A @ U.T
        if kind == "projection":
            return proj
        if kind == "cosine":
            return proj / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
        raise ValueError(f"kind must be 'cosine' or 'projection', got {kind!r}")

    # -- persistence -----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"layer_{self.layer}.safetensors"
        save_file({"vectors": self.vectors.detach().float().contiguous().cpu()}, str(path))
        meta = {**self.meta, "layer": self.layer, "emotions": list(self.emotions), "emolib_version": __version__}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path, layer: int) -> EmotionVectors:
        from safetensors.torch import load_file

        path = Path(folder) / f"layer_{layer}.safetensors"
        side = path.with_suffix(".json")
        if not path.exists() or not side.exists():
            have = sorted(p.stem for p in Path(folder).glob("layer_*.safetensors")) if Path(folder).exists() else []
            raise FileNotFoundError(f"No vectors for layer {layer} in {folder} (have: {have or 'none'})")
        try:
            meta = json.loads(side.read_text())
            vectors = load_file(str(path))["vectors"]
        except Exception as e:  # any unreadable file or sidecar (bad JSON, bad header, missing key)
            raise ValueError(f"Malformed vector file {path} or its sidecar: {e}") from e
        emotions = tuple(meta.pop("emotions"))
        meta.pop("layer", None)
        return cls(vectors, emotions, layer, meta)


# --- from a corpus to vectors at every layer -----------------------------------------------------


@dataclass(frozen=True)
class CorpusActivations:
    """Mean activations of the usable stories and neutral dialogues of a corpus, per layer."""

    stories: Any  # DataFrame of the stories kept, in row order of ``acts``
    acts: dict[int, np.ndarray]  # layer -> [n_stories, d]
    neutral: dict[int, np.ndarray]  # layer -> [n_neutral, d]
    emotions: tuple[str, ...]
    n_short: int  # stories dropped because no token is left after the offset
    settings: dict[str, Any]

    @property
    def labels(self) -> np.ndarray:
        return self.stories["emotion_index"].to_numpy()

    @property
    def layers(self) -> list[int]:
        return sorted(self.acts)


def corpus_activations(
    model: Any,
    corpus: Any,
    layers: Sequence[int],
    *,
    token_offset: int = 50,
    mask_leaks: bool = True,
    neutral_offset: int = 1,
    emotions: Sequence[str] | None = None,
    max_per_emotion: int | None = None,
    max_neutral: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> CorpusActivations:
    """Extract (cached) mean activations from ``token_offset`` on for every usable story, and from
    ``neutral_offset`` on for the neutral dialogues. ``emotions`` restricts to a subset (labels are then
    indices into that subset); ``mask_leaks`` leaves the emotion word's own tokens out of each mean."""
    from .extract import TokenMask, extract, select_positions, tokenize

    names = tuple(emotions) if emotions is not None else tuple(corpus.emotions)
    stories = corpus.usable()
    stories = stories[stories["emotion"].isin(names)].copy()
    stories["emotion_index"] = stories["emotion"].map({e: i for i, e in enumerate(names)})
    if max_per_emotion is not None:
        stories = stories.groupby("emotion", sort=False).head(max_per_emotion)
    stories = stories.reset_index(drop=True)
    missing = sorted(set(names) - set(stories["emotion"]))
    if missing:
        raise ValueError(f"No usable story for emotion(s) {missing}")
    mask = TokenMask(start=token_offset)
    exclude = [(e,) if mask_leaks else () for e in stories["emotion"]]
    ids, offs = tokenize(model.tokenizer, list(stories["text"]))
    keep = [bool(select_positions(o, min(len(i), 512), t, mask, ex, k))
            for k, (i, o, t, ex) in enumerate(zip(ids, offs, stories["text"], exclude))]
    n_short = int(len(keep) - sum(keep))
    stories = stories[keep].reset_index(drop=True)
    exclude = [x for x, k in zip(exclude, keep) if k]
    acts = extract(model, list(stories["text"]), list(layers), mask=mask, exclude=exclude,
                   batch_size=batch_size, progress=progress)
    neutral = corpus.usable_neutral()
    if max_neutral is not None:
        neutral = neutral.head(max_neutral)
    nacts = extract(model, list(neutral["text"]), list(layers), mask=TokenMask(start=neutral_offset),
                    batch_size=batch_size, progress=progress)
    settings = {
        "token_offset": token_offset,
        "neutral_offset": neutral_offset,
        "mask_leaks": mask_leaks,
        "corpus_sha256": corpus.sha256,
        "n_neutral": int(len(neutral)),
        "model": model.info.name,
        "weights_hash": model.info.weights_hash,
    }
    return CorpusActivations(
        stories,
        {L: acts[L].double().numpy() for L in acts.layers},
        {L: nacts[L].double().numpy() for L in nacts.layers},
        names,
        n_short,
        settings,
    )


def layer_inputs(ca: CorpusActivations, layer: int, standardize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Story and neutral activations of a layer; with ``standardize`` each dimension is divided by its
    standard deviation over the stories (outlier dimensions otherwise dominate small models' geometry)."""
    acts, neutral = ca.acts[layer], ca.neutral[layer]
    if not standardize:
        return acts, neutral
    scale = acts.std(0)
    scale[scale < 1e-12] = 1.0
    return acts / scale, neutral / scale


def fit_layer(ca: CorpusActivations, layer: int, denoise_variance: float = 0.5,
              rows: np.ndarray | None = None, standardize: bool = False) -> EmotionVectors:
    """Emotion vectors of one layer from all (or the ``rows``) stories, with full provenance."""
    from .constants import resid_post

    sel = np.arange(len(ca.stories)) if rows is None else np.asarray(rows)
    acts, neutral = layer_inputs(ca, layer, standardize)
    V, n_pcs = compute_vectors(acts[sel], ca.labels[sel], len(ca.emotions), neutral, denoise_variance)
    counts = np.bincount(ca.labels[sel], minlength=len(ca.emotions))
    meta = {
        **ca.settings,
        "hook": resid_post(layer),
        "standardized": standardize,
        "denoise_variance": denoise_variance,
        "n_denoise_pcs": n_pcs,
        "n_stories": int(len(sel)),
        "stories_per_emotion_min": int(counts.min()),
        "stories_per_emotion_max": int(counts.max()),
        "n_dropped_short": ca.n_short,
    }
    return EmotionVectors(V, ca.emotions, layer, meta)


def variant_vectors(ca: CorpusActivations, layer: int, standardize: bool = False,
                    denoise_variance: float = 0.5) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """(story activations as used, neutral components projected out [k, d], vectors [n_emotions, d]) for
    one analysis variant. Since denoising is a linear projection, vectors of shuffled labels are
    ``project_out(emotion_means(acts, shuffled), C)``."""
    acts, neutral = layer_inputs(ca, layer, standardize)
    C = neutral_components(neutral, denoise_variance)
    V = project_out(torch.as_tensor(emotion_means(acts, ca.labels, len(ca.emotions))), C).numpy()
    return acts, C, V


def denoised(M: np.ndarray, C: torch.Tensor) -> np.ndarray:
    """``project_out`` for numpy matrices."""
    return project_out(torch.as_tensor(np.asarray(M)), C).numpy()
