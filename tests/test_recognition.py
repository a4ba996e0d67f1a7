"""Cross-validated recognition, its nulls, the lexical baseline and split-half reliability, on planted data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emolib.activations import CorpusActivations
from emolib.config import VectorsConfig
from emolib.recognition import (
    _Folds,
    bow_baseline,
    bow_features,
    cv_recognition,
    difference,
    headline_and_profile,
    reliability,
    split_half,
    sweep,
    top_confusions,
    topic_center,
    within_fold_permutations,
)
from emolib.vectors import fit_vectors

torch.set_num_threads(1)

EMO = tuple(f"e{i}" for i in range(8))


def planted(
    signal=(0.0, 0.6, 1.5, 1.0), n_per=15, d=24, n_topics=20, topic_effect=0.0, seed=0
) -> CorpusActivations:
    """Stories whose activation at layer L = signal[L] * emotion direction + topic offset + noise."""
    rng = np.random.default_rng(seed)
    K = len(EMO)
    labels = np.repeat(np.arange(K), n_per)
    topics = rng.integers(0, n_topics, size=len(labels))
    dirs = rng.normal(size=(K, d))
    toff = topic_effect * rng.normal(size=(n_topics, d))
    acts, neutral = {}, {}
    for L, s in enumerate(signal):
        acts[L] = s * dirs[labels] + toff[topics] + rng.normal(size=(len(labels), d))
        neutral[L] = rng.normal(size=(30, d))
    stories = pd.DataFrame(
        {
            "emotion_index": labels,
            "emotion": np.array(EMO)[labels],
            "topic_index": topics,
            "topic": [f"topic {t}" for t in topics],
            "text": ["x"] * len(labels),
            "leak": False,
        }
    )
    return CorpusActivations(stories, acts, neutral, EMO, 0, {})


def cfg(**kw) -> VectorsConfig:
    return VectorsConfig(notebook="test", n_null=kw.pop("n_null", 19), n_boot=kw.pop("n_boot", 100), **kw)


def test_fast_fit_equals_the_recipe():
    ca = planted()
    X, y, folds = ca.acts[2], ca.labels, ca.folds
    for standardize in (False, True):
        fd = _Folds(X, y, folds, len(EMO), ca.neutral[2], 0.5, standardize)
        train = np.arange(fd.F) != 1
        U, center, scale, present = fd.fit(train)
        rows = np.isin(fd.folds, np.flatnonzero(train))
        ref = fit_vectors(
            X[rows], y[rows], len(EMO), ca.neutral[2], denoise_variance=0.5, standardize=standardize
        )
        Vref = ref.vectors / np.linalg.norm(ref.vectors, axis=1, keepdims=True)
        assert present.all()
        assert np.allclose(U, Vref, atol=1e-8)
        assert np.allclose(scale, ref.scale)


def test_sweep_recovers_planted_emotions_and_noise_sits_at_chance():
    ca = planted()
    sw = sweep(ca, cfg(), n_layers=4)
    assert sw.default == 3 and sw.layers == (0, 1, 2, 3)
    assert sw.top1[2] > 0.8 and sw.top1[2] > sw.top1[1] > sw.top1[0]
    rec = sw.at(2)
    assert rec.p.at_floor and rec.top1_ci.low > 0.6 and rec.top1_ci.unit == "topic"
    assert rec.top1_ci.n == len(np.unique(ca.stories["topic_index"]))
    chance = 1 / len(EMO)
    assert abs(sw.top1[0] - chance) < 0.1  # layer 0 holds no signal
    assert abs(sw.null_top1.mean() - chance) < 0.05  # shuffled training labels: chance at every layer
    assert set(sw.nested_layers) <= {1, 2, 3} and 2 in sw.nested_layers
    m = {**rec.metrics(), **sw.metrics()}
    for key in (
        "heldout_top1_cv",
        "heldout_top1_cv_ci_low",
        "heldout_top1_cv_ci_high",
        "heldout_top1_cv_p",
        "heldout_top5_cv",
        "heldout_top1_nested",
        "heldout_top1_nested_p",
        "sweep_best_layer",
    ):
        assert key in m
    assert m["sweep_best_layer"] == 2 and m["heldout_top1_nested"] > 0.7


def test_within_fold_permutations_keep_fold_counts():
    labels = np.repeat(np.arange(4), 10)
    folds = np.tile(np.arange(5), 8)
    P = within_fold_permutations(labels, folds, 3, seed=0)
    for p in P:
        for f in range(5):
            assert sorted(p[folds == f]) == sorted(labels[folds == f])
    assert not np.array_equal(P[0], labels)


def test_selection_and_nested_nulls_are_not_anti_conservative():
    """On pure noise the best-of-layers and nested p-values must not be small more often than they should."""
    small_best = small_nested = 0
    for seed in range(8):
        ca = planted(signal=(0.0, 0.0, 0.0, 0.0), n_per=8, seed=seed)
        sw = sweep(ca, cfg(n_null=19, seed=seed), n_layers=4)
        small_best += float(sw.best_p()) <= 0.1
        nest = sw.nested()
        small_nested += float(nest.p) <= 0.1
        # the nested null takes the best layer per fold, so it dominates every single layer's null
        assert (nest.null_top1 >= sw.null_top1.max(1) - 1e-12).all()
    assert small_best <= 3 and small_nested <= 3


def test_bow_features_mask_the_own_word_and_baseline_recognises_word_cues():
    X, vocab = bow_features(
        ["I was so afraid, afraid of it", "calm calm sea", "the afraid cat"],
        mask=["afraid", None, None],
        min_df=1,
    )
    assert X[0, vocab.index("afraid")] == 0 and X[2, vocab.index("afraid")] == 1
    assert X[1, vocab.index("calm")] == 2
    rng = np.random.default_rng(0)
    cue = {e: [f"cue{chr(97 + i)}{chr(97 + j)}" for j in range(3)] for i, e in enumerate(EMO)}
    filler = [f"fill{chr(97 + j // 26)}{chr(97 + j % 26)}" for j in range(40)]
    ca = planted(n_per=15)
    texts = [
        " ".join(list(rng.choice(cue[e], 2)) + list(rng.choice(filler, 12))) for e in ca.stories["emotion"]
    ]
    ca.stories["text"] = texts
    bow = bow_baseline(ca, cfg())
    assert bow.top1 > 0.6 and "bow_top1_cv" in bow.metrics()
    ca.stories["text"] = [" ".join(rng.choice(filler, 14)) for _ in texts]
    assert bow_baseline(ca, cfg()).top1 < 0.35


def test_difference_and_confusions():
    ca = planted()
    kw = dict(n_boot=100)
    a = cv_recognition("a", ca.acts[2], ca.labels, ca.folds, ca.stories["topic_index"], len(EMO), **kw)
    b = cv_recognition("b", ca.acts[0], ca.labels, ca.folds, ca.stories["topic_index"], len(EMO), **kw)
    d = difference(a, b, "a_minus_b", n_boot=100)
    assert d.ci.low > 0.4 and d.metrics()["a_minus_b_verdict"] == "higher"
    assert {"a_minus_b", "a_minus_b_ci_low", "a_minus_b_ci_high", "a_minus_b_n"} <= set(d.metrics())
    assert difference(b, a, "b_minus_a", n_boot=100).verdict == "lower"
    tab = top_confusions(b, EMO, k=5)
    assert len(tab) == 5 and (tab["true"] != tab["predicted"]).all()


def test_split_half_on_planted_data():
    ca = planted(n_per=20)
    X, y = ca.acts[2], ca.labels
    fit = fit_vectors(X, y, len(EMO), None, denoise_variance=0)
    sh = split_half(fit, X, y, n_splits=10, n_boot=100)
    assert sh.per_half == 10 and sh.ci.estimate > 0.8 and sh.ci.low <= sh.ci.estimate <= sh.ci.high
    small = split_half(fit, X, y, per_half=2, n_splits=10, n_boot=100)
    assert small.ci.estimate < sh.ci.estimate  # fewer stories, less reliable vectors
    noise = planted(signal=(0.0,) * 4, n_per=20)
    fit0 = fit_vectors(noise.acts[2], y, len(EMO), None, denoise_variance=0)
    assert abs(split_half(fit0, noise.acts[2], y, n_splits=10, n_boot=100).ci.estimate) < 0.3
    with pytest.raises(ValueError, match="per_half"):
        split_half(fit, X, y, per_half=11)


def test_topic_centering_removes_a_planted_topic_effect():
    ca = planted(topic_effect=3.0, n_topics=10, n_per=20)
    X, topics = ca.acts[2], ca.stories["topic_index"].to_numpy()
    Xc = topic_center(X, topics)
    for t in np.unique(topics):
        assert np.allclose(Xc[topics == t].mean(0), 0, atol=1e-10)
    rel = reliability(ca, cfg(denoise_variance=0.0), 2, n_splits=5, sizes=(2, 5))
    m = rel.metrics()
    assert m["split_half_cosine_topic_centered"] > m["split_half_cosine"]
    assert list(rel.curve["per_half"]) == [2, 5, 10]
    assert "heldout_top1_cv_topic_centered" in m and "split_half_cosine_no_denoise_ci_low" in m


def test_headline_on_every_story_and_the_layer_profile_on_a_subset():
    ca = planted(n_per=20)
    same_sweep, same_rec = headline_and_profile(ca, ca, cfg(), n_layers=4)
    assert same_sweep.layers == (0, 1, 2, 3) and len(same_rec.truth) == len(ca.stories)
    keep = ca.stories.groupby("emotion", sort=False).head(8).index.to_numpy()
    sub = CorpusActivations(
        ca.stories.loc[keep].reset_index(drop=True),
        {L: ca.acts[L][keep] for L in (0, 2)},
        {L: ca.neutral[L] for L in (0, 2)},
        EMO,
        0,
        {},
    )
    full = CorpusActivations(ca.stories, {3: ca.acts[3]}, {3: ca.neutral[3]}, EMO, 0, {})
    with pytest.raises(ValueError, match="default layer"):
        headline_and_profile(full, sub, cfg(), n_layers=4)  # the profile must hold the default layer
    sub = CorpusActivations(
        sub.stories, {**sub.acts, 3: ca.acts[3][keep]}, {**sub.neutral, 3: ca.neutral[3]}, EMO, 0, {}
    )
    prof, rec = headline_and_profile(full, sub, cfg(), n_layers=4)
    assert prof.layers == (0, 2, 3) and prof.n == 8 * len(EMO)
    assert prof.metrics()["sweep_n_stories"] == 8 * len(EMO)
    assert len(rec.truth) == len(ca.stories)  # the headline reads every story
    assert rec.top1 == same_rec.top1 and rec.p.at_floor
