"""Validation statistics on planted data: held-out ranking, shuffled null, bootstrap, rank tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emolib.evaluate import (
    bootstrap_mean_ci,
    confusion,
    expected_rank_test,
    heldout,
    logit_lens,
    shuffled_null,
    spearman_with_null,
)


def stories(n_emotions=10, n_per=10, d=32, signal=1.0, seed=0):
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n_emotions, d))
    labels = np.repeat(np.arange(n_emotions), n_per)
    acts = signal * dirs[labels] + rng.normal(size=(len(labels), d))
    test = np.tile(np.arange(n_per) % 5 == 0, n_emotions)
    return acts, labels, test


def test_heldout_finds_planted_emotions_and_null_does_not():
    acts, labels, test = stories()
    h = heldout(acts, labels, test, 10, None, 0)
    assert h.top1 > 0.9 and h.top5 == 1.0
    null = shuffled_null(acts, labels, test, 10, None, 0, n_perm=10, seed=1)
    assert null.shape == (10, 2)
    assert null[:, 0].mean() < 0.35  # chance is 0.1
    noise_acts, _, _ = stories(signal=0.0)
    assert heldout(noise_acts, labels, test, 10, None, 0).top1 < 0.5


def test_confusion_rows_sum_to_one():
    acts, labels, test = stories(signal=0.3)
    C = confusion(heldout(acts, labels, test, 10, None, 0), 10)
    assert np.allclose(C.sum(1), 1)


def test_bootstrap_ci():
    lo, hi = bootstrap_mean_ci(np.r_[np.ones(50), np.zeros(50)], seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert bootstrap_mean_ci(np.ones(10)) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([])


def test_spearman_with_null():
    levels = np.tile(np.arange(6), 3)
    groups = np.repeat(["a", "b", "c"], 6)
    rho, p = spearman_with_null(levels, levels * 2.0 + 0.01 * np.arange(18), groups, n_perm=500)
    assert rho > 0.95 and p < 0.01
    rng = np.random.default_rng(0)
    rho0, p0 = spearman_with_null(levels, rng.normal(size=18), groups, n_perm=500)
    assert abs(rho0) < rho and p0 > p


def test_expected_rank_test():
    names = ["afraid", "calm", "happy", "sad", "angry", "bored"]
    S = pd.DataFrame(np.eye(6) + 0.01 * np.arange(6), columns=names, index=[f"p{i}" for i in range(6)])
    res = expected_rank_test(S, names, n_perm=200)
    assert res["mean_rank"] == 0 and res["top5_rate"] == 1 and res["p"] < 0.05
    bad = expected_rank_test(S, names[::-1], n_perm=200)
    assert bad["mean_rank"] > 0


def test_logit_lens_promotes_planted_token(tiny):
    import torch

    W = tiny.hf_model.get_output_embeddings().weight.detach()
    tok_id = 57
    v = W[tok_id] / tiny.hf_model.model.norm.weight.detach()  # undo the final norm's gain
    table = logit_lens(tiny, torch.stack([v, -v]), ["up", "down"], k=3)
    word = repr(tiny.tokenizer.decode([tok_id]).strip())
    assert word in table.loc["up", "promoted"] and word in table.loc["down", "suppressed"]


def test_own_word_rank(tiny):
    import torch

    from emolib.evaluate import own_word_rank

    names = ["calm", "happy", "sad", "angry"]
    W = tiny.hf_model.get_output_embeddings().weight.detach()
    g = tiny.hf_model.model.norm.weight.detach()
    ids = [tiny.tokenizer(" " + n, add_special_tokens=False).input_ids[0] for n in names]
    assert len(set(ids)) == len(names)
    planted = torch.stack([W[i] / g for i in ids])  # each vector points at its own word's token
    res = own_word_rank(tiny, planted, names, n_perm=200)
    assert res["median_percentile"] < 0.05 and res["top1pct_rate"] >= 0.5
    shuffled = own_word_rank(tiny, planted[[1, 2, 3, 0]], names, n_perm=200)
    assert shuffled["median_percentile"] > res["median_percentile"]
