"""Chapter 02's analyses on planted structure (no model): rating geometry, story resampling, the ridge
readout, the coarse valence test, clusters and the checks that keep loaded and refitted vectors together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolib import geometry as geo
from emolib import geometry_report as gr
from emolib.geometry import (
    abs_pc_correlation,
    name_clusters,
    pair_agreement,
    pair_agreement_null,
    rating_geometry,
)
from emolib.results import comparison_table
from emolib.vectors import EmotionVectors, fit_vectors, load_checked

torch.set_num_threads(1)


def planted(n=60, d=40, seed=0, sign=-1.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    valence, arousal = rng.uniform(1, 9, n), rng.uniform(1, 9, n)
    V = sign * 4 * np.outer(valence - 5, q[:, 0]) + 2 * np.outer(arousal - 5, q[:, 1])
    return V + 0.2 * rng.standard_normal((n, d)), valence, arousal


def stories(means: np.ndarray, per: int = 15, noise: float = 1.0, seed: int = 0):
    """``per`` noisy stories around each emotion mean; topics at random (100 of them)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(means)), per)
    acts = means[labels] + noise * rng.standard_normal((labels.size, means.shape[1]))
    topics = rng.integers(0, 100, labels.size)
    return acts, labels, topics


def axes(d, k, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, k)))
    return q.T


# --- rating geometry (headline) -------------------------------------------------------------------------
def test_rating_geometry_orients_and_correlates():
    V, val, aro = planted(sign=-1.0)  # planted with PC1 pointing towards *unpleasant*
    pos = np.arange(0, 60, 2)  # only every other emotion is rated
    g = rating_geometry(V, pos, val[pos], aro[pos], n_boot=200, n_perm=200, seed=0)
    assert g.pc1_valence.r > 0.95 and g.pc1_valence.p.at_floor  # oriented: positive = pleasant
    assert g.pc2_arousal.r > 0.9 and g.pc1_valence.ci_low > 0.9
    assert g.pc1_valence.n == len(pos) and g.rho["pc1_valence"] > 0.9
    assert g.pca.explained_variance_ratio[0] > g.pca.explained_variance_ratio[1]
    assert abs_pc_correlation(V, pos, val[pos], 0) == pytest.approx(g.pc1_valence.r, abs=1e-9)
    m = gr._corr_metrics("pc1_valence", g.pc1_valence, g.rho["pc1_valence"])
    assert {
        "pc1_valence_r",
        "pc1_valence_ci_low",
        "pc1_valence_p",
        "pc1_valence_null95",
        "pc1_valence_n",
        "pc1_valence_rho",
    } <= set(m) and m["pc1_valence_p_text"].startswith("p < ")


def test_rating_geometry_null_on_noise():
    rng = np.random.default_rng(3)
    V = rng.standard_normal((60, 40))
    val, aro = rng.uniform(1, 9, 60), rng.uniform(1, 9, 60)
    g = rating_geometry(V, np.arange(60), val, aro, n_boot=200, n_perm=300, seed=0)
    assert float(g.pc1_valence.p) > 0.01 and abs(g.pc1_valence.r) < 0.4


# --- story resampling ----------------------------------------------------------------------------------------
def _emotion_design(n=40, d=30, valence_scale=3.0, other_scale=1.0, seed=0):
    """Emotion means: PC1-to-be carries valence plus an emotion-specific part (so the true r is below 1),
    two further axes carry unrelated structure."""
    rng = np.random.default_rng(seed)
    u = axes(d, 3, seed)
    v, w = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    means = valence_scale * np.outer(v + 0.5 * w, u[0]) + other_scale * (
        np.outer(rng.uniform(-1, 1, n), u[1]) + np.outer(rng.uniform(-1, 1, n), u[2])
    )
    return means, v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_story_resample_ci_contains_true_r_and_share_is_high_with_a_dominant_valence_axis(seed):
    means, v = _emotion_design(seed=seed)
    true_r = geo.pc_correlations(means, np.arange(40), v, 1)[0]  # population value (noise-free means)
    assert 0.8 < true_r < 0.97
    acts, labels, _ = stories(means, per=15, noise=1.0, seed=seed)
    res = gr.story_resample(acts, labels, np.arange(40), v, v, n_boot=100, seed=0)
    ci = res.ci("valence")
    assert ci.low <= true_r <= ci.high and ci.high - ci.low > 0.02
    assert res.share > 0.95
    assert ci.unit.startswith("story")


def test_story_resample_share_is_low_without_a_dominant_valence_axis():
    means, v = _emotion_design(valence_scale=0.6, other_scale=3.0)  # valence is the smallest planted axis
    acts, labels, _ = stories(means, per=15, noise=0.5)
    res = gr.story_resample(acts, labels, np.arange(40), v, v, n_boot=50, seed=0)
    assert res.share < 0.2


def test_label_null_matches_refit_and_is_at_chance():
    means, v = _emotion_design()
    acts, labels, _ = stories(means, per=10)
    f = fit_vectors(
        acts, labels, 40, np.random.default_rng(1).standard_normal((30, 30)), denoise_variance=0.3
    )
    np.testing.assert_allclose(geo.emotion_means(gr.story_space(f, acts), labels, 40), f.vectors, atol=1e-10)
    null = gr.label_null(f, acts, labels, np.arange(40), [v], [0], n_perm=30, seed=0)
    assert null.shape == (30, 1) and null.max() < geo.pc_correlations(f.vectors, np.arange(40), v, 1)[0]


# --- supervised readout -----------------------------------------------------------------------------------
def test_ridge_readout_recovers_planted_ratings_and_is_at_chance_for_shuffled():
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 9, 80)
    X = np.outer(y - 5, axes(200, 1)[0]) + 0.5 * rng.standard_normal((80, 200))
    fit = gr.ridge_readout(X, y, n_folds=5, n_perm=100, seed=0)
    assert fit.r > 0.9 and fit.p.at_floor and fit.null95 < 0.5
    nulls = [gr.ridge_readout(X, rng.uniform(1, 9, 80), n_folds=5, n_perm=100, seed=k) for k in range(3)]
    # ratings unrelated to X: at chance
    assert max(f.r for f in nulls) < 0.4 and np.mean([float(f.p) for f in nulls]) > 0.1


# --- coarse valence test ------------------------------------------------------------------------------------
def test_coarse_valence_auroc_near_one_when_planted_and_near_half_under_the_null():
    rng = np.random.default_rng(0)
    n, d = 30, 20
    v = rng.uniform(1, 9, n)
    means = np.outer(v - 5, axes(d, 1)[0])
    acts, labels, topics = stories(means, per=12, noise=1.0)
    kw = dict(n_extreme=8, n_boot=100, n_perm=100, seed=0)
    names = [f"e{i}" for i in range(n)]
    got = gr.coarse_valence_test(acts, labels, topics, topics % 5, v, names, **kw)
    assert got.auroc > 0.95 and got.ci.low > 0.9 and float(got.p) < 0.05
    assert len(got.positive) == 8 and got.ci.unit == "topic"
    nulls = [
        gr.coarse_valence_test(
            stories(np.zeros((n, d)), per=12, noise=1.0, seed=k)[0],
            labels,
            topics,
            topics % 5,
            v,
            names,
            **kw,
        )
        for k in range(1, 4)
    ]
    assert abs(np.mean([g.auroc for g in nulls]) - 0.5) < 0.06 and np.mean([float(g.p) for g in nulls]) > 0.1


# --- loading: checks that keep chapters together ---------------------------------------------------------------
def _saved(tmp_path, **meta):
    v = EmotionVectors(
        torch.randn(4, 8),
        ("happy", "sad", "calm", "afraid"),
        3,
        {
            "corpus_sha256": "abc",
            "token_offset": 50,
            "mask_leaks": True,
            "denoise_variance": 0.5,
            "standardize": False,
            "weights_hash": "w1",
            **meta,
        },
    )
    v.save(tmp_path / "vectors")
    return v


def test_load_checked_names_chapter_01_on_mismatch(tmp_path):
    v = _saved(tmp_path)
    ok = {
        "corpus_sha256": "abc",
        "token_offset": 50,
        "mask_leaks": True,
        "denoise_variance": 0.5,
        "standardize": False,
        "weights_hash": "w1",
    }
    got = load_checked(tmp_path / "vectors", 3, ok, producer=gr.PRODUCER)
    assert torch.allclose(got.vectors, v.vectors)
    for key, other in [
        ("token_offset", 10),
        ("corpus_sha256", "zzz"),
        ("weights_hash", "w2"),
        ("standardize", True),
    ]:
        with pytest.raises(ValueError, match=rf"{key}.*chapter 01"):
            load_checked(tmp_path / "vectors", 3, {**ok, key: other}, producer=gr.PRODUCER)
    with pytest.raises(FileNotFoundError, match="chapter 01"):
        load_checked(tmp_path / "vectors", 7, ok, producer=gr.PRODUCER)


def test_verdict_wording():
    from emolib.stats import PValue

    small, large = PValue(0.001, 999, at_floor=True), PValue(0.3, 999)
    assert gr.verdict(small) == "beats its null" and gr.verdict(small, small) == "beats its nulls"
    assert gr.verdict(small, large).startswith("beats 1 of its 2 nulls")
    assert gr.verdict(large, large) == "does not beat its nulls (a null result)"


def test_check_refit():
    a = np.random.default_rng(0).standard_normal((5, 6))
    assert gr.check_refit(a, a * 1.0000001, layer=2) > 0.9999
    with pytest.raises(ValueError, match="chapter 01"):
        gr.check_refit(a, a + 0.5, layer=2)


def test_geometry_config_quick_caps_and_validation():
    cfg = gr.GeometryConfig(notebook="02_valence_geometry", quick=True)
    assert cfg.n_label_perm <= 20 and cfg.n_story_boot <= 20 and cfg.n_null <= 5 and cfg.emotions
    with pytest.raises(ValueError):
        gr.GeometryConfig(notebook="02_valence_geometry", n_clusters=1)


# --- clusters and the comparison table -------------------------------------------------------------------------
def test_cluster_names_and_agreement():
    names = ["joyful", "elated", "furious", "angry", "calm"]
    V = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.95, 0.05], [0, 0, 1.0]])
    labels = np.array([0, 0, 1, 1, 2])
    got = name_clusters(labels, names, V)
    assert got[0] in ("Joyful & Elated", "Elated & Joyful") and got[2] == "Calm"
    groups = {"Joy": ["joyful", "elated"], "Anger": ["furious", "angry", "not-a-word"]}
    assert pair_agreement(dict(zip(names, labels)), groups) == 1.0
    assert pair_agreement({"joyful": 0, "elated": 1, "furious": 2, "angry": 2}, groups) == 0.5
    null = pair_agreement_null(dict(zip(names, labels)), groups, n_perm=200)
    assert null.mean() < 1.0
    with pytest.raises(ValueError):
        pair_agreement({"x": 0}, groups)


def test_comparison_table_reads_metrics():
    rows = [
        {"metric": "PC1 vs valence", "key": "pc1_valence_r", "paper": 0.81, "replications": "0.76"},
        {"metric": "PC2 share", "key": "pc2_var", "paper": 0.15, "replications": None},
    ]
    t = comparison_table(
        {"pc1_valence_r": 0.4321, "pc1_valence_ci_low": 0.1, "pc1_valence_ci_high": 0.6}, rows
    )
    assert t.loc["PC1 vs valence", "this model"] == "0.432"
    assert t.loc["PC1 vs valence", "95% CI"] == "[0.10, 0.60]"
    assert t.loc["PC2 share", "this model"] == "not run"
    ref = gr.load_reference()
    assert {"pc1_var", "pc2_var", "pc1_valence_r", "pc2_arousal_r", "n_clusters"} <= {
        r["key"] for r in ref["rows"]
    }


def test_grand_mean_is_what_emotion_means_subtracts():
    from emolib.geometry import emotion_means, grand_mean

    rng = np.random.default_rng(0)
    acts, labels = rng.normal(size=(30, 5)), np.repeat(np.arange(3), [5, 10, 15])
    naive = np.stack([acts[labels == e].mean(0) for e in range(3)])
    assert np.allclose(grand_mean(acts, labels), naive.mean(0))
    assert np.allclose(emotion_means(acts, labels) + grand_mean(acts, labels), naive)


def test_geometry_reads_the_profile_on_a_subset_and_the_headline_on_every_story(tiny, tmp_path, monkeypatch):
    """Chapter 01 then chapter 02 with profile_rounds: the analysed layer holds every story, the
    across-layers analyses read the subset's vectors (saved in vectors_profile, checked against a refit)."""
    import types

    import pandas as pd

    from emolib import corpus as corpus_mod
    from emolib import evaluate
    from emolib.activations import from_config
    from emolib.config import default_layer
    from emolib.corpus import Corpus

    monkeypatch.setenv("EMOLIB_STORE", "on")
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMOLIB_STORE_DIR", str(tmp_path / "committed"))
    emotions = ("afraid", "angry", "calm", "happy", "sad", "nervous", "loving", "hostile", "bored", "proud")
    rows = [
        {
            "id": f"story-{i:03d}-{j:03d}",
            "emotion": e,
            "text": f"On day {j} of the trip the {e} traveller wrote home about the weather and the food.",
            "topic_index": j,
            "degenerate": None,
        }
        for j in range(5)
        for i, e in enumerate(emotions)
    ]
    neutral = [
        {
            "id": f"neutral-{k:04d}",
            "text": f"Human: What is {k} times 3? Assistant: {3 * k}.",
            "degenerate": None,
        }
        for k in range(8)
    ]
    corpus = Corpus(
        pd.DataFrame(rows), pd.DataFrame(neutral).assign(emotion_words=[[]] * 8), emotions, "ef" * 8, tmp_path
    )
    monkeypatch.setattr(corpus_mod, "load_corpus", lambda folder, names: corpus)
    kw = dict(
        notebook="x", model=str(tiny.info.name), token_offset=2, emotions=emotions, n_boot=20, n_perm=20
    )
    cfg = gr.GeometryConfig(**kw, n_null=3, n_label_perm=3, n_story_boot=3, n_readout_folds=2, n_clusters=2,
                            n_extreme=2, profile_rounds=3, chunked=True)  # fmt: skip
    n = tiny.info.n_layers
    L0 = default_layer(n)
    ca = from_config(tiny, corpus, cfg, cfg.analysis_layers(n), progress=False)
    profile = evaluate.profile_activations(tiny, corpus, cfg, ca)
    assert ca.layers == [L0] and profile.layers == cfg.sweep_layers(n) and len(profile.stories) == 30
    evaluate.save_vectors(ca, cfg, tmp_path / "run" / "vectors", profile=profile)
    run = types.SimpleNamespace(out=tmp_path / "run", metrics=lambda: {})
    data = gr.load_geometry_data(cfg, run, model=tiny)
    assert data.layers == [L0] and len(data.acts.labels) == 50
    assert data.across.layers == profile.layers and len(data.across.acts.labels) == 30
    m = data.metrics()
    assert m["geometry_n_stories"] == 50 and m["geometry_profile_n_stories"] == 30
    assert data.refit_min_cosine > 1 - 1e-4
    layers = gr.analyse_layers(data, cfg)
    assert list(layers.curve.index) == profile.layers
    readout = gr.analyse_readout(data, cfg)
    assert list(readout.curve.index) == profile.layers and readout.layer == L0
    full = gr.ridge_readout(data.V()[data.positions], data.valence, n_folds=2, n_perm=20, seed=cfg.seed)
    assert readout.valence.r == pytest.approx(full.r)  # the headline reads the vectors of every story
