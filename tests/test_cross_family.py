"""Chapter 05's confounded cross-family comparison in emotion-profile space, end to end on tiny random models and
a tiny synthetic corpus: each model's own bank, the same prompts, named coordinates only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emolib import baseline as bl
from emolib.config import default_layer

torch.set_num_threads(1)

EMOTIONS = ("afraid", "angry", "calm", "happy", "sad", "nervous", "loving", "hostile")
TOPICS = ("the harbour", "the letter", "the exam")


def _corpus(tmp_path):
    from emolib.corpus import Corpus

    stories = pd.DataFrame(
        [
            {
                "emotion": e,
                "text": f"At {t} she felt {e}; {e} was all she knew as the day went on and on.",
                "topic_index": j,
                "degenerate": None,
            }
            for e in EMOTIONS
            for j, t in enumerate(TOPICS)
        ]
    )
    neutral = pd.DataFrame(
        [
            {
                "text": f"Human: What is {k} plus {k}? Assistant: It is {2 * k}.",
                "degenerate": None,
                "emotion_words": [],
            }
            for k in range(6)
        ]
    )
    return Corpus(stories, neutral, EMOTIONS, "ab" * 8, tmp_path)


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    from emolib.activations import from_config
    from emolib.vectors import vectors_for_layer

    tmp = tmp_path_factory.mktemp("xf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOLIB_CACHE", str(tmp / "cache"))
        cfg = bl.BaselineConfig(
            notebook="x", quick=True, token_offset=1, emotions=EMOTIONS, n_boot=100, n_perm=100
        )
        corpus = _corpus(tmp)
        L = default_layer(tiny.info.n_layers)
        ca = from_config(tiny, corpus, cfg, [L], progress=False)
        bank = {L: vectors_for_layer(ca, L, cfg.recipe())}
        yield cfg, corpus, bank, L, tmp


def test_identical_models_agree_perfectly(tiny, setup):
    cfg, corpus, bank, L, _ = setup
    # the base read in the same (template) format as the "other" model: the same model twice must give r = 1
    base_ro = bl.read_scores(tiny, bank, cfg.prompts(), fmt="template", label="base")
    xf = bl.cross_family(cfg, tiny, base_ro, L, corpus)
    assert xf.layer == L and xf.other.fmt == "template" and xf.emotions == EMOTIONS
    for kind in ("neutral", "challenging", "self"):
        ci = xf.profile_r[kind]
        assert ci.estimate == pytest.approx(1.0) and ci.low == pytest.approx(1.0) and ci.unit == "prompt"
        assert float(xf.profile_corr[kind].p) < 0.2
    for kind in bl.CONTRASTS:
        assert xf.contrast_r[kind].estimate == pytest.approx(1.0)
    m = xf.metrics()
    assert m["posttrain_cross_family_model"] == tiny.info.name and m["posttrain_cross_family_layer"] == L
    assert m["posttrain_cross_family_confounded"] == bl.CROSS_FAMILY_CONFOUND
    for kind in ("neutral", "challenging", "self"):
        key = f"posttrain_cross_family_profile_r_{kind}"
        assert {key, f"{key}_ci_low", f"{key}_ci_high", f"{key}_p", f"{key}_n"} <= set(m)
        assert m[f"{key}_n"] == bl.QUICK_PROMPTS_PER_KIND
    assert "posttrain_cross_family_contrast_r_self_vs_neutral" in m


def test_another_model_with_its_own_width_and_layer(tiny, setup):
    from tiny import make_tiny_model_dir

    from emolib.models import load_model

    cfg, corpus, bank, L, tmp = setup
    other = load_model(str(make_tiny_model_dir(tmp / "other", n_layers=4, d_model=48, seed=1)))
    base_ro = bl.read_scores(tiny, bank, cfg.prompts(), fmt="plain", label="base")
    xf = bl.cross_family(cfg, other, base_ro, L, corpus)  # the cache stays in tmp (set by the fixture)
    assert xf.layer == default_layer(4) == 3 and xf.base_layer == L and xf.n_prompts == len(base_ro.kinds)
    for kind, ci in xf.profile_r.items():
        assert -1 <= ci.low <= ci.estimate <= ci.high <= 1
        assert ci.estimate == pytest.approx(xf.profile_corr[kind].r)
    for ci in xf.contrast_r.values():
        assert -1 <= ci.low <= ci.high <= 1
    text = bl.cross_family_markdown(xf, cfg)
    assert "Confounded" in text and f"{xf.profile_r['neutral'].estimate:.2f}" in text
    import matplotlib.pyplot as plt

    fig = bl.cross_family_figure(xf)
    assert len(fig.axes) == 3 and "confounded" in fig._suptitle.get_text()
    plt.close(fig)
    assert "Not run" in bl.cross_family_markdown(None, cfg)
    plt.close(bl.cross_family_figure(None))


def test_compare_families_matches_emotions_by_name():
    rng = np.random.default_rng(0)
    kinds = ("neutral",) * 10 + ("challenging",) * 10 + ("self",) * 10
    ids = tuple(f"p{i}" for i in range(len(kinds)))
    A = rng.normal(0, 1, (len(kinds), len(EMOTIONS)))
    base = bl.Readout({2: A}, kinds, ids, EMOTIONS, "plain", "base")
    perm = rng.permutation(len(EMOTIONS))
    other = bl.Readout({5: 3 * A[:, perm] + 1}, kinds, ids, tuple(EMOTIONS[i] for i in perm), "template", "o")
    xf = bl.compare_families(base, 2, other, 5, n_boot=50, n_perm=50)
    assert all(ci.estimate == pytest.approx(1.0) for ci in xf.profile_r.values())
    assert np.allclose(xf.other.scores[5], 3 * A + 1)
    with pytest.raises(ValueError, match="same prompts"):
        bl.compare_families(base, 2, bl.Readout({5: A}, kinds, ids[::-1], EMOTIONS, "plain", "o"), 5)
    with pytest.raises(ValueError, match="named emotions"):
        bl.compare_families(base, 2, bl.Readout({5: A}, kinds, ids, ("x",) + EMOTIONS[1:], "plain", "o"), 5)
