"""Chapter 02 (valence geometry): its config, its analyses as typed results, and its figures.

The chapter *loads* chapter 01's saved vectors (``results/<slug>/vectors/layer_<L>``) and checks them
against its own recipe (:func:`emolib.vectors.load_checked`). Statistics that need the per-story
activations (story-label null, story resampling, the held-out coarse valence test) use the cached
activations and :meth:`emolib.vectors.FittedVectors.refit`; :func:`load_geometry_data` asserts that the refit
equals the loaded vectors (cosine > 0.9999 for every emotion at every layer), so the two cannot drift.

Every result has ``metrics() -> dict`` with flat keys (``<name>``, ``_ci_low``, ``_ci_high``, ``_p``,
``_null95``, ``_n``), recorded with :meth:`emolib.results.Run.record_result`. p-values are
:class:`emolib.stats.PValue` and are also recorded as prose (``<name>_p_text``), bounds at their floor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from . import geometry as geo
from .config import VectorsConfig, _check
from .constants import DATA_DIR
from .stats import CI, Corr, PValue, bootstrap_ci, pearson_ci, perm_p, selected_p

PRODUCER = "chapter 01 (notebooks/01_emotion_vectors.ipynb)"
# emotions the paper names in its figures and text: labelled on the maps whenever present
NAMED_EMOTIONS = (
    "happy",
    "calm",
    "desperate",
    "afraid",
    "angry",
    "sad",
    "loving",
    "hostile",
    "blissful",
    "nervous",
    "proud",
    "guilty",
    "bored",
    "excited",
    "terrified",
    "peaceful",
)
N_VALENCE_SEARCH = 5  # "is valence PC1?": the valence-best of the first 5 components


@dataclass(frozen=True)
class GeometryConfig(VectorsConfig):
    """Chapter 02's settings on top of the vector recipe (which must match chapter 01's).

    ``n_label_perm``: story-label shuffles (vectors refitted each time) for the headline layer's null;
    ``n_null``: the same at every other layer (the band of the across-layers figure); ``n_story_boot``:
    story resamples within emotion (vectors refitted each time); ``n_extreme``: emotions at each end of the
    rated valence scale in the coarse valence test; ``n_readout_folds``: folds over emotions of the ridge
    readout."""

    n_clusters: int = 10
    n_label_perm: int = 200
    n_story_boot: int = 200
    n_extreme: int = 20
    n_readout_folds: int = 5

    QUICK: ClassVar[dict[str, int]] = {
        "n_boot": 200,
        "n_perm": 200,
        "n_null": 5,
        "n_label_perm": 20,
        "n_story_boot": 20,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.n_clusters >= 2, f"n_clusters must be >= 2, got {self.n_clusters}")
        _check(self.n_extreme >= 2, f"n_extreme must be >= 2, got {self.n_extreme}")
        _check(self.n_readout_folds >= 2, f"n_readout_folds must be >= 2, got {self.n_readout_folds}")
        _check(
            self.n_label_perm >= 1 and self.n_story_boot >= 1 and self.n_perm >= 1 and self.n_boot >= 1,
            "n_label_perm, n_story_boot, n_perm and n_boot must be >= 1",
        )


# ------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class GeometryData:
    """What the chapter analyses: chapter 01's vectors of every swept layer (loaded and checked), the
    cached story activations behind them, the refitted :class:`FittedVectors` (equal to the loaded
    vectors) and the human ratings joined to the emotion list."""

    layer: int
    layers: list[int]
    n_layers: int
    acts: Any  # emolib.activations.CorpusActivations
    vectors: dict[int, Any]  # layer -> EmotionVectors (loaded)
    fitted: dict[int, Any]  # layer -> FittedVectors (refit on the cached activations)
    ratings: Any  # emolib.ratings.RatingsJoin
    refit_min_cosine: float
    profile: GeometryData | None = None  # the layer profile when read on a subset (profile_rounds)

    @property
    def across(self) -> GeometryData:
        """What the across-layers analyses read: the profile subset, or this data when it holds every layer."""
        return self.profile if self.profile is not None else self

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(self.acts.emotions)

    @property
    def positions(self) -> np.ndarray:
        return self.ratings.table["position"].to_numpy()

    @property
    def valence(self) -> np.ndarray:
        return self.ratings.table["valence"].to_numpy(dtype=float)

    @property
    def arousal(self) -> np.ndarray:
        return self.ratings.table["arousal"].to_numpy(dtype=float)

    def V(self, layer: int | None = None) -> np.ndarray:
        """The loaded vectors of ``layer`` (default: the analysed one) as float64 ``[n_emotions, d]``."""
        return self.vectors[self.layer if layer is None else layer].vectors.double().numpy()

    def metrics(self) -> dict[str, Any]:
        rj = self.ratings
        return {
            "geometry_layer": self.layer,
            "ratings_coverage": rj.coverage,
            "coverage": rj.coverage,
            "ratings_n_exact": rj.n_exact,
            "ratings_n_lemma": rj.n_lemma,
            "ratings_n_matched": len(rj.table),
            "ratings_unmatched": ", ".join(rj.unmatched) or "none",
            "geometry_n_emotions": len(self.emotions),
            "geometry_n_stories": int(len(self.acts.labels)),
            "geometry_refit_min_cosine": self.refit_min_cosine,
            "n_denoise_pcs_geometry": int(self.fitted[self.layer].components.shape[0]),
            "geometry_profile_n_stories": int(len(self.across.acts.labels)),
            "geometry_profile_layers": ", ".join(str(L) for L in self.across.layers),
        }


def check_refit(loaded: np.ndarray, refit: np.ndarray, *, layer: int, tol: float = 1e-4) -> float:
    """Smallest row cosine between the loaded and the refitted vectors; an error below ``1 - tol``."""
    a, b = np.asarray(loaded, dtype=float), np.asarray(refit, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"layer {layer}: loaded vectors {a.shape} and refit {b.shape} differ in shape")
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    worst = float(cos.min())
    if worst < 1 - tol:
        raise ValueError(
            f"layer {layer}: the vectors refitted from the cached activations differ from the saved "
            f"ones (min cosine {worst:.6f}); rerun {PRODUCER} with this chapter's settings"
        )
    return worst


def load_geometry_data(
    cfg: GeometryConfig, run: Any, *, model: Any = None, progress: bool = False
) -> GeometryData:
    """Load chapter 01's vectors for ``cfg`` (every swept layer), checked against this chapter's recipe,
    and the cached activations they were fitted from."""
    from .activations import from_config
    from .corpus import corpus_dir_for, load_corpus
    from .ratings import join_ratings
    from .stimuli import load_emotions

    model = model if model is not None else cfg.load_model()
    n_layers = int(model.info.n_layers)
    layer = cfg.resolve_layer(n_layers, run.metrics())
    corpus = load_corpus(corpus_dir_for(cfg.model), load_emotions())
    ca = from_config(model, corpus, cfg, cfg.analysis_layers(n_layers, (layer,)), progress=progress)
    ratings = join_ratings(list(ca.emotions))
    data = _checked_data(cfg, ca, run.out / "vectors", layer, n_layers, ratings)
    if cfg.profile_subset() is None:
        return data
    layers = cfg.sweep_layers(n_layers, (layer,))
    pca = from_config(model, corpus, cfg, layers, progress=progress, rounds=cfg.profile_subset())
    profile = _checked_data(cfg, pca, run.out / "vectors_profile", layer, n_layers, ratings)
    worst = min(data.refit_min_cosine, profile.refit_min_cosine)
    return replace(data, profile=profile, refit_min_cosine=worst)


def _checked_data(
    cfg: GeometryConfig, ca: Any, folder: Any, layer: int, n_layers: int, ratings: Any
) -> GeometryData:
    """Chapter 01's vectors in ``folder`` for every layer of ``ca``, checked against this chapter's recipe
    and against a refit on ``ca``."""
    from .vectors import CHECKED_SETTINGS, fit_vectors, load_checked

    expected = {**ca.settings, **cfg.recipe()}
    expected = {k: expected[k] for k in CHECKED_SETTINGS if k in expected}
    recipe = cfg.recipe()
    vectors, fitted, worst = {}, {}, 1.0
    for L in ca.layers:
        v = load_checked(folder, L, expected, producer=PRODUCER)
        if tuple(v.emotions) != tuple(ca.emotions):
            raise ValueError(
                f"The vectors of layer {L} hold {len(v.emotions)} emotions, this run "
                f"{len(ca.emotions)} (quick={cfg.quick}); rerun {PRODUCER} with quick={cfg.quick}"
            )
        f = fit_vectors(
            ca.acts[L],
            ca.labels,
            len(ca.emotions),
            ca.neutral[L],
            denoise_variance=recipe["denoise_variance"],
            standardize=recipe["standardize"],
        )
        worst = min(worst, check_refit(v.vectors.double().numpy(), f.vectors, layer=L))
        vectors[L], fitted[L] = v, f
    return GeometryData(layer, list(ca.layers), n_layers, ca, vectors, fitted, ratings, worst)


# ---------------------------------------------------------------------------------------- analyses
def story_space(fitted: Any, acts: np.ndarray) -> np.ndarray:
    """Per-story activations in the vectors' space (scaled, neutral components projected out): the
    emotion vectors are exactly :func:`emolib.geometry.emotion_means` of these rows."""
    A = np.asarray(acts, dtype=float) / fitted.scale
    C = np.asarray(fitted.components)
    return A - (A @ C.T) @ C if C.shape[0] else A


@dataclass(frozen=True)
class StoryResample:
    """PC1-valence r (and PC2-arousal r) over resamples of the stories within each emotion, each followed
    by the full analysis (refit, PCA, orientation; the rated emotions are resampled too for r), and the
    share of resamples whose valence-best component among the first five is PC1."""

    r_valence: np.ndarray  # [n_boot]
    r_arousal: np.ndarray  # [n_boot]
    pc1_is_valence: np.ndarray  # [n_boot] bool

    def ci(self, which: str = "valence", estimate: float = float("nan"), level: float = 0.95) -> CI:
        d = self.r_valence if which == "valence" else self.r_arousal
        d = d[np.isfinite(d)]
        lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
        return CI(float(lo), float(hi), estimate, int(d.size), "story (within emotion) and emotion", level)

    @property
    def share(self) -> float:
        return float(np.mean(self.pc1_is_valence))


def story_resample(
    story_acts: np.ndarray,
    labels: np.ndarray,
    positions: np.ndarray,
    valence: np.ndarray,
    arousal: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    n_emotions: int | None = None,
) -> StoryResample:
    """Resample stories within emotion ``n_boot`` times (rows of ``story_acts`` already in the vectors'
    space, :func:`story_space`) and redo PCA and the rating correlations each time."""
    rng = np.random.default_rng(seed)
    pos = np.asarray(positions, dtype=int)
    n_e = int(n_emotions or labels.max() + 1)
    rv, ra, is1 = np.full(n_boot, np.nan), np.full(n_boot, np.nan), np.zeros(n_boot, bool)
    for b in range(n_boot):
        V = geo.resampled_emotion_means(story_acts, labels, rng, n_e)
        res = geo.pca(V, n_components=N_VALENCE_SEARCH)
        rs = geo.column_pearson(valence, res.scores[pos])
        is1[b] = int(np.nanargmax(np.abs(rs))) == 0
        k = rng.integers(0, pos.size, pos.size)  # the rated emotions resampled too
        rv[b] = abs(geo.column_pearson(valence[k], res.scores[pos[k], :1])[0])
        ra[b] = abs(geo.column_pearson(arousal[k], res.scores[pos[k], 1:2])[0])
    return StoryResample(rv, ra, is1)


def label_null(
    fitted: Any,
    acts: np.ndarray,
    labels: np.ndarray,
    positions: np.ndarray,
    refs: list[np.ndarray],
    axes: list[int],
    *,
    n_perm: int,
    seed: int,
) -> np.ndarray:
    """|r| of PC ``axes[j]`` with ``refs[j]`` after refitting the vectors on shuffled story labels
    (every emotion keeps its story count): ``[n_perm, len(axes)]``."""
    rng = np.random.default_rng(seed)
    # refit(acts, labels) == emotion_means(S, labels): every step after the scaling is linear
    S = story_space(fitted, acts)
    out = np.empty((n_perm, len(axes)))
    for i in range(n_perm):
        res = geo.pca(
            geo.emotion_means(S, rng.permutation(labels), fitted.n_emotions), n_components=max(axes) + 1
        )
        for j, (ax, ref) in enumerate(zip(axes, refs)):
            out[i, j] = abs(
                geo.column_pearson(ref, res.scores[np.asarray(positions, dtype=int), ax : ax + 1])[0]
            )
    return out


def verdict(*ps: PValue | float, alpha: float = 0.05) -> str:
    """Prose verdict of one claim tested against one or more nulls (uncorrected, each at ``alpha``)."""
    passed = sum(float(p) < alpha for p in ps)
    if passed == len(ps):
        return "beats its null" + ("s" if len(ps) > 1 else "")
    if passed == 0:
        return "does not beat its null" + ("s" if len(ps) > 1 else "") + " (a null result)"
    return f"beats {passed} of its {len(ps)} nulls but not all (not a robust result)"


def _corr_metrics(name: str, c: Corr, rho: float | None = None) -> dict[str, Any]:
    m = {
        f"{name}_r": c.r,
        f"{name}_ci_low": c.ci_low,
        f"{name}_ci_high": c.ci_high,
        f"{name}_p": float(c.p),
        f"{name}_p_text": c.p.text(),
        f"{name}_null95": c.null95,
        f"{name}_n": c.n,
    }
    if rho is not None:
        m[f"{name}_rho"] = rho
    return m


@dataclass(frozen=True)
class PCAReport:
    """The paper's headline analysis at one layer, with three kinds of uncertainty: ratings shuffled (p),
    story labels shuffled and vectors refitted (``label_p``), stories resampled and vectors refitted (CI)."""

    layer: int
    geometry: Any  # geo.RatingGeometry
    label_p_valence: PValue
    label_p_arousal: PValue
    label_null95_valence: float
    label_null95_arousal: float
    resample: StoryResample
    n_boot: int

    @property
    def pca(self) -> geo.PCAResult:
        return self.geometry.pca

    @property
    def arousal_passes(self) -> bool:
        """PC2 earns the name "arousal" only if its correlation beats both nulls (p < 0.05 each)."""
        return float(self.geometry.pc2_arousal.p) < 0.05 and float(self.label_p_arousal) < 0.05

    def metrics(self) -> dict[str, Any]:
        g, evr = self.geometry, self.pca.explained_variance_ratio
        civ = self.resample.ci("valence", g.pc1_valence.r)
        cia = self.resample.ci("arousal", g.pc2_arousal.r)
        return {
            "pc1_var": float(evr[0]),
            "pc2_var": float(evr[1]),
            "pc3_var": float(evr[2]),
            **_corr_metrics("pc1_valence", g.pc1_valence, g.rho["pc1_valence"]),
            **_corr_metrics("pc2_arousal", g.pc2_arousal, g.rho["pc2_arousal"]),
            **_corr_metrics("pc3_arousal", g.pc3_arousal, g.rho["pc3_arousal"]),
            "pc1_valence_label_p": float(self.label_p_valence),
            "pc1_valence_label_p_text": self.label_p_valence.text(),
            "pc1_valence_label_null95": self.label_null95_valence,
            "pc2_arousal_label_p": float(self.label_p_arousal),
            "pc2_arousal_label_p_text": self.label_p_arousal.text(),
            "pc2_arousal_label_null95": self.label_null95_arousal,
            "n_label_perm_used": self.label_p_valence.n_perm,
            "pc1_valence_r_story_ci_low": civ.low,
            "pc1_valence_r_story_ci_high": civ.high,
            "pc2_arousal_r_story_ci_low": cia.low,
            "pc2_arousal_r_story_ci_high": cia.high,
            "pc1_is_valence_share": self.resample.share,
            "pc1_is_valence_share_n": int(self.resample.pc1_is_valence.size),
            "pc2_axis_label": "PC2 (arousal)" if self.arousal_passes else "PC2",
            "pc1_valence_verdict": verdict(g.pc1_valence.p, self.label_p_valence),
            "pc2_arousal_verdict": verdict(g.pc2_arousal.p, self.label_p_arousal),
        }


def analyse_pcs(data: GeometryData, cfg: GeometryConfig) -> PCAReport:
    L = data.layer
    g = geo.rating_geometry(
        data.V(L),
        data.positions,
        data.valence,
        data.arousal,
        n_boot=cfg.n_boot,
        n_perm=cfg.n_perm,
        seed=cfg.seed,
    )
    acts, labels, f = data.acts.acts[L], data.acts.labels, data.fitted[L]
    null = label_null(
        f,
        acts,
        labels,
        data.positions,
        [data.valence, data.arousal],
        [0, 1],
        n_perm=cfg.n_label_perm,
        seed=cfg.seed,
    )
    rs = story_resample(
        story_space(f, acts),
        labels,
        data.positions,
        data.valence,
        data.arousal,
        n_boot=cfg.n_story_boot,
        seed=cfg.seed + 1,
        n_emotions=len(data.emotions),
    )
    return PCAReport(
        L,
        g,
        perm_p(abs(g.pc1_valence.r), null[:, 0]),
        perm_p(abs(g.pc2_arousal.r), null[:, 1]),
        float(np.quantile(null[:, 0], 0.95)),
        float(np.quantile(null[:, 1], 0.95)),
        rs,
        cfg.n_story_boot,
    )


# --- supervised readout ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadoutFit:
    """Cross-validated ridge readout of one rating from the vectors of the rated emotions: held-out
    predictions, their r with the ratings, and r under ``n_perm`` shuffles of the ratings (whole CV rerun)."""

    pred: np.ndarray
    r: float
    null: np.ndarray  # [n_perm] r of the shuffled runs

    @property
    def p(self) -> PValue:
        return perm_p(self.r, self.null, tail="greater")

    @property
    def null95(self) -> float:
        return float(np.quantile(self.null, 0.95))


def ridge_readout(X: np.ndarray, y: np.ndarray, *, n_folds: int, n_perm: int, seed: int) -> ReadoutFit:
    """Ridge from ``X: [n, d]`` to ``y: [n]``, k-fold over rows (emotions), alpha chosen inside each
    training split; the null reruns the same CV on ``n_perm`` shuffles of ``y`` (same folds)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    folds = rng.permutation(y.size) % min(n_folds, y.size)
    Y = np.column_stack([y, rng.permuted(np.broadcast_to(y, (n_perm, y.size)), axis=1).T])
    pred, _ = geo.ridge_cv_predict(X, Y, folds)
    rs = np.array([geo.column_pearson(Y[:, j], pred[:, j : j + 1])[0] for j in range(Y.shape[1])])
    return ReadoutFit(pred[:, 0], float(rs[0]), rs[1:])


@dataclass(frozen=True)
class ReadoutReport:
    """Ridge readouts of valence and arousal at the analysed layer (CI: emotions resampled; p: ratings
    shuffled) and at every swept layer (``curve``; best layer tested against the best-of-layers null)."""

    layer: int
    valence: ReadoutFit
    arousal: ReadoutFit
    valence_ci: CI
    arousal_ci: CI
    curve: pd.DataFrame  # index layer; valence_readout_r, valence_readout_null95, arousal_...
    best_layer: int
    best_p: PValue
    n_folds: int

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, fit, ci in (
            ("valence_readout", self.valence, self.valence_ci),
            ("arousal_readout", self.arousal, self.arousal_ci),
        ):
            out.update(
                {
                    f"{name}_r": fit.r,
                    f"{name}_ci_low": ci.low,
                    f"{name}_ci_high": ci.high,
                    f"{name}_p": float(fit.p),
                    f"{name}_p_text": fit.p.text(),
                    f"{name}_null95": fit.null95,
                    f"{name}_n": int(fit.pred.size),
                    f"{name}_verdict": verdict(fit.p),
                }
            )
        out.update(
            {
                "valence_readout_best_layer": self.best_layer,
                "valence_readout_best_layer_r": float(self.curve.loc[self.best_layer, "valence_readout_r"]),
                "valence_readout_best_layer_p": float(self.best_p),
                "valence_readout_best_layer_p_text": self.best_p.text(),
                "readout_n_folds": self.n_folds,
                "readout_n_perm": int(self.valence.null.size),
            }
        )
        return out


def analyse_readout(data: GeometryData, cfg: GeometryConfig) -> ReadoutReport:
    """The ridge readout at the analysed layer (every story) and across the profile's layers."""
    pos = data.positions
    fits: dict[tuple[int, str], ReadoutFit] = {}
    prof = data.across
    for L in prof.layers:
        for name, y in (("valence", data.valence), ("arousal", data.arousal)):
            fits[L, name] = ridge_readout(
                prof.V(L)[pos], y, n_folds=cfg.n_readout_folds, n_perm=cfg.n_perm, seed=cfg.seed
            )
    curve_layers = list(prof.layers)
    curve = pd.DataFrame(
        [
            {
                "layer": L,
                **{
                    f"{n}_readout_{k}": getattr(fits[L, n], k)
                    for n in ("valence", "arousal")
                    for k in ("r", "null95")
                },
            }
            for L in curve_layers
        ]
    ).set_index("layer")
    best = int(curve["valence_readout_r"].idxmax())
    null_matrix = np.column_stack(
        [fits[L, "valence"].null for L in curve_layers]
    )  # same shuffles at every layer
    L = data.layer
    if prof is not data:  # the headline reads the vectors fitted on every story
        for name, y in (("valence", data.valence), ("arousal", data.arousal)):
            fits[L, name] = ridge_readout(
                data.V(L)[pos], y, n_folds=cfg.n_readout_folds, n_perm=cfg.n_perm, seed=cfg.seed
            )
    cis = [
        pearson_ci(fits[L, n].pred, y, n_boot=cfg.n_boot, n_perm=1, seed=cfg.seed, unit="emotion")
        for n, y in (("valence", data.valence), ("arousal", data.arousal))
    ]
    as_ci = [CI(c.ci_low, c.ci_high, c.r, c.n_boot, c.unit, c.level, c.n) for c in cis]
    return ReadoutReport(
        L,
        fits[L, "valence"],
        fits[L, "arousal"],
        as_ci[0],
        as_ci[1],
        curve,
        best,
        selected_p(float(curve.loc[best, "valence_readout_r"]), null_matrix),
        cfg.n_readout_folds,
    )


# --- coarse valence test on held-out stories --------------------------------------------------------------
@dataclass(frozen=True)
class CoarseValence:
    """Held-out stories of clearly pleasant vs clearly unpleasant emotions, scored on a valence direction
    fitted without their topic fold. CI: topics resampled; null: the same emotions split into two random
    halves (whole analysis rerun), which asks whether *valence* separates stories better than an arbitrary
    grouping of the same emotions does."""

    auroc: float
    ci: CI
    p: PValue
    null95: float
    n_stories: int
    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def metrics(self) -> dict[str, Any]:
        return {
            "valence_auroc": self.auroc,
            "valence_auroc_ci_low": self.ci.low,
            "valence_auroc_ci_high": self.ci.high,
            "valence_auroc_p": float(self.p),
            "valence_auroc_p_text": self.p.text(),
            "valence_auroc_null95": self.null95,
            "valence_auroc_verdict": verdict(self.p),
            "valence_auroc_n": self.n_stories,
            "valence_auroc_n_emotions": len(self.positive),
            "valence_auroc_positive": ", ".join(self.positive),
            "valence_auroc_negative": ", ".join(self.negative),
        }


def coarse_valence_test(
    story_acts: np.ndarray,
    labels: np.ndarray,
    topics: np.ndarray,
    folds: np.ndarray,
    valence_by_emotion: np.ndarray,
    emotions: tuple[str, ...] | list[str],
    *,
    n_extreme: int,
    n_boot: int,
    n_perm: int,
    seed: int,
) -> CoarseValence:
    """``valence_by_emotion``: ``[n_emotions]`` rating per emotion index (NaN: unrated). The ``n_extreme``
    highest- and lowest-rated emotions (at most a third of the rated ones each) define the two groups."""
    val = np.asarray(valence_by_emotion, dtype=float)
    rated = np.flatnonzero(np.isfinite(val))
    k = max(1, min(n_extreme, rated.size // 3))
    order = rated[np.argsort(val[rated], kind="stable")]
    neg, pos = order[:k], order[::-1][:k]
    sel = np.isin(labels, np.concatenate([pos, neg]))
    A, lab, top, fo = (
        np.asarray(story_acts)[sel],
        labels[sel],
        np.asarray(topics)[sel],
        np.asarray(folds)[sel],
    )
    y = np.isin(lab, pos)
    scores = geo.held_out_direction_scores(A, y, fo)
    ok = np.isfinite(scores)
    auc = geo.auroc(scores[ok], y[ok])
    ci = bootstrap_ci(
        np.column_stack([scores[ok], y[ok]]),
        lambda R: geo.auroc(R[:, 0], R[:, 1] > 0.5),
        groups=top[ok],
        unit="topic",
        n_boot=n_boot,
        seed=seed,
    )
    rng = np.random.default_rng(seed + 7)
    both = np.concatenate([pos, neg])
    null = np.empty(n_perm)
    for i in range(n_perm):
        yp = np.isin(lab, rng.permutation(both)[:k])
        s = geo.held_out_direction_scores(A, yp, fo)
        m = np.isfinite(s)
        null[i] = geo.auroc(s[m], yp[m])
    names = list(emotions)
    return CoarseValence(
        auc,
        ci,
        perm_p(auc, null),
        float(np.nanquantile(null, 0.95)),
        int(ok.sum()),
        tuple(names[i] for i in pos),
        tuple(names[i] for i in neg),
    )


def analyse_coarse_valence(data: GeometryData, cfg: GeometryConfig) -> CoarseValence:
    L = data.layer
    val = geo.rated_reference(len(data.emotions), data.positions, data.valence)
    return coarse_valence_test(
        story_space(data.fitted[L], data.acts.acts[L]),
        data.acts.labels,
        data.acts.stories["topic_index"].to_numpy(),
        data.acts.folds,
        val,
        data.emotions,
        n_extreme=cfg.n_extreme,
        n_boot=cfg.n_boot,
        n_perm=cfg.n_perm,
        seed=cfg.seed,
    )


# --- across layers ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerReport:
    """PC1-valence and PC2-arousal r at every swept layer, with the story-label null (95th percentile of
    |r| over ``n_null`` shuffles per layer); the best valence layer is tested against the best-of-layers null."""

    curve: pd.DataFrame  # index layer; pc1_valence_r, pc1_valence_null95, pc2_arousal_r, pc2_arousal_null95
    best_layer: int
    best_p: PValue
    n_layers: int

    def metrics(self) -> dict[str, Any]:
        r = self.curve["pc1_valence_r"]
        early = self.best_layer < self.n_layers / 4
        note = (
            "This peak lies in the first quarter of the network, where the residual stream is still close to the "
            "token embeddings: there the valence axis can come from the stories' word choice alone, so an early "
            "peak is not by itself evidence of an abstract emotion representation."
            if early
            else "This peak lies past the first quarter of the network, beyond the layers that mostly carry the token "
            "embeddings."
        )
        return {
            "best_valence_layer": self.best_layer,
            "best_valence_layer_r": float(r.loc[self.best_layer]),
            "best_valence_layer_p": float(self.best_p),
            "best_valence_layer_p_text": self.best_p.text(),
            "valence_r_layer_sd": float(r.std()) if len(r) > 1 else 0.0,
            "valence_peak_note": note,
            "pc1_valence_r_by_layer": {str(L): float(v) for L, v in r.items()},
        }


def analyse_layers(data: GeometryData, cfg: GeometryConfig) -> LayerReport:
    """PC1-valence and PC2-arousal across the profile's layers, each with its story-label shuffle band."""
    rows, nulls = [], []
    data = data.across
    for L in data.layers:
        g = geo.rating_geometry(
            data.V(L), data.positions, data.valence, data.arousal, n_boot=1, n_perm=1, seed=cfg.seed
        )
        null = label_null(
            data.fitted[L],
            data.acts.acts[L],
            data.acts.labels,
            data.positions,
            [data.valence, data.arousal],
            [0, 1],
            n_perm=cfg.n_null,
            seed=cfg.seed,
        )
        nulls.append(null[:, 0])
        rows.append(
            {
                "layer": L,
                "pc1_valence_r": g.pc1_valence.r,
                "pc1_valence_null95": np.quantile(null[:, 0], 0.95),
                "pc2_arousal_r": g.pc2_arousal.r,
                "pc2_arousal_null95": np.quantile(null[:, 1], 0.95),
            }
        )
    curve = pd.DataFrame(rows).set_index("layer")
    best = int(curve["pc1_valence_r"].idxmax())
    return LayerReport(
        curve,
        best,
        selected_p(float(curve.loc[best, "pc1_valence_r"]), np.column_stack(nulls)),
        data.n_layers,
    )


# --- variants, clusters, reference ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantReport:
    """The headline statistics four ways at the analysed layer: raw or standardized activations, with or
    without denoising (rating-shuffle p only)."""

    table: pd.DataFrame
    headline: str

    def _row(self, activations: str) -> pd.Series:
        return self.table.loc[(activations, True)]

    def metrics(self) -> dict[str, Any]:
        raw, std = self._row("raw"), self._row("standardized")
        return {
            "raw_pc1_valence_r": float(raw["PC1–valence r"]),
            "raw_pc1_top_loading": float(raw["largest PC1 loading"]),
            "raw_pc1_var": float(raw["PC1 var"]),
            "standardized_pc1_valence_r": float(std["PC1–valence r"]),
            "standardized_pc1_top_loading": float(std["largest PC1 loading"]),
            "variant_headline": self.headline,
        }


def analyse_variants(data: GeometryData, cfg: GeometryConfig, run: Any) -> VariantReport:
    """Refit the vectors four ways from the cached activations. The standardized, denoised variant is saved as
    its own artefact, ``results/<slug>/vectors_standardized/layer_<L>`` (with its recipe in the sidecar)."""
    from .vectors import vectors_for_layer

    L, rows = data.layer, []
    for std in (False, True):
        for dn in (0.0, cfg.denoise_variance):
            ev = vectors_for_layer(
                data.acts, L, {**cfg.recipe(), "standardize": std, "denoise_variance": float(dn)}
            )
            if std and dn > 0:
                ev.save(run.out / "vectors_standardized")
            g = geo.rating_geometry(
                ev.vectors.double().numpy(),
                data.positions,
                data.valence,
                data.arousal,
                n_boot=cfg.n_boot,
                n_perm=cfg.n_perm,
                seed=cfg.seed,
            )
            rows.append(
                {
                    "activations": "standardized" if std else "raw",
                    "denoised": dn > 0,
                    "PC1 var": g.pca.explained_variance_ratio[0],
                    "PC2 var": g.pca.explained_variance_ratio[1],
                    "PC1–valence r": g.pc1_valence.r,
                    "p (valence)": g.pc1_valence.p.text(),
                    "PC2–arousal r": g.pc2_arousal.r,
                    "p (arousal)": g.pc2_arousal.p.text(),
                    "largest PC1 loading": float(np.max(np.abs(g.pca.components[0]))),
                }
            )
    table = pd.DataFrame(rows).round(3).set_index(["activations", "denoised"])
    return VariantReport(table, "standardized" if cfg.standardize else "raw")


def load_reference() -> dict[str, Any]:
    return json.loads((DATA_DIR / "paper_reference.json").read_text())


@dataclass(frozen=True)
class ClusterReport:
    """Clusters of the vectors (average linkage on cosine distance) and how well they reunite the
    paper's named clusters, against the same agreement with our cluster labels shuffled across words."""

    result: geo.ClusterResult
    table: pd.DataFrame
    names: dict[int, str]
    agreement: float
    null: np.ndarray
    placement: pd.DataFrame

    @property
    def p(self) -> PValue:
        return perm_p(self.agreement, self.null)

    def metrics(self) -> dict[str, Any]:
        return {
            "n_clusters": int(self.result.k),
            "paper_cluster_pair_agreement": self.agreement,
            "paper_cluster_pair_agreement_null": float(self.null.mean()),
            "paper_cluster_pair_agreement_null95": float(np.quantile(self.null, 0.95)),
            "paper_cluster_pair_agreement_p": float(self.p),
            "paper_cluster_pair_agreement_p_text": self.p.text(),
            "paper_cluster_pair_agreement_verdict": verdict(self.p),
        }


def analyse_clusters(data: GeometryData, cfg: GeometryConfig) -> ClusterReport:
    V, names = data.V(), list(data.emotions)
    k = min(cfg.n_clusters, len(names) - 1)
    cl = geo.cluster(V, k=k, method="average")
    val = geo.rated_reference(len(names), data.positions, data.valence)
    cnames = geo.name_clusters(cl.labels, names, V)
    tab = geo.cluster_table(cl.labels, names, val).rename(columns={"mean_score": "mean valence"})
    tab.insert(0, "name", pd.Series(cnames))
    tab["members"] = [_shorten(m) for m in tab["members"]]
    lab = dict(zip(names, (int(x) for x in cl.labels)))
    groups = load_reference()["paper_clusters"]
    present = {p: [w for w in ws if w in lab] for p, ws in groups.items()}
    placement = pd.DataFrame(
        [
            {"paper cluster": p, "our clusters of its members": ", ".join(f"{w} → {lab[w]}" for w in ws)}
            for p, ws in present.items()
            if ws
        ]
    ).set_index("paper cluster")
    try:
        agree = geo.pair_agreement(lab, groups)
        null = geo.pair_agreement_null(lab, groups, n_perm=cfg.n_perm, seed=cfg.seed)
    except ValueError:  # quick mode: no two members of one paper cluster among the emotions
        agree, null = float("nan"), np.array([np.nan])
    return ClusterReport(cl, tab.round(2), cnames, agree, null, placement)


def _shorten(members: str, n: int = 8) -> str:
    ws = members.split(", ")
    return ", ".join(ws[:n]) + (f" (+{len(ws) - n} more)" if len(ws) > n else "")


def comparison(run: Any) -> pd.DataFrame:
    from .results import comparison_table

    return comparison_table(run.metrics(), load_reference()["rows"])


def axis_ends(pcs: PCAReport, emotions: tuple[str, ...], n: int = 6) -> pd.DataFrame:
    """The emotions at either end of PC1 and PC2 (a small table)."""
    s = pcs.pca.scores
    out = {}
    for j, pc in enumerate(("PC1", "PC2")):
        o = np.argsort(s[:, j])
        out[f"{pc} low"] = [emotions[i] for i in o[:n]]
        out[f"{pc} high"] = [emotions[i] for i in o[::-1][:n]]
    return pd.DataFrame(out, index=pd.RangeIndex(1, n + 1, name="rank"))


# ------------------------------------------------------------------------------------------------ figures
def _labelled(emotions: tuple[str, ...], scores: np.ndarray, n_ext: int = 4, cap: int = 30) -> list[int]:
    """Indices to label: the extremes of each of the first two columns of ``scores``, then named emotions."""
    pick: list[int] = []
    for j in range(min(2, scores.shape[1])):
        o = np.argsort(scores[:, j])
        pick += list(o[:n_ext]) + list(o[::-1][:n_ext])
    pick += [emotions.index(e) for e in NAMED_EMOTIONS if e in emotions]
    return list(dict.fromkeys(int(i) for i in pick))[:cap]


def fig_pc_map(data: GeometryData, pcs: PCAReport) -> Any:
    import matplotlib.pyplot as plt

    s = pcs.pca.scores
    val = geo.rated_reference(len(data.emotions), data.positions, data.valence)
    rated = np.isfinite(val)
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    ax.scatter(
        s[~rated, 0], s[~rated, 1], c="lightgrey", s=16, edgecolor="grey", lw=0.3, label="no human rating"
    )
    sc = ax.scatter(
        s[rated, 0],
        s[rated, 1],
        c=val[rated],
        cmap="coolwarm_r",
        vmin=1,
        vmax=9,
        s=22,
        edgecolor="grey",
        lw=0.3,
    )
    for i in _labelled(data.emotions, s):
        ax.annotate(
            data.emotions[i], (s[i, 0], s[i, 1]), fontsize=8, xytext=(3, 2), textcoords="offset points"
        )
    fig.colorbar(sc, ax=ax, shrink=0.7, pad=0.02, label="human valence (Warriner, 1–9)")
    evr = pcs.pca.explained_variance_ratio
    ax.set_xlabel(f"PC1 ({100 * evr[0]:.0f}% of variance; oriented: right = pleasant)")
    ylab = "PC2 (arousal" if pcs.arousal_passes else "PC2 (not called arousal: fails its null"
    ax.set_ylabel(f"{ylab}; {100 * evr[1]:.0f}% of variance)")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.1), frameon=False)
    ax.set_title(f"Emotion vectors on their first two components, layer {pcs.layer}")
    fig.tight_layout()
    return fig


def fig_pc1_valence(data: GeometryData, pcs: PCAReport) -> Any:
    import matplotlib.pyplot as plt

    x, y = data.valence, pcs.pca.scores[data.positions, 0]
    names = [data.emotions[i] for i in data.positions]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.scatter(x, y, s=16, color="steelblue", edgecolor="white", lw=0.3)
    b = np.polyfit(x, y, 1)
    xs = np.linspace(x.min(), x.max(), 2)
    ax.plot(
        xs,
        np.polyval(b, xs),
        color="black",
        lw=1.2,
        label=f"least-squares fit (r = {pcs.geometry.pc1_valence.r:.2f})",
    )
    sel = (
        list(np.argsort(x)[:4])
        + list(np.argsort(x)[::-1][:4])
        + [names.index(e) for e in NAMED_EMOTIONS if e in names]
    )
    for i in list(dict.fromkeys(int(i) for i in sel))[:24]:
        ax.annotate(names[i], (x[i], y[i]), fontsize=7.5, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("human valence rating (Warriner, 1 = unpleasant, 9 = pleasant)")
    ax.set_ylabel("PC1 score (oriented)")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15), frameon=False)
    ax.set_title(f"PC1 against valence, {len(x)} rated emotions")
    fig.tight_layout()
    return fig


def fig_scree(pcs: PCAReport) -> Any:
    import matplotlib.pyplot as plt

    evr = pcs.pca.explained_variance_ratio
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(np.arange(1, len(evr) + 1), evr, color="steelblue")
    ax.axhline(0.26, color="darkred", ls="--", lw=1)
    ax.text(len(evr) + 0.6, 0.26, "paper PC1", color="darkred", va="center", fontsize=8)
    ax.set_xlabel("principal component")
    ax.set_ylabel("share of variance")
    ax.set_xticks(np.arange(1, len(evr) + 1))
    fig.tight_layout()
    return fig


def fig_similarity(data: GeometryData, clusters: ClusterReport, max_labels: int = 30) -> Any:
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    cos = geo.cosine_matrix(data.V())
    order = dendrogram(clusters.result.linkage, no_plot=True)["leaves"]
    labs = clusters.result.labels[order]
    n = len(order)
    fig = plt.figure(figsize=(9.5, 8.5))
    ax = fig.add_axes((0.17, 0.13, 0.62, 0.8))
    band = fig.add_axes((0.14, 0.13, 0.025, 0.8), sharey=ax)
    cax = fig.add_axes((0.17, 0.06, 0.35, 0.02))
    im = ax.imshow(
        cos[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest", aspect="auto"
    )
    band.imshow(
        labs[:, None],
        cmap="tab10" if clusters.result.k <= 10 else "tab20",
        aspect="auto",
        interpolation="nearest",
    )
    band.set_xticks([])
    for b in np.flatnonzero(np.diff(labs)) + 0.5:
        ax.axhline(b, color="black", lw=0.6)
        ax.axvline(b, color="black", lw=0.6)
    names = [data.emotions[i] for i in order]
    step = max(1, int(np.ceil(n / max_labels)))
    named = {i for i, e in enumerate(names) if e in NAMED_EMOTIONS}
    ticks = sorted(named | set(range(0, n, step)))[: max_labels + len(named)]
    ticks = ticks if len(ticks) <= max_labels else sorted(named | set(range(0, n, 2 * step)))[:max_labels]
    band.set_yticks(ticks)
    band.set_yticklabels([names[i] for i in ticks], fontsize=7)
    ax.tick_params(left=False, labelleft=False)
    ax.set_xticks([])
    for c in np.unique(labs):
        rows = np.flatnonzero(labs == c)
        ax.text(n + 0.5, rows.mean(), clusters.names[int(c)], fontsize=7, va="center")
    fig.colorbar(im, cax=cax, orientation="horizontal", label="cosine similarity")
    ax.set_title(f"Cosine similarity of the {n} emotion vectors, ordered by cluster")
    return fig


def fig_layers(layers: LayerReport, readout: ReadoutReport, mark: int) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    c = layers.curve
    for ax, cols, title in (
        (axes[0], ("pc1_valence", "pc2_arousal"), "PCA (unsupervised)"),
        (axes[1], ("valence_readout", "arousal_readout"), "ridge readout (held-out emotions)"),
    ):
        src = c if cols[0].startswith("pc") else readout.curve
        floor = 0.0 if cols[0].startswith("pc") else -0.5
        for col, color in zip(cols, ("tab:blue", "tab:orange")):
            ax.plot(
                src.index, src[f"{col}_r"], marker="o", ms=3, color=color, label=f"{col.replace('_', ' ')} r"
            )
            ax.fill_between(
                src.index,
                floor,
                src[f"{col}_null95"],
                color=color,
                alpha=0.15,
                label=f"{col.replace('_', ' ')}: null 95th pct.",
            )
        ax.axvline(mark, color="grey", ls=":", lw=1)
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_ylim(
            min(floor, float(np.nanmin(src[[k for k in src if k.endswith("_r")]].to_numpy())) - 0.05), 1
        )
    axes[0].set_ylabel("Pearson r with human ratings")
    h0, l0 = axes[0].get_legend_handles_labels()
    h1, l1 = axes[1].get_legend_handles_labels()
    fig.legend(
        h0 + h1, l0 + l1, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, frameon=False, fontsize=8
    )
    fig.tight_layout()
    return fig
