"""The post-training baseline measurement: shift, CIs, profile correlations and consistency on planted data;
the config's quick caps; reading scores at the answer start on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolib import baseline as bl

torch.set_num_threads(1)

EMOTIONS = tuple(f"e{i}" for i in range(30))
KINDS = ("neutral",) * 20 + ("challenging",) * 20 + ("self",) * 20


def _readout(scores: np.ndarray, label: str) -> bl.Readout:
    return bl.Readout({5: scores}, KINDS, tuple(f"p{i}" for i in range(len(KINDS))), EMOTIONS, "plain", label)


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    profile = rng.normal(0, 1, len(EMOTIONS))
    base = profile + rng.normal(0, 0.3, (len(KINDS), len(EMOTIONS)))
    shift = np.zeros(len(EMOTIONS))
    shift[:3], shift[-3:] = 1.0, -1.0  # e0-e2 up, e27-e29 down, the same for every kind
    post = base + shift + rng.normal(0, 0.1, base.shape)
    return _readout(base, "base"), _readout(post, "post"), shift


def test_shift_recovers_planted_emotions(planted):
    base, post, shift = planted
    res = bl.compare(base, post, 5, n_boot=200, n_perm=200, n_top=3)
    assert set(res.top_up) == {"e0", "e1", "e2"} and set(res.top_down) == {"e27", "e28", "e29"}
    assert np.allclose(res.shift, shift, atol=0.1)
    assert (res.shift_low <= res.shift).all() and (res.shift <= res.shift_high).all()
    assert (res.shift_low[:3] > 0).all() and (res.shift_high[-3:] < 0).all()
    zero = np.abs(shift) == 0
    assert ((res.shift_low[zero] < 0.05) & (res.shift_high[zero] > -0.05)).all()
    # the shifts are identical across kinds: consistency near 1, CI inside [-1, 1]
    assert res.consistency.estimate > 0.9 and -1 <= res.consistency.low <= res.consistency.high <= 1
    assert set(res.pair_r) == {"neutral~challenging", "neutral~self", "challenging~self"}


def test_profile_correlation_and_metrics(planted):
    base, post, _ = planted
    res = bl.compare(base, post, 5, n_boot=200, n_perm=200)
    m = res.metrics()
    for kind in ("neutral", "challenging", "self"):
        key = f"posttrain_profile_r_{kind}"
        assert 0.5 < m[key] <= 1 and m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"]
        assert m[f"{key}_p"] < 0.05 and m[f"{key}_n"] == 20
    assert m["posttrain_n_prompts"] == 60
    assert m["posttrain_top_up"].split(", ")[:3] and "posttrain_shift_consistency_r_ci_low" in m
    tbl = res.table()
    assert list(tbl.columns) == ["up (this model)", "up (paper)", "down (this model)", "down (paper)"]
    assert len(tbl) == res.n_top


def test_inconsistent_shifts_give_low_consistency():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, (len(KINDS), len(EMOTIONS)))
    post = base.copy()
    kinds = np.array(KINDS)
    for k in ("neutral", "challenging", "self"):
        post[kinds == k] += rng.normal(0, 1, len(EMOTIONS))  # an unrelated shift per kind
    res = bl.compare(_readout(base, "b"), _readout(post, "p"), 5, n_boot=200, n_perm=200)
    assert abs(res.consistency.estimate) < 0.5


def test_identical_models_have_no_shift(planted):
    base, _, _ = planted
    with pytest.raises(ValueError, match="identical"):
        bl.compare(base, base, 5, n_boot=50, n_perm=50)
    post = _readout(base.scores[5] - 0.1, "post")  # everything falls: nothing goes up
    res = bl.compare(base, post, 5, n_boot=50, n_perm=50)
    assert res.top_up == () and res.metrics()["posttrain_top_up"] == "none" and len(res.top_down) == 10


def test_layer_and_checkpoint_tables(planted):
    base, post, shift = planted
    lt = bl.layer_table(base, post)
    assert list(lt.index) == [5] and lt.loc[5, "consistency r"] > 0.9
    ct = bl.checkpoint_table(base, {0: base, 4: post}, 5, post.scores[5].mean(0) - base.scores[5].mean(0))
    assert ct.loc[0, "shift rms"] == 0 and ct.loc[4, "r with final shift"] == pytest.approx(1.0)


def test_mismatched_readouts_raise(planted):
    base, post, _ = planted
    other = bl.Readout(post.scores, post.kinds, tuple(reversed(post.prompt_ids)), post.emotions, "plain", "x")
    with pytest.raises(ValueError, match="same prompts"):
        bl.compare(base, other, 5)


def test_bank_cosine():
    from emolib.vectors import EmotionVectors

    V = torch.randn(4, 8)
    a = EmotionVectors(V, ("a", "b", "c", "d"), 1)
    b = EmotionVectors(V[[1, 0, 2, 3]] * 3, ("b", "a", "c", "d"), 1)
    assert np.allclose(bl.bank_cosine(a, b), 1)
    with pytest.raises(ValueError, match="widths"):
        bl.bank_cosine(a, EmotionVectors(torch.randn(4, 6), ("a", "b", "c", "d"), 1))


def test_config_quick_caps_and_checkpoints(tmp_path):
    cfg = bl.BaselineConfig(notebook="05_posttraining", quick=True, adapter_dir=str(tmp_path))
    assert cfg.prompts_per_kind == bl.QUICK_PROMPTS_PER_KIND and cfg.n_boot <= 200
    ps = cfg.prompts()
    assert len(ps) == 3 * bl.QUICK_PROMPTS_PER_KIND and {p.kind for p in ps} == {
        "neutral",
        "challenging",
        "self",
    }
    assert cfg.checkpoints() == {}
    assert "No post-trained adapter" in bl.status_markdown(cfg, {})
    with pytest.raises(ValueError, match="prompts_per_kind"):
        bl.BaselineConfig(notebook="x", prompts_per_kind=2)
    full = bl.BaselineConfig(notebook="x")
    assert len(full.prompts()) == 192


def test_read_scores_at_answer_start(tiny):
    from emolib.chat import user_turn
    from emolib.extract import extract
    from emolib.vectors import EmotionVectors

    cfg = bl.BaselineConfig(notebook="x", quick=True)
    prompts = cfg.prompts()[:4]
    d = tiny.info.d_model
    vecs = {1: EmotionVectors(torch.randn(3, d), ("calm", "afraid", "happy"), 1)}
    ro = bl.read_scores(tiny, vecs, prompts, label="tiny")
    assert (
        ro.scores[1].shape == (4, 3) and ro.fmt == "template" and ro.kinds == tuple(p.kind for p in prompts)
    )
    # the same as scoring the last prompt token's residual directly
    texts = [user_turn(tiny.tokenizer, p.text) for p in prompts]
    acts = extract(tiny, texts, [1], pooling="last", use_cache=False, progress=False)
    assert np.allclose(ro.scores[1], vecs[1].score(acts[1].numpy()).numpy(), atol=1e-5)
    plain = bl.read_scores(tiny, vecs, prompts, fmt="plain")
    assert plain.fmt == "plain" and not np.allclose(plain.scores[1], ro.scores[1])
    ans = bl.read_answer_scores(tiny, vecs, prompts, 3)
    assert ans.scores[1].shape == (4, 3) and ans.position == "first 3 answer tokens"
    assert np.isfinite(ans.scores[1]).all()


@pytest.mark.slow
def test_notebook_quick_on_tiny_pair(tiny_dir, tmp_path, monkeypatch):
    """Chapter 05 end to end (papermill, quick mode) on the tiny model and a 2-step adapter of our own."""
    import nbformat
    import papermill as pm

    from emolib import posttrain as pt
    from emolib.constants import REPO_ROOT

    data = [
        pt.Dialogue(f"d{i}", f"Tell me about the fox {i}.", "The quick brown fox jumps.") for i in range(4)
    ]
    cfg = pt.TrainConfig(base=str(tiny_dir), steps=2, batch_size=2, max_len=48, rank=2, alpha=4, lr=1e-2)
    pt.train(cfg, tmp_path / "adapters", dialogues=data, progress=False)
    monkeypatch.setenv("EMOLIB_RESULTS_DIR", str(tmp_path / "results"))
    out = tmp_path / "05.ipynb"
    params = {
        "quick": True,
        "base_model": str(tiny_dir),
        "adapter_dir": str(tmp_path / "adapters"),
        "n_boot": 50,
    }
    pm.execute_notebook(
        str(REPO_ROOT / "notebooks" / "05_posttraining.ipynb"), str(out), parameters=params,
        kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False,
    )  # fmt: skip
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    glued = {
        o["metadata"]["scrapbook"]["name"]: o["data"]
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("metadata", {}).get("scrapbook")
    }
    assert {"fig_posttrain_shift", "fig_posttrain_profiles", "fig_posttrain_trajectory"} <= set(glued)
    assert "fig_posttrain_cross_family" in glued  # the book's model (default SmolLM2) beside the tiny base
    assert glued["posttrain_adapter"]["application/papermill.record/text/plain"].endswith("step_2")
    import json

    slug = next((tmp_path / "results").iterdir())
    m = json.loads((slug / "metrics.json").read_text())
    for key in ("posttrain_profile_r_neutral", "posttrain_profile_r_challenging", "posttrain_shift_consistency_r",
                "posttrain_top_up", "posttrain_top_down", "posttrain_n_prompts", "posttrain_adapter"):  # fmt: skip
        assert key in m, key
    assert m["posttrain_n_prompts"] == 3 * bl.QUICK_PROMPTS_PER_KIND
    assert -1 <= m["posttrain_cross_family_profile_r_neutral"] <= 1
    assert m["posttrain_step0_shift_rms"] < 1e-4  # the step-0 adapter is the identity, read the same way
