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

from . import __version__, store
from .extract import EXTRACT_VERSION
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


@dataclass(frozen=True)
class FittedVectors:
    """The recipe's output for one set of activations (numpy, float64).

    ``vectors`` [n_emotions, d]: per-emotion means minus their mean, in the (optionally standardized)
    space, with the neutral components projected out. ``scale`` [d] divides activations before anything
    else (ones when not standardized); ``components`` [k, d] are the neutral directions removed. Because
    every step after the scaling is linear, :meth:`refit` recomputes the vectors for other labels (a
    shuffled-label null, a resample of stories) with the same scaling and denoising."""

    vectors: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    n_emotions: int

    def refit(self, acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
        V = emotion_means(np.asarray(acts) / self.scale, np.asarray(labels), self.n_emotions)
        return project_out(torch.as_tensor(V), torch.as_tensor(self.components)).numpy()


def fit_vectors(
    acts: Any,
    labels: Sequence[int],
    n_emotions: int,
    neutral: Any | None = None,
    *,
    denoise_variance: float = 0.5,
    standardize: bool = False,
) -> FittedVectors:
    """The paper's recipe, the one code path for every variant: (optionally) divide each dimension by its
    standard deviation over the stories; per-emotion mean minus the mean over emotions; project out the
    neutral principal components that explain ``denoise_variance`` of the neutral variance (0: none)."""
    acts = np.asarray(acts, dtype=np.float64)
    labels = np.asarray(labels)
    scale = np.ones(acts.shape[1])
    if standardize:
        scale = acts.std(0)
        scale[scale < 1e-12] = 1.0
    if neutral is None or denoise_variance == 0:
        comps = np.zeros((0, acts.shape[1]))
    else:
        comps = neutral_components(np.asarray(neutral, dtype=np.float64) / scale, denoise_variance).numpy()
    fitted = FittedVectors(np.zeros((n_emotions, acts.shape[1])), comps, scale, int(n_emotions))
    return replace(fitted, vectors=fitted.refit(acts, labels))


@dataclass(frozen=True)
class EmotionVectors:
    """Emotion vectors of one layer, with provenance. ``vectors[i]`` belongs to ``emotions[i]``."""

    vectors: torch.Tensor
    emotions: tuple[str, ...]
    layer: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.emotions):
            raise ValueError(
                f"vectors {tuple(self.vectors.shape)} do not match {len(self.emotions)} emotions"
            )
        if len(set(self.emotions)) != len(self.emotions):
            raise ValueError("Duplicate emotion names")

    def _store_key(self) -> tuple[Any, ...]:
        """What :mod:`emolib.store` keys these vectors by: their values, names and layer (not the metadata,
        which holds dates)."""
        return (self.vectors, self.emotions, self.layer)

    # -- access and arithmetic -------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    def index(self, emotion: str) -> int:
        try:
            return self.emotions.index(emotion.strip().lower())
        except ValueError:
            raise ValueError(
                f"Unknown emotion {emotion!r}; these vectors hold {len(self.emotions)} emotions "
                f"({', '.join(self.emotions[:5])}, ...)"
            ) from None

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
    def score(
        self, acts: Any, kind: Literal["cosine", "projection"] = "cosine", center: Any | None = None
    ) -> torch.Tensor:
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
        meta = {
            **self.meta,
            "layer": self.layer,
            "emotions": list(self.emotions),
            "emolib_version": __version__,
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path, layer: int) -> EmotionVectors:
        from safetensors.torch import load_file

        path = Path(folder) / f"layer_{layer}.safetensors"
        side = path.with_suffix(".json")
        if not path.exists() or not side.exists():
            have = (
                sorted(p.stem for p in Path(folder).glob("layer_*.safetensors"))
                if Path(folder).exists()
                else []
            )
            raise FileNotFoundError(f"No vectors for layer {layer} in {folder} (have: {have or 'none'})")
        try:
            meta = json.loads(side.read_text())
            vectors = load_file(str(path))["vectors"]
        except Exception as e:  # any unreadable file or sidecar (bad JSON, bad header, missing key)
            raise ValueError(f"Malformed vector file {path} or its sidecar: {e}") from e
        emotions = tuple(meta.pop("emotions"))
        meta.pop("layer", None)
        return cls(vectors, emotions, layer, meta)


# --- vectors of every layer from corpus activations, saved and loaded with their recipe -------------


def vectors_for_layer(ca: Any, layer: int, recipe: dict[str, Any]) -> EmotionVectors:
    """Emotion vectors of one layer of :class:`emolib.activations.CorpusActivations`, fitted with
    ``recipe`` (:meth:`emolib.config.VectorsConfig.recipe`), with full provenance in ``meta``."""
    from .constants import resid_post

    fitted = fit_vectors(
        ca.acts[layer],
        ca.labels,
        len(ca.emotions),
        ca.neutral[layer],
        denoise_variance=recipe["denoise_variance"],
        standardize=recipe["standardize"],
    )
    counts = np.bincount(ca.labels, minlength=len(ca.emotions))
    meta = {
        **ca.settings,
        **recipe,
        "hook": resid_post(layer),
        "n_denoise_pcs": int(fitted.components.shape[0]),
        "n_stories": int(len(ca.labels)),
        "stories_per_emotion_min": int(counts.min()),
        "stories_per_emotion_max": int(counts.max()),
        "n_dropped_short": ca.n_short,
    }
    return EmotionVectors(torch.as_tensor(fitted.vectors).float(), ca.emotions, layer, meta)


def bank_from_corpus(
    model: Any, corpus: Any, cfg: Any, layers: Sequence[int], *, progress: bool = False
) -> dict[int, EmotionVectors]:
    """Emotion vectors of every layer in ``layers``, fitted on ``model``'s activations over ``corpus`` with the
    recipe and story limits of ``cfg`` (a :class:`emolib.config.VectorsConfig`: ``token_offset``,
    ``mask_leaks``, ``emotions``, ``stories_per_emotion``, ``max_neutral``, ``denoise_variance``,
    ``standardize``), as :func:`emolib.activations.from_config` then :func:`vectors_for_layer` would. The
    fitted bank goes through :mod:`emolib.store`, so the same model, corpus, recipe and limits are fitted
    once."""
    got = _fitted_bank(
        model,
        corpus,
        tuple(sorted({int(L) for L in layers})),
        cfg.recipe(),
        tuple(cfg.emotions) if cfg.emotions is not None else None,
        cfg.stories_per_emotion,
        cfg.max_neutral,
        progress=progress,
    )
    emotions = tuple(got.info["emotions"])
    return {
        int(L): EmotionVectors(torch.from_numpy(got.arrays[f"layer_{L}"].copy()), emotions, int(L), meta)
        for L, meta in got.info["meta"].items()
    }


@store.memo("fitted_bank", version=1, ignore=("progress",), depends=(EXTRACT_VERSION,))
def _fitted_bank(
    model: Any,
    corpus: Any,
    layers: tuple[int, ...],
    recipe: dict[str, Any],
    emotions: tuple[str, ...] | None,
    stories_per_emotion: int | None,
    max_neutral: int | None,
    *,
    progress: bool = False,
) -> store.Bundle:
    from .activations import corpus_activations

    ca = corpus_activations(
        model,
        corpus,
        list(layers),
        token_offset=recipe["token_offset"],
        mask_leaks=recipe["mask_leaks"],
        emotions=emotions,
        max_per_emotion=stories_per_emotion,
        max_neutral=max_neutral,
        progress=progress,
    )
    banks = {L: vectors_for_layer(ca, L, recipe) for L in layers}
    return store.Bundle(
        {f"layer_{L}": v.vectors.float().numpy() for L, v in banks.items()},
        {"emotions": list(ca.emotions), "meta": {str(L): v.meta for L, v in banks.items()}},
    )


# settings a saved vector file must share with the chapter that loads it
CHECKED_SETTINGS = (
    "corpus_sha256",
    "token_offset",
    "mask_leaks",
    "denoise_variance",
    "standardize",
    "weights_hash",
)


def load_checked(
    folder: str | Path, layer: int, expected: dict[str, Any], *, producer: str
) -> EmotionVectors:
    """Load saved vectors and check their recorded settings against ``expected`` (the loading chapter's
    own settings). A mismatch is an error that names the settings and the chapter to rerun (``producer``);
    nothing is silently recomputed under other settings."""
    try:
        v = EmotionVectors.load(folder, layer)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}. Run {producer} first for this model.") from None
    bad = {
        k: (v.meta.get(k), expected[k])
        for k in CHECKED_SETTINGS
        if k in expected and v.meta.get(k) != expected[k]
    }
    if bad:
        what = "; ".join(f"{k}: saved {a!r}, here {b!r}" for k, (a, b) in bad.items())
        raise ValueError(
            f"The vectors in {folder} (layer {layer}) were made with other settings ({what}). "
            f"Rerun {producer} with these settings, or use its settings here."
        )
    return v
