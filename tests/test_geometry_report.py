"""Rating geometry, cluster naming and agreement, and the comparison table (synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest

from emolib.geometry import (
    abs_pc_correlation,
    name_clusters,
    pair_agreement,
    pair_agreement_null,
    rating_geometry,
)
from emolib.results import comparison_table


def planted(n=60, d=40, seed=0, sign=-1.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    valence, arousal = rng.uniform(1, 9, n), rng.uniform(1, 9, n)
    V = sign * 4 * np.outer(valence - 5, q[:, 0]) + 2 * np.outer(arousal - 5, q[:, 1])
    return V + 0.2 * rng.standard_normal((n, d)), valence, arousal


def test_rating_geometry_orients_and_correlates():
    V, val, aro = planted(sign=-1.0)  # planted with PC1 pointing towards *unpleasant*
    pos = np.arange(0, 60, 2)  # only every other emotion is rated
    g = rating_geometry(V, pos, val[pos], aro[pos], n_boot=200, n_perm=200, seed=0)
    assert g.pc1_valence.r > 0.95 and g.pc1_valence.p_perm < 0.01  # oriented: positive = pleasant
    assert g.pc2_arousal.r > 0.9
    assert g.pc1_valence.ci_low > 0.9
    assert g.pc1_valence.n == len(pos)
    assert g.pca.explained_variance_ratio[0] > g.pca.explained_variance_ratio[1]
    assert abs_pc_correlation(V, pos, val[pos], 0) == pytest.approx(g.pc1_valence.r, abs=1e-9)


def test_rating_geometry_null_on_noise():
    rng = np.random.default_rng(3)
    V = rng.standard_normal((60, 40))
    val, aro = rng.uniform(1, 9, 60), rng.uniform(1, 9, 60)
    g = rating_geometry(V, np.arange(60), val, aro, n_boot=200, n_perm=300, seed=0)
    assert g.pc1_valence.p_perm > 0.01 and abs(g.pc1_valence.r) < 0.4


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
    rows = [{"metric": "PC1 vs valence", "key": "pc1_valence_r", "paper": 0.81, "replications": "0.76"},
            {"metric": "PC2 share", "key": "pc2_var", "paper": 0.15, "replications": None}]
    t = comparison_table({"pc1_valence_r": 0.4321, "pc1_valence_ci_low": 0.1, "pc1_valence_ci_high": 0.6}, rows)
    assert t.loc["PC1 vs valence", "this model"] == "0.432"
    assert t.loc["PC1 vs valence", "95% CI"] == "[0.10, 0.60]"
    assert t.loc["PC2 share", "this model"] == "not run"


def test_grand_mean_is_what_emotion_means_subtracts():
    from emolib.geometry import emotion_means, grand_mean

    rng = np.random.default_rng(0)
    acts, labels = rng.normal(size=(30, 5)), np.repeat(np.arange(3), [5, 10, 15])
    naive = np.stack([acts[labels == e].mean(0) for e in range(3)])
    assert np.allclose(grand_mean(acts, labels), naive.mean(0))
    assert np.allclose(emotion_means(acts, labels) + grand_mean(acts, labels), naive)
