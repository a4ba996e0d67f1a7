"""Does an emotion vector recognise the emotion of a story it was not fitted on? Chapter 01's statistics.

Everything here is cross-validated **by topic**: a story's fold is :func:`emolib.config.topic_fold` of its
topic, so the stories scored never share a topic with the stories the vectors were fitted on.

- :func:`sweep`: 5-fold CV recognition at every layer (vectors fitted with the paper's recipe on four
  folds, each story of the fifth ranked by the cosine of its activation, minus the training grand mean,
  with every vector), a shuffled-label null shared by all layers (labels permuted *within* each fold, the
  same permutation at every layer, so that the null can repeat a choice of layer), and a *nested* choice of
  layer (for each outer fold, the layer with the best inner CV on the training folds only).
- :class:`Recognition`: top-1 / top-5 accuracy with a bootstrap CI that resamples topics, and a p-value
  against the shuffled-label null.
- :func:`bow_baseline`: the same recipe on bag-of-words counts (a lexical baseline).
- :func:`reliability`: split-half cosine of the vectors (with a CI over emotions and repeated splits), as
  a function of the number of stories, with and without denoising and topic-centring.

The maths is vectorised: per layer, class sums are computed once per fold (a sparse one-hot product), so a
training set is "all folds minus some", and a shuffled-label refit costs one sparse product.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from .config import default_layer
from .stats import CI, PValue, bootstrap_ci, bootstrap_stat, perm_p, selected_p
from .vectors import FittedVectors, fit_vectors, neutral_components

# ------------------------------------------------------------------------------------------ helpers


def topic_center(acts: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """Subtract from each story its topic's mean activation (over every story of that topic, whatever its
    emotion). Uses no label, so it may be applied to held-out stories too."""
    acts = np.asarray(acts, dtype=np.float64)
    _, codes = np.unique(np.asarray(topics), return_inverse=True)
    M = sparse.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(codes.max() + 1, len(codes))
    )
    means = (M @ acts) / np.bincount(codes)[:, None]
    return acts - means[codes]


def within_fold_permutations(labels: np.ndarray, folds: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """``[n_perm, n]`` label vectors, each shuffled within every fold (class counts per fold are kept)."""
    rng = np.random.default_rng(seed)
    labels, folds = np.asarray(labels), np.asarray(folds)
    members = [np.flatnonzero(folds == f) for f in np.unique(folds)]
    out = np.empty((n_perm, len(labels)), dtype=labels.dtype)
    for p in range(n_perm):
        perm = labels.copy()
        for m in members:
            perm[m] = labels[rng.permutation(m)]
        out[p] = perm
    return out


class _Folds:
    """One feature matrix split into folds, with per-fold class sums: fits "all folds but these" cheaply.

    ``fit(exclude)`` follows :func:`emolib.vectors.fit_vectors` exactly (optional standardisation on the
    training stories, per-emotion mean minus the mean of the emotion means, neutral PCs projected out)."""

    def __init__(
        self,
        X: np.ndarray,
        labels: np.ndarray,
        folds: np.ndarray,
        n_emotions: int,
        neutral: np.ndarray | None,
        denoise_variance: float,
        standardize: bool,
    ) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.labels = np.asarray(labels)
        self.fold_ids, self.folds = np.unique(np.asarray(folds), return_inverse=True)
        self.F, self.K = len(self.fold_ids), int(n_emotions)
        self.neutral = (
            None if neutral is None or denoise_variance == 0 else np.asarray(neutral, dtype=np.float64)
        )
        self.variance, self.standardize = float(denoise_variance), bool(standardize)
        self.rows = [np.flatnonzero(self.folds == f) for f in range(self.F)]
        self.Xf = [np.ascontiguousarray(self.X[r]) for r in self.rows]  # each fold's stories, contiguous
        self.counts = np.zeros((self.F, self.K))
        np.add.at(self.counts, (self.folds, self.labels), 1.0)
        self.sums = self.class_sums(self.labels)
        self.fold_sum = np.stack([self.X[r].sum(0) for r in self.rows])
        self.fold_sq = np.stack([(self.X[r] ** 2).sum(0) for r in self.rows]) if standardize else None
        self._comps = None if standardize else self._components(np.ones(self.X.shape[1]))

    def class_sums(self, labels: np.ndarray) -> np.ndarray:
        """``[F, K, d]`` sum of the activations of each (fold, emotion)."""
        idx = self.folds * self.K + np.asarray(labels)
        n = len(idx)
        M = sparse.csr_matrix((np.ones(n), (idx, np.arange(n))), shape=(self.F * self.K, n))
        return np.asarray(M @ self.X).reshape(self.F, self.K, -1)

    def _components(self, scale: np.ndarray) -> np.ndarray:
        if self.neutral is None:
            return np.zeros((0, self.X.shape[1]))
        return neutral_components(self.neutral / scale, self.variance).numpy()

    def fit(
        self, train: np.ndarray, sums: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Unit vectors [K, d], centre [d], scale [d] and the emotions present, fitted on folds ``train``
        (a boolean mask over folds) with ``sums`` (default: the true labels' class sums)."""
        S = (self.sums if sums is None else sums)[train].sum(0)
        cnt = self.counts[train].sum(0)
        present = cnt > 0
        scale = np.ones(self.X.shape[1])
        comps = self._comps
        if self.standardize:
            n = self.counts[train].sum()
            mu = self.fold_sum[train].sum(0) / n
            scale = np.sqrt(np.maximum(self.fold_sq[train].sum(0) / n - mu**2, 0))
            scale[scale < 1e-12] = 1.0
            comps = self._components(scale)
        means = S / np.maximum(cnt, 1)[:, None] / scale
        center = means[present].mean(0)
        V = np.where(present[:, None], means - center, 0.0)
        if comps.shape[0]:
            V = V - (V @ comps.T) @ comps
        U = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
        return U, center, scale, present

    def ranks(self, test: int, fit: tuple, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rank (0 = top) of the true emotion and the predicted emotion for every story of fold ``test``
        (an emotion that scores the same as the true one counts as ranked above it)."""
        U, center, scale, present = fit
        rows = self.rows[test]
        A = self.Xf[test] / scale if self.standardize else self.Xf[test]
        S = A @ U.T - U @ center  # (x - centre) . u: ranking by projection on unit vectors == by cosine
        S[:, ~present] = -np.inf
        y = (self.labels if labels is None else labels)[rows]
        true = S[np.arange(len(rows)), y]
        return (S >= true[:, None]).sum(1) - 1, S.argmax(1)  # ties count against the true emotion

    def cv(self, sums: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Outer CV: ranks and predictions [n] of every story, scored by vectors fitted on the other folds."""
        ranks = np.empty(len(self.labels), dtype=int)
        preds = np.empty(len(self.labels), dtype=int)
        for f in range(self.F):
            r, p = self.ranks(f, self.fit(np.arange(self.F) != f, sums))
            ranks[self.rows[f]], preds[self.rows[f]] = r, p
        return ranks, preds

    def fold_correct(self, sums: np.ndarray) -> np.ndarray:
        """Top-1 hits per outer fold [F] when training labels give ``sums`` (test labels stay true)."""
        return np.array(
            [(self.ranks(f, self.fit(np.arange(self.F) != f, sums))[0] == 0).sum() for f in range(self.F)]
        )

    def inner_top1(self, outer: int) -> float:
        """CV top-1 on the training folds of ``outer`` only (each inner fold scored by the other inner folds)."""
        hits = n = 0
        for f in range(self.F):
            if f == outer:
                continue
            train = (np.arange(self.F) != f) & (np.arange(self.F) != outer)
            r, _ = self.ranks(f, self.fit(train))
            hits, n = hits + int((r == 0).sum()), n + len(r)
        return hits / max(n, 1)


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Recognition:
    """Cross-validated recognition of held-out stories, with a topic-bootstrap CI and (optionally) a
    shuffled-label p-value. ``metrics()`` keys: ``<name>_top1_cv`` (+ ``_ci_low/_ci_high/_n/_p/_null95``)
    and ``<name>_top5_cv`` (+ CI)."""

    name: str
    ranks: np.ndarray  # [n] rank of the true emotion (0 = top)
    preds: np.ndarray  # [n] top-ranked emotion
    truth: np.ndarray  # [n]
    topics: np.ndarray  # [n] the bootstrap's resampling unit
    n_emotions: int
    top1_ci: CI
    top5_ci: CI
    null_top1: np.ndarray | None = None  # [n_perm] top-1 under shuffled training labels
    p: PValue | None = None

    @property
    def top1(self) -> float:
        return float(np.mean(self.ranks == 0))

    @property
    def top5(self) -> float:
        return float(np.mean(self.ranks < 5))

    @property
    def chance_top1(self) -> float:
        return 1 / self.n_emotions

    @property
    def chance_top5(self) -> float:
        return min(5, self.n_emotions) / self.n_emotions

    def metrics(self) -> dict[str, Any]:
        out = {**self.top1_ci.metrics(f"{self.name}_top1_cv"), **self.top5_ci.metrics(f"{self.name}_top5_cv")}
        if self.p is not None and self.null_top1 is not None:
            out[f"{self.name}_top1_cv_p"] = float(self.p)
            out[f"{self.name}_top1_cv_p_text"] = self.p.text()
            out[f"{self.name}_top1_cv_null95"] = float(np.quantile(self.null_top1, 0.95))
            out[f"{self.name}_top1_cv_null_mean"] = float(np.mean(self.null_top1))
            out[f"{self.name}_top1_cv_verdict"] = (
                "above the shuffled-label null"
                if float(self.p) < 0.05
                else "not distinguishable from the shuffled-label null"
            )
        return out


def recognition(
    name: str,
    ranks: np.ndarray,
    preds: np.ndarray,
    truth: np.ndarray,
    topics: np.ndarray,
    n_emotions: int,
    *,
    null_top1: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    p: PValue | None = None,
) -> Recognition:
    """Wrap CV ranks into a :class:`Recognition` (CIs resample topics; p from ``null_top1`` unless given)."""
    ranks = np.asarray(ranks)

    def ci(k: int) -> CI:
        return bootstrap_ci((ranks < k).astype(float), groups=topics, unit="topic", n_boot=n_boot, seed=seed)

    if p is None and null_top1 is not None:
        p = perm_p(float(np.mean(ranks == 0)), null_top1, "greater")
    return Recognition(
        name,
        ranks,
        np.asarray(preds),
        np.asarray(truth),
        np.asarray(topics),
        int(n_emotions),
        ci(1),
        ci(5),
        None if null_top1 is None else np.asarray(null_top1),
        p,
    )


@dataclass(frozen=True)
class LayerSweep:
    """CV recognition at every swept layer, the shuffled-label null shared by all layers, and the nested
    (chosen-inside-the-training-folds) layer choice. Build with :func:`sweep`."""

    layers: tuple[int, ...]
    default: int  # the layer fixed in advance (two-thirds depth)
    ranks: np.ndarray  # [n_layers, n]
    preds: np.ndarray  # [n_layers, n]
    truth: np.ndarray
    topics: np.ndarray
    folds: np.ndarray  # [n] fold code 0..F-1
    n_emotions: int
    null_hits: np.ndarray  # [n_perm, n_layers, F] top-1 hits per outer fold under shuffled training labels
    inner_top1: np.ndarray  # [F, n_layers] inner-CV top-1 within each outer fold's training folds
    n_boot: int = 1000
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.truth)

    @property
    def null_top1(self) -> np.ndarray:
        """[n_perm, n_layers] top-1 under each shuffle (the same shuffle at every layer)."""
        return self.null_hits.sum(2) / self.n

    @property
    def top1(self) -> np.ndarray:
        return (self.ranks == 0).mean(1)

    @property
    def top5(self) -> np.ndarray:
        return (self.ranks < 5).mean(1)

    def at(self, layer: int, name: str = "heldout") -> Recognition:
        """Recognition at one layer fixed in advance (its null: the shuffles at that layer)."""
        i = self.layers.index(layer)
        return recognition(
            name,
            self.ranks[i],
            self.preds[i],
            self.truth,
            self.topics,
            self.n_emotions,
            null_top1=self.null_top1[:, i],
            n_boot=self.n_boot,
            seed=self.seed,
        )

    @property
    def nested_layers(self) -> tuple[int, ...]:
        """Layer chosen for each outer fold by inner CV on its training folds (ties: closest to default)."""
        dist = np.abs(np.array(self.layers) - self.default)
        return tuple(self.layers[int(np.lexsort((dist, -row))[0])] for row in self.inner_top1)

    def nested(self) -> Recognition:
        """Outer-fold accuracy with the layer chosen inside each fold's training folds. Its null repeats a
        choice of layer: per shuffle, the best layer *per fold* (an upper bound on what the nested choice
        could reach under that shuffle, hence conservative)."""
        idx = [self.layers.index(L) for L in self.nested_layers]
        ranks = np.empty(self.n, dtype=int)
        preds = np.empty(self.n, dtype=int)
        for f, i in enumerate(idx):
            m = self.folds == f
            ranks[m], preds[m] = self.ranks[i, m], self.preds[i, m]
        null = self.null_hits.max(1).sum(1) / self.n
        return recognition(
            "heldout",
            ranks,
            preds,
            self.truth,
            self.topics,
            self.n_emotions,
            null_top1=null,
            n_boot=self.n_boot,
            seed=self.seed,
        )

    @property
    def best_layer(self) -> int:
        """The layer with the best CV top-1 over the whole sweep (chosen on the scored data: see best_p)."""
        dist = np.abs(np.array(self.layers) - self.default)
        return self.layers[int(np.lexsort((dist, -self.top5, -self.top1))[0])]

    def best_p(self) -> PValue:
        """p of the best layer's top-1 against the max over layers under each shuffle (selection null)."""
        return selected_p(float(self.top1.max()), self.null_top1, "greater")

    def frame(self) -> Any:
        """Per layer: CV top-1 / top-5, the null's mean and 2.5-97.5% band (top-1)."""
        import pandas as pd

        null = self.null_top1
        return pd.DataFrame(
            {
                "layer": self.layers,
                "top1": self.top1,
                "top5": self.top5,
                "null_mean": null.mean(0),
                "null_lo": np.quantile(null, 0.025, axis=0),
                "null_hi": np.quantile(null, 0.975, axis=0),
            }
        ).set_index("layer")

    def metrics(self) -> dict[str, Any]:
        """Nested-CV recognition (``heldout_top1_nested*``) and the sweep's best layer with its selection
        p (``sweep_best_*``); the default layer's numbers come from :meth:`at`."""
        if "nested" not in self._cache:
            self._cache["nested"] = self.nested()
        nest = self._cache["nested"]
        bp = self.best_p()
        return {
            **nest.top1_ci.metrics("heldout_top1_nested"),
            "heldout_top1_nested_p": float(nest.p),
            "heldout_top1_nested_p_text": nest.p.text(),
            "heldout_top1_nested_null95": float(np.quantile(nest.null_top1, 0.95)),
            "heldout_nested_layers": ", ".join(str(L) for L in self.nested_layers),
            "sweep_best_layer": int(self.best_layer),
            "sweep_best_top1_cv": float(self.top1.max()),
            "sweep_best_top1_cv_p": float(bp),
            "sweep_best_top1_cv_p_text": bp.text(),
            "sweep_n_perm": int(self.null_hits.shape[0]),
            "sweep_n_stories": int(self.n),
            "heldout_top1_cv_by_layer": {str(L): float(v) for L, v in zip(self.layers, self.top1)},
        }


def sweep(
    ca: Any,
    cfg: Any,
    layers: Sequence[int] | None = None,
    *,
    n_layers: int | None = None,
    progress: bool = False,
) -> LayerSweep:
    """CV recognition at every layer of ``ca`` (or ``layers``), ``cfg.n_null`` within-fold label shuffles
    shared by all layers, and the nested layer choice. ``cfg``: a :class:`emolib.config.VectorsConfig`;
    ``n_layers``: the model's depth (for the default layer; default: ``max(layers) + 1``)."""
    from tqdm.auto import tqdm

    layers = tuple(ca.layers if layers is None else layers)
    L0 = default_layer(n_layers or max(layers) + 1)
    if L0 not in layers:
        raise ValueError(f"The default layer {L0} is not among the swept layers {layers}")
    labels, K = ca.labels, len(ca.emotions)
    perms = within_fold_permutations(labels, ca.folds, cfg.n_null, cfg.seed)
    ranks, preds, null_hits, inner = [], [], [], []
    for L in tqdm(layers, desc="layers", disable=not progress):
        fd = _Folds(ca.acts[L], labels, ca.folds, K, ca.neutral[L], cfg.denoise_variance, cfg.standardize)
        r, p = fd.cv()
        ranks.append(r)
        preds.append(p)
        null_hits.append([fd.fold_correct(fd.class_sums(perm)) for perm in perms])
        inner.append([fd.inner_top1(f) for f in range(fd.F)])
    _, fold_codes = np.unique(ca.folds, return_inverse=True)
    hits = np.array(null_hits, dtype=float).reshape(len(layers), cfg.n_null, fd.F).transpose(1, 0, 2)
    return LayerSweep(
        layers,
        L0,
        np.array(ranks),
        np.array(preds),
        labels,
        ca.stories["topic_index"].to_numpy(),
        fold_codes,
        K,
        hits,
        np.array(inner).T,
        cfg.n_boot,
        cfg.seed,
    )


def headline_and_profile(ca: Any, profile: Any, cfg: Any, n_layers: int) -> tuple[LayerSweep, Recognition]:
    """The layer profile (:func:`sweep` over ``profile``) and the recognition at the default layer on every
    story of ``ca``: the profile's own entry when ``profile`` is ``ca``, else a sweep of ``ca`` at that layer
    alone (its shuffled-label null drawn there)."""
    prof = sweep(profile, cfg, n_layers=n_layers)
    L0 = default_layer(n_layers)
    if profile is ca:
        return prof, prof.at(L0)
    return prof, sweep(ca, cfg, layers=[L0], n_layers=n_layers).at(L0)


def cv_recognition(
    name: str,
    X: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    topics: np.ndarray,
    n_emotions: int,
    *,
    neutral: np.ndarray | None = None,
    denoise_variance: float = 0.0,
    standardize: bool = False,
    n_null: int = 0,
    n_boot: int = 1000,
    seed: int = 0,
) -> Recognition:
    """CV recognition on any feature matrix (one layer, a variant of the recipe, bag-of-words counts),
    with ``n_null`` within-fold label shuffles (0: no null)."""
    fd = _Folds(X, labels, folds, n_emotions, neutral, denoise_variance, standardize)
    ranks, preds = fd.cv()
    null = None
    if n_null:
        perms = within_fold_permutations(labels, folds, n_null, seed)
        null = np.array([fd.fold_correct(fd.class_sums(p)).sum() for p in perms]) / len(labels)
    return recognition(
        name, ranks, preds, labels, topics, n_emotions, null_top1=null, n_boot=n_boot, seed=seed
    )


@dataclass(frozen=True)
class Difference:
    """A paired difference of two recognitions on the same stories (CI resamples topics)."""

    name: str
    ci: CI

    @property
    def verdict(self) -> str:
        """ "higher", "lower" or "not distinguishable" (whether the 95% CI excludes 0)."""
        return "higher" if self.ci.low > 0 else "lower" if self.ci.high < 0 else "not distinguishable"

    def metrics(self) -> dict[str, Any]:
        return {**self.ci.metrics(self.name), f"{self.name}_verdict": self.verdict}


def difference(a: Recognition, b: Recognition, name: str, *, n_boot: int = 1000, seed: int = 0) -> Difference:
    """Top-1 of ``a`` minus top-1 of ``b``, story by story, with a topic-bootstrap CI."""
    if not np.array_equal(a.truth, b.truth):
        raise ValueError("The two recognitions were not run on the same stories")
    d = (a.ranks == 0).astype(float) - (b.ranks == 0).astype(float)
    return Difference(name, bootstrap_ci(d, groups=a.topics, unit="topic", n_boot=n_boot, seed=seed))


# ----------------------------------------------------------------------------------- lexical baseline

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def bow_features(
    texts: Sequence[str],
    *,
    mask: Sequence[str | None] | None = None,
    min_df: int = 3,
    max_features: int = 3000,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Bag-of-words counts [n, V] of lower-cased words, vocabulary: the ``max_features`` words found in at
    least ``min_df`` texts (chosen without labels). ``mask[i]``: an emotion whose word (and inflections,
    :func:`emolib.corpus.leak_spans`) is removed from text ``i`` first, as the model's average leaves it out."""
    from .corpus import leak_spans

    docs = []
    for i, t in enumerate(texts):
        e = mask[i] if mask is not None else None
        if e:
            for a, b in sorted(leak_spans(t, e), reverse=True):
                t = t[:a] + " " + t[b:]
        docs.append(WORD.findall(t.lower()))
    df: dict[str, int] = {}
    for words in docs:
        for w in set(words):
            df[w] = df.get(w, 0) + 1
    vocab = sorted((w for w, c in df.items() if c >= min_df), key=lambda w: (-df[w], w))[:max_features]
    index = {w: j for j, w in enumerate(vocab)}
    rows, cols = [], []
    for i, words in enumerate(docs):
        js = [index[w] for w in words if w in index]
        rows += [i] * len(js)
        cols += js
    X = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(docs), len(vocab)))
    return X.toarray(), tuple(vocab)


def bow_baseline(ca: Any, cfg: Any) -> Recognition:
    """The recipe (per-emotion mean minus mean, cosine ranking, same folds) on word counts instead of
    activations: ``bow_top1_cv``. The story's own emotion word is removed when ``cfg.mask_leaks``."""
    st = ca.stories
    X, _ = bow_features(list(st["text"]), mask=list(st["emotion"]) if cfg.mask_leaks else None)
    return cv_recognition(
        "bow",
        X,
        ca.labels,
        ca.folds,
        st["topic_index"].to_numpy(),
        len(ca.emotions),
        n_boot=cfg.n_boot,
        seed=cfg.seed,
    )


# ------------------------------------------------------------------------------------------ reliability


@dataclass(frozen=True)
class SplitHalf:
    """Cosines [n_splits, n_emotions] between vectors fitted on two disjoint halves of each emotion's
    stories; ``ci``: median over emotions of the mean over splits, CI resampling emotions and splits."""

    name: str
    per_half: int
    cosines: np.ndarray
    ci: CI

    def metrics(self) -> dict[str, Any]:
        return self.ci.metrics(self.name)


def split_half(
    fitted: FittedVectors,
    acts: np.ndarray,
    labels: np.ndarray,
    *,
    per_half: int | None = None,
    n_splits: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    name: str = "split_half_cosine",
) -> SplitHalf:
    """Split each emotion's stories at random (seeded) into two disjoint halves of ``per_half`` stories
    (default: as many as the smallest emotion allows), refit both halves with ``fitted``'s scaling and
    denoising (:meth:`FittedVectors.refit`), and take the cosine of each emotion's two vectors."""
    labels = np.asarray(labels)
    K = fitted.n_emotions
    members = [np.flatnonzero(labels == e) for e in range(K)]
    most = min(len(m) for m in members) // 2
    h = most if per_half is None else int(per_half)
    if not 1 <= h <= most:
        raise ValueError(
            f"per_half must be in 1..{most}: the smallest emotion has too few stories for two halves"
        )
    acts = np.asarray(acts)
    rng = np.random.default_rng(seed)
    cos = np.empty((n_splits, K))
    for s in range(n_splits):
        order = [rng.permutation(m) for m in members]
        a = np.concatenate([o[:h] for o in order])
        b = np.concatenate([o[h : 2 * h] for o in order])
        Va, Vb = fitted.refit(acts[a], labels[a]), fitted.refit(acts[b], labels[b])
        cos[s] = (Va * Vb).sum(1) / np.maximum(np.linalg.norm(Va, axis=1) * np.linalg.norm(Vb, axis=1), 1e-12)
    split_rng = np.random.default_rng(seed + 1)

    def stat(idx: np.ndarray) -> float:  # idx: resampled emotions; the full data uses every split
        full = len(idx) == K and np.array_equal(idx, np.arange(K))
        rows = np.arange(n_splits) if full else split_rng.integers(0, n_splits, n_splits)
        return float(np.median(cos[np.ix_(rows, idx)].mean(0)))

    ci = bootstrap_stat(K, stat, n_boot=n_boot, seed=seed, unit="emotion and split")
    return SplitHalf(name, h, cos, ci)


@dataclass(frozen=True)
class Reliability:
    """Split-half reliability at one layer under the configured recipe, without denoising, and with
    topic-centring; CV top-1 of the same variants; and the reliability curve over stories per half."""

    layer: int
    configured: SplitHalf
    no_denoise: SplitHalf
    topic_centered: SplitHalf
    cv_no_denoise: Recognition
    cv_topic_centered: Recognition
    denoising_gain: Difference  # CV top-1 of the configured recipe minus without denoising
    centering_gain: Difference  # CV top-1 topic-centred minus the configured recipe
    curve: Any  # DataFrame: per_half, cosine, ci_low, ci_high

    def metrics(self) -> dict[str, Any]:
        out = {**self.configured.metrics(), **self.no_denoise.metrics(), **self.topic_centered.metrics()}
        out.update(self.cv_no_denoise.top1_ci.metrics("heldout_top1_cv_no_denoise"))
        out.update(self.cv_topic_centered.top1_ci.metrics("heldout_top1_cv_topic_centered"))
        out.update(self.denoising_gain.metrics())
        out.update(self.centering_gain.metrics())
        out["split_half_per_half"] = self.configured.per_half
        raises = self.topic_centered.ci.low > self.configured.ci.high
        out["topic_centering_used"] = bool(raises)
        out["topic_centering_verdict"] = (
            "raises split-half reliability beyond both confidence intervals"
            if raises
            else "does not raise split-half reliability beyond the uncertainty, so it is not used"
        )
        out["denoising_split_half_change"] = float(self.configured.ci.estimate - self.no_denoise.ci.estimate)
        return out


def reliability(
    ca: Any,
    cfg: Any,
    layer: int,
    reference: Recognition | None = None,
    *,
    n_splits: int = 20,
    sizes: Sequence[int] = (2, 5, 10, 15, 30),
) -> Reliability:
    """Split-half cosine at ``layer`` (configured recipe, no denoising, topic-centred), the CV top-1 of the
    two variants compared story by story with ``reference`` (the configured recipe's CV at ``layer``;
    recomputed when not given), and the configured recipe's split-half cosine for ``sizes`` stories per
    half (capped by the smallest emotion)."""
    import pandas as pd

    X, y, K, topics = ca.acts[layer], ca.labels, len(ca.emotions), ca.stories["topic_index"].to_numpy()
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed, "n_splits": n_splits}
    fit = fit_vectors(
        X, y, K, ca.neutral[layer], denoise_variance=cfg.denoise_variance, standardize=cfg.standardize
    )
    fit0 = fit_vectors(X, y, K, None, denoise_variance=0.0, standardize=cfg.standardize)
    Xtc = topic_center(X, topics)
    configured = split_half(fit, X, y, **kw)
    rows = []
    for h in sorted({s for s in sizes if s < configured.per_half} | {configured.per_half}):
        sh = (
            configured
            if h == configured.per_half
            else split_half(fit, X, y, per_half=h, **{**kw, "n_boot": 200})
        )
        rows.append({"per_half": h, "cosine": sh.ci.estimate, "ci_low": sh.ci.low, "ci_high": sh.ci.high})
    cvkw = {"n_boot": cfg.n_boot, "seed": cfg.seed, "standardize": cfg.standardize}
    recipe = {"neutral": ca.neutral[layer], "denoise_variance": cfg.denoise_variance}
    ref = reference or cv_recognition("heldout", X, y, ca.folds, topics, K, **recipe, **cvkw)
    cv0 = cv_recognition("no_denoise", X, y, ca.folds, topics, K, **cvkw)
    cvtc = cv_recognition("topic_centered", Xtc, y, ca.folds, topics, K, **recipe, **cvkw)
    dkw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    return Reliability(
        layer,
        configured,
        split_half(fit0, X, y, name="split_half_cosine_no_denoise", **kw),
        split_half(fit, Xtc, y, name="split_half_cosine_topic_centered", **kw),
        cv0,
        cvtc,
        difference(ref, cv0, "denoising_top1_gain", **dkw),
        difference(cvtc, ref, "topic_centering_top1_gain", **dkw),
        pd.DataFrame(rows),
    )


# ------------------------------------------------------------------------------------------ readable views


def top_confusions(rec: Recognition, emotions: Sequence[str], k: int = 10) -> Any:
    """The ``k`` most frequent (true -> predicted) mistakes, with the share of the true emotion's stories."""
    import pandas as pd

    wrong = rec.preds != rec.truth
    pairs = pd.DataFrame(
        {"true": np.asarray(emotions)[rec.truth[wrong]], "predicted": np.asarray(emotions)[rec.preds[wrong]]}
    )
    n_true = pd.Series(np.asarray(emotions)[rec.truth]).value_counts()
    top = pairs.value_counts().head(k).rename("stories").reset_index()
    top["share of the true emotion's stories"] = (top["stories"] / top["true"].map(n_true)).round(2)
    return top


def example_stories(
    stories: Any, emotions: Sequence[str], n: int = 3, *, seed: int = 0, chars: int = 500
) -> Any:
    """``n`` stories drawn at random (seeded) among the non-leaking stories of ``emotions`` (one per
    emotion, emotions drawn first), cut to ``chars`` characters."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    ok = stories[stories["emotion"].isin(emotions) & ~stories["leak"].astype(bool)]
    names = sorted(set(ok["emotion"]))
    picks = rng.choice(names, size=min(n, len(names)), replace=False) if names else []
    rows = []
    for e in picks:
        pool = ok[ok["emotion"] == e]
        r = pool.iloc[int(rng.integers(len(pool)))]
        text = r["text"] if len(r["text"]) <= chars else r["text"][:chars].rsplit(" ", 1)[0] + " …"
        rows.append({"emotion": e, "topic": r["topic"], "story (start)": text})
    return pd.DataFrame(rows)


def _main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m emolib.recognition``: the split-half reliability of one corpus's vectors at one layer
    (:func:`reliability`, the configured recipe of chapter 01), e.g. to check a corpus before it replaces the
    one the chapters read. Per-story means come through the result store's chunks (stored ones are read)."""
    import argparse
    import json
    from pathlib import Path

    from .activations import from_config
    from .config import VectorsConfig
    from .corpus import corpus_dir_for, load_corpus
    from .stimuli import load_emotions

    ap = argparse.ArgumentParser(prog="python -m emolib.recognition", description=_main.__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--corpus", default="", help="corpus folder (default data/corpus/<model>)")
    ap.add_argument("--layer", default="default", help="an int, or 'default' (two-thirds depth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--token-offset", type=int, default=50, help="first token position averaged (chapter 01: 50)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default="", help="also write the figures to this JSON file")
    a = ap.parse_args(argv)
    layer: int | str = int(a.layer) if a.layer.lstrip("-").isdigit() else a.layer
    cfg = VectorsConfig(
        notebook="reliability", model=a.model, seed=a.seed, device=a.device, dtype=a.dtype, layer=layer,
        token_offset=a.token_offset, chunked=True,
    )  # fmt: skip
    folder = Path(a.corpus) if a.corpus else corpus_dir_for(a.model)
    corpus = load_corpus(folder, load_emotions())
    m = cfg.load_model()
    L = cfg.resolve_layer(m.info.n_layers)
    ca = from_config(m, corpus, cfg, [L])
    if len(ca.stories) < 4 * len(ca.emotions):
        raise ValueError(
            f"{len(ca.stories)} stories keep a token after position {a.token_offset}: too few for two halves "
            f"of {len(ca.emotions)} emotions (lower --token-offset or use a corpus of longer stories)"
        )
    rel = reliability(ca, cfg, L)
    q = corpus.quality()
    from datetime import UTC, datetime

    from . import __version__
    from .results import git_commit

    out = {
        "provenance": {
            "config": cfg.provenance(),
            "emolib_version": __version__,
            "git_commit": git_commit(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        },
        "corpus": str(folder),
        "corpus_sha256": corpus.sha256,
        "model": m.info.name,
        "weights_hash": m.info.weights_hash,
        "layer": L,
        "seed": a.seed,
        **{k: q[k] for k in ("n_stories", "stories_per_emotion_min", "cutoff_share", "leak_rate")},
        "n_stories_used": int(len(ca.stories)),
        **rel.metrics(),
        "curve": rel.curve.to_dict(orient="records"),
    }
    text = json.dumps(out, indent=1, default=float)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    _main()
