"""Geometry of emotion vectors: PCA, correlations with human ratings (bootstrap, permutation), clusters.

Conventions used throughout:

- A vector matrix is ``V: float[n_emotions, d_model]``; rows follow the emotion list (``emotions_171.json``).
- PCA centres the rows (subtracts the mean row) and orders components by explained variance.
  A component's sign is arbitrary, so :func:`pca` fixes it deterministically (largest-|loading| entry
  positive) and :func:`orient` flips it to correlate positively with a reference such as valence.
- All randomness comes from ``np.random.default_rng(seed)``; the same seed gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

T = TypeVar("T")
FloatArray = NDArray[np.floating]


def _as_matrix(X: ArrayLike, name: str = "X") -> FloatArray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or inf")
    return X


def _mean_scale(X: FloatArray, eps: float = 1e-12) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
    """Column means, column stds with 1.0 for (near-)constant columns, and the mask of those columns."""
    mean, std = X.mean(axis=0), X.std(axis=0)
    flat = std <= eps * np.maximum(1.0, np.abs(mean))
    return mean, np.where(flat, 1.0, std), flat


def standardize(X: ArrayLike) -> FloatArray:
    """Z-score each column (dimension) of ``X: [n, d]``; constant columns become 0 instead of NaN.

    This stops a few huge-variance (outlier) residual dimensions from dominating PCA.
    """
    X = _as_matrix(X)
    mean, scale, flat = _mean_scale(X)
    Z = (X - mean) / scale
    Z[:, flat] = 0.0
    return Z


@dataclass(frozen=True)
class PCAResult:
    """PCA of ``X: [n, d]``.

    ``scores: [n, k]`` (row projections), ``components: [k, d]`` (unit rows, by decreasing variance),
    ``explained_variance_ratio: [k]`` (of the total variance, all components), ``mean: [d]`` (the
    subtracted mean row) and ``scale: [d] | None`` (column std used when standardized).
    """

    scores: FloatArray
    components: FloatArray
    explained_variance_ratio: FloatArray
    mean: FloatArray
    scale: FloatArray | None = None

    def transform(self, X: ArrayLike) -> FloatArray:
        """Project new rows ``[m, d]`` on the components (same centring and scaling): ``[m, k]``."""
        X = np.asarray(X, dtype=float) - self.mean
        if self.scale is not None:
            X = X / self.scale
        return X @ self.components.T


def pca(X: ArrayLike, n_components: int = 10, standardize: bool = False) -> PCAResult:
    """PCA by SVD of the row-centred ``X: [n, d]`` (optionally z-scored per column first).

    Sign convention: each component is flipped so that its largest-magnitude loading is positive
    (deterministic, but not meaningful); use :func:`orient` to align a component with a reference.
    ``n_components`` is clipped to ``min(n, d)``.
    """
    X = _as_matrix(X)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    mean, scale, _ = _mean_scale(X)
    if not standardize:
        scale = None
    Xc = (X - mean) / (1.0 if scale is None else scale)
    _, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    k = min(n_components, len(S))
    total = float(np.sum(S**2))
    ratio = S[:k] ** 2 / total if total > 0 else np.zeros(k)
    Vt = Vt[:k]
    signs = np.sign(Vt[np.arange(k), np.argmax(np.abs(Vt), axis=1)])
    signs[signs == 0] = 1.0
    Vt = Vt * signs[:, None]
    return PCAResult(scores=Xc @ Vt.T, components=Vt, explained_variance_ratio=ratio, mean=mean, scale=scale)


def orient(result: PCAResult, axis: int, reference: ArrayLike) -> PCAResult:
    """Return ``result`` with component ``axis`` flipped, if needed, so its scores correlate >= 0 with
    ``reference: [n]`` (e.g. human valence for PC1, arousal for PC2). NaNs in ``reference`` are ignored.
    """
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (result.scores.shape[0],):
        raise ValueError(f"reference must have shape ({result.scores.shape[0]},), got {ref.shape}")
    ok = np.isfinite(ref)
    s = result.scores[ok, axis]
    if np.dot(s - s.mean(), ref[ok] - ref[ok].mean()) >= 0:
        return result
    scores, comps = result.scores.copy(), result.components.copy()
    scores[:, axis] *= -1
    comps[axis] *= -1
    return replace(result, scores=scores, components=comps)


@dataclass(frozen=True)
class Correlation:
    """Pearson ``r`` and Spearman ``rho`` of ``n`` pairs, with uncertainty on ``r``.

    ``ci_low, ci_high``: percentile bootstrap 95% CI of r (items resampled with replacement);
    ``p_perm``: two-sided permutation p-value of r, ``(1 + #{|r_perm| >= |r|}) / (1 + n_perm)``;
    ``null_abs_r95``: 95th percentile of ``|r_perm|`` (the |r| needed to beat chance here).
    """

    r: float
    rho: float
    ci_low: float
    ci_high: float
    p_perm: float
    null_abs_r95: float
    n: int
    n_boot: int
    n_perm: int
    seed: int | None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _row_pearson(X: FloatArray, Y: FloatArray) -> FloatArray:
    """Pearson r of each row pair of ``X, Y: [m, n]`` (NaN where a row is constant)."""
    Xc = X - X.mean(axis=1, keepdims=True)
    Yc = Y - Y.mean(axis=1, keepdims=True)
    den = np.sqrt((Xc**2).sum(axis=1) * (Yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (Xc * Yc).sum(axis=1) / den, np.nan)


def correlate(
    x: ArrayLike, y: ArrayLike, n_boot: int = 1000, n_perm: int = 1000, seed: int | None = 0
) -> Correlation:
    """Correlate ``x`` and ``y`` (e.g. PC1 scores and valence); pairs with a NaN are dropped.

    Raises ValueError for a length mismatch, fewer than 3 complete pairs or a constant input.
    With ``n_boot`` or ``n_perm`` 0 the matching statistics are NaN.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    if n_boot < 0 or n_perm < 0:
        raise ValueError("n_boot and n_perm must be >= 0")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.size
    if n < 3:
        raise ValueError(f"need at least 3 complete pairs, got {n}")
    r = float(_row_pearson(x[None], y[None])[0])
    if not np.isfinite(r):
        raise ValueError("x or y is constant; correlation undefined")
    rho = float(spearmanr(x, y)[0])
    rng = np.random.default_rng(seed)

    ci_low = ci_high = np.nan
    if n_boot:
        idx = rng.integers(0, n, size=(n_boot, n))
        boot = _row_pearson(x[idx], y[idx])
        ci_low, ci_high = (float(v) for v in np.nanpercentile(boot, [2.5, 97.5]))

    p_perm = null95 = np.nan
    if n_perm:
        y_perm = rng.permuted(np.broadcast_to(y, (n_perm, n)), axis=1)
        null = np.abs(_row_pearson(np.broadcast_to(x, (n_perm, n)), y_perm))
        p_perm = float((1 + np.sum(null >= abs(r) - 1e-12)) / (1 + n_perm))
        null95 = float(np.percentile(null, 95))

    return Correlation(
        r=r,
        rho=rho,
        ci_low=ci_low,
        ci_high=ci_high,
        p_perm=p_perm,
        null_abs_r95=null95,
        n=n,
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
    )


def _unit_rows(V: ArrayLike) -> FloatArray:
    V = _as_matrix(V, "V")
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"V has zero rows: {np.flatnonzero(norms[:, 0] == 0).tolist()[:10]}")
    return V / norms


def cosine_matrix(V: ArrayLike) -> FloatArray:
    """Cosine similarity ``[n, n]`` between the rows of ``V: [n, d]`` (zero rows are an error)."""
    U = _unit_rows(V)
    return np.clip(U @ U.T, -1.0, 1.0)


@dataclass(frozen=True)
class ClusterResult:
    """``labels: [n]`` in 0..k-1, numbered by first appearance along the rows; ``linkage``: scipy matrix."""

    labels: NDArray[np.int_]
    linkage: FloatArray
    method: str
    k: int


def cluster(V: ArrayLike, k: int = 10, method: Literal["average", "ward"] = "average") -> ClusterResult:
    """Agglomerative clustering of the rows of ``V: [n, d]`` on cosine distance, cut into ``k`` clusters.

    ``"average"``: average linkage on ``1 - cos``. ``"ward"``: Ward on unit-normalised rows, whose
    Euclidean distance ``sqrt(2 - 2 cos)`` is monotone in cosine distance. Deterministic (no seed).
    """
    if method not in ("average", "ward"):
        raise ValueError(f"method must be 'average' or 'ward', got {method!r}")
    U = _unit_rows(V)
    if not 1 <= k <= len(U):
        raise ValueError(f"k must be in 1..{len(U)}, got {k}")
    if method == "average":
        Z = linkage(np.clip(pdist(U, "cosine"), 0.0, None), method="average")
    else:
        Z = linkage(U, method="ward")
    raw = fcluster(Z, t=k, criterion="maxclust")
    _, first = np.unique(raw, return_index=True)
    order = {lab: i for i, lab in enumerate(raw[np.sort(first)])}
    labels = np.array([order[lab] for lab in raw], dtype=int)
    return ClusterResult(labels=labels, linkage=Z, method=method, k=k)


def cluster_table(labels: ArrayLike, names: list[str], scores: ArrayLike | None = None) -> pd.DataFrame:
    """One row per cluster (index = label): ``size``, ``members`` (comma-joined, input order) and, with
    ``scores: [n]`` (e.g. valence; NaN ignored), ``mean_score``, rows then sorted by it descending.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(names),):
        raise ValueError(f"labels {labels.shape} and names ({len(names)}) differ in length")
    s = None if scores is None else np.asarray(scores, dtype=float)
    if s is not None and s.shape != labels.shape:
        raise ValueError(f"scores {s.shape} and labels {labels.shape} differ in shape")
    rows = []
    for lab in np.unique(labels):
        mask = labels == lab
        row = {"cluster": lab, "size": int(mask.sum()), "members": ", ".join(np.asarray(names)[mask])}
        if s is not None:
            vals = s[mask][np.isfinite(s[mask])]
            row["mean_score"] = float(vals.mean()) if vals.size else np.nan
        rows.append(row)
    table = pd.DataFrame(rows).set_index("cluster")
    return table.sort_values("mean_score", ascending=False) if s is not None else table


def _check_labels(acts: NDArray, labels: ArrayLike, n_emotions: int | None) -> tuple[NDArray[np.int_], int]:
    labels = np.asarray(labels)
    if labels.shape != (acts.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be ints of shape ({acts.shape[0]},), got {labels.dtype} {labels.shape}"
        )
    n_emotions = int(labels.max()) + 1 if n_emotions is None else int(n_emotions)
    if labels.min() < 0 or labels.max() >= n_emotions:
        raise ValueError(f"labels must lie in 0..{n_emotions - 1}")
    empty = np.flatnonzero(np.bincount(labels, minlength=n_emotions) == 0)
    if empty.size:
        raise ValueError(f"emotions without stories: {empty.tolist()[:10]}")
    return labels, n_emotions


def _check_acts(acts: ArrayLike) -> NDArray:
    acts = np.asarray(acts)  # float32 stays float32 (no copy); sums are accumulated in float64
    if acts.ndim != 2 or not np.issubdtype(acts.dtype, np.floating):
        raise ValueError(f"acts must be a 2-D float array [n_stories, d], got {acts.dtype} {acts.shape}")
    return acts


def _class_means(acts: NDArray, labels: NDArray[np.int_], n_emotions: int) -> FloatArray:
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(n_emotions))
    sums = np.add.reduceat(acts[order], starts, axis=0, dtype=np.float64)
    return sums / np.bincount(labels, minlength=n_emotions)[:, None]


def _emotion_means(acts: NDArray, labels: NDArray[np.int_], n_emotions: int) -> FloatArray:
    means = _class_means(acts, labels, n_emotions)
    return means - means.mean(axis=0)


def grand_mean(acts: ArrayLike, labels: ArrayLike, n_emotions: int | None = None) -> FloatArray:
    """The mean of the per-emotion means ``[d]``: what :func:`emotion_means` subtracts."""
    acts = _check_acts(acts)
    labels, n_emotions = _check_labels(acts, labels, n_emotions)
    return _class_means(acts, labels, n_emotions).mean(axis=0)


def emotion_means(acts: ArrayLike, labels: ArrayLike, n_emotions: int | None = None) -> FloatArray:
    """Emotion vectors ``[n_emotions, d]``: per-emotion mean of ``acts: [n_stories, d]`` minus the mean
    of those emotion means (every emotion weighs the same, whatever its story count).

    ``labels: [n_stories]`` are ints in ``0..n_emotions-1`` (default ``max + 1``); row ``e`` of the
    result is emotion ``e``. Every emotion needs at least one story. Result is float64.
    """
    acts = _check_acts(acts)
    labels, n_emotions = _check_labels(acts, labels, n_emotions)
    return _emotion_means(acts, labels, n_emotions)


def permutation_null_vectors(
    acts: ArrayLike,
    labels: ArrayLike,
    n_perm: int,
    fn: Callable[[FloatArray], T],
    seed: int | None = 0,
    n_emotions: int | None = None,
) -> list[T]:
    """Null distribution of a statistic of the emotion vectors: ``[fn(emotion_means(acts, shuffled))]``.

    Each of the ``n_perm`` draws shuffles the story labels (keeping every emotion's story count), so
    ``fn`` (e.g. "|r| of PC1 with valence") sees vectors with no emotion content.
    """
    acts = _check_acts(acts)
    labels, n_emotions = _check_labels(acts, labels, n_emotions)
    rng = np.random.default_rng(seed)
    return [fn(_emotion_means(acts, rng.permutation(labels), n_emotions)) for _ in range(n_perm)]


@dataclass(frozen=True)
class RatingGeometry:
    """PCA of emotion vectors oriented against human ratings, and the correlations the paper reports.

    Sign convention: PC1 is flipped so that its scores correlate positively with valence (positive =
    pleasant), PC2 and PC3 so that they correlate positively with arousal. The sign of a principal
    component is arbitrary, so every test is two-sided."""

    pca: PCAResult
    pc1_valence: Correlation
    pc2_arousal: Correlation
    pc3_arousal: Correlation


def rating_geometry(V: ArrayLike, positions: ArrayLike, valence: ArrayLike, arousal: ArrayLike, *,
                    standardize: bool = False, n_boot: int = 1000, n_perm: int = 1000,
                    seed: int = 0) -> RatingGeometry:
    """PCA of all rows of ``V`` [n_emotions, d]; correlations over the rated rows ``positions``."""
    pos = np.asarray(positions, dtype=int)
    val, aro = np.asarray(valence, dtype=float), np.asarray(arousal, dtype=float)
    res = pca(V, n_components=max(3, min(10, np.asarray(V).shape[0])), standardize=standardize)
    ref_v = np.full(res.scores.shape[0], np.nan)
    ref_a = np.full(res.scores.shape[0], np.nan)
    ref_v[pos], ref_a[pos] = val, aro
    res = orient(orient(orient(res, 0, ref_v), 1, ref_a), 2, ref_a)
    kw = dict(n_boot=n_boot, n_perm=n_perm, seed=seed)
    return RatingGeometry(
        res,
        correlate(res.scores[pos, 0], val, **kw),
        correlate(res.scores[pos, 1], aro, **kw),
        correlate(res.scores[pos, 2], aro, **kw),
    )


def abs_pc_correlation(V: ArrayLike, positions: ArrayLike, reference: ArrayLike, axis: int = 0,
                       standardize: bool = False) -> float:
    """|Pearson r| between PC ``axis`` of ``V`` and ``reference`` on rows ``positions`` (for nulls)."""
    res = pca(V, n_components=axis + 1, standardize=standardize)
    x = res.scores[np.asarray(positions, dtype=int), axis]
    return float(abs(np.corrcoef(x, np.asarray(reference, dtype=float))[0, 1]))


def name_clusters(labels: ArrayLike, names: list[str], V: ArrayLike, n_words: int = 2) -> dict[int, str]:
    """Name each cluster after its ``n_words`` most central members (highest mean cosine to the others)."""
    labels = np.asarray(labels)
    cos = cosine_matrix(V)
    out = {}
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        central = idx[np.argsort(-cos[np.ix_(idx, idx)].mean(1))[:n_words]]
        out[int(c)] = " & ".join(names[i].capitalize() for i in central)
    return out


def pair_agreement(labels: dict[str, int], groups: dict[str, list[str]]) -> float:
    """Share of word pairs within each reference group that ``labels`` puts in the same cluster."""
    same = total = 0
    for words in groups.values():
        ws = [w for w in words if w in labels]
        for i in range(len(ws)):
            for j in range(i + 1, len(ws)):
                total += 1
                same += labels[ws[i]] == labels[ws[j]]
    if total == 0:
        raise ValueError("No reference pair is present among the clustered words")
    return same / total


def pair_agreement_null(labels: dict[str, int], groups: dict[str, list[str]], n_perm: int = 1000,
                        seed: int = 0) -> np.ndarray:
    """``pair_agreement`` with the cluster labels shuffled across words (same cluster sizes)."""
    rng = np.random.default_rng(seed)
    words, labs = list(labels), np.array(list(labels.values()))
    return np.array([pair_agreement(dict(zip(words, rng.permutation(labs))), groups) for _ in range(n_perm)])
