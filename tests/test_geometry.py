"""Geometry maths on synthetic data: planted axes, planted clusters, known correlations (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from emolib.geometry import (
    auroc,
    cluster,
    cluster_table,
    column_pearson,
    cosine_matrix,
    emotion_means,
    held_out_direction_scores,
    orient,
    pc_correlations,
    pca,
    rated_reference,
    resampled_emotion_means,
    ridge_cv_predict,
    standardize,
)

N, D = 171, 64


def _abs_cos(a: np.ndarray, b: np.ndarray) -> float:
    return abs(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))


@pytest.fixture
def planted():
    """Vectors = 5*valence*u1 + 3*arousal*u2 + small noise + an offset; u1, u2 orthonormal."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((D, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    valence, arousal = rng.standard_normal(N), rng.standard_normal(N)
    X = 5 * np.outer(valence, u1) + 3 * np.outer(arousal, u2) + 0.3 * rng.standard_normal((N, D)) + 7.0
    return X, u1, u2, valence, arousal


def test_pca_recovers_planted_axes(planted):
    X, u1, u2, _, _ = planted
    res = pca(X, n_components=5)
    assert res.scores.shape == (N, 5) and res.components.shape == (5, D)
    assert _abs_cos(res.components[0], u1) > 0.99
    assert _abs_cos(res.components[1], u2) > 0.99
    evr = res.explained_variance_ratio
    assert np.all(np.diff(evr) <= 0) and 0 < evr.sum() <= 1
    assert evr[0] > 0.6  # 25 / (25 + 9 + 64 * 0.09) ~ 0.63
    np.testing.assert_allclose(res.scores, (X - X.mean(0)) @ res.components.T, atol=1e-8)


def test_orient_aligns_with_reference(planted):
    X, _, _, valence, arousal = planted
    res = pca(X, n_components=3)
    for ref in (valence, -valence):
        oriented = orient(res, 0, ref)
        assert np.corrcoef(oriented.scores[:, 0], ref)[0, 1] > 0.95
        # scores and components flip together; other components untouched
        np.testing.assert_allclose(oriented.scores, (X - X.mean(0)) @ oriented.components.T, atol=1e-8)
        np.testing.assert_array_equal(oriented.components[1:], res.components[1:])
    ref = arousal.copy()
    ref[:10] = np.nan
    assert np.corrcoef(orient(res, 1, -ref).scores[10:, 1], -arousal[10:])[0, 1] > 0.95


def test_pca_sign_convention_is_deterministic(planted):
    X = planted[0]
    res = pca(X, n_components=4)
    k = np.arange(4)
    assert np.all(res.components[k, np.argmax(np.abs(res.components), axis=1)] > 0)
    perm = np.random.default_rng(0).permutation(N)
    np.testing.assert_allclose(pca(X[perm], n_components=4).components, res.components, atol=1e-8)


def test_pca_clips_components_and_rejects_bad_input(planted):
    X = planted[0]
    assert pca(X[:5], n_components=10).scores.shape == (5, 5)
    assert pca(X, n_components=500).components.shape == (D, D)
    with pytest.raises(ValueError):
        pca(X, n_components=0)
    with pytest.raises(ValueError):
        pca(X[0])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        pca(bad)


def test_standardize_reveals_axis_masked_by_outlier_dimension():
    """A huge-variance dimension (as in small models' residual streams) hides the planted axis."""
    rng = np.random.default_rng(2)
    d = 32
    u = rng.choice([-1.0, 1.0], size=d) / np.sqrt(d)
    u[-1] = 0.0
    X = np.outer(2 * rng.standard_normal(N), u) + 0.1 * rng.standard_normal((N, d))
    X[:, -1] = 1000.0 * rng.standard_normal(N)
    raw = pca(X, n_components=2)
    assert abs(raw.components[0, -1]) > 0.99
    assert _abs_cos(raw.components[0], u) < 0.1
    std = pca(X, n_components=2, standardize=True)
    assert _abs_cos(std.components[0], u) > 0.95
    assert abs(std.components[0, -1]) < 0.2
    np.testing.assert_allclose(pca(standardize(X), n_components=2).components, std.components, atol=1e-8)
    np.testing.assert_allclose(std.transform(X), std.scores, atol=1e-8)


def test_standardize_columns_and_constant_guard():
    rng = np.random.default_rng(3)
    X = rng.normal(5.0, 3.0, size=(40, 6))
    X[:, 2] = 4.2
    Z = standardize(X)
    assert np.isfinite(Z).all()
    np.testing.assert_array_equal(Z[:, 2], 0.0)
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(Z[:, keep].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z[:, keep].std(0), 1.0, atol=1e-12)


def test_cosine_matrix():
    V = np.array([[1.0, 0.0], [3.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    C = cosine_matrix(V)
    np.testing.assert_allclose(np.diag(C), 1.0)
    np.testing.assert_allclose(C, C.T)
    assert C[0, 1] == pytest.approx(1.0) and C[0, 3] == pytest.approx(-1.0)
    assert C[0, 2] == pytest.approx(1 / np.sqrt(2))
    with pytest.raises(ValueError):
        cosine_matrix(np.zeros((2, 3)))


@pytest.fixture
def groups():
    """Four planted groups of directions (sizes 5..8) around random centroids, shuffled rows."""
    rng = np.random.default_rng(8)
    sizes = [5, 8, 6, 7]
    centroids = rng.standard_normal((4, 40))
    truth = np.repeat(np.arange(4), sizes)
    V = centroids[truth] * rng.uniform(0.5, 3.0, size=(len(truth), 1))  # scale: cosine ignores it
    V = V + 0.3 * rng.standard_normal(V.shape)
    perm = rng.permutation(len(truth))
    return V[perm], truth[perm]


@pytest.mark.parametrize("method", ["average", "ward"])
def test_cluster_recovers_planted_groups(groups, method):
    V, truth = groups
    res = cluster(V, k=4, method=method)
    assert res.labels[0] == 0 and set(res.labels) == {0, 1, 2, 3}
    for g in range(4):
        assert len(set(res.labels[truth == g])) == 1  # every planted group is one cluster
    assert len({res.labels[truth == g][0] for g in range(4)}) == 4  # and groups are not merged
    assert res.linkage.shape == (len(truth) - 1, 4)


def test_cluster_rejects_bad_arguments(groups):
    V, _ = groups
    with pytest.raises(ValueError):
        cluster(V, k=0)
    with pytest.raises(ValueError):
        cluster(V, k=4, method="single")


def test_cluster_table():
    labels = np.array([1, 0, 1, 2, 0])
    names = ["a", "b", "c", "d", "e"]
    t = cluster_table(labels, names)
    assert list(t.index) == [0, 1, 2] and list(t["size"]) == [2, 2, 1]
    assert t.loc[1, "members"] == "a, c"
    t = cluster_table(labels, names, scores=[5.0, 1.0, 7.0, np.nan, 2.0])
    assert list(t.index) == [1, 0, 2]  # by mean score, descending; all-NaN cluster last
    assert t.loc[1, "mean_score"] == pytest.approx(6.0) and np.isnan(t.loc[2, "mean_score"])
    with pytest.raises(ValueError):
        cluster_table(labels, names[:4])


@pytest.fixture
def stories():
    """12 emotions with 3..8 stories each; emotion e adds a planted offset to its stories."""
    rng = np.random.default_rng(9)
    counts = rng.integers(3, 9, size=12)
    labels = rng.permutation(np.repeat(np.arange(12), counts))
    offsets = 3.0 * rng.standard_normal((12, 16))
    acts = (offsets[labels] + rng.standard_normal((len(labels), 16)) + 10.0).astype(np.float32)
    return acts, labels


def test_emotion_means_equals_naive_loop(stories):
    acts, labels = stories
    naive = np.stack([acts[labels == e].astype(np.float64).mean(0) for e in range(12)])
    naive -= naive.mean(0)
    got = emotion_means(acts, labels)
    assert got.shape == (12, 16) and got.dtype == np.float64
    np.testing.assert_allclose(got, naive, atol=1e-10)
    np.testing.assert_allclose(got.sum(0), 0.0, atol=1e-9)


def test_emotion_means_rejects_bad_labels(stories):
    acts, labels = stories
    with pytest.raises(ValueError, match="without stories"):
        emotion_means(acts, labels, n_emotions=13)
    with pytest.raises(ValueError):
        emotion_means(acts, labels.astype(float))
    with pytest.raises(ValueError):
        emotion_means(acts, labels[:-1])
    with pytest.raises(ValueError):
        emotion_means(acts, labels, n_emotions=5)


def test_resampled_emotion_means_keeps_counts_and_varies(stories):
    acts, labels = stories
    rng = np.random.default_rng(0)
    a, b = resampled_emotion_means(acts, labels, rng), resampled_emotion_means(acts, labels, rng)
    full = emotion_means(acts, labels)
    assert a.shape == full.shape and not np.allclose(a, b)
    np.testing.assert_allclose(a.sum(0), 0.0, atol=1e-9)
    # the planted offsets dominate: resampled vectors stay close to the full-sample ones
    cos = (a * full).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(full, axis=1)
    assert cos.min() > 0.8
    # one story per emotion: a resample is the sample itself
    one = np.arange(12)
    np.testing.assert_allclose(resampled_emotion_means(acts[:12], one, rng), emotion_means(acts[:12], one))


def test_pc_correlations_and_rated_reference(planted):
    X, _, _, valence, arousal = planted
    r = pc_correlations(X, np.arange(N), valence, 3)
    assert r.shape == (3,) and r[0] > 0.95 and r[1] < 0.3
    assert pc_correlations(X, np.arange(N), arousal, 3)[1] > 0.9
    ref = rated_reference(5, [1, 3], [2.0, 4.0])
    assert np.isnan(ref[[0, 2, 4]]).all() and ref[1] == 2.0 and ref[3] == 4.0
    np.testing.assert_allclose(column_pearson(valence, np.column_stack([valence, -valence]))[:2], [1.0, -1.0])


def test_ridge_cv_recovers_planted_ratings_and_not_shuffled():
    rng = np.random.default_rng(0)
    n, d = 120, 300
    y = rng.uniform(1, 9, n)  # planted: the ratings lie along one direction of the vectors
    X = 0.5 * np.outer(y - 5, rng.standard_normal(d)) + rng.standard_normal((n, d))
    folds = rng.permutation(n) % 5
    Y = np.column_stack([y] + [rng.permutation(y) for _ in range(20)])
    pred, chosen = ridge_cv_predict(X, Y, folds)
    assert pred.shape == Y.shape and chosen.shape == (5, 21)
    r = column_pearson(y, pred[:, :1])[0]
    null = np.array([np.corrcoef(Y[:, j], pred[:, j])[0, 1] for j in range(1, 21)])
    assert r > 0.9 and np.abs(null).mean() < 0.2 and null.max() < r
    p1, _ = ridge_cv_predict(X, y, folds)
    np.testing.assert_allclose(p1, pred[:, 0])  # columns are fitted independently
    with pytest.raises(ValueError):
        ridge_cv_predict(X, y[:-1], folds)


def test_auroc_and_held_out_direction():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([1.0, 1.0], [0, 1]) == 0.5 and np.isnan(auroc([1.0, 2.0], [1, 1]))
    rng = np.random.default_rng(2)
    y = np.arange(200) % 2 == 0
    folds = rng.integers(0, 5, 200)
    A = rng.standard_normal((200, 30))
    planted = A + 2.0 * y[:, None] * np.eye(30)[0]
    assert auroc(held_out_direction_scores(planted, y, folds), y) > 0.9
    assert abs(auroc(held_out_direction_scores(A, y, folds), y) - 0.5) < 0.15
