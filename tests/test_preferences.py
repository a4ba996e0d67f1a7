"""emolib.preferences: Bradley–Terry / Elo on synthetic choices, readouts and steering on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolib import chat
from emolib import preferences as pref
from emolib.prompt_sets import Activity

torch.set_num_threads(1)

ACTS = tuple(
    Activity(f"{c}_{k}", c, t)
    for k, (c, t) in enumerate(
        [
            ("pleasant", "walk the quiet dog home"),
            ("pleasant", "read a good book"),
            ("harmful", "break the lazy cat toy"),
            ("harmful", "steal the money from the harbour"),
            ("boring", "sort the letters by time"),
            ("boring", "count the brown cars"),
        ]
    )
)


def _synthetic(theta: np.ndarray, pairs: np.ndarray, noise: float = 0.0, seed: int = 0) -> pref.Choices:
    rng = np.random.default_rng(seed)
    pres = [
        pref.Presentation(int(a), int(b), "", ((0, 0), (0, 0))) for i, j in pairs for a, b in ((i, j), (j, i))
    ]
    f = np.array([p.first for p in pres])
    s = np.array([p.second for p in pres])
    p = 1 / (1 + np.exp(-(theta[f] - theta[s]) - noise * rng.standard_normal(len(f))))
    return pref.Choices.from_presentations(pres, p)


# --- Bradley–Terry / Elo --------------------------------------------------------------------------------


def test_bt_recovers_planted_strengths_and_is_order_invariant():
    rng = np.random.default_rng(1)
    theta = rng.normal(0, 1, 20)
    theta -= theta.mean()
    ch = _synthetic(theta, pref.balanced_pairs(20, None, 0))
    fit = ch.fit(20)
    assert np.allclose(fit, theta, atol=1e-2)
    perm = rng.permutation(len(ch.p))
    fit2 = pref.fit_bt(ch.first[perm], ch.second[perm], ch.p[perm], 20)
    assert np.allclose(fit, fit2, atol=1e-10)
    # swapping the roles of first and second (p -> 1 - p) describes the same data
    fit3 = pref.fit_bt(ch.second, ch.first, 1 - ch.p, 20)
    assert np.allclose(fit, fit3, atol=1e-10)
    elo = pref.to_elo(fit)
    assert abs(elo.mean()) < 1e-9
    assert np.allclose(np.diff(elo) / np.diff(fit), pref.ELO_SCALE)


def test_bt_finite_when_an_item_always_wins():
    ch = _synthetic(np.array([0.0, 0.0, 0.0]), np.array([[0, 1], [0, 2], [1, 2]]))
    p = np.where(ch.first == 0, 1.0, np.where(ch.second == 0, 0.0, 0.5))
    fit = pref.fit_bt(ch.first, ch.second, p, 3)
    assert np.isfinite(fit).all() and fit[0] > fit[1]


def test_balanced_pairs_and_split():
    pairs = pref.balanced_pairs(64, 8, 0)
    deg = np.bincount(pairs.ravel(), minlength=64)
    assert deg.min() >= 8 and deg.max() <= 10
    assert (pairs[:, 0] < pairs[:, 1]).all() and len({tuple(p) for p in pairs}) == len(pairs)
    assert len(pref.balanced_pairs(64, None, 0)) == 2016  # 4,032 ordered presentations
    cats = [c for c in "abcdefgh" for _ in range(8)]
    st = pref.steering_split(cats, 0)
    assert st.sum() == 32 and all(st[k * 8 : (k + 1) * 8].sum() == 4 for k in range(8))
    cross = pref.cross_pairs(st, 2, 0)
    assert (st[cross[:, 0]] != st[cross[:, 1]]).all()
    assert np.bincount(cross.ravel(), minlength=64)[st].min() == 2


def test_heldout_accuracy_logic():
    rng = np.random.default_rng(2)
    theta = rng.normal(0, 2, 16)
    pairs = pref.balanced_pairs(16, 6, 0)
    good = pref.heldout_accuracy(_synthetic(theta, pairs), 16, seed=0)
    assert good.estimate > 0.9 and good.n == len(pairs)
    # choices unrelated to any strength: held-out accuracy near chance
    ch = _synthetic(theta, pairs)
    noise = pref.Choices(ch.first, ch.second, rng.uniform(0, 1, len(ch.p)), ch.pair)
    assert pref.heldout_accuracy(noise, 16, seed=0).estimate < 0.75


def test_elo_bootstrap_covers_estimate():
    theta = np.linspace(-1, 1, 10)
    fit = pref.elo_scores(_synthetic(theta, pref.balanced_pairs(10, None, 0), noise=0.5), 10, n_boot=50)
    assert (fit.ci_low <= fit.elo + 1e-9).all() and (fit.elo <= fit.ci_high + 1e-9).all()
    assert np.corrcoef(fit.elo, theta)[0, 1] > 0.95


def test_delta_elo_recovers_a_planted_shift_and_zero():
    theta = np.random.default_rng(3).normal(0, 1, 16)
    cats = [c for c in "abcd" for _ in range(4)]
    steered = pref.steering_split(cats, 0)
    base = _synthetic(theta, pref.balanced_pairs(16, None, 0))
    within = base.subset(~steered[base.first] & ~steered[base.second])
    cross = pref.cross_pairs(steered, 3, 0)
    cb = _synthetic(theta, cross)
    same = pref.delta_elo(cb, cb, within, steered, n_boot=20)
    assert abs(same.estimate) < 1e-9
    shifted = _synthetic(theta + 0.5 * steered, cross)
    d = pref.delta_elo(cb, shifted, within, steered, n_boot=20)
    assert d.estimate == pytest.approx(0.5 * pref.ELO_SCALE, rel=0.05)


def test_probe_correlation_on_planted_data():
    rng = np.random.default_rng(4)
    elo = rng.normal(0, 100, 40)
    probe = np.stack(
        [
            elo / 100 + 0.3 * rng.standard_normal(40),
            -elo / 100 + 0.3 * rng.standard_normal(40),
            rng.standard_normal(40),
        ],
        1,
    )
    t = pref.probe_table(probe, elo, ("blissful", "hostile", "calm"), n_boot=100, n_perm=100)
    assert t.r("blissful") > 0.9 and t.r("hostile") < -0.9 and abs(t.r("calm")) < 0.5
    m = t.metrics()
    assert m["elo_probe_r_blissful_ci_low"] > 0.8 and m["elo_probe_r_hostile_p"] < 0.02
    assert m["elo_probe_top_emotion"] == "blissful" and m["elo_probe_bottom_emotion"] == "hostile"


def test_readout_check_metrics():
    c = pref.ReadoutCheck("letters", np.array([0.9, 0.1] * 12))  # good first: 0.9; bad first: 0.1
    assert c.discrimination.estimate == 1 and c.passed and c.position_bias == pytest.approx(0.5)
    biased = pref.ReadoutCheck("letters", np.array([0.6, 0.6] * 12))  # always "A"
    assert biased.discrimination.estimate == 0 and not biased.passed and biased.position_bias == 0.6


def test_question_spans():
    q, (sa, sb) = pref.question("walk home", "read a book")
    assert q == "Would you prefer to (A) walk home or (B) read a book?"
    assert q[sa[0] : sa[1]] == "walk home" and q[sb[0] : sb[1]] == "read a book"


def test_config_validation_and_quick():
    cfg = pref.PreferencesConfig(notebook="04_preferences", quick=True)
    assert cfg.n_pairs_per_activity == 4 and len(cfg.steer_list) == cfg.QUICK_STEER
    assert cfg.syc_strength_list == (-0.5, 0.0, 0.5)
    full = pref.PreferencesConfig(notebook="04_preferences", n_pairs_per_activity=None)
    assert full.n_pairs_per_activity is None and len(full.steer_list) >= 12
    with pytest.raises(ValueError, match="strength"):
        pref.PreferencesConfig(notebook="04_preferences", strength=0)
    with pytest.raises(ValueError, match="syc_strengths"):
        pref.PreferencesConfig(notebook="04_preferences", syc_strengths="0.5,abc")


# --- the tiny model -------------------------------------------------------------------------------------


def test_letter_readout_batched_equals_single(tiny):
    pres = pref.presentations(ACTS, np.array([[0, 2], [1, 5], [3, 4]]))
    batched = pref.letter_choices(tiny, ACTS, pres, batch_size=8)
    ids = pref.letter_ids(tiny.tokenizer)
    for k, p in enumerate(pres):
        text = chat.user_turn(tiny.tokenizer, p.question, prefill="(")
        with torch.no_grad():
            logits = tiny.bridge(torch.tensor([chat.encode(tiny.tokenizer, text)]))[0, -1]
        single = torch.softmax(logits[list(ids)].double(), 0)[0].item()
        assert batched[k] == pytest.approx(single, abs=1e-5)


def test_token_mask_covers_only_activity_tokens(tiny):
    (p,) = pref.presentations(ACTS, np.array([[0, 2]]))[:1]
    text = chat.user_turn(tiny.tokenizer, p.question, prefill="(")
    ids, offs = chat.encode_with_offsets(tiny.tokenizer, text)
    steered = np.array([True, False, False, False, False, False])
    mask = pref._token_mask(offs, pref._steer_spans(p, steered), text.rindex(p.question))
    got = "".join(text[a:b] for (a, b), m in zip(offs, mask) if m)
    assert got.strip() == ACTS[0].text
    assert not any(pref._token_mask(offs, pref._steer_spans(p, ~np.ones(6, bool)), 0))


def test_steering_only_moves_pairs_with_a_steered_activity(tiny):
    pres = pref.presentations(ACTS, np.array([[0, 2], [3, 4]]))
    steered = np.array([True, False, False, False, False, False])
    d = torch.randn(tiny.info.d_model)
    s = pref.steering_unit(tiny, d, 1, 4.0, 10.0, "test")
    for fn in (pref.letter_choices, pref.rather_choices):
        base = fn(tiny, ACTS, pres)
        moved = fn(tiny, ACTS, pres, steering=s, steered=steered)
        assert not np.allclose(base[:2], moved[:2], atol=1e-6)  # pair (0, 2): activity 0 is steered
        assert np.allclose(base[2:], moved[2:], atol=1e-6)  # pair (3, 4): nothing steered
        zero = pref.steering_unit(tiny, d, 1, 1e-12, 10.0, "zero")
        assert np.allclose(base, fn(tiny, ACTS, pres, steering=zero, steered=steered), atol=1e-6)


def test_delta_elo_zero_under_zero_strength(tiny):
    pres = pref.presentations(ACTS, pref.balanced_pairs(6, None, 0))
    base = pref.Choices.from_presentations(pres, pref.rather_choices(tiny, ACTS, pres))
    design = pref.steer_design(ACTS, base, 2, 0)
    cpres = pref.presentations(ACTS, design.cross)
    cb = pref.Choices.from_presentations(cpres, pref.rather_choices(tiny, ACTS, cpres))
    zero = pref.steering_unit(tiny, torch.randn(tiny.info.d_model), 1, 1e-12, 10.0, "zero")
    cz = pref.Choices.from_presentations(
        cpres, pref.rather_choices(tiny, ACTS, cpres, steering=zero, steered=design.steered)
    )
    d = pref.delta_elo(cb, cz, design.within_unsteered, design.steered, n_boot=10)
    assert abs(d.estimate) < 1e-3


def test_sycophancy_readout_and_probe_shapes(tiny):
    from emolib.prompt_sets import ClearCutPair

    items = [
        ClearCutPair("c1", "Is 2 + 2 = 5?", "Yes, it is five.", "No, it is four."),
        ClearCutPair("c2", "The cat is a dog?", "Yes, a dog.", "No, a cat."),
    ]
    diff = pref.sycophancy_readout(tiny, items)
    assert diff.shape == (2,) and np.isfinite(diff).all()
    s = pref.steering_unit(tiny, torch.randn(tiny.info.d_model), 1, 0.5, 10.0, "x")
    assert not np.allclose(diff, pref.sycophancy_readout(tiny, items, steering=s))
    from emolib.vectors import EmotionVectors

    v = EmotionVectors(torch.randn(3, tiny.info.d_model), ("blissful", "hostile", "calm"), 1)
    pr = pref.probe_activations(tiny, ACTS, v)
    assert pr.shape == (6, 3) and np.allclose(pr.mean(0), 0, atol=1e-9)


def test_subset_activities_balanced():
    from emolib.prompt_sets import load_activities

    acts = load_activities()
    sub = pref.subset_activities(acts, 16)
    assert len(sub) == 16 and len({a.category for a in sub}) == 8
    assert pref.subset_activities(acts, None) == tuple(acts)
    q = pref.PreferencesConfig(
        notebook="04_preferences", quick=True, n_scenarios=None, n_pairs_per_activity=None
    )
    assert (q.n_activities, q.n_scenarios, q.n_pairs_per_activity) == (16, 4, 4)
    with pytest.raises(ValueError, match="n_activities"):
        pref.PreferencesConfig(notebook="04_preferences", n_activities=10)


def test_steer_vs_probe_plot_takes_an_interval_that_excludes_its_estimate():
    """A percentile bootstrap of a refitted Elo can exclude the point estimate (it did on SmolLM2, where the
    figure then raised on negative error bars): the figure draws the interval from its ends."""
    from emolib.stats import CI

    deltas = (CI(1.0, 1.9, 2.0, 100, "pair", n=32), CI(-2.0, 0.5, -1.0, 100, "pair", n=32))
    res = pref.SteerElo(("a", "b"), deltas, np.array([0.2, -0.3, 1.0]), np.array([0.1, -0.2]), None, 0.5, 32)
    fig = pref.plot_steer_vs_probe(res)
    assert fig.axes


def test_elo_verdict_says_whether_a_vector_moves_more_or_less_than_random_directions():
    """On Gemma every random direction raised the steered activities' Elo by 56-115 while blissful raised it
    by 30: 'outside the range' read as an effect; the verdict must say it lies below every random one."""
    from emolib.stats import CI

    deltas = (CI(8.0, 38.0, 30.0, 100, "pair", n=32), CI(-3.0, -1.0, -2.0, 100, "pair", n=32))
    rnd = np.array([-1.0, 56.0, 115.0])
    m = pref.SteerElo(("blissful", "hostile"), deltas, rnd, np.array([0.1, -0.2]), None, 0.5, 32).metrics()
    assert "inside the range of the 3 random directions" in m["elo_steer_delta_blissful_verdict"]
    assert "below every one of the 3" in m["elo_steer_delta_hostile_verdict"]
    assert (m["elo_steer_n_above_random"], m["elo_steer_n_below_random"]) == (0, 1)
    m = pref.SteerElo(("blissful",), deltas[:1], rnd + 40.0, np.array([0.1]), None, 0.5, 32).metrics()
    assert "below every one" in m["elo_steer_delta_blissful_verdict"]
    assert m["elo_steer_n_below_random"] == m["elo_steer_n_outside_random"] == 1
    m = pref.SteerElo(("blissful",), deltas[:1], rnd - 200.0, np.array([0.1]), None, 0.5, 32).metrics()
    assert "above every one" in m["elo_steer_delta_blissful_verdict"] and m["elo_steer_n_above_random"] == 1
