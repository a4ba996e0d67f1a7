"""Geometry of emotion vectors: PCA, correlations with human ratings, clusters, a cross-validated ridge
readout of the ratings, story resampling and AUROC (the maths; the chapter's analyses are in
:mod:`emolib.geometry_report`).

Conventions used throughout:

- A vector matrix is ``V: float[n_emotions, d_model]``; rows follow the emotion list (``emotions_171.json``).
- PCA centres the rows (subtracts the mean row) and orders components by explained variance.
  A component's sign is arbitrary, so :func:`pca` fixes it deterministically (largest-|loading| entry
  positive) and :func:`orient` flips it to correlate positively with a reference such as valence.
- All randomness comes from ``np.random.default_rng(seed)``; the same seed gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from scipy.stats import rankdata, spearmanr

from .stats import Corr, pearson_ci

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
    """PCA of the row-centred ``X: [n, d]`` (optionally z-scored per column first): SVD, or with fewer rows
    than dimensions (171 emotions, 576 dimensions) the eigendecomposition of the ``[n, n]`` Gram matrix.

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
    k = min(n_components, *Xc.shape)
    if Xc.shape[0] < Xc.shape[1]:  # fewer rows than dimensions: eigendecompose the small Gram matrix
        ev, U = np.linalg.eigh(Xc @ Xc.T)
        ev, U = np.clip(ev[::-1], 0.0, None), U[:, ::-1]
        total = float(ev.sum())
        ratio = ev[:k] / total if total > 0 else np.zeros(k)
        Vt = (U[:, :k] / np.sqrt(np.where(ev[:k] > 0, ev[:k], 1.0))).T @ Xc
        Vt /= np.maximum(np.linalg.norm(Vt, axis=1, keepdims=True), 1e-300)
    else:
        _, S, Vt = np.linalg.svd(Xc, full_matrices=False)
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


def rated_reference(n: int, positions: ArrayLike, values: ArrayLike) -> FloatArray:
    """A length-``n`` array holding ``values`` at ``positions`` and NaN elsewhere (unrated emotions)."""
    ref = np.full(n, np.nan)
    ref[np.asarray(positions, dtype=int)] = np.asarray(values, dtype=float)
    return ref


@dataclass(frozen=True)
class RatingGeometry:
    """PCA of emotion vectors oriented against human ratings, and the correlations the paper reports.

    Sign convention: PC1 is flipped so that its scores correlate positively with valence (positive =
    pleasant), PC2 and PC3 so that they correlate positively with arousal. The sign of a principal
    component is arbitrary, so every p-value is two-sided (ratings shuffled, :func:`emolib.stats.pearson_ci`,
    CI by resampling the rated emotions)."""

    pca: PCAResult
    pc1_valence: Corr
    pc2_arousal: Corr
    pc3_arousal: Corr
    rho: dict[str, float]  # Spearman rho of the same pairs: "pc1_valence", "pc2_arousal", "pc3_arousal"


def rating_geometry(
    V: ArrayLike,
    positions: ArrayLike,
    valence: ArrayLike,
    arousal: ArrayLike,
    *,
    standardize: bool = False,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
) -> RatingGeometry:
    """PCA of all rows of ``V`` [n_emotions, d]; correlations over the rated rows ``positions``."""
    pos = np.asarray(positions, dtype=int)
    val, aro = np.asarray(valence, dtype=float), np.asarray(arousal, dtype=float)
    res = pca(V, n_components=max(3, min(10, np.asarray(V).shape[0])), standardize=standardize)
    n = res.scores.shape[0]
    res = orient(
        orient(orient(res, 0, rated_reference(n, pos, val)), 1, rated_reference(n, pos, aro)),
        2,
        rated_reference(n, pos, aro),
    )
    kw = dict(n_boot=n_boot, n_perm=n_perm, seed=seed, unit="emotion")
    pairs = {"pc1_valence": (0, val), "pc2_arousal": (1, aro), "pc3_arousal": (2, aro)}
    corrs = {k: pearson_ci(res.scores[pos, i], y, **kw) for k, (i, y) in pairs.items()}
    rho = {k: float(spearmanr(res.scores[pos, i], y)[0]) for k, (i, y) in pairs.items()}
    return RatingGeometry(res, corrs["pc1_valence"], corrs["pc2_arousal"], corrs["pc3_arousal"], rho)


def pc_correlations(
    V: ArrayLike, positions: ArrayLike, reference: ArrayLike, n_components: int = 5, standardize: bool = False
) -> FloatArray:
    """|Pearson r| of each of the first ``n_components`` PCs of ``V`` with ``reference`` on rows
    ``positions`` (``[k]``; used to ask which component carries valence, and for nulls)."""
    res = pca(V, n_components=n_components, standardize=standardize)
    x = res.scores[np.asarray(positions, dtype=int)]
    y = np.asarray(reference, dtype=float)
    xc, yc = x - x.mean(0), y - y.mean()
    den = np.sqrt((xc**2).sum(0) * (yc @ yc))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(np.where(den > 0, (yc @ xc) / den, np.nan))


def abs_pc_correlation(
    V: ArrayLike, positions: ArrayLike, reference: ArrayLike, axis: int = 0, standardize: bool = False
) -> float:
    """|Pearson r| between PC ``axis`` of ``V`` and ``reference`` on rows ``positions`` (for nulls)."""
    return float(pc_correlations(V, positions, reference, axis + 1, standardize)[axis])


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


def pair_agreement_null(
    labels: dict[str, int], groups: dict[str, list[str]], n_perm: int = 1000, seed: int = 0
) -> np.ndarray:
    """``pair_agreement`` with the cluster labels shuffled across words (same cluster sizes)."""
    rng = np.random.default_rng(seed)
    words, labs = list(labels), np.array(list(labels.values()))
    return np.array([pair_agreement(dict(zip(words, rng.permutation(labs))), groups) for _ in range(n_perm)])


# --- resampling stories within each emotion ---------------------------------------------------------


def resampled_emotion_means(
    acts: ArrayLike, labels: ArrayLike, rng: np.random.Generator, n_emotions: int | None = None
) -> FloatArray:
    """:func:`emotion_means` of one bootstrap resample: every emotion's stories are drawn with replacement
    within that emotion (its story count kept), so the result varies as the story sample would."""
    acts = _check_acts(acts)
    labels, n_emotions = _check_labels(acts, labels, n_emotions)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=n_emotions)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lab = labels[order]
    drawn = order[starts[lab] + np.floor(rng.random(lab.size) * counts[lab]).astype(int)]
    return _emotion_means(acts[drawn], lab, n_emotions)


# --- cross-validated ridge readout (dual form: n emotions << d dimensions) ---------------------------

DEFAULT_RIDGE_ALPHAS = np.logspace(-3, 3, 13)  # relative to the mean eigenvalue of the training kernel


def _ridge_predictions(
    Xtr: FloatArray, Ytr: FloatArray, Xte: FloatArray, rel_alphas: FloatArray
) -> FloatArray:
    """Ridge predictions ``[n_alphas, n_test, m]`` for every alpha and every column of ``Ytr: [n_train, m]``
    (intercept: training means of X and Y)."""
    mu = Xtr.mean(0)
    Xc = Xtr - mu
    s, U = np.linalg.eigh(Xc @ Xc.T)
    s = np.clip(s, 0.0, None)
    alphas = rel_alphas * (s.mean() if s.mean() > 0 else 1.0)
    ym = Ytr.mean(0)
    UtY = U.T @ (Ytr - ym)  # [n_train, m]
    KU = ((Xte - mu) @ Xc.T) @ U  # [n_test, n_train]
    return np.matmul(KU[None] / (s[None, None, :] + alphas[:, None, None]), UtY[None]) + ym


def ridge_cv_predict(
    X: ArrayLike,
    Y: ArrayLike,
    folds: ArrayLike,
    *,
    alphas: ArrayLike = DEFAULT_RIDGE_ALPHAS,
    inner_folds: int = 5,
) -> tuple[FloatArray, NDArray[np.int_]]:
    """Out-of-fold ridge predictions of ``Y: [n]`` or ``[n, m]`` (m columns fitted independently, e.g. the
    real ratings and their shuffles) from ``X: [n, d]``.

    For each outer fold the penalty is chosen *inside the training rows* (inner k-fold, lowest squared
    error, per column) from ``alphas`` (relative to the mean eigenvalue of the training kernel), then the
    model is refitted on all training rows and predicts the held-out rows. Returns the predictions (the
    shape of ``Y``) and the chosen alpha index per outer fold and column ``[n_folds, m]``."""
    X = _as_matrix(X)
    Y = np.asarray(Y, dtype=float)
    one = Y.ndim == 1
    Y = Y[:, None] if one else Y
    folds = np.asarray(folds)
    if Y.shape[0] != X.shape[0] or folds.shape != (X.shape[0],):
        raise ValueError(f"X {X.shape}, Y {Y.shape} and folds {folds.shape} must share their first dimension")
    rel = np.asarray(alphas, dtype=float)
    pred = np.full(Y.shape, np.nan)
    chosen = []
    for f in np.unique(folds):
        te, tr = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        if tr.size < 3:
            raise ValueError("each training split needs at least 3 rows")
        k = min(inner_folds, tr.size)
        inner = np.arange(tr.size) % k
        sse = np.zeros((rel.size, Y.shape[1]))
        for g in range(k):
            itr, ite = tr[inner != g], tr[inner == g]
            p = _ridge_predictions(X[itr], Y[itr], X[ite], rel)
            sse += ((p - Y[ite][None]) ** 2).sum(1)
        best = np.argmin(sse, axis=0)  # [m]
        p = _ridge_predictions(X[tr], Y[tr], X[te], rel)  # [A, n_te, m]
        pred[te] = np.take_along_axis(p, best[None, None, :], axis=0)[0]
        chosen.append(best)
    return (pred[:, 0] if one else pred), np.array(chosen)


def column_pearson(x: ArrayLike, Y: ArrayLike) -> FloatArray:
    """Pearson r of ``x: [n]`` with every column of ``Y: [n, m]`` (NaN for a constant column)."""
    x, Y = np.asarray(x, dtype=float), np.asarray(Y, dtype=float)
    xc, Yc = x - x.mean(), Y - Y.mean(0)
    den = np.sqrt((xc @ xc) * (Yc**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc @ Yc) / den, np.nan)


# --- separating two groups of stories -----------------------------------------------------------------


def auroc(scores: ArrayLike, positive: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (Mann-Whitney U / n1 n0; ties
    count one half). 0.5 is chance; NaN when a class is empty."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def held_out_direction_scores(acts: ArrayLike, positive: ArrayLike, folds: ArrayLike) -> FloatArray:
    """Cross-validated projection of each row on a direction fitted without its fold.

    For each fold ``f``: the direction is the mean of the training (``folds != f``) positive rows minus the
    mean of the training negative rows; a held-out row's score is its projection on that unit direction,
    measured from the midpoint of the two training means (> 0: on the positive side)."""
    A = _as_matrix(acts, "acts")
    y = np.asarray(positive).astype(bool)
    folds = np.asarray(folds)
    out = np.full(A.shape[0], np.nan)
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        if not (tr & y).any() or not (tr & ~y).any():
            continue
        mp, mn = A[tr & y].mean(0), A[tr & ~y].mean(0)
        d = mp - mn
        norm = np.linalg.norm(d)
        out[te] = (A[te] - (mp + mn) / 2) @ d / (norm if norm > 0 else 1.0)
    return out
