"""emolib.stats on planted structure: each test checks a property that a wrong implementation would break."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import pearsonr

from emolib.stats import (
    CI,
    PValue,
    bootstrap_ci,
    bootstrap_stat,
    fmt_p,
    pearson_ci,
    perm_p,
    random_directions,
    selected_p,
    selection_null,
    slope_ci,
    wilson,
)


# ------------------------------------------------------------------------------------------------ perm_p
def test_perm_p_floor_is_a_bound_with_tail_phrase():
    null = np.arange(500, dtype=float)
    g = perm_p(1e6, null, "greater")
    assert g.at_floor and g.n_perm == 500 and g.p == pytest.approx(1 / 501)
    assert str(g) == g.text() == "p < 0.002 (all 500 permutations below)"
    assert float(g) == pytest.approx(1 / 501)
    assert perm_p(-1.0, null, "less").text() == "p < 0.002 (all 500 permutations above)"
    assert perm_p(-1e6, null - 250, "two-sided").text() == "p < 0.002 (none of 500 permutations as extreme)"
    assert perm_p(0.5, np.zeros(999)).text() == "p < 0.001 (all 999 permutations below)"


def test_perm_p_counts_and_ties():
    null = np.arange(999, dtype=float)  # 0..998
    p = perm_p(986.0, null)  # 986..998 are >= 986: 13 draws (the tie counts)
    assert not p.at_floor and p.p == pytest.approx(14 / 1000)
    assert p.text() == "p = 0.014"
    assert perm_p(986.0 + 1e-14, null).p == pytest.approx(14 / 1000)  # within tolerance: still a tie
    assert perm_p(986.5, null).p == pytest.approx(13 / 1000)


def test_perm_p_tails_on_hand_built_null():
    null = np.array([-3, -2, -1, 0, 1, 2, 3], dtype=float)
    assert perm_p(2.0, null, "greater").p == pytest.approx(3 / 8)  # {2, 3}
    assert perm_p(2.0, null, "less").p == pytest.approx(7 / 8)  # {-3..2}
    assert perm_p(2.0, null, "two-sided").p == pytest.approx(5 / 8)  # {-3, -2, 2, 3}
    assert perm_p(-2.0, null, "two-sided").p == pytest.approx(5 / 8)
    assert perm_p(-2.0, null, "less").p == pytest.approx(3 / 8)


def test_perm_p_ignores_nan_draws_and_validates():
    p = perm_p(5.0, [1.0, np.nan, 6.0, np.nan, 2.0])
    assert p.n_perm == 3 and p.p == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="empty"):
        perm_p(1.0, [])
    with pytest.raises(ValueError, match="NaN"):
        perm_p(np.nan, [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        perm_p(1.0, [np.nan, np.nan])
    with pytest.raises(ValueError, match="tail"):
        perm_p(1.0, [1.0], tail="both")


def test_pvalue_validation_and_fmt_p():
    with pytest.raises(ValueError):
        PValue(p=0.0, n_perm=10)
    with pytest.raises(ValueError):
        PValue(p=0.5, n_perm=10, at_floor=True)  # not at 1/11
    with pytest.raises(ValueError):
        PValue(p=0.5, n_perm=0)
    assert fmt_p(perm_p(1e6, np.arange(500.0))) == "p < 0.002 (all 500 permutations below)"
    assert fmt_p(1 / 501, n_perm=500) == "p < 0.002 (all 500 permutations below)"
    assert fmt_p(1 / 501, n_perm=500, tail="two-sided") == "p < 0.002 (none of 500 permutations as extreme)"
    assert fmt_p(0.0132) == "p = 0.013"
    assert fmt_p(0.0132, n_perm=1000) == "p = 0.013"
    assert fmt_p(0.0045) == "p = 0.0045"
    assert fmt_p(np.nan) == "p = n/a"


# --------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_covers_planted_mean_with_right_width():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=200)
    ci = bootstrap_ci(x, n_boot=2000, seed=0)
    assert isinstance(ci, CI) and ci.unit == "item" and ci.n == 200 and ci.n_boot == 2000
    assert ci.low < 2.0 < ci.high
    assert ci.estimate == pytest.approx(x.mean())
    assert 0.2 < ci.high - ci.low < 0.36  # 2 * 1.96 / sqrt(200) = 0.277
    # coverage over repeated planted samples is near the nominal 95%
    hits = 0
    for s in range(60):
        xs = rng.normal(0.0, 1.0, size=40)
        c = bootstrap_ci(xs, n_boot=300, seed=s)
        hits += c.low <= 0.0 <= c.high
    assert 0.8 <= hits / 60 <= 1.0


def test_cluster_bootstrap_is_wider_when_clusters_share_an_offset():
    rng = np.random.default_rng(2)
    topics = np.repeat(np.arange(20), 10)
    x = rng.normal(0, 1, 20)[topics] + rng.normal(0, 1, topics.size)
    item = bootstrap_ci(x, n_boot=1000, seed=0)
    clus = bootstrap_ci(x, groups=topics, unit="topic", n_boot=1000, seed=0)
    assert clus.unit == "topic" and clus.n == 20 and item.n == 200
    assert clus.estimate == pytest.approx(item.estimate)
    assert (clus.high - clus.low) > 1.5 * (item.high - item.low)  # expected ratio ~2.3
    assert bootstrap_ci(x, groups=topics, n_boot=50).unit == "cluster"


def test_bootstrap_ci_resamples_rows_of_2d_values_and_is_seeded():
    rng = np.random.default_rng(3)
    a = rng.normal(size=50)
    V = np.column_stack([a, a + 1.0])  # rows stay paired -> the difference is always -1

    def diff(rows):
        return rows[:, 0].mean() - rows[:, 1].mean()

    ci = bootstrap_ci(V, diff, n_boot=200)
    assert ci.low == pytest.approx(-1.0) and ci.high == pytest.approx(-1.0)
    assert bootstrap_ci(a, seed=5) == bootstrap_ci(a, seed=5)
    assert bootstrap_ci(a, seed=5) != bootstrap_ci(a, seed=6)


def test_bootstrap_stat_matches_bootstrap_ci_and_supports_refits():
    rng = np.random.default_rng(4)
    x = rng.normal(size=80)
    a = bootstrap_ci(x, n_boot=500, seed=7)
    b = bootstrap_stat(x.size, lambda idx: x[idx].mean(), n_boot=500, seed=7)
    assert (a.low, a.high, a.estimate) == pytest.approx((b.low, b.high, b.estimate))
    groups = np.repeat(np.arange(8), 10)
    seen = []

    def refit(idx):
        seen.append(len(np.unique(groups[idx])))
        return float(np.median(x[idx]))

    c = bootstrap_stat(x.size, refit, groups=groups, unit="story", n_boot=100, seed=0)
    assert c.unit == "story" and c.n == 8 and c.low <= c.high
    assert seen[0] == 8 and max(seen[1:]) <= 8 and min(seen[1:]) < 8  # whole clusters drawn with replacement


def test_bootstrap_validation():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(np.arange(10.0), groups=np.arange(9))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        bootstrap_ci(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(np.arange(10.0), level=95)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.arange(10.0), n_boot=0)
    with pytest.raises(ValueError, match="n_units"):
        bootstrap_stat(0, lambda idx: 0.0)


# ------------------------------------------------------------------------------------------------ wilson
def test_wilson_known_values():
    c = wilson(0, 10)
    assert c.low == 0.0 and c.high == pytest.approx(0.2775, abs=1e-4)
    assert c.estimate == 0.0 and c.unit == "trial" and c.n == 10 and c.n_boot == 0
    c = wilson(5, 10)
    assert (c.low, c.high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    c = wilson(10, 10)
    assert c.low == pytest.approx(0.7225, abs=1e-4) and c.high == 1.0
    c = wilson(81, 263)
    assert c.low < 81 / 263 < c.high
    assert wilson(81, 263, level=0.99).high > c.high


def test_wilson_validation():
    for k, n in [(0, 0), (11, 10), (-1, 10)]:
        with pytest.raises(ValueError):
            wilson(k, n)


# ------------------------------------------------------------------------------------- random directions
def test_random_directions_norms_and_seed():
    R = random_directions(64, 30, seed=0)
    assert R.shape == (30, 64)
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), 1.0, atol=1e-12)
    norms = np.linspace(0.5, 9.0, 30)
    M = random_directions(64, 30, seed=0, norm=norms)
    np.testing.assert_allclose(np.linalg.norm(M, axis=1), norms, atol=1e-10)
    np.testing.assert_allclose(M / norms[:, None], R, atol=1e-12)  # same directions, scaled
    np.testing.assert_array_equal(random_directions(64, 30, seed=0), R)
    assert not np.allclose(random_directions(64, 30, seed=1), R)
    np.testing.assert_allclose(np.linalg.norm(random_directions(8, 3, 0, norm=2.5), axis=1), 2.5)


def test_random_directions_orthogonal_to_exclude_and_spread_out():
    rng = np.random.default_rng(5)
    E = rng.normal(size=(10, 128)) * 3.0
    R = random_directions(128, 40, seed=2, exclude=E)
    assert np.abs(E @ R.T).max() < 1e-9
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), 1.0, atol=1e-12)
    assert np.abs(E @ random_directions(128, 40, seed=2).T).max() > 1.0  # without exclude: not orthogonal
    U = random_directions(512, 100, seed=3)
    C = U @ U.T
    off = C[~np.eye(100, dtype=bool)]
    assert abs(off.mean()) < 0.01 and np.abs(off).max() < 0.3  # 1/sqrt(512) = 0.044 per pair


def test_random_directions_validation():
    with pytest.raises(ValueError, match="norm"):
        random_directions(8, 3, 0, norm=[1.0, 2.0])
    with pytest.raises(ValueError, match="exclude"):
        random_directions(8, 3, 0, exclude=np.ones((2, 7)))
    with pytest.raises(ValueError, match="spans"):
        random_directions(4, 3, 0, exclude=np.eye(4))
    with pytest.raises(ValueError):
        random_directions(0, 3, 0)


# -------------------------------------------------------------------------------------- selection null
def test_selection_null_reduces_per_tail():
    m = np.array([[1.0, -5.0, 3.0], [0.0, 2.0, -1.0]])
    np.testing.assert_array_equal(selection_null(m), [3.0, 2.0])
    np.testing.assert_array_equal(selection_null(m, tail="less"), [-5.0, -1.0])
    np.testing.assert_array_equal(selection_null(m, tail="two-sided"), [5.0, 2.0])
    with pytest.raises(ValueError, match="2-D"):
        selection_null(np.arange(3.0))
    with pytest.raises(ValueError, match="empty"):
        selection_null(np.zeros((0, 3)))


def test_selected_p_controls_false_positives_when_best_of_20_is_noise():
    rng = np.random.default_rng(6)
    n_exp, n_perm, n_opt = 200, 400, 20
    naive, selected = [], []
    for _ in range(n_exp):
        observed = rng.normal(size=n_opt)  # 20 options (layers), no effect anywhere
        null = rng.normal(size=(n_perm, n_opt))  # the same statistic under each label shuffle
        best = int(np.argmax(observed))
        naive.append(perm_p(observed[best], null[:, best]).p)
        selected.append(selected_p(observed[best], null).p)
    naive, selected = np.array(naive), np.array(selected)
    assert np.median(naive) < 0.1 < np.median(selected)
    assert np.mean(naive < 0.05) > 0.4  # ~1 - 0.95**20 = 0.64
    assert np.mean(selected < 0.05) < 0.12  # nominal 5%
    # ...and it still detects a real effect at the chosen option
    observed = rng.normal(size=n_opt)
    observed[7] = 6.0
    assert selected_p(observed.max(), rng.normal(size=(n_perm, n_opt))).at_floor


# ---------------------------------------------------------------------------------------------- slope_ci
def test_slope_ci_recovers_planted_slope():
    rng = np.random.default_rng(7)
    x = np.tile(np.linspace(0, 4, 9), 12)
    y = 0.7 * x + 2.0 + rng.normal(0, 0.5, x.size)
    s = slope_ci(x, y, n_boot=1000, seed=0)
    assert s.ci_low < 0.7 < s.ci_high and s.ci_low > 0.5 and s.ci_high < 0.9
    assert s.slope == pytest.approx(np.polyfit(x, y, 1)[0]) and s.intercept == pytest.approx(2.0, abs=0.2)
    assert s.unit == "item" and s.n == x.size
    hits = 0
    for k in range(100):
        xs = rng.uniform(0, 1, 30)
        ys = -1.5 * xs + rng.normal(0, 1, 30)
        c = slope_ci(xs, ys, n_boot=400, seed=k)
        hits += c.ci_low <= -1.5 <= c.ci_high
    assert 0.85 <= hits / 100 <= 1.0


def test_slope_ci_by_group_is_wider_with_variant_level_noise():
    rng = np.random.default_rng(8)
    variants = np.repeat(np.arange(15), 24)
    x = np.tile(np.linspace(-2, 2, 24), 15)  # every variant at every strength
    b = 0.5 + rng.normal(0, 0.3, 15)  # ...with its own slope: rows of a variant share that deviation
    y = b[variants] * x + rng.normal(0, 0.2, x.size)
    item = slope_ci(x, y, n_boot=1000, seed=0)
    grp = slope_ci(x, y, groups=variants, unit="variant", n_boot=1000, seed=0)
    assert grp.unit == "variant" and grp.n == 15 and item.n == x.size
    assert (grp.ci_high - grp.ci_low) > 1.8 * (item.ci_high - item.ci_low)  # expected ratio ~3.6
    assert grp.ci_low < 0.5 < grp.ci_high


# -------------------------------------------------------------------------------------------- pearson_ci
def test_pearson_ci_recovers_planted_r():
    rng = np.random.default_rng(9)
    x = rng.normal(size=300)
    y = 0.6 * x + 0.8 * rng.normal(size=300)
    c = pearson_ci(x, y, n_boot=1000, n_perm=1000, seed=0)
    assert c.r == pytest.approx(pearsonr(x, y)[0])
    assert c.ci_low < 0.6 < c.ci_high and c.ci_high - c.ci_low < 0.25
    assert c.p.at_floor and c.p.tail == "two-sided" and c.p.n_perm == 1000
    assert 0.08 < c.null95 < 0.15  # 1.96 / sqrt(300) = 0.113
    assert c.n == 300 and c.unit == "item"
    m = c.metrics("valence_r")
    assert set(m) == {f"valence_r{s}" for s in ["", "_ci_low", "_ci_high", "_p", "_null95", "_n"]}
    assert isinstance(m["valence_r_p"], float)


def test_pearson_ci_independent_data_gives_large_p():
    rng = np.random.default_rng(10)
    c = pearson_ci(rng.normal(size=100), rng.normal(size=100), n_boot=500, n_perm=1000, seed=0)
    assert c.p.p > 0.05 and c.ci_low < 0.0 < c.ci_high and abs(c.r) < c.null95
    ps = [
        pearson_ci(rng.normal(size=40), rng.normal(size=40), n_boot=50, n_perm=400, seed=s).p.p
        for s in range(60)
    ]
    assert np.mean(np.array(ps) < 0.05) < 0.15 and np.median(ps) > 0.3


def test_pearson_ci_groups_and_validation():
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(15), 6)
    x = rng.normal(size=15)[g] + 0.3 * rng.normal(size=g.size)
    y = x + rng.normal(size=g.size)
    a = pearson_ci(x, y, n_boot=500, n_perm=200)
    b = pearson_ci(x, y, groups=g, unit="topic", n_boot=500, n_perm=200)
    assert b.unit == "topic" and b.n == 15 and b.r == pytest.approx(a.r)
    assert (b.ci_high - b.ci_low) > (a.ci_high - a.ci_low)
    with pytest.raises(ValueError, match="same length"):
        pearson_ci(np.arange(5.0), np.arange(6.0))
    with pytest.raises(ValueError, match="same length"):
        slope_ci(np.arange(5.0), np.arange(6.0))
    with pytest.raises(ValueError, match="constant"):
        slope_ci(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="constant"):
        pearson_ci(np.arange(5.0), np.ones(5))
    with pytest.raises(ValueError, match="at least 3"):
        pearson_ci([], [])
    with pytest.raises(ValueError, match="finite"):
        slope_ci([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])


def test_module_does_not_import_torch():
    code = "import sys, emolib.stats; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
